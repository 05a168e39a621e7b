"""An operator's imported catalog reaches enforcement: baselines, the adapters and the CLI."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from support import BUILD_LIST_CSV
from tbes import Catalog, ExchangeBuild, MemoryStore, Policy, Product
from tbes.adapters.config import AdapterConfigError, make_enforcer, parse_config
from tbes.cli import cli

# A Subscription Edition update newer than the packaged catalog knows.
NEWER_ROW = "Exchange SE RTM Nov26SU,15.2.2562.50,11/10/2026,KB9999999,\n"
NEWER_SU = ExchangeBuild(15, 2, 2562, 50)
PACKAGED_SU = ExchangeBuild(15, 2, 2562, 46)  # SE RTM Aug26SU, the newest in the CSV
ON = dt.date(2026, 11, 20)
AT = dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC)


@pytest.fixture
def newer_catalog(tmp_path: Path) -> Path:
    """A catalog file made by the importer from Microsoft's list plus one newer update."""
    csv_path = tmp_path / "ExchangeBuildNumbers.csv"
    text = BUILD_LIST_CSV.read_text(encoding="utf-8")
    csv_path.write_text(text.rstrip("\n") + "\n" + NEWER_ROW, encoding="utf-8")
    out = tmp_path / "catalog.json"
    Catalog.from_microsoft_csv(csv_path).dump(out)
    return out


def test_supported_only_takes_its_minimums_from_the_given_catalog(newer_catalog: Path) -> None:
    packaged = Policy.supported_only(ON, Catalog.default())
    imported = Policy.supported_only(ON, Catalog.load(newer_catalog))
    assert packaged.baseline_at(AT).minimum[Product.EXCHANGE_SE] == (PACKAGED_SU,)
    assert imported.baseline_at(AT).minimum[Product.EXCHANGE_SE] == (NEWER_SU,)


def test_named_policy_passes_the_catalog_on(newer_catalog: Path) -> None:
    policy = Policy.named("supported_only", on=ON, catalog=Catalog.load(newer_catalog))
    assert policy.baseline_at(AT).minimum[Product.EXCHANGE_SE] == (NEWER_SU,)


def test_adapter_config_catalog_feeds_assessment_and_baseline(newer_catalog: Path) -> None:
    config = parse_config(
        f'policy = "supported_only"\npolicy_on = {ON.isoformat()}\n'
        f"catalog = {json.dumps(str(newer_catalog))}\n"
    )
    enforcer = make_enforcer(config, MemoryStore())
    assert enforcer.catalog.latest(Product.EXCHANGE_SE).build == NEWER_SU
    assert enforcer.policy.baseline_at(AT).minimum[Product.EXCHANGE_SE] == (NEWER_SU,)


def test_adapter_config_checks_its_policy_without_reading_the_packaged_catalog(
    newer_catalog: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 14 item 6: the configuration names its own catalog; checking the policy must not
    # build the preset from the packaged one behind the operator's back.
    def packaged() -> Catalog:
        raise AssertionError("the packaged catalog was read")

    monkeypatch.setattr(Catalog, "default", packaged)
    config = parse_config(
        f'policy = "supported_only"\npolicy_on = {ON.isoformat()}\n'
        f"catalog = {json.dumps(str(newer_catalog))}\n"
    )
    assert config.make_policy().baseline_at(AT).minimum[Product.EXCHANGE_SE] == (NEWER_SU,)


def test_adapter_config_names_an_unreadable_catalog(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    config = parse_config(f"catalog = {json.dumps(str(missing))}\n")
    with pytest.raises(AdapterConfigError, match=r"nope\.json"):
        make_enforcer(config, MemoryStore())


MESSAGE = (
    "Received: from mail.adatum.example (mail.adatum.example [203.0.113.7])\r\n"
    "\tby mx1.contoso.example (Postfix) with ESMTPS id 4ZZ; Fri, 20 Nov 2026 10:00:01 +0000\r\n"
    "Received: from EXSE.adatum.example (10.0.0.5) by mail.adatum.example (203.0.113.7)\r\n"
    " with Microsoft SMTP Server (version=TLS1_2,\r\n"
    " cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) id 15.2.2562.46; Fri, 20 Nov 2026\r\n"
    " 11:00:00 +0100\r\n"
    "Subject: hello\r\n\r\nbody\r\n"
)


@pytest.mark.parametrize(("use_override", "status"), [(False, "COMPLIANT"), (True, "OUTDATED")])
def test_cli_catalog_option_reaches_the_supported_only_policy(
    tmp_path: Path, newer_catalog: Path, use_override: bool, status: str
) -> None:
    eml = tmp_path / "se.eml"
    eml.write_bytes(MESSAGE.encode())
    args = ["--catalog", str(newer_catalog)] if use_override else []
    args += ["inspect", str(eml), "--own-host", "contoso.example", "--policy", "supported_only"]
    result = CliRunner().invoke(cli, [*args, "--at", "2026-11-20T10:00:00Z", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["assessment"]["status"] == status
