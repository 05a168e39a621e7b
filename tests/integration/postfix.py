"""A throw-away Postfix on loopback for the end-to-end tests, and the tbes milter beside it.

:class:`PostfixServer` writes ``main.cf``/``master.cf`` into a temporary configuration
directory (queue and data directories beside it, readable by the ``postfix`` user, because
``mkdtemp`` directories are private) and runs ``postfix -c DIR start`` as root; it always
stops the mail system again, also from ``atexit`` should a test run die. All accepted mail
is discarded. The tbes part of ``main.cf`` is not written here: it is read from the
snippets in ``docs/postfix.md`` (:func:`doc_snippet`), so the documentation shows exactly
what the tests run, only with free ports instead of the documented ones.

:class:`MilterProcess` runs the milter as ``tbes milter`` does (the click command of
:mod:`tbes.adapters.milter`) in a child process, so a test can restart it with a new
``fixed_time`` to put a server in another stage; :class:`ServeProcess` runs ``tbes serve``
(milter and policy service in one process) the same way. :func:`smtp_send` (from
``adapter_support``, shared with the aiosmtpd tests) speaks SMTP from a chosen loopback
address, so one Postfix sees several "servers".
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import attrs
import pytest

from adapter_support import RECEIVER_DOMAIN, SmtpOutcome, free_port, smtp_send
from tbes.adapters.config import load_config, make_enforcer
from tbes.store.sqlite import SQLiteStore

__all__ = [
    "EX2007",
    "EX2007_HOP",
    "RCPT",
    "T0",
    "Listener",
    "MilterProcess",
    "PostfixServer",
    "ServeProcess",
    "SmtpOutcome",
    "doc_snippet",
    "free_port",
    "require_root",
    "seed_then_advance",
    "smtp_send",
    "wait_for_port",
    "with_port",
]

# What the end-to-end tests send: an Exchange 2007 hop (8.3.83.6, unsupported) and a message
# that carries it, to the receiver's postmaster; T0 is the first sighting the tests seed.
T0 = dt.datetime(2025, 11, 3, 8, 0, tzinfo=dt.UTC)
RCPT = f"postmaster@{RECEIVER_DOMAIN}"
EX2007_HOP = (
    "from EXHUB01.fabrikam.local (10.1.2.3) by mail.fabrikam.example (10.1.2.4) with "
    "Microsoft SMTP Server (TLS) id 8.3.83.6; Mon, 3 Nov 2025 09:00:00 +0100"
)
EX2007 = (
    f"Received: {EX2007_HOP}\r\nFrom: alice@fabrikam.example\r\nSubject: figures\r\n\r\nHi.\r\n"
).encode()


def seed_then_advance(config: Path, db: Path, template: str, *, peer_ip: str, days: int) -> None:
    """Write ``template`` (a configuration whose ``{now}`` is its ``fixed_time``) at T0, have
    the enforcer see the Exchange 2007 hop from ``peer_ip`` then, and move ``now`` ``days``
    later: the store holds a server that far into its episode."""
    config.write_text(template.format(now=T0.isoformat()), encoding="utf-8")
    loaded = load_config(config)
    make_enforcer(loaded, SQLiteStore(db)).check(
        loaded.connection(peer_ip=peer_ip, peer_host=None, tls_subject=None), [EX2007_HOP]
    )
    later = T0 + dt.timedelta(days=days)
    config.write_text(template.format(now=later.isoformat()), encoding="utf-8")


REPO = Path(__file__).resolve().parents[2]
POSTFIX_DOC = REPO / "docs" / "postfix.md"
_READY_TIMEOUT = 15.0


def _require_integration() -> bool:
    # The switch tests/conftest.py reads; importing it by name would be ambiguous here.
    return os.environ.get("TBES_REQUIRE_INTEGRATION") == "1"


def _postfix_binary() -> str:
    found = shutil.which("postfix", path=os.environ.get("PATH", "") + os.pathsep + "/usr/sbin")
    assert found is not None, "postfix is not installed"
    return found


def require_root() -> None:
    """Skip (or fail, under TBES_REQUIRE_INTEGRATION=1) unless we may start Postfix."""
    if os.geteuid() != 0:
        message = "starting a private Postfix needs root (postfix -c DIR start)"
        if _require_integration():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


def wait_for_port(port: int, *, host: str = "127.0.0.1", timeout: float = _READY_TIMEOUT) -> None:
    """Return once ``host:port`` accepts TCP connections; raise TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s") from None
            time.sleep(0.05)


