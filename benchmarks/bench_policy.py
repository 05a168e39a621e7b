"""The Postfix policy service's CPU per request, against a do-nothing responder (issue 16).

``python benchmarks/bench_policy.py [--short N] [--persistent C] [--requests M] [--rounds R]``

Each server runs in a process of its own; its CPU time (user + system of every thread,
from ``/proc``) is read before and after a load and divided by the requests answered, so
the figure is the server's own cost whatever drives it. Measured in one run, in
interleaved rounds (every variant under every load in each round; the median of the
rounds), so the ratios hold on a busy machine:

* ``floor``: a bare asyncio protocol that answers ``action=DUNNO`` to every empty line,
  parsing nothing: what the sockets and the event loop cost;
* ``noop``: :class:`~tbes.adapters.postfix_policy.PolicyService`, the same server code as
  deployed, with a checker that answers "accept" at once;
* ``tbes``: ``tbes policy`` as deployed (configuration file, enforcer, SQLite store,
  decision log at INFO written to a file).

Loads, driven from this process over loopback as Postfix's policy client sends them (a
request of some 30 attributes, as Postfix 3.x writes it, one at a time on a connection):
``short``, many connections of one request each; ``persistent``, a few connections of many
requests each (Postfix keeps a policy connection per ``smtpd`` process and reuses it). The
requests name three kinds of client in turn: a server with a stored state (stage 8:
blocked), a server of an enforced connector with no state, and a client no connector
matches. Nothing is asserted on speed; the workload is checked (every answer is the one
expected for its client) so that the benchmark cannot quietly measure the wrong thing.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.milter_load import cpu_seconds, free_port
from tbes.adapters.config import make_enforcer, parse_config
from tbes.store import SQLiteStore

__all__ = ["main", "measure"]

REPO = Path(__file__).resolve().parents[1]
# Stage 8 (blocked all hour) for the stored server: 91 days after its detection.
DETECTED = "2025-03-03T09:00:00+00:00"
FIXED = "2025-06-02T09:00:00+00:00"
CONFIG = f"""\
tenant = "receiver"
own_hosts = ["receiver.example"]
# One state per connector: the RCPT check reads it and refuses (with server identity it
# would answer DUNNO for a server silent for 91 days, leaving the milter to decide).
identity = "connector"

[[connector]]
kind = "on_premises"
tenant = "fabrikam"
name = "fabrikam-edge"
networks = ["203.0.113.0/24"]

[[connector]]
kind = "on_premises"
tenant = "contoso"
name = "contoso-edge"
networks = ["198.51.100.0/24"]

[testing]
fixed_time = {FIXED}
"""
EX2007 = (
    "from EXHUB01.fabrikam.local (10.1.2.3) by mail.fabrikam.example (203.0.113.25) "
    "with Microsoft SMTP Server id 8.3.83.6; Mon, 3 Mar 2025 10:00:00 +0100"
)
# Postfix 3.x's request (SMTPD_POLICY_README), with the client address left to fill in.
_REQUEST = """\
request=smtpd_access_policy
protocol_state=RCPT
protocol_name=ESMTP
helo_name=mail.example.net
queue_id=8045F2AB23
sender=alice@example.net
recipient=postmaster@receiver.example
recipient_count=0
client_address={address}
client_name=mail.example.net
reverse_client_name=mail.example.net
instance=123.456.7
sasl_method=
sasl_username=
sasl_sender=
size=12345
ccert_subject=
ccert_issuer=
ccert_fingerprint=
ccert_pubkey_fingerprint=
encryption_protocol=TLSv1.3
encryption_cipher=TLS_AES_256_GCM_SHA384
encryption_keysize=256
etrn_domain=
stress=
client_port=41234
policy_context=
server_address=192.0.2.10
server_port=25
compatibility_level=3.6
mail_version=3.7.11

