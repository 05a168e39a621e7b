"""The milter's cost per message, and Postfix's throughput with and without it (issue 16).

``python benchmarks/milter_load.py [--postfix] [--rounds N] [--transport inet|unix|both]
[--json FILE] [--pymilter-python PY --pymilter-src DIR]``

Each milter runs in its own process; its CPU time (user + system, from ``/proc``) is read
before and after a load and divided by the messages, so the figure is the milter's own cost
whatever drives it. Measured side by side in each round, rounds interleaved, so the ratios
hold on a busy machine (report the medians, and the ratios within each round):

* ``floor``: a bare asyncio protocol that answers negotiation and end of headers and parses
  nothing: what asyncio itself costs per milter connection on this machine;
* ``noop``: the same asyncio server and codec as tbes with a checker that answers "accept"
  at once, on the event loop as tbes's checks over SQLite are (what the milter protocol
  costs on this library);
* ``tbes``: ``tbes milter`` as deployed (configuration, enforcer, SQLite store, decision log);
* ``serve`` (``--postfix`` only): ``tbes serve`` with the milter and the policy service in
  one process, Postfix asking both (``smtpd_milters`` and ``check_policy_service``);
* ``pymilter`` (optional): the previous implementation, the pymilter binding of libmilter,
  given a Python with pymilter and the source tree of that version.

Each variant is measured with the MTA reaching it over TCP on 127.0.0.1 and over a unix
socket (``--transport``, both by default), in the same round, against the same Postfix
alone. Loads: ``direct`` drives each milter from this process as Postfix does
(protocol 6, macros, connect, HELO, 12 headers, end of headers, quit: one message per
milter connection); ``--postfix`` (root, Postfix installed) starts a private Postfix on
loopback (the test harness) and sends with ``smtp-source`` through it, without a milter and
with each. Nothing is asserted: it prints a Markdown table (and ``--json`` the figures).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[1]
T0 = "2025-11-03T08:00:00+00:00"
CONFIG = f"""\
tenant = "receiver"
own_hosts = ["receiver.example"]

[[connector]]
kind = "on_premises"
tenant = "fabrikam"
server_id = "fabrikam-ex2007"
networks = ["127.0.0.0/8"]

[testing]
fixed_time = {T0}
"""
# The message each load sends: an Exchange 2007 sender behind our own relay, 12 headers.
HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (
        b"Received",
        b"from mail.fabrikam.example (mail.fabrikam.example [203.0.113.25])\n\tby "
        b"mx1.receiver.example (Postfix) with ESMTPS id 4Y2kLm0QzXz9sWx\n\tfor "
        b"<postmaster@receiver.example>; Mon, 3 Nov 2025 08:00:01 +0000 (UTC)",
    ),
    (
        b"Received",
        b"from EXHUB01.fabrikam.local (10.1.2.3) by mail.fabrikam.example (10.1.2.4) with "
        b"Microsoft SMTP Server (TLS) id 8.3.83.6; Mon, 3 Nov 2025 09:00:00 +0100",
    ),
    (
        b"Received",
        b"from EXMBX01.fabrikam.local ([10.1.2.7]) by EXHUB01.fabrikam.local ([10.1.2.3]) "
        b"with mapi; Mon, 3 Nov 2025 08:59:59 +0100",
    ),
    (b"From", b"Alice <alice@fabrikam.example>"),
    (b"To", b"Bob <postmaster@receiver.example>"),
    (b"Subject", b"quarterly figures"),
    (b"Message-ID", b"<1@fabrikam.example>"),
    (b"Date", b"Mon, 3 Nov 2025 09:00:00 +0100"),
    (b"MIME-Version", b"1.0"),
    (b"Content-Type", b"text/plain; charset=utf-8"),
    (b"X-Mailer", b"Microsoft Exchange"),
    (b"Thread-Index", b"AQHb1234567890abcdef=="),
)
_NOOP_MAIN = """\
import asyncio, sys
from tbes.adapters.config import AdapterConfig
from tbes.adapters.milter import MilterLimits, MilterService
from tbes.decision import Action, Decision
from tbes.stages import DEFAULT_STAGE_TABLE
import datetime as dt

ACCEPT = Decision(action=Action.ACCEPT, stage=DEFAULT_STAGE_TABLE.stages[0], reply=None,
                  report=False, paused=False, elapsed=dt.timedelta(0), next_change=None,
                  reason="noop")

class Noop:
    def check(self, conn, received):
        return ACCEPT

