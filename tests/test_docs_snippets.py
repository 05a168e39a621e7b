"""Every complete program and configuration in ``docs/`` runs or loads as written.

A fenced block's kind comes from its language and the MyST comment line before it:

- ``toml``: an adapter configuration, loaded through :func:`~tbes.adapters.config.parse_config`;
- ``python`` starting with ``>>>``: a doctest, run by ``python -m doctest``;
- ``python`` after ``% tbes-snippet: fragment``: a piece of a program (it uses names it
  does not define); it must compile;
- ``python`` after ``% tbes-snippet: daemon``: a server that runs until stopped; it is
  started, sent a message over SMTP, and stopped with SIGTERM;
- any other ``python``: a complete program, run in a subprocess with a timeout.

Paths under ``/etc/tbes`` and ``/var/lib/tbes`` (and the build list's file name) are
pointed at a temporary directory first. The Postfix ``main.cf`` and ``master.cf`` blocks
marked ``% tbes-snippet: NAME`` in ``docs/postfix.md`` run in a real Postfix
(``tests/integration``); the ``main.cf`` block of ``docs/deploy.md`` must hold exactly their
settings. The systemd units are verified by ``tests/test_systemd_units.py``.
"""

from __future__ import annotations

import re
import signal
import smtplib
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import pytest

from adapter_support import free_port
from integration.postfix import doc_snippet
from support import BUILD_LIST_CSV
from tbes.adapters.config import parse_config

DOCS = Path(__file__).resolve().parent.parent / "docs"
_FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)
_MARK = re.compile(r"^% tbes-snippet: (.+)$")
TIMEOUT = 60


class Block(NamedTuple):
    doc: str
    line: int
    language: str
    mark: str | None
    text: str

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}"


def blocks(language: str) -> list[Block]:
    """Every fenced block of ``language`` in docs/, with the snippet mark before it."""
    found = []
    for doc in sorted(DOCS.glob("*.md")):
        text = doc.read_text(encoding="utf-8")
        for match in _FENCE.finditer(text):
            if match.group(1) != language:
                continue
            line = text.count("\n", 0, match.start()) + 1
            before = text[: match.start()].rstrip("\n").rpartition("\n")[2]
            mark = _MARK.match(before)
            found.append(
                Block(doc.name, line, language, mark.group(1) if mark else None, match.group(2))
            )
    return found


def _local(text: str, work: Path) -> str:
    """The snippet with the documented system paths moved into ``work``."""
    (work / "etc").mkdir(exist_ok=True)
    (work / "lib").mkdir(exist_ok=True)
    config = work / "etc" / "adapters.toml"
    if not config.exists():
        config.write_text('tenant = "contoso"\n', encoding="utf-8")
    return (
        text.replace("/etc/tbes", str(work / "etc"))
        .replace("/var/lib/tbes", str(work / "lib"))
        .replace('"ExchangeBuildNumbers.csv"', repr(str(BUILD_LIST_CSV)))
    )


PYTHON = blocks("python")


def test_the_docs_have_blocks_of_each_kind() -> None:
    kinds = {("doctest" if b.text.startswith(">>>") else b.mark or "program") for b in PYTHON}
    assert kinds == {"doctest", "fragment", "daemon", "program"}
    assert blocks("toml")


@pytest.mark.parametrize("block", blocks("toml"), ids=str)
def test_toml_block_loads_as_an_adapter_configuration(block: Block) -> None:
    parse_config(block.text, source=str(block))


@pytest.mark.parametrize("block", [b for b in PYTHON if b.text.startswith(">>>")], ids=str)
def test_doctest_block_runs(block: Block, tmp_path: Path) -> None:
    script = tmp_path / "block.txt"
    script.write_text(block.text, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "doctest", str(script)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("block", [b for b in PYTHON if b.mark == "fragment"], ids=str)
def test_fragment_block_compiles(block: Block) -> None:
    compile(block.text, str(block), "exec")


_PROGRAMS = [b for b in PYTHON if b.mark is None and not b.text.startswith(">>>")]


@pytest.mark.parametrize("block", _PROGRAMS, ids=str)
def test_program_block_runs(block: Block, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _local(block.text, tmp_path)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.parametrize("block", [b for b in PYTHON if b.mark == "daemon"], ids=str)
def test_daemon_block_serves_until_stopped(block: Block, tmp_path: Path) -> None:
    pytest.importorskip("aiosmtpd", reason="the smtp extra is not installed")
    port = free_port()
    assert "port=8025" in block.text
    program = _local(block.text, tmp_path).replace("port=8025", f"port={port}")
    log = tmp_path / "daemon.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", program], stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path
        )
    try:
        client = _connect(port, process, log)
        with client:
            client.ehlo("client.example")
            client.sendmail("a@client.example", ["b@contoso.example"], b"Subject: x\r\n\r\nHi.\r\n")
        time.sleep(0.5)  # still serving after a message: it runs until stopped
        assert process.poll() is None, log.read_text(errors="replace")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=TIMEOUT) == 0, log.read_text(errors="replace")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "delivered a message from 'a@client.example'" in log.read_text()


def _connect(port: int, process: subprocess.Popen[bytes], log: Path) -> smtplib.SMTP:
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            return smtplib.SMTP("127.0.0.1", port, timeout=10)
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(log.read_text(errors="replace")) from None
            time.sleep(0.1)


def _settings(text: str) -> list[str]:
    """The setting lines of a main.cf text, comments and blank lines left out."""
    return [
        line.rstrip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    ]


def test_deploy_main_cf_holds_the_tested_postfix_settings() -> None:
    (deploy,) = [b for b in blocks("text") if b.doc == "deploy.md" and "smtpd_milters" in b.text]
    tested = doc_snippet("main.cf milter") + doc_snippet("main.cf policy")
    assert _settings(deploy.text) == _settings(tested)
