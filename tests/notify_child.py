"""A process that stores events and/or delivers them, for the SIGKILL test of test_notify_crash.

``python notify_child.py DB store``   checks three messages (days 0, 23 and 30 of an
                                      outdated server), then prints "stored" and waits.
``python notify_child.py DB send HOOK_URL SMTP_PORT``
                                      runs the outbox sender (one-second leases) until
                                      killed, printing "round" after each round.
"""

from __future__ import annotations

import datetime as dt
import sys
import time

from tbes.catalog import Catalog
from tbes.enforcer import Connection, Enforcer
from tbes.notifiers import EmailNotifier, WebhookNotifier
from tbes.outbox import OutboxSender, Receiver
from tbes.policy import DEFAULT_POLICY, ConnectorKind
from tbes.store import SQLiteStore

T0 = dt.datetime(2026, 1, 5, 11, 0, tzinfo=dt.UTC)
HOP = (
    "from EXMBX01.fabrikam.local (10.0.0.7) by mail.fabrikam.example (192.0.2.10) with "
    "Microsoft SMTP Server (version=TLS1_2, cipher=TLS_AES_256_GCM_SHA384) id 15.1.2507.39; "
    "Mon, 5 Jan 2026 10:00:00 +0000"
)
DAYS = (0, 23, 30)


def main() -> None:
    db, role = sys.argv[1], sys.argv[2]
    store = SQLiteStore(db)
    if role == "store":
        now = [T0]
        enforcer = Enforcer(
            store, DEFAULT_POLICY, Catalog.default(), clock=lambda: now[0], outbox=True
        )
        conn = Connection(
            "fabrikam-edge", "fabrikam", ConnectorKind.ON_PREMISES, connector="fabrikam-edge"
        )
        for day in DAYS:
            now[0] = T0 + dt.timedelta(days=day)
            enforcer.check(conn, [HOP])
        print("stored", flush=True)
        time.sleep(60)
        return
    hook_url, smtp_port = sys.argv[3], int(sys.argv[4])
    receivers = [
        Receiver(
            "mail",
            EmailNotifier(
                "127.0.0.1", smtp_port, sender="tbes@contoso.example", to=["ops@contoso.example"]
            ),
        ),
        Receiver("hook", WebhookNotifier(hook_url, timeout=20)),
    ]
    clock = lambda: dt.datetime.now(dt.UTC)  # noqa: E731
    # The events are of January 2026: kept, whatever today's date, until delivered.
    keep = dt.timedelta(days=36500)
    sender = OutboxSender(
        store, receivers, clock=clock, lease=dt.timedelta(seconds=1), keep=keep, expire=keep
    )
    while True:
        sender.run_once()
        print("round", flush=True)
        time.sleep(0.2)


if __name__ == "__main__":
    main()