async def main():
    # Checks on the event loop, as tbes milter makes them over its SQLite store.
    limits = MilterLimits(inline=True)
    server = await MilterService(Noop(), AdapterConfig(), limits=limits).start(sys.argv[1])
    await server.serve_forever()

asyncio.run(main())
"""
# The floor: a bare asyncio protocol that answers option negotiation (asking for the steps
# and no-reply flags tbes's codec asks for, 0xBF39C) and every end of headers with
# "accept", and parses nothing else. What any milter on asyncio pays per message here. It
# receives into one buffer it keeps: a plain Protocol has the loop allocate 256 KiB per
# read, which in a fresh process glibc maps and unmaps each time (three system calls a
# read) while a process that has freed a large block once (as tbes has) does not.
_FLOOR_MAIN = """\
import asyncio, struct, sys

ACCEPT = struct.pack(">L", 1) + b"a"
READ = memoryview(bytearray(65536))

class Floor(asyncio.BufferedProtocol):
    def connection_made(self, transport):
        self.transport, self.buffer = transport, b""
    def get_buffer(self, hint):
        return READ
    def buffer_updated(self, size):
        buffer, start = self.buffer + READ[:size].tobytes(), 0
        while len(buffer) - start >= 4:
            (length,) = struct.unpack_from(">L", buffer, start)
            if len(buffer) - start - 4 < length:
                break
            command, body = buffer[start + 4], start + 5
            start += 4 + length
            if command == 79:  # O: negotiate
                version, actions, protocol = struct.unpack_from(">LLL", buffer, body)
                reply = struct.pack(">LLL", min(version, 6), 0, protocol & 0xBF39C)
                self.transport.write(struct.pack(">L", 13) + b"O" + reply)
            elif command == 78:  # N: end of headers
                self.transport.write(ACCEPT)
            elif command == 81:  # Q: quit
                self.transport.close()
        self.buffer = buffer[start:]

async def main():
    loop, address = asyncio.get_running_loop(), sys.argv[1]
    if address.startswith("unix:"):
        server = await loop.create_unix_server(Floor, address.removeprefix("unix:"))
    else:
        port, host = address.removeprefix("inet:").split("@")
        server = await loop.create_server(Floor, host, int(port))
    await server.serve_forever()

asyncio.run(main())
"""
_COMMAND_MAIN = "import sys; from tbes.cli.daemons import milter; milter.main(sys.argv[1:])"
_SERVE_MAIN = "import sys; from tbes.cli.daemons import serve; serve.main(sys.argv[1:])"


def _packet(command: bytes, payload: bytes = b"") -> bytes:
    return struct.pack(">L", len(payload) + 1) + command + payload


def cpu_seconds(pid: int) -> float:
    """The CPU time (user + system) process ``pid`` has used, from ``/proc``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# Where a process listens: a TCP port on 127.0.0.1, or the path of a unix socket.
Endpoint = int | Path
TRANSPORTS = ("inet", "unix")


def endpoint(transport: str, work: Path, name: str) -> Endpoint:
    """A free endpoint of ``transport`` ("inet" or "unix")."""
    return free_port() if transport == "inet" else work / f"{name}.sock"


def milter_address(where: Endpoint) -> str:
    """``where`` as tbes's listen addresses and Postfix's ``smtpd_milters`` write it."""
    return f"inet:{where}@127.0.0.1" if isinstance(where, int) else f"unix:{where}"


def _postfix_address(where: Endpoint) -> str:
    return f"inet:127.0.0.1:{where}" if isinstance(where, int) else f"unix:{where}"


def _connect(where: Endpoint) -> socket.socket:
    if isinstance(where, int):
        return socket.create_connection(("127.0.0.1", where), 0.2)
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.settimeout(0.2)
        sock.connect(str(where))
    except OSError:
        sock.close()
        raise
    return sock


