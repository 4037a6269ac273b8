"""Where the test suite's minutes go: read the JSON lines that ``LABKIT_TEST_TIMELINE=FILE``
makes pytest write (tests/conftest.py), and print each worker's busy and idle time, the
tests that ran last on each, and the longest tests.

    LABKIT_TEST_TIMELINE=/tmp/timeline.jsonl make test
    python tools/timeline.py /tmp/timeline.jsonl
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict


def main(path: str, top: int = 15) -> None:
    rows = [json.loads(line) for line in open(path) if line.strip()]
    if not rows:
        raise SystemExit(f"{path}: no tests recorded")
    start = min(r["start"] for r in rows)
    end = max(r["end"] for r in rows)
    by_worker: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_worker[row["worker"]].append(row)
    print(f"{len(rows)} tests, {end - start:.0f} s from the first start to the last end")
    for worker, tests in sorted(by_worker.items()):
        tests.sort(key=lambda r: r["start"])
        busy = sum(r["end"] - r["start"] for r in tests)
        last = tests[-1]
        print(
            f"  {worker}: {len(tests)} tests, busy {busy:.0f} s, done at "
            f"{last['end'] - start:.0f} s (last: {last['test']}, {last['end'] - last['start']:.0f} s)"
        )
    print(f"the {top} longest:")
    for row in sorted(rows, key=lambda r: r["start"] - r["end"])[:top]:
        print(
            f"  {row['end'] - row['start']:7.1f} s  {row['worker']}  "
            f"from {row['start'] - start:6.0f} s  {row['test']}"
        )


if __name__ == "__main__":
    main(sys.argv[1])
