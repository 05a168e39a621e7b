"""The one cattrs converter that turns every tbes value into JSON-ready data and back.

All (de)serialisation goes through :data:`converter`, so stored rows, reports and the
command line agree on one format: builds as their short string, instants as ISO 8601
with their offset, dates as ISO dates, timedeltas as seconds, enums by value.

:func:`loads` is the checked entry point for text from outside: text that is not JSON, or
JSON that does not make a ``cls``, raises :class:`~tbes.errors.InvalidValueError` naming
``cls`` and the problem, with the original error (``json.JSONDecodeError``, a cattrs
validation error group) as its ``__cause__``; a tbes error raised while structuring a bare
value (say :class:`~tbes.errors.NaiveDatetimeError` for ``loads(text, datetime)``) passes
through as it is. :data:`converter` itself behaves as cattrs does (``structure`` may raise
cattrs' own errors), for callers who want them.
"""

from __future__ import annotations

import datetime as _dt
import json
from typing import Any, TypeVar

import cattrs
from cattrs.cols import is_any_set
from cattrs.gen import make_dict_unstructure_fn, override
from cattrs.preconf.json import make_converter

from tbes.errors import InvalidValueError, NaiveDatetimeError, TbesError
from tbes.ledger import PauseLedger
from tbes.version import ExchangeBuild

__all__ = ["converter", "dumps", "loads"]

_T = TypeVar("_T")


def _structure_build(value: Any, _: type) -> ExchangeBuild:
    return ExchangeBuild.parse(value)


def _unstructure_datetime(value: _dt.datetime) -> str:
    if value.tzinfo is None or value.utcoffset() is None:
        raise NaiveDatetimeError(f"cannot serialise a naive datetime: {value!r}")
    return value.isoformat()


def _structure_datetime(value: Any, _: type) -> _dt.datetime:
    parsed = _dt.datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise NaiveDatetimeError(f"stored instant has no time zone: {value!r}")
    return parsed


def _structure_timedelta(value: Any, _: type) -> _dt.timedelta:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidValueError(f"a duration must be a number of seconds, got {value!r:.80}")
    return _dt.timedelta(seconds=value)


def _make() -> cattrs.Converter:
    conv = make_converter()
    conv.register_unstructure_hook(ExchangeBuild, str)
    conv.register_structure_hook(ExchangeBuild, _structure_build)
    conv.register_unstructure_hook(_dt.datetime, _unstructure_datetime)
    conv.register_structure_hook(_dt.datetime, _structure_datetime)
    conv.register_unstructure_hook(_dt.date, _dt.date.isoformat)
    conv.register_structure_hook(_dt.date, lambda v, _: _dt.date.fromisoformat(v))
    conv.register_unstructure_hook(_dt.timedelta, lambda v: v.total_seconds())
    conv.register_structure_hook(_dt.timedelta, _structure_timedelta)

    # --- issue 4 (catalog): sets serialise in a canonical order ---------------------------
    # A frozenset iterates in hash order, and str/enum hashes are salted per process, so
    # without this hook Baseline.unsupported (and any other set) would serialise differently
    # in every process. Sorting the unstructured elements by their JSON text is total.
    def sorted_set(cls: Any) -> Any:
        args = getattr(cls, "__args__", None)
        element = conv.get_unstructure_hook(args[0]) if args else conv.unstructure

        def unstructure(value: Any) -> list[Any]:
            items = [element(item) for item in value]
            return sorted(items, key=lambda item: json.dumps(item, sort_keys=True))

        return unstructure

    conv.register_unstructure_hook_factory(is_any_set, sorted_set)
    # --- end of issue 4 hooks ---------------------------------------------------------------

    # --- issue 15 (tenant pauses): a ledger without them keeps today's row --------------
    # Rows written before tenant pauses existed have no "tenant_pauses" key (structuring
    # takes the default). Leaving the key out while it is empty keeps those ledgers' rows
    # byte for byte what they were, so nodes still running the previous release read them.
    conv.register_unstructure_hook(
        PauseLedger,
        make_dict_unstructure_fn(PauseLedger, conv, tenant_pauses=override(omit_if_default=True)),
    )
    return conv


converter: cattrs.Converter = _make()
"""The package's converter: ``converter.unstructure(value)`` / ``converter.structure(data, T)``."""


def dumps(value: object) -> str:
    """Serialise a tbes value to a compact JSON string."""
    return json.dumps(converter.unstructure(value), separators=(",", ":"), sort_keys=True)


def loads(text: str | bytes, cls: type[_T]) -> _T:
    """Parse JSON made by :func:`dumps` back into a value of type ``cls``.

    Raises :class:`~tbes.errors.InvalidValueError` (the original error as ``__cause__``) for
    text that is not JSON or does not make a ``cls``.
    """
    name = getattr(cls, "__name__", None) or repr(cls)
    try:
        data = json.loads(text)
    except (ValueError, TypeError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise InvalidValueError(f"cannot load {name}: not valid JSON: {exc}") from exc
    try:
        return converter.structure(data, cls)
    except TbesError:
        raise
    except cattrs.BaseValidationError as exc:
        problems = cattrs.transform_error(exc, format_exception=_describe)
        raise InvalidValueError(f"cannot load {name}: {'; '.join(problems)}") from exc
    except Exception as exc:  # cattrs raises what hooks raise; no cls to make, and so on
        raise InvalidValueError(f"cannot load {name}: {_describe(exc, None)}") from exc


def _describe(exc: BaseException, _: type | None) -> str:
    if isinstance(exc, KeyError):
        return "required field missing"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
