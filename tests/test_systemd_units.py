"""The systemd units in ``contrib/systemd``: valid for systemd, sandboxed, and runnable.

``systemd-analyze verify`` checks each unit with the binary path pointed at this
environment's ``tbes`` (it refuses a missing executable); any warning it prints fails the
test. The command lines are parsed by tbes's own command-line parser, so a renamed option
cannot slip through. The daemons are started from these very lines, under Postfix, by
``tests/integration/test_systemd_units_e2e.py``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

from tbes.cli import cli
from units import BINARY, SERVICES, UNITS, directives, exec_start, rewritten, unit_text

TBES = str(Path(sys.executable).with_name("tbes"))


@pytest.mark.service("systemd")
@pytest.mark.parametrize("name", SERVICES)
def test_unit_passes_systemd_analyze_verify(name: str, tmp_path: Path) -> None:
    unit = tmp_path / f"{name}.service"
    unit.write_text(unit_text(name).replace(BINARY, TBES), encoding="utf-8")
    analyze = shutil.which("systemd-analyze") or "systemd-analyze"
    done = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr


@pytest.mark.parametrize("name", SERVICES)
def test_unit_is_sandboxed_and_reloads_with_hup(name: str) -> None:
    service = directives(name)
    for key, value in {
        "User": "tbes",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ReadWritePaths": "/var/lib/tbes",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "CapabilityBoundingSet": "",
    }.items():
        assert service.get(key) == [value], (name, key, service.get(key))
    assert exec_start(name)[0] == BINARY


@pytest.mark.parametrize("name", SERVICES)
def test_unit_command_line_is_one_tbes_accepts(name: str, tmp_path: Path) -> None:
    (tmp_path / "adapters.toml").write_text('tenant = "contoso"\n')
    places = {"/etc/tbes": str(tmp_path), "/var/lib/tbes": str(tmp_path)}
    argv = rewritten(exec_start(name), places)[1:]
    if argv[0] not in cli.list_commands(click.Context(cli)):
        pytest.skip(f"tbes {argv[0]} is not in this tbes yet (added by a parallel change)")
    with cli.make_context("tbes", list(argv[:1]), resilient_parsing=True) as ctx:
        command = cli.get_command(ctx, argv[0])
        assert command is not None
        sub = command.make_context(argv[0], list(argv[1:]), parent=ctx)
        # The rewritten paths were read as the --db and --config values.
        values = {str(value) for value in sub.params.values()}
        assert str(tmp_path / "state.db") in values
        assert str(tmp_path / "adapters.toml") in values


def test_sysusers_and_tmpfiles_make_the_user_and_directories() -> None:
    users = (UNITS / "tbes.sysusers").read_text().splitlines()
    assert [line.split()[:2] for line in users if line and not line.startswith("#")] == [
        ["u", "tbes"]
    ]
    dirs = [
        line.split()
        for line in (UNITS / "tbes.tmpfiles").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert ["d", "/var/lib/tbes", "0750", "tbes", "tbes", "-"] in dirs
    assert ["d", "/etc/tbes", "0750", "root", "tbes", "-"] in dirs
