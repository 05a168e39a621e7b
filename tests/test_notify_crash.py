"""Events survive a SIGKILL of the process on either side of the outbox.

Three real processes share one SQLite file: the first stores three events (in the
transactions of the changes they announce) and is killed before anything is delivered; the
second runs the sender and is killed while the webhook holds its first request unanswered
(delivered, not yet recorded); the third delivers the rest. A real webhook (http.server)
and a real SMTP sink (aiosmtpd), both on loopback, receive exactly the three events, and a
receiver honouring the idempotency key (``Idempotency-Key``, ``Message-ID``) keeps each
once.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from notify_support import HookServer, MailSink
from tbes.events import EventKind, event_id

CHILD = Path(__file__).with_name("notify_child.py")


def _start(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(CHILD.parent)}
    return subprocess.Popen(
        [sys.executable, str(CHILD), *args], stdout=subprocess.PIPE, text=True, env=env
    )


def _wait_for(check: object, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def _kill(child: subprocess.Popen[str]) -> None:
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    assert child.returncode == -signal.SIGKILL


def test_every_event_arrives_once_across_sigkills(
    tmp_path: Path, hook: HookServer, sink: MailSink
) -> None:
    db = str(tmp_path / "tbes.db")
    storer = _start(db, "store")
    assert storer.stdout is not None
    assert storer.stdout.readline().strip() == "stored"
    _kill(storer)  # between store and delivery
    assert hook.posts == []
    assert sink.messages == []

    hook.stall = True
    sender = _start(db, "send", hook.url, str(sink.port))
    _wait_for(lambda: len(hook.posts) == 1)
    _kill(sender)  # the webhook has the first event, the store does not know it

    hook.stall = False
    hook.released.set()
    sender = _start(db, "send", hook.url, str(sink.port))
    try:
        # The first event again (its lease runs out a second after the kill), and the rest.
        _wait_for(lambda: len(hook.posts) == 4 and len(sink.messages) >= 3)
        time.sleep(1.5)  # a few more rounds: nothing more may arrive
    finally:
        _kill(sender)

    # The ids the three events must have: from what they announce, never from who sent them.
    start = dt.datetime(2026, 1, 5, 11, 0, tzinfo=dt.UTC)
    ids = [
        event_id("fabrikam-edge", EventKind.DETECTED, start, 1),
        event_id("fabrikam-edge", EventKind.THROTTLING_SOON, start, 2),
        event_id("fabrikam-edge", EventKind.STAGE_CHANGED, start, 2),
    ]
    assert list(hook.kept()) == ids  # in order, each once by its key
    posted = [key for key, _ in hook.posts]
    # The first was sent twice: before the kill, and again once its lease ran out (before or
    # after the other two, depending on how fast the new sender started).
    assert posted[0] == ids[0]
    assert sorted(posted[1:]) == sorted(ids)
    assert [body["kind"] for body in hook.kept().values()] == [
        "DETECTED",
        "THROTTLING_SOON",
        "STAGE_CHANGED",
    ]
    assert list(sink.kept()) == [f"<{i}@contoso.example>" for i in ids]
    assert len(sink.messages) == 3  # the mails were recorded before the kill: sent once
