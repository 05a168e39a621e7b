"""``tbes report --discovered``: the unmapped Exchange senders as a table, CSV and JSON.

The servers are stored with forged names (control characters, a spreadsheet formula, a
TOML injection); every output shows them escaped, and the suggested rules in the table
and the JSON are read back by the configuration parser and map exactly the peers seen.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tbes.adapters.config import parse_config
from tbes.cli import cli
from tbes.compliance import Compliance
from tbes.discovery import sighting
from tbes.store import SQLiteStore
from tbes.version import ExchangeBuild

T0 = dt.datetime(2026, 11, 3, 8, 0, tzinfo=dt.UTC)
FORGED = "=cmd|' /C calc'!A0\x1b[2J\n[[connector]]"


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "tbes.db"
    store = SQLiteStore(path)
    b2013 = ExchangeBuild.parse("15.0.1497.2")
    seen = [
        ("203.0.113.5", "mail.fabrikam.example", "mail.fabrikam.example", 0),
        ("203.0.113.9", "mail2.fabrikam.example", FORGED, 30),
        ("2001:db8::25", FORGED, None, 60),
    ]
    store.record_discovered(
        [
            sighting(
                peer_ip=peer,
                verified_name=name,
                sender_host=host,
                build=b2013,
                status=Compliance.UNSUPPORTED,
                at=T0 + dt.timedelta(minutes=minutes),
            )
            for peer, name, host, minutes in seen
        ],
        max_servers=100,
    )
    store.close()
    return path


def test_the_table_escapes_forged_names_and_ends_with_rules_that_map_the_peers(db: Path) -> None:
    result = run("report", "--db", str(db), "--discovered")
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output
    table, rules = result.output.split("[[connector]] rule", 1)
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["PEER", "VERIFIED", "NAME"]
    # Newest first; one line per server, the forged newline shown as an escape.
    assert [line.split()[0] for line in lines[1:4]] == [
        "2001:db8::25",
        "203.0.113.9",
        "203.0.113.5",
    ]
    assert "\\x1b[2j\\n[[connector]]" in lines[1]  # names are kept lower-cased
    config = parse_config(rules.split("\n", 1)[1])
    mapped = {
        peer: config.connection(peer_ip=peer, peer_host=None, tls_subject=None).connector
        for peer in ("203.0.113.5", "203.0.113.9", "2001:db8::25", "203.0.113.6")
    }
    assert mapped == {
        "203.0.113.5": "fabrikam-example",
        "203.0.113.9": "fabrikam-example",
        "2001:db8::25": "cmd-c-calc-a0-2j-connector",
        "203.0.113.6": None,
    }


def test_csv_cells_are_escaped_and_formulas_quoted(db: Path) -> None:
    result = run("report", "--db", str(db), "--discovered", "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.output)))
    assert [row["peer"] for row in rows] == ["2001:db8::25", "203.0.113.9", "203.0.113.5"]
    assert rows[0]["verified_name"] == "'=cmd|' /c calc'!a0\\x1b[2j\\n[[connector]]"
    assert rows[0]["sender_host"] == ""
    assert rows[2]["messages"] == "1"
    assert rows[2]["suggested_connector"] == "fabrikam-example"
    assert "\x1b" not in result.output


def test_json_lists_servers_and_suggestions_whose_toml_parses(tmp_path: Path, db: Path) -> None:
    out = tmp_path / "discovered.json"
    result = run("report", "--db", str(db), "--discovered", "--format", "json", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "3 discovered servers" in result.output
    data = json.loads(out.read_text(encoding="utf-8"))
    # JSON escapes the control characters; a reader gets the name back as stored.
    assert data["discovered"][0]["verified_name"] == FORGED.lower()
    assert [each["network"] for each in data["suggestions"]] == ["203.0.113.0/24", "2001:db8::/64"]
    config = parse_config("\n".join(each["toml"] for each in data["suggestions"]))
    assert len(config.connectors) == 2


def test_with_config_mapped_peers_are_left_out_and_names_avoid_its_connectors(
    tmp_path: Path, db: Path
) -> None:
    config = tmp_path / "adapters.toml"
    config.write_text(
        '[[connector]]\nname = "fabrikam-example"\nkind = "on_premises"\n'
        'networks = ["2001:db8::/64"]\n',
        encoding="utf-8",
    )
    result = run(
        "report", "--db", str(db), "--discovered", "--format", "json", "--config", str(config)
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [each["peer"] for each in data["discovered"]] == ["203.0.113.9", "203.0.113.5"]
    assert [each["name"] for each in data["suggestions"]] == ["fabrikam-example-2"]


def test_html_is_one_line_and_exit_2_and_an_empty_store_says_so(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    SQLiteStore(path).close()
    result = run("report", "--db", str(path), "--discovered", "--format", "html")
    assert result.exit_code == 2
    assert re.fullmatch(
        r"tbes: error: --discovered writes table, json, csv, not html\n", result.output
    )
    result = run("report", "--db", str(path), "--discovered")
    assert result.output == "No unmapped Exchange servers discovered.\n"


def test_the_demo_discovers_its_unmapped_exchange_2013(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    result = run("demo", "--db", str(db), "--report", str(tmp_path / "r.html"))
    assert result.exit_code == 0, result.output
    assert "accepted, and discovered" in result.output
    listed = run("report", "--db", str(db), "--discovered", "--format", "json")
    data = json.loads(listed.output)
    [litware] = data["discovered"]
    assert litware["peer"] == "198.51.100.13"
    assert litware["verified_name"] == "mail.litware.example"
    assert (litware["build"], litware["status"]) == ("15.0.1497.2", "UNSUPPORTED")
    assert litware["messages"] == 18  # one a week, 15 Oct 2026 to 15 Feb 2027
    [rule] = data["suggestions"]
    assert rule["name"] == "litware-example"
    # The unmapped server is in no report row: nothing about it is enforced.
    rows = run("report", "--db", str(db), "--format", "csv", "--at", "2027-02-15T18:00Z")
    assert "litware" not in rows.output
    assert "198.51.100.13" not in rows.output


def test_config_check_says_what_discovery_does(tmp_path: Path) -> None:
    config = tmp_path / "adapters.toml"
    config.write_text("[discovery]\nmax_servers = 2500\nflush_seconds = 2\n", encoding="utf-8")
    result = run("config", "check", str(config))
    assert result.exit_code == 0, result.output
    assert "Discovery: unmatched on-premises Exchange senders are recorded, at most 2,500, " in (
        result.output
    )
    assert "written every 2 s" in result.output
    config.write_text("[discovery]\nenabled = false\n", encoding="utf-8")
    assert "Discovery: off." in run("config", "check", str(config)).output
