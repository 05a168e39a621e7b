"""The milter's cost per message, and Postfix's throughput with and without it (issue 16).

``python benchmarks/milter_load.py [--postfix] [--pymilter-python PY --pymilter-src DIR]``

Each milter runs in its own process; its CPU time (user + system, from ``/proc``) is read
before and after a load and divided by the messages, so the figure is the milter's own cost
whatever drives it. Measured in one run, so the ratios hold on a busy machine:

* ``noop``: the same asyncio server and codec with a checker that answers "accept" at once
  (the floor: what the milter protocol costs on this library);
* ``tbes``: ``tbes milter`` as deployed (configuration, enforcer, SQLite store);
* ``pymilter`` (optional): the previous implementation, the pymilter binding of libmilter,
  given a Python with pymilter and the source tree of that version.

Loads: ``direct`` drives each milter from this process over loopback as Postfix does
(protocol 6, macros, connect, HELO, 12 headers, end of headers, quit: one message per
milter connection); ``--postfix`` (root, Postfix installed) starts a private Postfix on
loopback (the test harness) and sends with ``smtp-source`` through it, without a milter and
with each. Nothing is asserted: it prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

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
from tbes.adapters.milter import MilterService
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
    server = await MilterService(Noop(), AdapterConfig()).start(sys.argv[1])
    await server.serve_forever()

asyncio.run(main())
"""
_COMMAND_MAIN = "import sys; from tbes.cli.daemons import milter; milter.main(sys.argv[1:])"


def _packet(command: bytes, payload: bytes = b"") -> bytes:
    return struct.pack(">L", len(payload) + 1) + command + payload


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the milter exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"no milter on port {port}")


class Milter:
    """One milter variant in a child process."""

    def __init__(self, name: str, argv: Sequence[str], port: int, env: dict[str, str]) -> None:
        self.name = name
        self.port = port
        self.process = subprocess.Popen(
            list(argv), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait_port(port, self.process)

    def cpu(self) -> float:
        """CPU seconds used so far."""
        return _cpu_seconds(self.process.pid)

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


async def _one_message(port: int) -> None:
    """One milter connection as Postfix opens it for one SMTP session of one message."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
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


async def _direct_load(port: int, messages: int, concurrency: int) -> None:
    queue = iter(range(messages))

    async def worker() -> None:
        for _ in queue:
            await _one_message(port)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def direct(milter: Milter, messages: int, concurrency: int) -> float:
    """Milter CPU µs per message under the direct load."""
    asyncio.run(_direct_load(milter.port, min(50, messages), concurrency))  # warm up
    before = milter.cpu()
    asyncio.run(_direct_load(milter.port, messages, concurrency))
    return (milter.cpu() - before) / messages * 1e6


@contextmanager
def _postfix(milter_port: int | None) -> Iterator[int]:
    sys.path[:0] = [str(REPO / "tests")]
    from integration.postfix import Listener, PostfixServer

    main_cf = "" if milter_port is None else f"smtpd_milters = inet:127.0.0.1:{milter_port}\n"
    main_cf += "milter_protocol = 6\nmilter_default_action = tempfail\n"
    main_cf += "smtpd_client_connection_count_limit = 0\nsmtpd_client_connection_rate_limit = 0\n"
    with PostfixServer(main_cf, [Listener(_free_port())]) as server:
        yield server.port


def through_postfix(
    milter: Milter | None, message: Path, messages: int, sessions: int
) -> tuple[float, float | None]:
    """Messages per second through Postfix with smtp-source, and milter CPU µs per message."""
    source = shutil.which("smtp-source", path="/usr/sbin:/usr/bin") or "smtp-source"
    with _postfix(None if milter is None else milter.port) as port:
        argv = [source, "-s", str(sessions), "-F", str(message), "-f", "alice@fabrikam.example"]
        argv += ["-t", "postmaster@receiver.example", f"127.0.0.1:{port}"]
        subprocess.run([*argv[:1], "-m", "50", *argv[1:]], check=True, timeout=120)
        before = None if milter is None else milter.cpu()
        started = time.perf_counter()
        subprocess.run([*argv[:1], "-m", str(messages), *argv[1:]], check=True, timeout=900)
        elapsed = time.perf_counter() - started
        cpu = None if milter is None or before is None else milter.cpu() - before
    return messages / elapsed, None if cpu is None else cpu / messages * 1e6


def main() -> int:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--postfix", action="store_true", help="also through a private Postfix")
    parser.add_argument("--pymilter-python", help="a Python with pymilter, attrs, cattrs, click")
    parser.add_argument("--pymilter-src", help="the src/ of the pymilter-based tbes")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tbes-milter-load-"))
    config = work / "adapters.toml"
    config.write_text(CONFIG, encoding="utf-8")
    message = work / "message.eml"
    lines = [name + b": " + value.replace(b"\n", b"\r\n") for name, value in HEADERS[1:]]
    message.write_bytes(b"\r\n".join(lines) + b"\r\n\r\nHello.\r\n")
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    variants: list[tuple[str, list[str], dict[str, str]]] = [
        (
            "noop (same server, a checker that only accepts)",
            [sys.executable, "-c", _NOOP_MAIN],
            env,
        ),
        ("tbes milter (enforcer, SQLite)", [sys.executable, "-c", _COMMAND_MAIN], env),
    ]
    if args.pymilter_python and args.pymilter_src:
        old_env = dict(os.environ, PYTHONPATH=args.pymilter_src)
        variants.append(
            (
                "pymilter (previous tbes milter)",
                [args.pymilter_python, "-c", _COMMAND_MAIN],
                old_env,
            )
        )
    rows: list[str] = []
    baseline_rate: float | None = None
    if args.postfix:
        baseline_rate, _ = through_postfix(None, message, args.messages, args.concurrency)
        rows.append(f"| Postfix alone | - | {baseline_rate:,.0f} | 1.00 |")
    for index, (name, argv, variant_env) in enumerate(variants):
        port = _free_port()
        if index == 0:
            argv = [*argv, f"inet:{port}@127.0.0.1"]
        else:
            db = work / f"state-{index}.db"
            argv = [*argv, "--listen", f"inet:{port}@127.0.0.1", "--db", str(db)]
            argv += ["--config", str(config)]
        milter = Milter(name, argv, port, variant_env)
        try:
            cost = direct(milter, args.messages, args.concurrency)
            row = f"| {name} | {cost:,.0f} µs"
            if args.postfix and baseline_rate is not None:
                rate, through = through_postfix(milter, message, args.messages, args.concurrency)
                row += (
                    f" ({through:,.0f} µs via Postfix) | {rate:,.0f} | {rate / baseline_rate:.2f} |"
                )
            else:
                row += " | | |"
            rows.append(row)
        finally:
            milter.stop()
    shutil.rmtree(work, ignore_errors=True)
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs, load average {load} at the end, "
        f"{args.messages} messages, {args.concurrency} at a time"
    )
    print("| milter | milter CPU per message | Postfix msg/s | ratio to Postfix alone |")
    print("| --- | --- | --- | --- |")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
