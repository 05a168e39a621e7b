"""Coverage-guided fuzzing of tbes.received with atheris: ``python fuzz/fuzz_received.py``.

Each input is split into up to eight header values (at NUL bytes) with a few leading
bytes choosing ``own_hosts``, ``client`` and ``skip_exchange_online``; every value goes
through ``parse_received`` and all of them through ``find_sender``, and the contract in
``fuzz/contract.py`` is asserted. ``--seconds N`` runs for N seconds; other arguments go to
libFuzzer unchanged. The corpus starts from the shared test vectors and lives in a
temporary directory unless ``--corpus DIR`` is given.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import atheris  # type: ignore[import-untyped,import-not-found,unused-ignore]

sys.path[:0] = [str(Path(__file__).resolve().parent.parent)]

with atheris.instrument_imports():
    from fuzz.contract import check_sender

_ROOT = Path(__file__).resolve().parent.parent
_VECTORS = _ROOT / "tests" / "vectors" / "received.json"
_OWN = (("receiver.example",), (), ("Contoso.Example.",), ("",))
_CLIENTS = (None, "smtp.example", "192.0.2.1", "[::1]")


def _one_input(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    choice = provider.ConsumeInt(1)
    text = provider.ConsumeUnicode(provider.remaining_bytes())
    values = text.split("\x00", 8)
    check_sender(values, _OWN[choice % 4], _CLIENTS[(choice >> 2) % 4], bool(choice & 16))


def _seed(corpus: Path) -> None:
    # Real-world shapes first: libFuzzer mutates from there. Byte 0 picks the options; byte
    # 1 (even) makes ConsumeUnicode read the rest as ASCII, which the vectors are.
    if not _VECTORS.exists():
        return
    for number, case in enumerate(json.loads(_VECTORS.read_text(encoding="utf-8"))):
        payload = "\x00".join(case["received"]).encode("latin-1", "replace")
        (corpus / f"vector-{number}").write_bytes(b"\x00\x00" + payload)


def main() -> None:
    """Parse --seconds/--corpus, seed the corpus and hand over to libFuzzer."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60, help="how long to fuzz")
    parser.add_argument("--corpus", type=Path, help="corpus directory (default: temporary)")
    options, rest = parser.parse_known_args()
    corpus = options.corpus or Path(tempfile.mkdtemp(prefix="tbes-fuzz-"))
    corpus.mkdir(parents=True, exist_ok=True)
    _seed(corpus)
    argv = [
        sys.argv[0],
        f"-max_total_time={options.seconds}",
        "-timeout=10",  # a slow input is a finding: parsing must stay linear
        "-max_len=65536",
        "-print_final_stats=1",
        *rest,
        str(corpus),
    ]
    atheris.Setup(argv, _one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
