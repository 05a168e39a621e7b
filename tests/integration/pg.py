"""A throw-away PostgreSQL server for the tests: initdb into a temp dir, start, stop.

One server per test session (per xdist worker), shared by every test that asks for it
through :func:`acquire` / :func:`release`; each test gets its own schema from
:meth:`PostgresServer.fresh_dsn`, so tests never see each other's rows. The
binaries are found on PATH or under Debian's ``/usr/lib/postgresql/<n>/bin``; initdb
refuses to run as root, so when we are root the server runs as the ``postgres`` user.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import itertools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["PostgresServer", "acquire", "find_pg_binary", "release"]

_BINARY_DIRS = ("/usr/lib/postgresql/*/bin",)


def find_pg_binary(name: str) -> str | None:
    """Locate a PostgreSQL binary on PATH or under /usr/lib/postgresql/*/bin (newest first)."""
    found = shutil.which(name)
    if found:
        return found
    for pattern in _BINARY_DIRS:
        for directory in sorted(glob.glob(pattern), reverse=True):
            candidate = Path(directory) / name
            if os.access(candidate, os.X_OK):
                return str(candidate)
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PostgresServer:
    """A private PostgreSQL cluster on 127.0.0.1, started by :meth:`start`."""

    def __init__(self) -> None:
        self.port = 0
        self._dir = Path(tempfile.mkdtemp(prefix="tbes-pg-"))
        self._data = self._dir / "data"
        self._names = itertools.count(1)
        self._started = False
        # initdb refuses root: run the server as the postgres system user then.
        self._as_root = os.geteuid() == 0

    @property
    def admin_dsn(self) -> str:
        """DSN of the maintenance database ``postgres``."""
        return self.dsn("postgres")

    def dsn(self, dbname: str) -> str:
        """DSN of one database on this server (TCP on 127.0.0.1, user ``postgres``)."""
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname} connect_timeout=5"

    def _run(self, *argv: str) -> None:
        cmd = list(argv)
        if self._as_root:
            runuser = shutil.which("runuser", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
            cmd = [runuser or "runuser", "-u", "postgres", "--", *cmd]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            log = self._dir / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(
                f"{' '.join(cmd)} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}\n{tail}"
            )

    def start(self) -> None:
        """Create the cluster and start the server; raise RuntimeError if it fails."""
        initdb, pg_ctl = find_pg_binary("initdb"), find_pg_binary("pg_ctl")
        if initdb is None or pg_ctl is None:
            raise RuntimeError("PostgreSQL binaries (initdb, pg_ctl) not found")
        if self._as_root:
            shutil.chown(self._dir, user="postgres", group="postgres")
        self._run(initdb, "-D", str(self._data), "-U", "postgres", "-A", "trust")
        for _ in range(3):  # a free port can be taken between probe and bind: retry
            self.port = _free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self._dir} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                "-c max_connections=60"
            )
            try:
                self._run(
                    pg_ctl,
                    "-D",
                    str(self._data),
                    "-o",
                    options,
                    "-w",
                    "-t",
                    "60",
                    "-l",
                    str(self._dir / "server.log"),
                    "start",
                )
            except RuntimeError:
                continue
            self._started = True
            return
        raise RuntimeError(f"PostgreSQL did not start; log in {self._dir / 'server.log'}")

    def stop(self) -> None:
        """Stop the server (if running) and delete its files."""
        pg_ctl = find_pg_binary("pg_ctl")
        if self._started and pg_ctl is not None:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self._run(pg_ctl, "-D", str(self._data), "-m", "immediate", "-w", "stop")
            self._started = False
        shutil.rmtree(self._dir, ignore_errors=True)

    def pids(self) -> list[int]:
        """The postmaster's pid, then those of its children (backends and helpers)."""
        postmaster = int((self._data / "postmaster.pid").read_text().split()[0])
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                # The command may hold spaces and parentheses: the ppid follows the last ")".
                if int(stat.read_text().rpartition(")")[2].split()[1]) == postmaster:
                    children.append(int(stat.parent.name))
        return [postmaster, *children]

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """SIGSTOP the server (postmaster first, so it forks no more) and SIGCONT it after.

        A stopped server answers nothing, yet its kernel still accepts connections and
        acknowledges data: the hang of an overloaded or swapped-out host.
        """
        stopped: list[int] = []
        try:
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
                    stopped.append(pid)
            yield
        finally:
            for pid in reversed(stopped):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    def fresh_dsn(self) -> str:
        """A DSN whose tables land in a new, empty schema of the shared test database.

        A schema is made in a millisecond where a database costs a copy of the template;
        the DSN's ``search_path`` option puts every unqualified table in it.
        """
        import psycopg

        name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {name}".encode())
        return f"{self.admin_dsn} options=-csearch_path={name}"


_server: PostgresServer | None = None
_users = 0


def acquire() -> PostgresServer:
    """Start the shared server on first use and return it; pair with :func:`release`."""
    global _server, _users
    if _server is None:
        server = PostgresServer()
        try:
            server.start()
        except BaseException:
            server.stop()
            raise
        _server = server
        atexit.register(_stop_now)  # a last resort if the session dies before release()
    _users += 1
    return _server


def release() -> None:
    """Give the server back; the last user stops it."""
    global _users
    _users -= 1
    if _users <= 0:
        _stop_now()


def _stop_now() -> None:
    global _server, _users
    if _server is not None:
        _server.stop()
    _server, _users = None, 0
