"""Received headers: tbes's whole analysis of header blocks against the stdlib's bare parse.

The baseline is what any mail filter pays anyway: ``email.parser.HeaderParser`` (compat32)
reading the block. tbes is measured doing all of its work on the same block:
:func:`~tbes.received.received_values` cuts the values out and
:func:`~tbes.received.find_sender` picks the sender's hop. Two workloads: the synthetic
8-hop block of ``benchmarks/workload.py`` (also timed value by value), and the corpus of
real header blocks in ``benchmarks/corpus/`` (sources and licences in its ``SOURCES.md``),
timed as one pass over every block. A pyperf script: run it directly
(``python benchmarks/bench_received.py -o out.json``) or through ``benchmarks/run.py``;
:func:`corpus_ratio` measures the corpus ratio alone, in interleaved rounds.
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pyperf

from benchmarks.workload import EXPECTED_SENDER, HEADER_BLOCK, OWN_HOSTS
from tbes.received import Hop, SenderEvidence, find_sender, parse_received, received_values

__all__ = [
    "CORPUS",
    "check",
    "corpus",
    "corpus_ratio",
    "main",
    "stdlib_parse",
    "stdlib_values",
    "tbes_hops",
    "tbes_sender",
]

_PARSER = email.parser.HeaderParser(policy=email.policy.compat32)

CORPUS = Path(__file__).resolve().parent / "corpus"
"""Real header blocks, one ``.eml`` each (``SOURCES.md`` there names each one's origin)."""


def corpus() -> list[str]:
    """The corpus's header blocks, by file name, as text (UTF-8, invalid bytes replaced)."""
    return [path.read_bytes().decode("utf-8", "replace") for path in sorted(CORPUS.glob("*.eml"))]


def stdlib_parse(block: str) -> object:
    """The corpus baseline: the standard library's bare parse of a header block."""
    return _PARSER.parsestr(block)


def stdlib_values(block: str) -> list[str]:
    """The baseline: the standard library parses the block and hands out the Received values."""
    return [str(value) for value in _PARSER.parsestr(block).get_all("Received") or []]


def tbes_sender(block: str) -> SenderEvidence | None:
    """tbes's full analysis: extract the values, parse every hop, find the sender."""
    return find_sender(received_values(block), own_hosts=OWN_HOSTS)


def tbes_hops(values: list[str]) -> list[Hop]:
    """Parse every hop of already extracted values (``parse_received`` alone)."""
    return [parse_received(value) for value in values]


def check() -> None:
    """Fail loudly if the work measured is not the work claimed (run before timing)."""
    evidence = tbes_sender(HEADER_BLOCK)
    found = None
    if evidence is not None:
        found = {
            "build": str(evidence.build),
            "host": evidence.host,
            "ip": evidence.ip,
            "index": evidence.index,
            "matched": evidence.matched,
        }
    if found != EXPECTED_SENDER:
        raise AssertionError(f"header block: expected sender {EXPECTED_SENDER}, found {found}")
    ours, theirs = received_values(HEADER_BLOCK), stdlib_values(HEADER_BLOCK)
    if len(ours) != 8 or len(theirs) != 8:
        raise AssertionError(f"expected 8 Received values, got {len(ours)} and {len(theirs)}")
    for block in corpus():
        count = len(received_values(block))
        expected = len(_PARSER.parsestr(block).get_all("Received") or [])
        if count < 2 or count != expected:
            raise AssertionError(f"a corpus block gave {count} Received values, not {expected}")


def _time_stdlib(loops: int, block: str) -> float:
    start = time.thread_time()
    for _ in itertools.repeat(None, loops):
        stdlib_values(block)
    return time.thread_time() - start


def _time_sender(loops: int, block: str) -> float:
    start = time.thread_time()
    for _ in itertools.repeat(None, loops):
        tbes_sender(block)
    return time.thread_time() - start


def _time_values(loops: int, block: str) -> float:
    start = time.thread_time()
    for _ in itertools.repeat(None, loops):
        received_values(block)
    return time.thread_time() - start


def _time_corpus_stdlib(loops: int, blocks: list[str]) -> float:
    start = time.thread_time()
    for _ in itertools.repeat(None, loops):
        for block in blocks:
            stdlib_parse(block)
    return time.thread_time() - start


def _time_corpus_tbes(loops: int, blocks: list[str]) -> float:
    start = time.thread_time()
    for _ in itertools.repeat(None, loops):
        for block in blocks:
            find_sender(received_values(block))
    return time.thread_time() - start


def corpus_ratio(rounds: int = 7, loops: int = 200) -> tuple[float, float, float]:
    """The corpus's tbes time, stdlib time (thread CPU seconds per pass) and their ratio.

    Each round times both, alternately, so that a busy machine weighs on both alike; the
    medians over the rounds are returned.
    """
    blocks = corpus()
    ours, theirs = [], []
    for _ in range(rounds):
        theirs.append(_time_corpus_stdlib(loops, blocks) / loops)
        ours.append(_time_corpus_tbes(loops, blocks) / loops)
    mine, base = statistics.median(ours), statistics.median(theirs)
    return mine, base, mine / base


def _time_hops(loops: int, values: list[str]) -> float:
    start = time.thread_time()
    for _ in itertools.repeat(None, loops):
        tbes_hops(values)
    return time.thread_time() - start


def main() -> None:
    """Run the pyperf benchmarks of this file (pyperf's own command line applies)."""
    check()
    runner = pyperf.Runner()
    runner.metadata["description"] = "8-hop header block: tbes analysis vs stdlib parse"
    runner.bench_time_func("received-stdlib", _time_stdlib, HEADER_BLOCK)
    runner.bench_time_func("received-tbes", _time_sender, HEADER_BLOCK)
    runner.bench_time_func("received-values", _time_values, HEADER_BLOCK)
    runner.bench_time_func(
        "received-hops", _time_hops, received_values(HEADER_BLOCK), inner_loops=8
    )
    blocks = corpus()
    runner.bench_time_func("received-corpus-stdlib", _time_corpus_stdlib, blocks)
    runner.bench_time_func("received-corpus-tbes", _time_corpus_tbes, blocks)


if __name__ == "__main__":
    main()
