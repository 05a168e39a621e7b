"""Run the enforcer over four months of mail from three Exchange servers, kept in SQLite.

Three servers send mail now and then from 5 January 2026: an outdated Exchange 2016, a
compliant Exchange 2019, and an unsupported Exchange 2013 that is paused for ten days and
then upgraded to Exchange SE. The clock is simulated, the state lives in a temporary SQLite
file, and every decision and every notification is printed.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path

from tbes.catalog import Catalog
from tbes.decision import Decision
from tbes.enforcer import Connection, Enforcer
from tbes.events import Event
from tbes.notifiers import CallbackNotifier
from tbes.policy import DEFAULT_POLICY, ConnectorKind
from tbes.store import SQLiteStore

START = dt.datetime(2026, 1, 5, 10, 0, tzinfo=dt.UTC)
TENANT = "contoso"
BUILDS = {
    "ex2016.contoso.example": "15.1.2507.39",  # Exchange 2016 CU23, below the Oct 2025 SU
    "ex2019.contoso.example": "15.2.1748.39",  # Exchange 2019 CU15 with the Oct 2025 SU
    "ex2013.contoso.example": "15.0.1497.48",  # Exchange 2013: unsupported
}
UPGRADE = ("ex2013.contoso.example", 91, "15.2.2562.17")  # to Exchange SE by day 91
PAUSE = ("ex2013.contoso.example", 62, 10)  # ten days from day 62
DAYS = (0, 14, 31, 45, 62, 76, 91, 110)


def received(server: str, build: str, at: dt.datetime) -> list[str]:
    """The Received header an Exchange server adds when it hands a message on."""
    return [
        f"from mbx01.contoso.local (10.0.0.7) by {server} (192.0.2.10) with Microsoft SMTP "
        f"Server (version=TLS1_2, cipher=TLS_AES_256_GCM_SHA384) id {build}; "
        f"{at:%a, %d %b %Y %H:%M:%S +0000}"
    ]


def describe(decision: Decision) -> str:
    """Stage, action, and the reply an MTA would send."""
    stage = f"stage {decision.stage.number}" if decision.stage else "no episode"
    stage += " (paused)" if decision.paused else ""
    reply = f"  {decision.reply}" if decision.reply else ""
    return f"{stage:<17} {decision.action.value}{reply}"


def print_event(event: Event) -> None:
    """Print a notification as an operator would get it."""
    print(f"    event {event.kind.value}: {event.server_id} (stage {event.stage}): {event.detail}")


def main() -> None:
    """Feed the simulated mail through an Enforcer on a temporary SQLite store."""
    now = [START]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tbes.db"
        store = SQLiteStore(path)
        enforcer = Enforcer(
            store,
            DEFAULT_POLICY,
            Catalog.default(),
            clock=lambda: now[0],
            notifier=CallbackNotifier(print_event),
        )
        builds = dict(BUILDS)
        for day in DAYS:
            now[0] = START + dt.timedelta(days=day)
            if day == PAUSE[1]:
                ledger = enforcer.pause(TENANT, PAUSE[0], PAUSE[2])
                print(f"day {day:>3}: paused {PAUSE[0]}; {ledger.remaining(2026)} days left")
            if day >= UPGRADE[1]:
                builds[UPGRADE[0]] = UPGRADE[2]
            for server, build in builds.items():
                conn = Connection(server, TENANT, ConnectorKind.ON_PREMISES)
                decision = enforcer.check(conn, received(server, build, now[0]))
                print(
                    f"day {day:>3} {now[0]:%Y-%m-%d}  {server:<24} {build:<13} {describe(decision)}"
                )
        store.close()

        print(f"\nStored in {path.name}, reopened:")
        with SQLiteStore(path) as reopened:
            for state in reopened.states(TENANT):
                if state.first_detected is None:
                    history = "never enforced"
                else:
                    history = f"episode from {state.first_detected:%Y-%m-%d}"
                    if state.compliant_since is not None:
                        history += f", compliant since {state.compliant_since:%Y-%m-%d}"
                print(f"  {state.server_id:<24} {state.status.value:<11} {history}")


if __name__ == "__main__":
    main()
