"""Shared test set-up: Hypothesis profiles and the integration switch for system services."""

from __future__ import annotations

import glob
import os
import shutil
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, settings

if TYPE_CHECKING:
    from integration.pg import PostgresServer
    from notify_support import HookServer, MailSink

settings.register_profile("dev", max_examples=100)
settings.register_profile(
    "ci",
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

# What each system service needs on PATH (or at a known place) for its tests to run.
_SERVICE_BINARIES: dict[str, tuple[str, ...]] = {
    "postgresql": ("initdb", "pg_ctl", "postgres"),
    "postfix": ("postfix", "sendmail"),
    "chromium": ("chromium",),
    "systemd": ("systemd-analyze",),
}
# Debian keeps server binaries off PATH: /usr/sbin for Postfix, a versioned dir for PostgreSQL.
_EXTRA_PATHS = ("/usr/sbin", *sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True))


def require_integration() -> bool:
    """True when missing services must fail tests instead of skipping them (CI)."""
    return os.environ.get("TBES_REQUIRE_INTEGRATION") == "1"


def find_binary(name: str) -> str | None:
    """Locate a service binary on PATH or in the usual Debian places."""
    extra = os.pathsep.join(_EXTRA_PATHS)
    return shutil.which(name, path=os.environ.get("PATH", "") + os.pathsep + extra)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip (or, under TBES_REQUIRE_INTEGRATION=1, fail) tests whose service is missing."""
    for item in items:
        for marker in item.iter_markers(name="service"):
            service = marker.args[0]
            missing = [b for b in _SERVICE_BINARIES[service] if find_binary(b) is None]
            if not missing:
                continue
            reason = f"{service} is not installed (missing: {', '.join(missing)})"
            if require_integration():
                item.add_marker(pytest.mark.usefixtures("_fail_missing_service"))
                item.user_properties.append(("missing_service", reason))
            else:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def _fail_missing_service(request: pytest.FixtureRequest) -> None:
    reasons = [v for k, v in request.node.user_properties if k == "missing_service"]
    pytest.fail(f"TBES_REQUIRE_INTEGRATION=1 but {'; '.join(map(str, reasons))}", pytrace=False)


@pytest.fixture
def hook() -> Iterator[HookServer]:
    """A webhook receiver on loopback (tests/notify_support.py)."""
    from notify_support import HookServer

    server = HookServer().start()
    yield server
    server.stop()


@pytest.fixture
def sink() -> Iterator[MailSink]:
    """An SMTP sink on loopback (tests/notify_support.py)."""
    from notify_support import MailSink

    server = MailSink().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server, shared by every test that needs one; stopped at the
    end of the session, pass or fail (tests/integration/pg.py)."""
    from integration.pg import acquire, release

    server = acquire()
    yield server
    release()
