"""Run every benchmark and write the results, with the machine they ran on, as Markdown.

``python benchmarks/run.py [--quick | --smoke] [--output docs/performance.md]``

Each benchmark runs in processes of its own: the micro-benchmarks (``bench_received``,
``bench_decide``) are pyperf scripts, whose workers are spawned and calibrated by pyperf and
whose JSON results are read back here; the macro-benchmarks (``bench_enforcer``,
``bench_scale``) print JSON summaries. Every figure is shown next to a baseline measured in
the same run, as a ratio, so that a slower or busier machine moves both. ``--quick`` runs
fewer pyperf processes and leaves out the store of a million servers; ``--smoke`` runs each
benchmark once, tiny, only to prove that it still works (its figures mean nothing).
The measured notes on profiling and fixes are kept in ``benchmarks/findings.md`` and
copied into the output under the tables.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pyperf

import tbes

__all__ = ["MODES", "Mode", "machine", "main", "render"]

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FINDINGS = HERE / "findings.md"

DECIDE_TARGET = 300_000  # decisions per second on one core
CHECK_TARGET = 5_000  # messages per second from one process


class Mode(NamedTuple):
    """How hard to run: pyperf rounds and options, enforcer calls, scale sizes and checks."""

    name: str
    rounds: int
    pyperf_args: list[str]
    calls: int
    servers: int
    sizes: list[int]
    checks: int
    milter_messages: int = 1500
    milter_rounds: int = 5
    milter_postfix: bool = True


# bench_policy.py per mode: short connections, persistent ones, requests on each, rounds.
POLICY_LOADS = {
    "full": ["--short=3000", "--persistent=10", "--requests=1000", "--rounds=3"],
    "quick": ["--short=1000", "--persistent=10", "--requests=300", "--rounds=2"],
    "smoke": ["--short=4", "--persistent=2", "--requests=3", "--rounds=1"],
}
POLICY_TARGET_US = 100.0  # policy service CPU per request (issue 16)

MODES = {
    "full": Mode("full", 5, ["--processes=4"], 5000, 1000, [10_000, 100_000, 1_000_000], 1000),
    "quick": Mode("quick", 2, ["--processes=3"], 2000, 500, [10_000, 100_000], 500, 1000, 2),
    "smoke": Mode("smoke", 1, ["--debug-single-value"], 40, 10, [200, 1000], 10, 10, 1, False),
}


# ---- running ---------------------------------------------------------------------------


def _python(args: Sequence[str]) -> None:
    subprocess.run([sys.executable, *args], check=True, cwd=ROOT)


def _pyperf(script: str, mode: Mode, workdir: Path) -> dict[str, dict[str, float]]:
    """Run a pyperf script; its benchmarks' mean, stdev and value count, by name.

    pyperf runs a script's benchmarks one after the other, so on a machine whose load
    changes a benchmark and its baseline would see different loads. The script is run in
    ``mode.rounds`` rounds of a few worker processes each, appended to one result file,
    so that every benchmark is sampled in every round.
    """
    out = workdir / f"{Path(script).stem}.json"
    out.unlink(missing_ok=True)
    for _ in range(mode.rounds):
        _python([str(HERE / script), "--quiet", "--append", str(out), *mode.pyperf_args])
    suite = pyperf.BenchmarkSuite.load(str(out))
    results = {}
    for bench in suite.get_benchmarks():
        values = bench.get_nvalue()
        results[bench.get_name()] = {
            "mean": bench.mean(),
            "stdev": bench.stdev() if values > 1 else 0.0,
            "values": float(values),
        }
    return results


def _json_of(args: Sequence[str], out: Path) -> dict[str, Any]:
    _python([*args, "--json", str(out)])
    data: dict[str, Any] = json.loads(out.read_text())
    return data


def run_all(mode: Mode, workdir: Path) -> dict[str, Any]:
    """Run every benchmark in ``mode``; the results, keyed by benchmark."""
    results: dict[str, Any] = {"mode": mode.name, "machine": machine(), "load_before": _load()}
    results["received"] = _pyperf("bench_received.py", mode, workdir)
    results["decide"] = _pyperf("bench_decide.py", mode, workdir)
    results["enforcer"] = _json_of(
        [
            str(HERE / "bench_enforcer.py"),
            f"--calls={mode.calls}",
            f"--servers={mode.servers}",
            f"--workdir={workdir}",
        ],
        workdir / "enforcer.json",
    )
    results["scale"] = _json_of(
        [
            str(HERE / "bench_scale.py"),
            "all",
            f"--sizes={','.join(str(size) for size in mode.sizes)}",
            f"--checks={mode.checks}",
            f"--workdir={workdir}",
        ],
        workdir / "scale.json",
    )
    results["milter"] = _milter(mode, workdir)
    policy_args = [str(HERE / "bench_policy.py"), *POLICY_LOADS[mode.name]]
    if mode.name == "full" and _can_run_postfix():
        policy_args.append("--postfix=2000")
    results["policy"] = _json_of(policy_args, workdir / "policy.json")
    results["load_after"] = _load()
    return results


def _milter(mode: Mode, workdir: Path) -> dict[str, Any]:
    """The milter's CPU per message and Postfix's throughput with it (``milter_load.py``)."""
    from benchmarks.milter_load import postfix_available

    why_not = postfix_available() if mode.milter_postfix else "not in this mode"
    args = [str(HERE / "milter_load.py"), f"--messages={mode.milter_messages}"]
    args += [f"--rounds={mode.milter_rounds}", "--concurrency=20"]
    if why_not is None:
        args.append("--postfix")
    data = _json_of(args, workdir / "milter.json")
    data["postfix_skipped"] = why_not
    return data


def _can_run_postfix() -> bool:
    """A private Postfix needs root and Postfix's programs (else that part is left out)."""
    return os.geteuid() == 0 and all(
        shutil.which(name, path="/usr/sbin:/usr/bin") for name in ("postfix", "smtp-source")
    )