def doc_snippet(name: str, *, doc: Path = POSTFIX_DOC) -> str:
    """The fenced block that follows the line ``% tbes-snippet: NAME`` in ``docs/postfix.md``."""
    lines = doc.read_text(encoding="utf-8").splitlines()
    marker = f"% tbes-snippet: {name}"
    try:
        start = lines.index(marker)
    except ValueError:
        raise AssertionError(f"{doc} has no line {marker!r}") from None
    if not lines[start + 1].startswith("```"):
        raise AssertionError(f"{marker!r} in {doc} is not followed by a fenced block")
    end = lines.index("```", start + 2)
    return "\n".join(lines[start + 2 : end]) + "\n"


def with_port(snippet: str, documented: int, actual: int) -> str:
    """``snippet`` with the documented ``127.0.0.1:PORT`` endpoint moved to ``actual``."""
    pattern = rf"127\.0\.0\.1:{documented}\b"
    if not re.search(pattern, snippet):
        raise AssertionError(f"the snippet does not use 127.0.0.1:{documented}:\n{snippet}")
    return re.sub(pattern, f"127.0.0.1:{actual}", snippet)


# Internal services every instance needs (no chroot: the temp queue has no /etc copies).
_MASTER_BASE = """\
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


@attrs.frozen
class Listener:
    """One smtpd listener on 127.0.0.1:``port``, with ``-o name=value`` overrides;
    ``chroot``: smtpd runs chrooted in the queue directory, as Debian's master.cf has it."""

    port: int
    overrides: tuple[tuple[str, str], ...] = ()
    chroot: bool = False

    def master_line(self) -> str:
        """The master.cf entry of this listener."""
        lines = [f"127.0.0.1:{self.port} inet n - {'y' if self.chroot else 'n'} - - smtpd"]
        lines += [f"  -o {name}={value}" for name, value in self.overrides]
        return "\n".join(lines) + "\n"