"""
# (client address, the answer's first bytes): stored and blocked, enforced without a
# state, matched by no connector.
CLIENTS = (
    ("203.0.113.25", b"action=550 5.7.230 "),
    ("198.51.100.7", b"action=DUNNO\n\n"),
    ("192.0.2.99", b"action=DUNNO\n\n"),
)
REQUESTS = tuple(_REQUEST.format(address=address).encode() for address, _ in CLIENTS)

# It receives into one buffer it keeps, as the milter benchmark's floor does: a plain
# Protocol has the loop allocate 256 KiB per read, which glibc maps and unmaps in a fresh
# process (three system calls a read) but not in one that has freed a large block, as tbes.
_FLOOR_MAIN = """\
import asyncio, sys

READ = memoryview(bytearray(65536))

class Floor(asyncio.BufferedProtocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buffer = b""
    def get_buffer(self, hint):
        return READ
    def buffer_updated(self, size):
        self.buffer += READ[:size].tobytes()
        count = self.buffer.count(b"\\n\\n")
        if count:
            self.buffer = self.buffer[self.buffer.rindex(b"\\n\\n") + 2:]
            self.transport.write(b"action=DUNNO\\n\\n" * count)

async def main():
    host, _, port = sys.argv[1].rpartition(":")
    server = await asyncio.get_running_loop().create_server(Floor, host, int(port))
    await server.serve_forever()

asyncio.run(main())
"""
_NOOP_MAIN = """\
import asyncio, sys
from tbes.adapters.config import AdapterConfig
from tbes.adapters.postfix_policy import PolicyLimits, PolicyService
from tbes.decision import Action, Decision

ACCEPT = Decision(Action.ACCEPT, None, None, False, False, __import__("datetime").timedelta(0),
                  None, "noop")

class Noop:
    def check(self, conn, received):
        return ACCEPT

async def main():
    service = PolicyService(Noop(), AdapterConfig(), PolicyLimits(inline_checks=True))
    server = await service.start(sys.argv[1])
    await server.serve_forever()

asyncio.run(main())
"""
_COMMAND_MAIN = "import sys; from tbes.cli.daemons import policy; policy.main(sys.argv[1:])"
_SERVE_MAIN = "import sys; from tbes.cli.daemons import serve; serve.main(sys.argv[1:])"


class Server:
    """One server variant in a child process, on a loopback port."""

    def __init__(self, name: str, argv: Sequence[str], port: int, log: Path) -> None:
        self.name = name
        self.port = port
        env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                list(argv), env=env, stdout=subprocess.DEVNULL, stderr=out
            )
        deadline = time.monotonic() + 30
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{name} exited with {self.process.returncode}: see {log}")
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name}: nothing listens on {port}") from None
                time.sleep(0.05)

    def cpu(self) -> float:
        """CPU seconds used so far, every thread."""
        return cpu_seconds(self.process.pid)

    def stop(self) -> None:
        """SIGTERM (the daemon drains), then SIGKILL if it lingers."""
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


async def _session(port: int, count: int, offset: int, check: bool) -> None:
    """One connection sending ``count`` requests, each after the previous answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for index in range(offset, offset + count):
            kind = index % len(REQUESTS)
            writer.write(REQUESTS[kind])
            answer = await reader.readuntil(b"\n\n")
            if check and not answer.startswith(CLIENTS[kind][1]):
                raise RuntimeError(f"client {CLIENTS[kind][0]} got {answer!r}")
    finally:
        writer.close()
        await writer.wait_closed()


async def _load(port: int, connections: int, each: int, concurrency: int, check: bool) -> None:
    queue = iter(range(connections))

    async def worker() -> None:
        for number in queue:
            await _session(port, each, number, check)

    await asyncio.gather(*(worker() for _ in range(min(concurrency, connections))))


def _cost(server: Server, connections: int, each: int, concurrency: int, check: bool) -> float:
    """Server CPU µs per request under one load."""
    before = server.cpu()
    asyncio.run(_load(server.port, connections, each, concurrency, check))
    return (server.cpu() - before) / (connections * each) * 1e6


def _prepare(work: Path) -> tuple[Path, Path]:
    """The configuration file and a SQLite store holding the blocked server's state."""
    config_path = work / "adapters.toml"
    config_path.write_text(CONFIG, encoding="utf-8")
    db = work / "policy.db"
    config = parse_config(CONFIG.replace(FIXED, DETECTED))
    store = SQLiteStore(db)
    quiet = logging.getLogger("tbes.adapters.config")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the fixed clock's warning: meant for daemons
    try:
        enforcer = make_enforcer(config, store)
        conn = config.connection(peer_ip=CLIENTS[0][0], peer_host=None, tls_subject=None)
        enforcer.check(conn, [EX2007])  # what the milter would have recorded
    finally:
        quiet.setLevel(level)
        store.close()
    return config_path, db


def measure(
    *, short: int, persistent: int, requests: int, rounds: int, concurrency: int
) -> dict[str, Any]:
    """Every variant under both loads, ``rounds`` times interleaved; medians in µs."""
    work = Path(tempfile.mkdtemp(prefix="tbes-bench-policy-"))
    config, db = _prepare(work)
    log = work / "servers.log"
    specs = {
        "floor": [sys.executable, "-c", _FLOOR_MAIN],
        "noop": [sys.executable, "-c", _NOOP_MAIN],
        "tbes": [sys.executable, "-c", _COMMAND_MAIN],
    }
    servers: dict[str, Server] = {}
    try:
        for name, argv in specs.items():
            port = free_port()
            args = [*argv, f"127.0.0.1:{port}"]
            if name == "tbes":
                args = [*argv, "--listen", f"127.0.0.1:{port}", "--db", str(db)]
                args += ["--config", str(config), "--log-target", "stderr"]
            servers[name] = Server(name, args, port, log)
        for server in servers.values():  # warm up, and check every answer once
            _cost(server, 6, 1, 2, check=server.name == "tbes")
            _cost(server, 2, 6, 2, check=server.name == "tbes")
        samples: dict[str, dict[str, list[float]]] = {
            name: {"short": [], "persistent": []} for name in servers
        }
        for _ in range(rounds):
            for name, server in servers.items():
                samples[name]["short"].append(_cost(server, short, 1, concurrency, False))
                samples[name]["persistent"].append(
                    _cost(server, persistent, requests, persistent, False)
                )
    finally:
        for server in servers.values():
            server.stop()
    decisions = sum(1 for line in log.read_text().splitlines() if " msg=decision " in line)
    answered = 6 + 2 * 6 + rounds * (short + persistent * requests)  # warm-up, then rounds
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "short": short,
        "persistent": persistent,
        "requests": requests,
        "rounds": rounds,
        "concurrency": concurrency,
        "decision_lines": decisions,
        "answered": dict.fromkeys(specs, answered),
        "cpu_us": {
            name: {load: statistics.median(values) for load, values in loads.items()}
            for name, loads in samples.items()
        },
        "samples_us": samples,
    }


