"""``tbes serve`` delivers the events of its checks to the configured webhook, off the mail path.

The daemon runs as an administrator starts it (the ``tbes`` entry point, a child process)
with a ``[[notifier]]`` webhook on loopback. A server stored in stage 1 has reached stage 8
by the daemon's (fixed) time: the policy request that sees it announces the stages it
reached, the events go into the outbox with the marker, and the sender thread posts them.
A SIGHUP that drops the notifier stops the posts; the outbox keeps what it did not send.
"""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon_support import Daemon, ask_policy, config_text, free_port, seed_exchange_2007
from notify_support import HookServer

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def hook() -> Iterator[HookServer]:
    server = HookServer().start()
    yield server
    server.stop()


def _wait(check: object, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_tbes_serve_posts_the_events_of_its_checks(tmp_path: Path, hook: HookServer) -> None:
    config = tmp_path / "adapters.toml"
    notifier = f'\n[[notifier]]\nname = "hook"\ntype = "webhook"\nurl = "{hook.url}"\ntimeout = 5\n'
    config.write_text(config_text(with_rule=True) + notifier, encoding="utf-8")
    db = tmp_path / "state.db"
    seed_exchange_2007(db)  # stage 1 announced at T0, no notifier then
    port = free_port()
    args = ["serve", "--policy", f"127.0.0.1:{port}", "--db", str(db), "--config", str(config)]
    with Daemon(tmp_path, args, [port]) as daemon:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            assert ask_policy(sock).startswith(b"action=550 ")
        _wait(lambda: len(hook.kept()) == 3)
        bodies = list(hook.kept().values())
        assert [(b["kind"], b["stage"]) for b in bodies] == [
            ("STAGE_CHANGED", 8),
            ("BLOCKING_STARTED", 8),
            ("FULLY_BLOCKED", 8),
        ]
        assert all(b["server_id"] == "fabrikam-edge" for b in bodies)
        assert [key for key, _ in hook.posts] == [b["id"] for b in bodies]  # each once
        # A reload without the notifier: the daemon keeps serving, and posts nothing more.
        config.write_text(config_text(with_rule=True), encoding="utf-8")
        daemon.signal(signal.SIGHUP)
        daemon.wait_for_log("reloaded")
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            assert ask_policy(sock).startswith(b"action=550 ")
        assert daemon.stop() == 0
    assert len(hook.posts) == 3