class PostfixServer:
    """A private Postfix instance; use as a context manager (it always stops)."""

    def __init__(
        self, tbes_main_cf: str, listeners: Sequence[Listener], *, master_extra: str = ""
    ) -> None:
        self.listeners = tuple(listeners)
        self._master_extra = master_extra
        self.root = Path(tempfile.mkdtemp(prefix="tbes-postfix-"))
        self.config_dir = self.root / "etc"
        self.maillog = self.root / "maillog"
        self._tbes_main_cf = tbes_main_cf
        self._running = False

    @property
    def port(self) -> int:
        """The port of the first listener."""
        return self.listeners[0].port

    @property
    def ports(self) -> list[int]:
        """Every smtpd port, from the listeners and the extra master.cf text."""
        extra = [
            int(p) for p in re.findall(r"^127\.0\.0\.1:(\d+)\s+inet\b", self._master_extra, re.M)
        ]
        return [listener.port for listener in self.listeners] + extra

    def _write_config(self) -> None:
        # Postfix daemons run as the postfix user and must traverse to the queue.
        self.root.chmod(0o755)
        self.config_dir.mkdir()
        (self.root / "spool").mkdir()
        data = self.root / "data"
        data.mkdir()
        shutil.chown(data, user="postfix", group="postfix")
        base = f"""\
compatibility_level = 3.6
myhostname = mx.{RECEIVER_DOMAIN}
mydomain = {RECEIVER_DOMAIN}
queue_directory = {self.root}/spool
data_directory = {data}
meta_directory = /etc/postfix
maillog_file = {self.maillog}
maillog_file_prefixes = {self.root}
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.1/32
mydestination =
relay_domains = {RECEIVER_DOMAIN}
default_transport = discard:
relay_transport = discard:
local_transport = discard:
alias_maps =
alias_database =
smtpd_peername_lookup = no
smtputf8_enable = no
"""
        (self.config_dir / "main.cf").write_text(base + self._tbes_main_cf)
        master = "".join(listener.master_line() for listener in self.listeners)
        (self.config_dir / "master.cf").write_text(master + self._master_extra + _MASTER_BASE)

    def _postfix(self, *command: str) -> subprocess.CompletedProcess[str]:
        binary = _postfix_binary()
        # Postfix reports only to syslog unless stderr is a terminal; the maillog has it all.
        return subprocess.run(
            [binary, "-c", str(self.config_dir), *command],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def start(self) -> None:
        """Write the configuration, start Postfix and wait until every listener answers."""
        self._write_config()
        atexit.register(self.stop)
        result = self._postfix("start")
        self._running = True
        if result.returncode != 0:
            raise RuntimeError(
                f"postfix start failed ({result.returncode}): {result.stderr}\n{self.log()}"
            )
        for port in self.ports:
            wait_for_port(port)

    def log(self) -> str:
        """What Postfix has logged so far."""
        return self.maillog.read_text(errors="replace") if self.maillog.exists() else ""

    def _master_pid(self) -> int | None:
        pid_file = self.root / "spool" / "pid" / "master.pid"
        with contextlib.suppress(OSError, ValueError):
            return int(pid_file.read_text().strip())
        return None

    def stop(self) -> None:
        """Stop Postfix (waiting for its master to exit) and delete its files."""
        if self._running:
            pid = self._master_pid()
            self._postfix("stop")
            if pid is not None and not _wait_exit(pid, timeout=10.0):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                _wait_exit(pid, timeout=5.0)
            self._running = False
        shutil.rmtree(self.root, ignore_errors=True)
        atexit.unregister(self.stop)

    def __enter__(self) -> PostfixServer:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _wait_exit(pid: int, *, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


# What `tbes milter --listen ... --db ... --config ...` and `tbes serve ...` run (the CLI
# registers these commands).
_MILTER_MAIN = "import sys; from tbes.cli.daemons import milter; milter.main(sys.argv[1:])"
_SERVE_MAIN = "import sys; from tbes.cli.daemons import serve; serve.main(sys.argv[1:])"


class TbesProcess:
    """A tbes daemon in a child process (``python -c MAIN ARGS``); a context manager.

    It is ready when every one of ``ports`` on 127.0.0.1 accepts connections.
    """

    def __init__(self, main: str, args: Sequence[str], ports: Sequence[int], log: Path) -> None:
        self.ports = tuple(ports)
        self.log = log
        self._argv = [sys.executable, "-c", main, *args]
        self._process: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None

    def __enter__(self) -> TbesProcess:
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(self._argv, stdout=log, stderr=subprocess.STDOUT)
        try:
            for port in self.ports:
                _wait_for_child_port(self._process, port)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Terminate the daemon with SIGTERM and wait for it (SIGKILL if it lingers)."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        self.returncode = process.returncode

    def __exit__(self, *exc: object) -> None:
        self.stop()


class MilterProcess(TbesProcess):
    """The tbes milter in a child process, as ``tbes milter`` runs it; a context manager."""

    def __init__(self, config_file: Path, db: Path, port: int, log: Path) -> None:
        args = ["--listen", f"inet:{port}@127.0.0.1", "--db", str(db), "--config", str(config_file)]
        super().__init__(_MILTER_MAIN, args, [port], log)
        self.port = port


class ServeProcess(TbesProcess):
    """``tbes serve --milter ... --policy ...`` in a child process; a context manager."""

    def __init__(
        self, config_file: Path, db: Path, milter_port: int, policy_port: int, log: Path
    ) -> None:
        args = [
            *("--milter", f"inet:{milter_port}@127.0.0.1"),
            *("--policy", f"127.0.0.1:{policy_port}"),
            *("--db", str(db), "--config", str(config_file)),
        ]
        super().__init__(_SERVE_MAIN, args, [milter_port, policy_port], log)


def _wait_for_child_port(process: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the milter exited with {process.returncode} before listening")
        try:
            wait_for_port(port, timeout=0.2)
            return
        except TimeoutError:
            if time.monotonic() > deadline:
                raise
