"""``--metrics HOST:PORT``: Prometheus metrics of a daemon, scraped over HTTP on loopback.

The page is read with prometheus-client's own text parser (an independent reader of the
exposition format), from a ``tbes policy`` daemon in a child process.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemon_support import (
    BLOCK_PREFIX,
    TBES,
    Daemon,
    ask_policy,
    break_row,
    config_text,
    free_port,
    seed_exchange_2007,
)

pytestmark = pytest.mark.timeout(90)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    """Every sample on the page: (name, sorted labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as page:
        text = page.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def wait_for(port: int, name: str, expected: float, **labels: str) -> Samples:
    deadline = time.monotonic() + 15
    while True:
        samples = scrape(port)
        if value(samples, name, **labels) == expected:
            return samples
        assert time.monotonic() < deadline, (name, labels, value(samples, name, **labels))
        time.sleep(0.05)


def test_a_daemon_serves_decisions_faults_latency_connections_store_errors_and_reloads(
    tmp_path: Path,
) -> None:
    config = tmp_path / "adapters.toml"
    config.write_text(config_text(with_rule=True), encoding="utf-8")
    db = tmp_path / "t.db"
    seed_exchange_2007(db)
    port, metrics = free_port(), free_port()
    args = ["policy", "--listen", f"127.0.0.1:{port}", "--db", str(db), "--config", str(config)]
    with Daemon(tmp_path, [*args, "--metrics", f"127.0.0.1:{metrics}"], [port, metrics]) as daemon:
        before = scrape(metrics)
        assert value(before, "tbes_store_errors_total") == 0
        assert value(before, "tbes_config_reloads_total", result="ok") == 0
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            assert ask_policy(sock).startswith(BLOCK_PREFIX)
            samples = scrape(metrics)
            blocked = {"adapter": "policy", "action": "BLOCK", "stage": "8"}
            assert value(samples, "tbes_decisions_total", **blocked) == 1
            assert value(samples, "tbes_open_connections", adapter="policy") == 1
            assert value(samples, "tbes_check_seconds_count", adapter="policy") == 1
            # An unreadable row: the store fails, the check fails open.
            break_row(db, "fabrikam-edge")
            assert ask_policy(sock) == b"action=DUNNO\n\n"
            samples = scrape(metrics)
            accepted = {"adapter": "policy", "action": "ACCEPT", "stage": "none"}
            assert value(samples, "tbes_decisions_total", **accepted) == 1
            assert value(samples, "tbes_faults_total", adapter="policy", kind="store") == 1
            assert value(samples, "tbes_store_errors_total") == 1
        wait_for(metrics, "tbes_open_connections", 0, adapter="policy")
        daemon.signal(signal.SIGHUP)
        wait_for(metrics, "tbes_config_reloads_total", 1, result="ok")
        config.write_text("[[connector]]\n", encoding="utf-8")
        daemon.signal(signal.SIGHUP)
        samples = wait_for(metrics, "tbes_config_reloads_total", 1, result="failed")
        assert value(samples, "tbes_config_reloads_total", result="ok") == 1
        assert daemon.stop() == 0
    assert "fault=store" in daemon.log()


def test_metrics_without_prometheus_client_is_one_line_naming_the_extra(tmp_path: Path) -> None:
    config = tmp_path / "adapters.toml"
    config.write_text('tenant = "contoso"\n', encoding="utf-8")
    # As if the extra were not installed: importing prometheus_client fails.
    main = "import sys; sys.modules['prometheus_client'] = None; " + TBES.removeprefix(
        "import sys; "
    )
    args = ["policy", "--listen", f"127.0.0.1:{free_port()}", "--db", str(tmp_path / "t.db")]
    args += ["--config", str(config), "--metrics", f"127.0.0.1:{free_port()}"]
    done = subprocess.run([sys.executable, "-c", main, *args], capture_output=True, timeout=30)
    assert done.returncode == 2
    assert done.stderr.decode().splitlines() == [
        "tbes: error: --metrics needs prometheus-client: pip install 'tbes[metrics]'"
    ]