# ---- the machine -----------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def _load() -> str:
    try:
        return " ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def _commit() -> str:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return done.stdout.strip()


def machine() -> dict[str, str]:
    """What the benchmarks ran on: CPUs, memory, OS, Python and library versions, date."""
    memory = _memory_gib()
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "nproc": str(
            len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        ),
        "memory": "unknown" if memory is None else f"{memory:.1f} GiB",
        "os": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "tbes": f"{tbes.__version__} (commit {_commit()})",
        "sqlite": sqlite3.sqlite_version,
        "pyperf": pyperf.__version__,
    }


# ---- rendering -------------------------------------------------------------------------


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.2f} µs"


def _rate(per_s: float) -> str:
    return f"{per_s:,.0f}/s"


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}x" if base > 0 else "n/a"


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _micro_section(results: dict[str, Any]) -> list[str]:
    received, decide = results["received"], results["decide"]
    stdlib, ours = received["received-stdlib"]["mean"], received["received-tbes"]["mean"]
    values, hops = received["received-values"]["mean"], received["received-hops"]["mean"]
    corpus_stdlib = received["received-corpus-stdlib"]["mean"]
    corpus_ours = received["received-corpus-tbes"]["mean"]
    trivial, decision = decide["decide-trivial"]["mean"], decide["decide"]["mean"]
    return [
        "## Micro-benchmarks (pyperf)",
        "",
        "Mean CPU time per call (`time.thread_time`, so that time spent waiting for a busy "
        "machine's cores is left out) over pyperf's worker processes, run in rounds so that "
        "each benchmark and its baseline are sampled alike; the ratio is against the "
        "baseline in the same row, measured the same way in the same run.",
        "",
        "| What | Time per call | Baseline | Baseline time | Ratio | Target | Met |",
        "|---|---|---|---|---|---|---|",
        f"| `find_sender(received_values(block))`: the whole analysis of an 8-hop header "
        f"block | {_us(ours)} | stdlib `HeaderParser(policy=compat32)` parse + Received "
        f"values | {_us(stdlib)} | {_ratio(ours, stdlib)} | < 1.00x | {_met(ours < stdlib)} |",
        f"| `find_sender(received_values(block))` over every block of the corpus of real "
        f"headers (`benchmarks/corpus/`) | {_us(corpus_ours)} | stdlib `HeaderParser("
        f"policy=compat32)` bare parse of the same blocks | {_us(corpus_stdlib)} "
        f"| {_ratio(corpus_ours, corpus_stdlib)} | ≤ 0.50x "
        f"| {_met(corpus_ours <= 0.5 * corpus_stdlib)} |",
        f"| `received_values(block)` alone | {_us(values)} | same | {_us(stdlib)} "
        f"| {_ratio(values, stdlib)} | | |",
        f"| `parse_received(value)`, per hop | {_us(hops)} | same, per hop "
        f"| {_us(stdlib / 8)} | {_ratio(hops, stdlib / 8)} | | |",
        f"| `decide(state, now, policy)`, mixed states | {_us(decision)} "
        f"({_rate(1 / decision)}) | a function reading the same fields + one dict lookup "
        f"| {_us(trivial)} ({_rate(1 / trivial)}) | {_ratio(decision, trivial)} "
        f"| ≥ {DECIDE_TARGET:,}/s | {_met(1 / decision >= DECIDE_TARGET)} |",
        "",
    ]


