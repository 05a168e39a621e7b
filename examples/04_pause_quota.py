"""Pauses and the yearly quota: two servers of one tenant share 90 days a year.

EX01 takes 30 days and EX02 60, so a third request is refused; ending EX02's pause early
returns its unused days; at the end of the year unused days expire and the next year
starts with a fresh 90. Run it: ``python examples/04_pause_quota.py``.
"""

from __future__ import annotations

import datetime as dt

from tbes.errors import QuotaExceededError
from tbes.ledger import Pause, PauseLedger


def _usage(ledger: PauseLedger, year: int) -> str:
    return f"{year}: {ledger.used(year)} used, {ledger.remaining(year)} remaining"


def _granted(ledger: PauseLedger, pause: Pause) -> None:
    print(
        f"granted {pause.server_id}: {pause.days} days from {pause.start} to {pause.last_day}"
        f" ({_usage(ledger, pause.start.year)})"
    )


def main() -> None:
    """Walk one tenant's ledger through a year and into the next."""
    ledger = PauseLedger("contoso")  # the default quota: 90 days per UTC calendar year
    print(f"tenant {ledger.tenant}: pause quota {ledger.quota_days} days per UTC calendar year")

    today = dt.date(2024, 1, 2)
    for server, start, days in [
        ("EX01", dt.date(2024, 2, 1), 30),
        ("EX02", dt.date(2024, 4, 1), 60),
    ]:
        ledger = ledger.grant(server, start, days, today=today)
        _granted(ledger, ledger.pauses_for(server)[-1])

    try:
        ledger.grant("EX03", dt.date(2024, 7, 1), 10, today=today)
    except QuotaExceededError as error:
        print(f"refused: {error}")

    # EX02 is fixed early: ending its pause on 20 April keeps 1-20 April and returns the rest.
    today = dt.date(2024, 4, 20)
    ledger = ledger.end("EX02", today=today)
    kept = ledger.pauses_for("EX02")[-1]
    print(f"ended EX02 on {today}: keeps {kept.days} days ({_usage(ledger, 2024)})")
    ledger = ledger.grant("EX03", dt.date(2024, 7, 1), 10, today=today)
    _granted(ledger, ledger.pauses_for("EX03")[-1])

    # Year end: the 30 days left in 2024 expire; 2025 has its own 90.
    print(f"after 31 December the unused days expire: {_usage(ledger, 2025)}")
    ledger = ledger.grant("EX01", dt.date(2025, 1, 1), 90, today=dt.date(2024, 12, 31))
    _granted(ledger, ledger.pauses_for("EX01")[-1])


if __name__ == "__main__":
    main()
