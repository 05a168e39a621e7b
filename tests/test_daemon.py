"""The daemons as an administrator runs them: ``tbes policy``, ``tbes milter``, ``tbes serve``.

Each test starts a daemon through the ``tbes`` entry point in a child process, talks to it
over loopback, sends it signals and reads what it logged: SIGHUP reloads the configuration
(new decisions for new connections, open ones kept), a configuration that does not load is
one ERROR line and the old one stays, SIGTERM drains and exits 0, and an address in use is
one line on stderr and exit code 2 before anything claims to listen.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daemon_support import (
    BLOCK_PREFIX,
    EX2007,
    TBES,
    Daemon,
    ask_policy,
    config_text,
    free_port,
    seed_exchange_2007,
)
from milter_client import MtaClient
from tbes.catalog import Catalog

pytestmark = pytest.mark.timeout(90)


def _policy_daemon(tmp_path: Path, *extra: str, with_rule: bool = True) -> tuple[Daemon, int]:
    config = tmp_path / "adapters.toml"
    config.write_text(config_text(with_rule=with_rule), encoding="utf-8")
    db = tmp_path / "state.db"
    seed_exchange_2007(db)
    port = free_port()
    args = ["policy", "--listen", f"127.0.0.1:{port}", "--db", str(db), "--config", str(config)]
    return Daemon(tmp_path, [*args, *extra], [port]), port


def test_sighup_reloads_new_connections_decide_anew_and_open_ones_keep_working(
    tmp_path: Path,
) -> None:
    daemon, port = _policy_daemon(tmp_path, with_rule=False)
    with daemon, socket.create_connection(("127.0.0.1", port), timeout=10) as kept:
        # No rule names 127.0.0.2: not enforced.
        assert ask_policy(kept) == b"action=DUNNO\n\n"
        (tmp_path / "adapters.toml").write_text(config_text(with_rule=True), encoding="utf-8")
        daemon.signal(signal.SIGHUP)
        daemon.wait_for_log("reloaded")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as fresh:
            assert ask_policy(fresh).startswith(BLOCK_PREFIX)
        # The connection opened before the reload is still served.
        assert ask_policy(kept).startswith(BLOCK_PREFIX)
        assert daemon.stop() == 0
    assert "Traceback" not in daemon.log()


def test_a_configuration_that_fails_to_load_on_sighup_is_one_error_and_the_old_one_stays(
    tmp_path: Path,
) -> None:
    daemon, port = _policy_daemon(tmp_path)
    config = tmp_path / "adapters.toml"
    with daemon:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            assert ask_policy(sock).startswith(BLOCK_PREFIX)
        config.write_text("fail_closed = 'sometimes'\n", encoding="utf-8")
        daemon.signal(signal.SIGHUP)
        daemon.wait_for_log("level=ERROR")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            assert ask_policy(sock).startswith(BLOCK_PREFIX)
        config.unlink()
        daemon.signal(signal.SIGHUP)
        daemon.wait_for_log("level=ERROR", count=2)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            assert ask_policy(sock).startswith(BLOCK_PREFIX)
        assert daemon.stop() == 0
    errors = [line for line in daemon.log().splitlines() if "level=ERROR" in line]
    assert len(errors) == 2
    assert str(config) in errors[0]
    assert "fail_closed must be a bool" in errors[0]
    assert str(config) in errors[1]
    assert "No such file or directory" in errors[1]
    assert "Traceback" not in daemon.log()


def test_sigterm_with_open_connections_exits_0_within_seconds(tmp_path: Path) -> None:
    config = tmp_path / "adapters.toml"
    config.write_text(config_text(with_rule=True), encoding="utf-8")
    db = tmp_path / "state.db"
    seed_exchange_2007(db)
    milter_port, policy_port = free_port(), free_port()
    args = ["serve", "--milter", f"inet:{milter_port}@127.0.0.1"]
    args += ["--policy", f"127.0.0.1:{policy_port}", "--db", str(db), "--config", str(config)]
    with (
        Daemon(tmp_path, args, [milter_port, policy_port]) as daemon,
        socket.create_connection(("127.0.0.1", policy_port), timeout=10) as policy,
        MtaClient(milter_port) as milter,
    ):
        assert ask_policy(policy).startswith(BLOCK_PREFIX)
        milter.negotiate()
        milter.macros(b"C", client_addr="127.0.0.2", client_name="mail.fabrikam.example")
        assert milter.connect("mail.fabrikam.example", "127.0.0.2") is None
        # Both connections stay open, idle: the daemon closes them and exits.
        assert daemon.stop(timeout=10) == 0
        assert policy.recv(100) == b""
    log = daemon.log()
    assert "tbes stopped" in log
    assert "Traceback" not in log


def test_a_busy_address_is_one_line_and_exit_2_before_anything_listens(tmp_path: Path) -> None:
    config = tmp_path / "adapters.toml"
    config.write_text('tenant = "contoso"\n', encoding="utf-8")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        free = free_port()
        commands = [
            ["policy", "--listen", f"127.0.0.1:{taken}"],
            ["milter", "--listen", f"inet:{taken}@127.0.0.1"],
            # The milter binds, the policy service cannot: nothing may claim to listen.
            ["serve", "--milter", f"127.0.0.1:{free}", "--policy", f"127.0.0.1:{taken}"],
            ["policy", "--listen", f"127.0.0.1:{free}", "--metrics", f"127.0.0.1:{taken}"],
        ]
        for command in commands:
            args = [*command, "--db", str(tmp_path / "t.db"), "--config", str(config)]
            done = subprocess.run(
                [sys.executable, "-c", TBES, *args], capture_output=True, timeout=30
            )
            assert done.returncode == 2, command
            assert done.stdout == b""
            lines = done.stderr.decode().splitlines()
            assert len(lines) == 1, (command, lines)
            in_use = os.strerror(errno.EADDRINUSE)
            assert lines[0] == f"tbes: error: cannot listen on 127.0.0.1:{taken}: {in_use}"


def test_a_configuration_that_fails_at_start_is_one_line_and_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "adapters.toml"
    config.write_text("policy = 'no_such_policy'\n", encoding="utf-8")
    args = ["policy", "--listen", f"127.0.0.1:{free_port()}"]
    args += ["--db", str(tmp_path / "t.db"), "--config", str(config)]
    done = subprocess.run([sys.executable, "-c", TBES, *args], capture_output=True, timeout=30)
    assert done.returncode == 2
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("tbes: error: ")
    assert "no_such_policy" in lines[0]


def test_tbes_milter_decides_from_headers_and_the_received_hop_is_the_only_header_logged(
    tmp_path: Path,
) -> None:
    config = tmp_path / "adapters.toml"
    config.write_text(config_text(with_rule=True), encoding="utf-8")
    seed_exchange_2007(tmp_path / "t.db")
    port = free_port()
    args = ["milter", "--listen", f"inet:{port}@127.0.0.1", "--db", str(tmp_path / "t.db")]
    with Daemon(tmp_path, [*args, "--config", str(config)], [port]) as daemon:
        with MtaClient(port) as client:
            client.negotiate()
            client.macros(b"C", client_addr="127.0.0.2", client_name="mail.fabrikam.example")
            assert client.connect("mail.fabrikam.example", "127.0.0.2") is None
            assert client.helo("mail.fabrikam.example") is None
            headers = [("Received", EX2007), ("Subject", "secret plans\r\n\x1b[31mred")]
            code, reply = client.message(headers)
        assert (code, reply[:4]) == (b"y", b"550 ")
        assert daemon.stop() == 0
    log = daemon.log()
    assert "secret plans" not in log
    assert "\x1b" not in log
    assert "EXHUB01" not in log


def test_an_unusable_address_is_one_line_and_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "adapters.toml"
    config.write_text('tenant = "contoso"\n', encoding="utf-8")
    missing = tmp_path / "no-such-directory" / "milter.sock"
    args = ["milter", "--listen", f"unix:{missing}"]
    args += ["--db", str(tmp_path / "t.db"), "--config", str(config)]
    done = subprocess.run([sys.executable, "-c", TBES, *args], capture_output=True, timeout=30)
    assert done.returncode == 2
    no_such = os.strerror(errno.ENOENT)
    assert done.stderr.decode().splitlines() == [
        f"tbes: error: cannot listen on unix:{missing}: {no_such}"
    ]


def test_a_sighup_while_the_daemon_opens_does_not_kill_it(tmp_path: Path) -> None:
    # The catalog is a FIFO: opening it blocks the daemon until this test writes it, so
    # the SIGHUP surely arrives while the daemon is starting.
    fifo = tmp_path / "catalog.json"
    os.mkfifo(fifo)
    config = tmp_path / "adapters.toml"
    config.write_text(f'tenant = "contoso"\ncatalog = "{fifo}"\n', encoding="utf-8")
    port = free_port()
    args = ["policy", "--listen", f"127.0.0.1:{port}"]
    args += ["--db", str(tmp_path / "t.db"), "--config", str(config)]
    daemon = Daemon(tmp_path, args, [port])
    process = daemon.start()
    try:
        with fifo.open("w", encoding="utf-8") as writer:  # returns once the daemon reads
            process.send_signal(signal.SIGHUP)
            time.sleep(0.2)
            writer.write(Catalog.default().to_json())
        with daemon, socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            assert ask_policy(sock) == b"action=DUNNO\n\n"
            assert daemon.stop() == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
