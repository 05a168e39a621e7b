"""The error family: one base class, value errors that are also ValueError, clear messages."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import inspect

import pytest

import tbes
from tbes import errors
from tbes.enforcer import FAIL_CLOSED_REPLY


def _error_classes() -> list[type[Exception]]:
    return [
        obj
        for _, obj in inspect.getmembers(errors, inspect.isclass)
        if issubclass(obj, Exception) and obj.__module__ == "tbes.errors"
    ]


def test_every_error_derives_from_tbes_error_and_is_exported() -> None:
    classes = _error_classes()
    assert len(classes) >= 14
    for cls in classes:
        assert issubclass(cls, errors.TbesError)
        assert getattr(tbes, cls.__name__) is cls
        assert cls.__doc__
        assert cls.__doc__.strip().endswith(".")


@pytest.mark.parametrize(
    "cls",
    [
        errors.InvalidBuildError,
        errors.AdapterConfigError,
        errors.PolicyProtocolError,
        errors.NaiveDatetimeError,
        errors.StageTableError,
        errors.InvalidValueError,
        errors.InvalidPauseError,
        errors.PolicyError,
    ],
)
def test_value_errors_are_also_value_error(cls: type[Exception]) -> None:
    assert issubclass(cls, ValueError)


def test_unknown_policy_name_raises_policy_error_listing_the_presets() -> None:
    with pytest.raises(errors.PolicyError) as excinfo:
        tbes.Policy.named("exchange_online_2030", catalog=tbes.Catalog.default())
    message = str(excinfo.value)
    assert "'exchange_online_2030'" in message
    for preset in ("exchange_online_2023", "exchange_online_2026", "supported_only"):
        assert preset in message


def test_supported_only_without_a_date_is_a_policy_error() -> None:
    with pytest.raises(errors.PolicyError, match="supported_only"):
        tbes.Policy.named("supported_only", catalog=tbes.Catalog.default())


def test_a_pause_of_zero_days_is_an_invalid_pause_naming_the_value() -> None:
    with pytest.raises(errors.InvalidPauseError, match="days=0"):
        tbes.Pause("EX01", dt.date(2026, 1, 1), 0)


def test_an_empty_server_id_is_an_invalid_value() -> None:
    with pytest.raises(errors.InvalidValueError, match="server_id"):
        tbes.ServerState("", "t", None, tbes.Compliance.NOT_APPLICABLE, None, None, None)


def test_the_adapters_errors_are_the_family_s_own_classes() -> None:
    from tbes.adapters import config, postfix_policy

    assert config.AdapterConfigError is errors.AdapterConfigError
    assert postfix_policy.PolicyProtocolError is errors.PolicyProtocolError
    assert issubclass(errors.AdapterConfigError, ValueError)


def test_header_parse_error_is_gone() -> None:
    # SPEC section 10: nothing raised it (parse_received is total).
    assert not hasattr(errors, "HeaderParseError")
    assert not hasattr(tbes, "HeaderParseError")


def test_the_version_is_the_installed_package_s() -> None:
    assert tbes.__version__ == importlib.metadata.version("tbes")


def test_one_fault_reply_for_the_enforcer_and_every_adapter() -> None:
    from tbes.adapters import config

    assert not hasattr(config, "FAULT_REPLY")
    assert (FAIL_CLOSED_REPLY.code, FAIL_CLOSED_REPLY.enhanced) == (451, "4.3.0")
