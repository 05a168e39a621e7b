"""Measuring helpers shared by the macro benchmarks: latency percentiles, memory, file systems.

Latencies are taken with :func:`time.perf_counter_ns` around each call (pyperf reports means,
not tails), and percentiles are read from the sorted samples by the nearest-rank method.
Peak memory is the process's ``ru_maxrss``, so every measurement that needs it runs in a
process of its own.
"""

from __future__ import annotations

import math
import os
import resource
import sys
from pathlib import Path
from typing import TypedDict

__all__ = ["Latency", "file_system", "latency", "peak_rss_mib", "percentile"]


class Latency(TypedDict):
    """Throughput and latency of a run of calls, in calls/s and microseconds."""

    calls: int
    per_s: float
    cpu_us: float
    mean_us: float
    p50_us: float
    p90_us: float
    p99_us: float
    max_us: float


def percentile(ordered: list[int], fraction: float) -> int:
    """The nearest-rank percentile of already sorted samples (``fraction`` in (0, 1])."""
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def latency(samples_ns: list[int], wall_s: float, cpu_s: float) -> Latency:
    """Summarise per-call samples (ns) and the wall and CPU time of the whole run (s).

    The CPU time (this thread's) leaves out waiting: for the disk, and on a busy machine
    for a core; the difference between it and the latencies is what waiting cost.
    """
    ordered = sorted(samples_ns)
    count = len(ordered)
    return Latency(
        calls=count,
        per_s=count / wall_s if wall_s > 0 else math.inf,
        cpu_us=cpu_s / count * 1e6,
        mean_us=sum(ordered) / count / 1e3,
        p50_us=percentile(ordered, 0.50) / 1e3,
        p90_us=percentile(ordered, 0.90) / 1e3,
        p99_us=percentile(ordered, 0.99) / 1e3,
        max_us=ordered[-1] / 1e3,
    )


def peak_rss_mib() -> float:
    """This process's peak resident set size so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def file_system(path: str | os.PathLike[str]) -> str:
    """The type of the file system holding ``path`` (e.g. ``ext4``, ``tmpfs``), if known."""
    target = Path(path).resolve()
    best, kind = "", "unknown"
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return kind
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1]
        if (target == Path(point) or Path(point) in target.parents) and len(point) > len(best):
            best, kind = point, fields[2]
    return kind