def _wait_for(where: Endpoint, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the milter exited with {process.returncode}")
        try:
            _connect(where).close()
        except OSError:
            time.sleep(0.05)
            continue
        if isinstance(where, Path):
            where.chmod(0o666)  # Postfix's smtpd runs as the postfix user
        return
    raise TimeoutError(f"nothing listens on {milter_address(where)}")


class Milter:
    """One milter variant in a child process."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        where: Endpoint,
        env: dict[str, str],
        policy: Endpoint | None = None,
    ) -> None:
        self.name = name
        self.where = where
        self.policy = policy
        self.process = subprocess.Popen(
            list(argv), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait_for(where, self.process)
        if policy is not None:
            _wait_for(policy, self.process)

    def cpu(self) -> float:
        """CPU seconds used so far."""
        return cpu_seconds(self.process.pid)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


async def _read(reader: asyncio.StreamReader) -> bytes:
    (length,) = struct.unpack(">L", await reader.readexactly(4))
    return await reader.readexactly(length)


async def _one_message(where: Endpoint) -> None:
    """One milter connection as Postfix opens it for one SMTP session of one message."""
    if isinstance(where, int):
        reader, writer = await asyncio.open_connection("127.0.0.1", where)
    else:
        reader, writer = await asyncio.open_unix_connection(where)
    writer.write(_packet(b"O", struct.pack(">LLL", 6, 0x1FF, 0x1FFFFF)))
    reply = await _read(reader)
    protocol = struct.unpack(">LLL", reply[1:13])[2]

    async def event(command: bytes, payload: bytes, no_reply: int) -> None:
        writer.write(_packet(command, payload))
        if not protocol & no_reply:
            await _read(reader)

    macros = b"C{client_addr}\x00127.0.0.2\x00{client_name}\x00mail.fabrikam.example\x00"
    writer.write(_packet(b"D", macros))
    await event(b"C", b"mail.fabrikam.example\x004\x00\x19127.0.0.2\x00", 0x1000)
    await event(b"H", b"mail.fabrikam.example\0", 0x2000)
    for command, flag, no_reply in ((b"M", 0x4, 0x4000), (b"R", 0x8, 0x8000)):
        if not protocol & flag:
            await event(command, b"<x@example.org>\0", no_reply)
    if not protocol & 0x200:
        await event(b"T", b"", 0x10000)
    for name, value in HEADERS:
        await event(b"L", name + b"\0" + value + b"\0", 0x80)
    writer.write(_packet(b"N"))
    answer = await _read(reader)
    if answer[:1] not in (b"a", b"c"):
        raise RuntimeError(f"unexpected answer {answer!r}")
    writer.write(_packet(b"Q"))
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def _direct_load(where: Endpoint, messages: int, concurrency: int) -> None:
    queue = iter(range(messages))

    async def worker() -> None:
        for _ in queue:
            await _one_message(where)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def direct(milter: Milter, messages: int, concurrency: int) -> float:
    """Milter CPU µs per message under the direct load."""
    asyncio.run(_direct_load(milter.where, min(50, messages), concurrency))  # warm up
    before = milter.cpu()
    asyncio.run(_direct_load(milter.where, messages, concurrency))
    return (milter.cpu() - before) / messages * 1e6


@contextmanager
def _postfix(milter: Endpoint | None, policy: Endpoint | None = None) -> Iterator[int]:
    sys.path[:0] = [str(REPO / "tests")]
    from integration.postfix import Listener, PostfixServer

    main_cf = "" if milter is None else f"smtpd_milters = {_postfix_address(milter)}\n"
    main_cf += "milter_protocol = 6\nmilter_default_action = tempfail\n"
    main_cf += "smtpd_client_connection_count_limit = 0\nsmtpd_client_connection_rate_limit = 0\n"
    if policy is not None:
        # As docs/postfix.md has it.
        main_cf += (
            "smtpd_recipient_restrictions = reject_unauth_destination,"
            f" check_policy_service {{ {_postfix_address(policy)}, timeout=10s,"
            " default_action=DUNNO }\n"
        )
    with PostfixServer(main_cf, [Listener(free_port())]) as server:
        yield server.port


def through_postfix(
    milter: Milter | None,
    message: Path,
    messages: int,
    sessions: int,
) -> tuple[float, float | None]:
    """Messages per second through Postfix with smtp-source, and milter CPU µs per message."""
    source = shutil.which("smtp-source", path="/usr/sbin:/usr/bin") or "smtp-source"
    where, policy = (None, None) if milter is None else (milter.where, milter.policy)
    with _postfix(where, policy) as port:
        argv = [source, "-s", str(sessions), "-F", str(message), "-f", "alice@fabrikam.example"]
        argv += ["-t", "postmaster@receiver.example", f"127.0.0.1:{port}"]
        subprocess.run([*argv[:1], "-m", "50", *argv[1:]], check=True, timeout=120)
        before = None if milter is None else milter.cpu()
        started = time.perf_counter()
        subprocess.run([*argv[:1], "-m", str(messages), *argv[1:]], check=True, timeout=900)
        elapsed = time.perf_counter() - started
        cpu = None if milter is None or before is None else milter.cpu() - before
    return messages / elapsed, None if cpu is None else cpu / messages * 1e6


def postfix_available() -> str | None:
    """Why the Postfix part cannot run here, or None if it can."""
    if os.geteuid() != 0:
        return "it needs root (it starts a private Postfix)"
    if shutil.which("postfix", path="/usr/sbin:/usr/bin") is None:
        return "Postfix is not installed"
    if shutil.which("smtp-source", path="/usr/sbin:/usr/bin") is None:
        return "smtp-source (postfix's test tools) is not installed"
    return None


class Variant(NamedTuple):
    """One milter process to measure: its name, how to start it, and its environment."""

    name: str
    label: str
    main: str
    env: dict[str, str]
    postfix_only: bool = False


def _start(variant: Variant, work: Path, config: Path, tag: str, transport: str) -> Milter:
    where = endpoint(transport, work, f"milter-{tag}")
    argv = [sys.executable, "-c", variant.main]
    policy = None
    if variant.name in ("noop", "floor"):
        argv.append(milter_address(where))
    elif variant.name == "serve":
        policy = endpoint(transport, work, f"policy-{tag}")
        argv += ["--milter", milter_address(where), "--policy", milter_address(policy)]
        argv += ["--db", str(work / f"state-{tag}.db"), "--config", str(config)]
    else:
        argv += ["--listen", milter_address(where), "--db", str(work / f"state-{tag}.db")]
        argv += ["--config", str(config)]
    if variant.name == "pymilter":
        argv[0] = variant.env["TBES_BENCH_PYTHON"]
    return Milter(variant.label, argv, where, variant.env, policy)


def measure(
    variants: Sequence[Variant],
    *,
    messages: int,
    concurrency: int,
    rounds: int,
    postfix: bool,
    work: Path,
    config: Path,
    message: Path,
    transports: Sequence[str] = ("inet",),
) -> dict[str, list[dict[str, dict[str, float | None]]]]:
    """Per transport, per round, per variant: ``direct_us``, ``postfix_rate``, ``postfix_us``.

    Postfix alone is measured once a round; each transport's rows of that round share it.
    """
    results: dict[str, list[dict[str, dict[str, float | None]]]] = {t: [] for t in transports}
    for number in range(rounds):
        alone: dict[str, dict[str, float | None]] = {}
        if postfix:
            rate, _ = through_postfix(None, message, messages, concurrency)
            alone["alone"] = {"direct_us": None, "postfix_rate": rate, "postfix_us": None}
        for transport in transports:
            row = dict(alone)
            for variant in variants:
                if variant.postfix_only and not postfix:
                    continue
                tag = f"{number}-{transport}-{variant.name}"
                milter = _start(variant, work, config, tag, transport)
                try:
                    figures: dict[str, float | None] = {"direct_us": None}
                    if not variant.postfix_only:
                        figures["direct_us"] = direct(milter, messages, concurrency)
                    figures["postfix_rate"] = figures["postfix_us"] = None
                    if postfix:
                        rate, cpu = through_postfix(milter, message, messages, concurrency)
                        figures["postfix_rate"], figures["postfix_us"] = rate, cpu
                    row[variant.name] = figures
                finally:
                    milter.stop()
            results[transport].append(row)
    return results


def _median(values: Sequence[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def _ratio(row: dict[str, dict[str, float | None]], name: str, key: str, base: str) -> float | None:
    value, against = row.get(name, {}).get(key), row.get(base, {}).get(key)
    return None if value is None or not against else value / against


def summary(
    rounds: list[dict[str, dict[str, float | None]]],
) -> dict[str, dict[str, float | None]]:
    """Medians per variant: CPU per message (direct, via Postfix), rate, ratios in-round.

    ``ratio`` is the median over rounds of the rate over Postfix alone's in the same round;
    ``cpu_vs_noop`` the median over rounds of the CPU per message over the noop milter's.
    """
    names = list(rounds[0]) if rounds else []
    out: dict[str, dict[str, float | None]] = {}
    for name in names:
        rows = [each[name] for each in rounds if name in each]

        out[name] = {
            "direct_us": _median([row["direct_us"] for row in rows]),
            "postfix_us": _median([row["postfix_us"] for row in rows]),
            "postfix_rate": _median([row["postfix_rate"] for row in rows]),
            "ratio": _median([_ratio(each, name, "postfix_rate", "alone") for each in rounds]),
            "direct_vs_noop": _median([_ratio(each, name, "direct_us", "noop") for each in rounds]),
            "postfix_vs_noop": _median(
                [_ratio(each, name, "postfix_us", "noop") for each in rounds]
            ),
        }
    return out


LABELS = {
    "alone": "Postfix alone",
    "floor": "bare asyncio floor (answers negotiation and end of headers, parses nothing)",
    "noop": "noop (same server, a checker that only accepts)",
    "tbes": "tbes milter (enforcer, SQLite, decision log)",
    "serve": "tbes serve: milter + policy service (one process)",
    "pymilter": "pymilter (previous tbes milter)",
}


TRANSPORT_LABELS = {
    "inet": "TCP on loopback (`inet:PORT@127.0.0.1`)",
    "unix": "unix socket (`unix:/path`)",
}


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} µs"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def table(rounds: list[dict[str, dict[str, float | None]]]) -> list[str]:
    """The Markdown table of medians and, per round, the throughput ratios."""
    medians = summary(rounds)
    lines = [
        "| process | CPU per message, direct | CPU per message, via Postfix "
        "| x noop's CPU (direct / via Postfix) | Postfix msg/s | ratio to Postfix alone |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, row in medians.items():
        rate = "-" if row["postfix_rate"] is None else f"{row['postfix_rate']:,.0f}"
        lines.append(
            f"| {LABELS.get(name, name)} | {_us(row['direct_us'])} | {_us(row['postfix_us'])} "
            f"| {_x(row['direct_vs_noop'])} / {_x(row['postfix_vs_noop'])} | {rate} "
            f"| {_x(row['ratio'] if name != 'alone' else 1.0)} |"
        )
    if any("alone" in each for each in rounds):
        lines += ["", "Ratios to Postfix alone within each round:", ""]
        for number, each in enumerate(rounds, 1):
            base = each["alone"]["postfix_rate"] or 1.0
            parts = [
                f"{name} {(figures['postfix_rate'] or 0.0) / base:.2f}"
                for name, figures in each.items()
                if name != "alone"
            ]
            lines.append(f"- round {number} (Postfix alone {base:,.0f} msg/s): " + ", ".join(parts))
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds")
    parser.add_argument("--postfix", action="store_true", help="also through a private Postfix")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--transport",
        choices=(*TRANSPORTS, "both"),
        default="both",
        help="between the MTA and the milter: TCP on loopback, a unix socket, or both",
    )
    parser.add_argument("--pymilter-python", help="a Python with pymilter, attrs, cattrs, click")
    parser.add_argument("--pymilter-src", help="the src/ of the pymilter-based tbes")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="tbes-milter-load-"))
    work.chmod(0o755)  # Postfix's smtpd (the postfix user) reaches the unix sockets in it
    transports = TRANSPORTS if args.transport == "both" else (args.transport,)
    config = work / "adapters.toml"
    config.write_text(CONFIG, encoding="utf-8")
    message = work / "message.eml"
    lines = [name + b": " + value.replace(b"\n", b"\r\n") for name, value in HEADERS[1:]]
    message.write_bytes(b"\r\n".join(lines) + b"\r\n\r\nHello.\r\n")
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    variants = [
        Variant("floor", LABELS["floor"], _FLOOR_MAIN, env),
        Variant("noop", LABELS["noop"], _NOOP_MAIN, env),
        Variant("tbes", LABELS["tbes"], _COMMAND_MAIN, env),
        Variant("serve", LABELS["serve"], _SERVE_MAIN, env, postfix_only=True),
    ]
    if args.pymilter_python and args.pymilter_src:
        old_env = dict(os.environ, PYTHONPATH=args.pymilter_src)
        old_env["TBES_BENCH_PYTHON"] = args.pymilter_python
        variants.append(Variant("pymilter", LABELS["pymilter"], _COMMAND_MAIN, old_env))
    try:
        rounds = measure(
            variants,
            messages=args.messages,
            concurrency=args.concurrency,
            rounds=args.rounds,
            postfix=args.postfix,
            work=work,
            config=config,
            message=message,
            transports=transports,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    heading = (
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs, load average {load} at the end, {args.rounds} round(s) of "
        f"{args.messages} messages, {args.concurrency} at a time"
    )
    print(heading)
    for transport, each in rounds.items():
        print(f"\n{TRANSPORT_LABELS[transport]}:\n")
        print("\n".join(table(each)))
    if args.json is not None:
        data = {
            "heading": heading,
            "transports": {
                transport: {"rounds": each, "medians": summary(each)}
                for transport, each in rounds.items()
            },
        }
        args.json.write_text(json.dumps(data, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
