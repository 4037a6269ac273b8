"""The event stream: its table, its deterministic generator, and the bulk load.

Every event is one row of ``events``: an id, when it happened (with its time zone), what
happened (``view``, ``click``, ``signup``, ``purchase``), who did it, and for purchases the
amount in cents (NULL for the other kinds). The generator hashes the event id, so the same
count and seed give the same rows on every machine, in any chunking.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime

__all__ = ["EPOCH", "EVENTS_DDL", "KINDS", "event_batches", "generate_events", "load_events"]

EPOCH = datetime(2024, 3, 1, tzinfo=UTC)
KINDS = ("view", "click", "signup", "purchase")
USERS = 100_000
STEP_US = 250_000  # one event every 0.25 s on average: 10 million events span ~29 days
JITTER_US = 30_000_000  # each event lands up to 30 s early or late: the stream is out of order
OUTAGE_EVERY_HOURS, OUTAGE_HOUR = 47, 13  # checkout is down in these hours: no purchases

EVENTS_DDL = """
CREATE TABLE events (
    event_id bigint NOT NULL,
    occurred_at timestamptz NOT NULL,
    kind text NOT NULL,
    user_id integer NOT NULL,
    amount_cents integer
)"""


def _mix(x, salt: int):
    """splitmix64 of an array of uint64: a cheap, well-spread hash."""
    import numpy as np

    with np.errstate(over="ignore"):
        z = x + np.uint64(salt) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def event_batches(
    count: int, *, seed: int = 14, first_id: int = 1, chunk: int = 250_000
) -> Iterator:
    """The events ``first_id .. first_id + count - 1`` as pyarrow Tables of up to ``chunk``
    rows, with the columns of ``events`` in order."""
    import numpy as np
    import pyarrow as pa

    epoch_us = int(EPOCH.timestamp() * 1_000_000)
    kinds = pa.array(KINDS, pa.string())
    for start in range(first_id, first_id + count, chunk):
        stop = min(first_id + count, start + chunk)
        ids = np.arange(start, stop, dtype=np.uint64)
        h = _mix(ids, seed)
        roll = (h % np.uint64(1000)).astype(np.int64)
        kind = np.select([roll < 800, roll < 950, roll < 980], [0, 1, 2], 3)
        jitter = ((h >> np.uint64(20)) % np.uint64(2 * JITTER_US + 1)).astype(np.int64)
        at = epoch_us + ids.astype(np.int64) * STEP_US + jitter - JITTER_US
        hour = (at - epoch_us) // 3_600_000_000
        outage = (hour % OUTAGE_EVERY_HOURS) == OUTAGE_HOUR
        kind = np.where((kind == 3) & outage, 1, kind)  # a failed checkout is a click
        user = (1 + (h >> np.uint64(40)) % np.uint64(USERS)).astype(np.int32)
        amount = (99 + (h >> np.uint64(8)) % np.uint64(25_000)).astype(np.int32)
        yield pa.table(
            {
                "event_id": pa.array(ids.astype(np.int64)),
                "occurred_at": pa.array(at, pa.timestamp("us", tz="UTC")),
                "kind": kinds.take(pa.array(kind)),
                "user_id": pa.array(user),
                "amount_cents": pa.array(amount, mask=kind != 3),
            }
        )


def generate_events(count: int, *, seed: int = 14, first_id: int = 1) -> list[tuple]:
    """The same events as :func:`event_batches`, as a list of tuples (for small counts)."""
    rows: list[tuple] = []
    for table in event_batches(count, seed=seed, first_id=first_id):
        rows.extend(zip(*(table.column(i).to_pylist() for i in range(5)), strict=True))
    return rows


def load_events(conn, count: int, *, seed: int = 14, progress: bool = True) -> dict:
    """Create ``events`` and fill it with ``count`` generated events. Returns the rows and
    the seconds it took."""
    # TODO R1: one INSERT per row is the slow way (measure it, then replace it): stream the
    # rows with COPY (conn.cursor().copy("COPY events FROM STDIN ...")) in large blocks, and
    # add the primary key after the load instead of before.
    from tqdm import tqdm

    started = time.perf_counter()
    conn.execute("DROP TABLE IF EXISTS events")
    conn.execute(EVENTS_DDL)
    conn.execute("ALTER TABLE events ADD PRIMARY KEY (event_id)")
    insert = "INSERT INTO events VALUES (%s, %s, %s, %s, %s)"
    with (
        tqdm(total=count, desc="events", unit="rows", file=sys.stdout, disable=not progress) as bar,
        conn.transaction(),
        conn.cursor() as cursor,
    ):
        for table in event_batches(count, seed=seed, chunk=20_000):
            rows = zip(*(table.column(i).to_pylist() for i in range(5)), strict=True)
            cursor.executemany(insert, list(rows))
            bar.update(table.num_rows)
    conn.execute("ANALYZE events")
    return {"rows": count, "seconds": time.perf_counter() - started}