_CASES = {
    "sqlite": "`Enforcer.check`, SQLiteStore (real clock, as in production)",
    "sqlite-no-write": "`Enforcer.check`, SQLiteStore, clock stopped (nothing to record)",
    "memory": "`Enforcer.check`, MemoryStore (real clock, no I/O)",
    "raw-sqlite-cas": "baseline: raw sqlite3 CAS per message (BEGIN IMMEDIATE, read, "
    "update, COMMIT; WAL, synchronous=FULL)",
    "raw-sqlite-read": "baseline: raw sqlite3 primary-key read",
}


def _enforcer_section(results: dict[str, Any]) -> list[str]:
    enforcer = results["enforcer"]
    cases = enforcer["cases"]
    floor = cases["raw-sqlite-cas"]
    lines = [
        "## Enforcer.check end to end",
        "",
        f"{enforcer['calls']:,} messages from {enforcer['servers']:,} servers (every server "
        f"seen once before timing), one process, database on {enforcer['file_system']}. "
        "Latency per call by `time.perf_counter_ns`; throughput is calls over the wall time "
        "of the run. Ratios are p50 latency against the raw SQLite compare-and-swap.",
        "",
        "| Case | Throughput | CPU per call | p50 | p90 | p99 | max | p50 ratio to raw CAS |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, label in _CASES.items():
        case = cases[name]
        lines.append(
            f"| {label} | {_rate(case['per_s'])} | {case['cpu_us']:,.0f} µs "
            f"| {case['p50_us']:,.0f} µs "
            f"| {case['p90_us']:,.0f} µs | {case['p99_us']:,.0f} µs | {case['max_us']:,.0f} µs "
            f"| {_ratio(case['p50_us'], floor['p50_us'])} |"
        )
    rate = cases["sqlite"]["per_s"]
    lines += [
        "",
        f"Target ≥ {CHECK_TARGET:,} messages/s on SQLite from one process: "
        f"{_met(rate >= CHECK_TARGET)} ({_rate(rate)}).",
        "",
    ]
    return lines


def _bar(value: float, top: float, width: int = 40) -> str:
    return "#" * max(1, round(width * value / top)) if top > 0 else ""


def _per_row(point: dict[str, Any]) -> float:
    return float(point["report_cpu_s"]) / float(point["size"])


def _scale_section(results: dict[str, Any]) -> list[str]:
    scale = results["scale"]
    curve = scale["curve"]
    lines = [
        "## Scale: stores of many servers",
        "",
        f"SQLite files on {scale['file_system']}, filled through `SQLiteStore.put_many` "
        "(10,000 rows per transaction). Reporting is every state from `states()` through "
        "`report_row`; its baseline reads every row with raw sqlite3 and `json.loads`. "
        "Peak memory is the measuring process's `ru_maxrss` after reporting (before: after "
        f"opening the store). Checks and reads: {scale['checks']:,} random servers, each "
        "check a write (the stored states are older than the clock).",
        "",
        "| Servers | Build | Report all rows | per row (CPU) | Raw scan | Ratio | Peak RSS "
        "(before) | `get` p50 / p99 | `check` p50 / p99 | `check` CPU per call | `check` rate |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for point in curve:
        size = point["size"]
        get, check = point["get"], point["check"]
        lines.append(
            f"| {size:,} | {point['build_s']:,.1f} s | {point['report_s']:,.1f} s "
            f"| {point['report_s'] / size * 1e6:,.0f} µs "
            f"({point['report_cpu_s'] / size * 1e6:,.0f} µs) | {point['raw_scan_s']:,.2f} s "
            f"| {_ratio(point['report_s'], point['raw_scan_s'])} "
            f"| {point['rss_peak_mib']:,.0f} MiB ({point['rss_before_mib']:,.0f}) "
            f"| {get['p50_us']:,.0f} / {get['p99_us']:,.0f} µs "
            f"| {check['p50_us']:,.0f} / {check['p99_us']:,.0f} µs | {check['cpu_us']:,.0f} µs "
            f"| {_rate(check['per_s'])} |"
        )
    lines += ["", "The curve (per server; each bar scaled to the largest value in its block):"]
    lines += ["", "```text"]
    series: list[tuple[str, list[float]]] = [
        ("report, CPU µs per row", [p["report_cpu_s"] / p["size"] * 1e6 for p in curve]),
        ("peak RSS while reporting, MiB", [p["rss_peak_mib"] for p in curve]),
        ("check, CPU µs per call", [p["check"]["cpu_us"] for p in curve]),
        ("get p50, µs", [p["get"]["p50_us"] for p in curve]),
    ]
    for title, values in series:
        top = max(values)
        lines.append(title)
        for point, value in zip(curve, values, strict=True):
            lines.append(f"  {point['size']:>9,} {value:>10,.1f} {_bar(value, top)}")
    lines += ["```", ""]
    if len(curve) > 1:
        first, last = curve[0], curve[-1]
        growth = last["get"]["p50_us"] / first["get"]["p50_us"]
        lines += [
            f"From {first['size']:,} to {last['size']:,} servers "
            f"({last['size'] // first['size']:,}x the rows), `get` p50 changes "
            f"{growth:.2f}x, `check` CPU per call "
            f"{last['check']['cpu_us'] / first['check']['cpu_us']:.2f}x and reporting CPU per "
            f"row {_per_row(last) / _per_row(first):.2f}x; peak memory while reporting grows "
            f"from {first['rss_peak_mib']:,.0f} to {last['rss_peak_mib']:,.0f} MiB.",
            "",
        ]
    return lines


MILTER_RATIO_TARGET = 0.75  # Postfix with the tbes milter against Postfix alone (aim 0.85)
SERVE_RATIO_TARGET = 0.70  # with the milter and the policy service
MILTER_CPU_TARGET_US = 250.0  # tbes milter CPU per message
MILTER_NOOP_TARGET = 1.5  # tbes milter CPU per message against the do-nothing milter's


def _milter_section(milter: dict[str, Any]) -> list[str]:
    from benchmarks.milter_load import TRANSPORT_LABELS, table

    lines = [
        "## The milter inside Postfix",
        "",
        "`benchmarks/milter_load.py`: each milter in its own process, its CPU time (user + "
        "system, from `/proc`) per message; *direct* drives it as Postfix does (one message "
        "per milter connection), *via Postfix* is a private Postfix on loopback fed by "
        "`smtp-source -s 20`, one message per SMTP session. Each is measured with the MTA "
        "reaching the milter over TCP on loopback and over a unix socket (`smtpd_milters = "
        "unix:/path`, as a milter on the MTA's host is usually reached; `docs/postfix.md`). "
        "The variants and transports run side by side in each round, rounds interleaved; the "
        "figures are medians over the rounds, the ratios are taken within each round against "
        "Postfix alone of the same round. The *noop* milter is the same server and codec with "
        "a checker that accepts at once. See `docs/milter.md`.",
        "",
        f"Run: {milter['heading']}.",
        "",
    ]
    transports: dict[str, Any] = milter["transports"]
    for transport, data in transports.items():
        lines += [f"### {TRANSPORT_LABELS[transport]}", "", *table(data["rounds"]), ""]
    if milter.get("postfix_skipped"):
        lines += [f"Postfix part skipped: {milter['postfix_skipped']}.", ""]
    targets: list[tuple[str, str, str, Callable[[float], bool], str]] = [
        (
            "Postfix + tbes milter, ratio to Postfix alone",
            "≥ 0.75 (aim 0.85)",
            "tbes ratio",
            lambda v: v >= MILTER_RATIO_TARGET,
            "{:.2f}",
        ),
        (
            "Postfix + milter + policy service, ratio to Postfix alone",
            "≥ 0.70",
            "serve ratio",
            lambda v: v >= SERVE_RATIO_TARGET,
            "{:.2f}",
        ),
        (
            "tbes milter CPU per message",
            "≤ 250 µs",
            "tbes cpu",
            lambda v: v <= MILTER_CPU_TARGET_US,
            "{:,.0f} µs",
        ),
        (
            "tbes milter CPU per message against the noop milter's",
            "≤ 1.5x",
            "tbes vs_noop",
            lambda v: v <= MILTER_NOOP_TARGET,
            "{:.2f}x",
        ),
    ]
    names = [TRANSPORT_LABELS[transport].split(" (")[0] for transport in transports]
    lines += [
        "| Target | Wanted | " + " | ".join(f"Measured, {name} | Met" for name in names) + " |",
        "|---|---|" + "---|---|" * len(names),
    ]
    for label, wanted, key, ok, shape in targets:
        cells = []
        for data in transports.values():
            value = _milter_figure(data["medians"], key)
            shown = "not measured" if value is None else shape.format(value)
            cells += [shown, "n/a" if value is None else _met(ok(value))]
        lines.append(f"| {label} | {wanted} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _milter_figure(medians: dict[str, dict[str, float | None]], key: str) -> float | None:
    """One figure the targets judge: via Postfix when it ran, else direct."""
    name, what = key.split()
    row = medians.get(name, {})
    if what == "ratio":
        return row.get("ratio")
    if what == "cpu":
        return row.get("postfix_us") or row.get("direct_us")
    return row.get("postfix_vs_noop") or row.get("direct_vs_noop")


_POLICY_VARIANTS = {
    "floor": "floor: a bare asyncio protocol answering `DUNNO` to each empty line, parsing nothing",
    "noop": "`PolicyService` with a checker that accepts at once (same server code)",
    "tbes": "`tbes policy` as deployed (configuration, enforcer, SQLite, decision log)",
}


def _policy_section(results: dict[str, Any]) -> list[str]:
    policy = results["policy"]
    cpu = policy["cpu_us"]
    lines = [
        "## Postfix policy service",
        "",
        "CPU time of the server process (every thread, from `/proc`) per request, the "
        f"median of {policy['rounds']} interleaved rounds; requests as Postfix 3.x sends "
        "them (some 30 attributes), one at a time per connection, naming in turn a server "
        "with a stored state (blocked), one of an enforced connector without a state and a "
        f"client no connector matches. *Short*: {policy['short']:,} connections of one "
        f"request each, {policy['concurrency']} at a time; *persistent*: "
        f"{policy['persistent']} connections of {policy['requests']:,} requests each, as "
        "Postfix's `smtpd` processes keep theirs. Ratios are against the floor in the same run.",
        "",
        "| Server | Short: CPU per request | ratio | Persistent: CPU per request | ratio |",
        "|---|---|---|---|---|",
    ]
    floor = cpu["floor"]
    for name, label in _POLICY_VARIANTS.items():
        short, persistent = cpu[name]["short"], cpu[name]["persistent"]
        lines.append(
            f"| {label} | {short:,.0f} µs | {_ratio(short, floor['short'])} "
            f"| {persistent:,.0f} µs | {_ratio(persistent, floor['persistent'])} |"
        )
    served = cpu["tbes"]["persistent"]
    lines += [
        "",
        f"Target ≤ {POLICY_TARGET_US:,.0f} µs of CPU per request (persistent connections, "
        f"as Postfix uses them): {_met(served <= POLICY_TARGET_US)} ({served:,.0f} µs).",
        "",
    ]
    postfix = policy.get("postfix")
    if postfix is None:
        lines += [
            "Through Postfix: not measured in this run (it needs root and Postfix installed).",
            "",
        ]
        return lines
    rates, cost = postfix["per_s"], postfix["tbes_cpu_us"]
    lines += [
        f"Through a private Postfix on loopback (discard transport): `smtp-source` sends "
        f"{postfix['messages']:,} messages, one per session, {postfix['sessions']} sessions "
        f"at a time, from an enforced Exchange 2007 server; {postfix['rounds']} rounds "
        "alternating the set-ups, medians. `tbes serve` runs the milter and the policy "
        "service in one process.",
        "",
        "| Postfix with | Messages/s | Ratio to Postfix alone | tbes CPU per message |",
        "|---|---|---|---|",
    ]
    for name, label in (
        ("alone", "nothing (alone)"),
        ("policy", "the tbes policy service (`check_policy_service` at RCPT)"),
        ("milter+policy", "the tbes milter and policy service"),
    ):
        lines.append(
            f"| {label} | {rates[name]:,.0f} | {_ratio(rates[name], rates['alone'])} "
            f"| {cost[name]:,.0f} µs |"
        )
    both = rates["milter+policy"] / rates["alone"]
    lines += ["", f"Target milter + policy service ≥ 0.70x Postfix alone: {_met(both >= 0.7)}.", ""]
    return lines


def render(results: dict[str, Any]) -> str:
    """The Markdown page for ``results`` (as :func:`run_all` returns them)."""
    info = results["machine"]
    lines = [
        "# Performance",
        "",
        "Performance is a measured feature of tbes: the figures below come from "
        "`make bench` (`python benchmarks/run.py`), which writes this page. Each figure is "
        "set against a baseline measured in the same run, so the ratios carry over to other "
        "machines better than the absolute times. See `benchmarks/README.md` for what each "
        "benchmark does and how to run one alone.",
        "",
    ]
    if results["mode"] != "full":
        lines += [
            f"```{{note}}\nThis page was written by a `--{results['mode']}` run: "
            + (
                "its figures mean nothing (each benchmark ran once, tiny)."
                if results["mode"] == "smoke"
                else "fewer pyperf processes and no store of a million servers."
            )
            + "\n```",
            "",
        ]
    lines += [
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        f"| Date | {info['date']} |",
        f"| CPU | {info['cpu']} |",
        f"| CPUs available (nproc) | {info['nproc']} |",
        f"| Memory | {info['memory']} |",
        f"| OS | {info['os']} |",
        f"| Python | {info['python']} |",
        f"| tbes | {info['tbes']} |",
        f"| SQLite | {info['sqlite']} |",
        f"| pyperf | {info['pyperf']} |",
        f"| Load average before / after (1, 5, 15 min) | {results['load_before']} / "
        f"{results['load_after']} |",
        "",
    ]
    lines += _micro_section(results)
    lines += _enforcer_section(results)
    lines += _scale_section(results)
    if "milter" in results:
        lines += _milter_section(results["milter"])
    if "policy" in results:  # results saved before the policy benchmark existed have none
        lines += _policy_section(results)
    if FINDINGS.exists():
        lines += [FINDINGS.read_text().rstrip(), ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``[--quick | --smoke] [--output FILE] [--workdir DIR] [--json FILE]``.

    ``--from-json FILE`` renders results saved earlier by ``--json`` without running anything
    (e.g. after editing ``benchmarks/findings.md``).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="fewer runs, no 1M-server store")
    group.add_argument("--smoke", action="store_true", help="each benchmark once, tiny")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "performance.md")
    parser.add_argument("--workdir", type=Path, help="where temporary databases go (on disk)")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument(
        "--from-json", type=Path, help="run nothing: render results saved by --json"
    )
    args = parser.parse_args(argv)
    if args.from_json is not None:
        results = json.loads(args.from_json.read_text())
    else:
        mode = MODES["smoke" if args.smoke else "quick" if args.quick else "full"]
        with tempfile.TemporaryDirectory(prefix="tbes-bench-", dir=args.workdir) as tmp:
            results = run_all(mode, Path(tmp))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(render(results))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
