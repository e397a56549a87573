"""The ledger processor's state lookups: RocksDB with its bloom filters against without.

Each new meme request looks up its request id before deciding (``r/<client>/<request>``),
and it is almost never there. A ``PartitionStore`` (``processors/ledger/store.py``) and,
as the baseline, a RocksDB with the default options are filled with the same
``--records`` request records (~200 bytes, as the processor writes them) and flushed to
table files, as a store that has run for a while is; then, in this one thread, each
looks up ``--lookups`` absent request ids and as many present ones. Timed by this
thread's CPU time (``time.thread_time``: RocksDB's compaction threads are left out), so
the figures are per core whatever else the machine is doing. Prints microseconds per
lookup of each and the ratios, and writes ``benchmarks/results/store-<timestamp>.json``.

    python benchmarks/store_bench.py [--records 1000000] [--lookups 200000] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from rocksdict import Options, Rdict, WriteBatch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common import RESULTS, machine_description, say, timestamp  # noqa: E402

from ledger.state import request_key  # noqa: E402
from processors.ledger.store import PartitionStore  # noqa: E402

CLIENTS = 1_000
VALUE_BYTES = 200
WRITE_BATCH = 2_000  # records per write, about a transaction's


def request_keys(count: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [
        request_key(f"client-{rng.randrange(CLIENTS):04d}", uuid.UUID(int=rng.getrandbits(128)).hex)
        for _ in range(count)
    ]


def fill(write: Callable[[list[tuple[bytes, bytes]]], None], keys: list[bytes]) -> None:
    value = b"v" * VALUE_BYTES
    for start in range(0, len(keys), WRITE_BATCH):
        write([(key, value) for key in keys[start : start + WRITE_BATCH]])


def time_lookups(get: Callable[[bytes], bytes | None], keys: list[bytes], present: bool) -> float:
    """Microseconds of CPU per lookup; checks that each key is found or not, as expected."""
    started = time.thread_time()
    found = sum(get(key) is not None for key in keys)
    seconds = time.thread_time() - started
    if found != (len(keys) if present else 0):
        raise AssertionError(f"{found} of {len(keys)} found, expected present={present}")
    return seconds * 1e6 / len(keys)


def measure(root: Path, stored: list[bytes], absent: list[bytes]) -> dict[str, dict[str, float]]:
    store = PartitionStore(root / "filtered")
    fill(lambda writes: store.apply(writes, changelog_offset=0), stored)
    baseline = Rdict(str(root / "baseline"), options=Options(raw_mode=True))

    def write_baseline(writes: list[tuple[bytes, bytes]]) -> None:
        batch = WriteBatch(raw_mode=True)
        for key, value in writes:
            batch.put(key, value)
        baseline.write(batch)

    fill(write_baseline, stored)
    # Opened again, as after a restart: RocksDB writes what its log holds to table files.
    store.close()
    baseline.close()
    store = PartitionStore(root / "filtered")
    baseline = Rdict(str(root / "baseline"), options=Options(raw_mode=True))
    present = random.Random(1).sample(stored, len(absent))
    result = {
        "baseline": {
            "absent_us": time_lookups(baseline.get, absent, present=False),
            "present_us": time_lookups(baseline.get, present, present=True),
        },
        "store": {
            "absent_us": time_lookups(store.get, absent, present=False),
            "present_us": time_lookups(store.get, present, present=True),
        },
    }
    store.close()
    baseline.close()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="records stored")
    parser.add_argument("--lookups", type=int, default=200_000, help="lookups of each kind")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, a few seconds")
    args = parser.parse_args()
    if args.smoke:
        args.records, args.lookups = 20_000, 5_000
    say(f"storing {args.records:,} request records in each store, flushed to table files")
    stored = request_keys(args.records, seed=1)
    absent = request_keys(args.lookups, seed=2)
    root = Path(tempfile.mkdtemp(prefix="store-bench-"))
    try:
        result = measure(root, stored, absent)
    finally:
        shutil.rmtree(root)
    for name, figures in result.items():
        say(
            f"{name}: absent key {figures['absent_us']:.2f} us, "
            f"present key {figures['present_us']:.2f} us per lookup (CPU)"
        )
    absent_ratio = result["store"]["absent_us"] / result["baseline"]["absent_us"]
    present_ratio = result["store"]["present_us"] / result["baseline"]["present_us"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"store-{timestamp()}.json"
    record = {"args": vars(args), "machine": machine_description(), **result}
    out.write_text(json.dumps(record, indent=2))
    say(f"wrote {out}")
    print(f"store/baseline: absent {absent_ratio:.2f}x, present {present_ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