def _smtp_source(port: int, message: Path, messages: int, sessions: int) -> float:
    """Messages per second that ``smtp-source`` gets through Postfix on ``port``."""
    source = shutil.which("smtp-source", path="/usr/sbin:/usr/bin") or "smtp-source"
    argv = [source, "-s", str(sessions), "-F", str(message), "-f", "alice@fabrikam.example"]
    argv += ["-t", "postmaster@receiver.example", f"127.0.0.1:{port}"]
    subprocess.run([argv[0], "-m", "50", *argv[1:]], check=True, timeout=300)  # warm up
    started = time.perf_counter()
    subprocess.run([argv[0], "-m", str(messages), *argv[1:]], check=True, timeout=900)
    return messages / (time.perf_counter() - started)


def through_postfix(*, messages: int, sessions: int, rounds: int) -> dict[str, Any]:
    """Postfix alone against Postfix with ``tbes serve`` as its milter and policy service.

    A private Postfix on loopback (the integration tests' harness, as root) with the
    discard transport; ``smtp-source`` sends one message per session, ``sessions`` at a
    time, from the Exchange 2007 server of ``milter_load.py`` (an enforced connector, so
    every message is observed by the milter and every recipient asked of the policy
    service). Rounds alternate the two set-ups; the medians are reported, with the tbes
    process's CPU per message (milter and policy service together).
    """
    sys.path[:0] = [str(REPO / "tests"), str(REPO)]
    from benchmarks.milter_load import CONFIG as SERVE_CONFIG
    from benchmarks.milter_load import HEADERS
    from integration.postfix import Listener, PostfixServer

    work = Path(tempfile.mkdtemp(prefix="tbes-bench-postfix-"))
    config = work / "adapters.toml"
    config.write_text(SERVE_CONFIG, encoding="utf-8")
    message = work / "message.eml"
    lines = [name + b": " + value.replace(b"\n", b"\r\n") for name, value in HEADERS[1:]]
    message.write_bytes(b"\r\n".join(lines) + b"\r\n\r\nHello.\r\n")
    milter_port, policy_port = free_port(), free_port()
    base = "milter_protocol = 6\nmilter_default_action = tempfail\n"
    base += "smtpd_client_connection_count_limit = 0\nsmtpd_client_connection_rate_limit = 0\n"
    policy = "smtpd_recipient_restrictions = reject_unauth_destination, "
    policy += f"check_policy_service inet:127.0.0.1:{policy_port}\n"
    setups = {
        "alone": base,
        "milter+policy": base + f"smtpd_milters = inet:127.0.0.1:{milter_port}\n" + policy,
        "policy": base + policy,
    }
    argv = [sys.executable, "-c", _SERVE_MAIN, "--milter", f"inet:{milter_port}@127.0.0.1"]
    argv += ["--policy", f"127.0.0.1:{policy_port}", "--db", str(work / "serve.db")]
    argv += ["--config", str(config)]
    serve = Server("serve", argv, policy_port, work / "serve.log")
    rates: dict[str, list[float]] = {name: [] for name in setups}
    cpu: dict[str, list[float]] = {name: [] for name in setups}
    try:
        for _ in range(rounds):
            for name, main_cf in setups.items():
                with PostfixServer(main_cf, [Listener(free_port())]) as postfix:
                    before = serve.cpu()
                    rates[name].append(_smtp_source(postfix.port, message, messages, sessions))
                    cpu[name].append((serve.cpu() - before) / (messages + 50) * 1e6)
    finally:
        serve.stop()
    decisions = (work / "serve.log").read_text(errors="replace").count(" msg=decision ")
    return {
        "messages": messages,
        "sessions": sessions,
        "rounds": rounds,
        "per_s": {name: statistics.median(values) for name, values in rates.items()},
        "tbes_cpu_us": {name: statistics.median(values) for name, values in cpu.items()},
        "decision_lines": decisions,
        "samples": {"per_s": rates, "tbes_cpu_us": cpu},
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Command line; prints (or writes with ``--json``) the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--short", type=int, default=3000, help="connections of one request")
    parser.add_argument("--persistent", type=int, default=10, help="long-lived connections")
    parser.add_argument("--requests", type=int, default=1000, help="requests per long one")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=10, help="short connections at once")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument(
        "--postfix",
        type=int,
        metavar="MESSAGES",
        help="also Postfix alone against Postfix with tbes serve (root, Postfix installed)",
    )
    args = parser.parse_args(argv)
    results = measure(
        short=args.short,
        persistent=args.persistent,
        requests=args.requests,
        rounds=args.rounds,
        concurrency=args.concurrency,
    )
    if args.postfix:
        results["postfix"] = through_postfix(messages=args.postfix, sessions=16, rounds=2)
    text = json.dumps(results, indent=1)
    if args.json is not None:
        args.json.write_text(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
