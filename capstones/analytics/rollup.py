"""Real-time aggregates: per-minute counters kept up to date as events arrive.

TODO R2: keep a rollup table (for example ``events_per_minute``: minute, kind, events,
amount_cents) that :func:`ingest` updates incrementally, in the same transaction as the
events it stores. It must stay equal to a recomputation from ``events`` when events arrive
late (an old minute), out of order, or twice (a re-delivery must not be counted again).
"""

from __future__ import annotations

__all__ = ["ingest", "setup_rollup"]


def setup_rollup(conn) -> None:
    """Create the rollup and fill it from the events already stored."""
    # TODO R2: create the rollup table and fill it once from the events stored so far
    # (what about events ingested while it is being filled?).


def ingest(conn, rows: list[tuple]) -> int:
    """Store ``rows`` (tuples in the columns of ``events``) and update the rollup. Returns
    how many events were new."""
    # TODO R2: a re-delivered event (an id already stored) raises UniqueViolation here. Skip
    # it instead, and add only the newly stored events to their minutes in the rollup.
    with conn.transaction():
        for row in rows:
            conn.execute("INSERT INTO events VALUES (%s, %s, %s, %s, %s)", row)
    return len(rows)
