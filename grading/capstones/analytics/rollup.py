"""Per-minute counters, maintained as events arrive (never recomputed from scratch).

``events_per_minute`` holds, for each UTC minute and kind, the number of events and the sum
of their amounts. :func:`setup_rollup` creates it and fills it once from the events already
stored; from then on :func:`ingest` stores new events and adds exactly those it stored to
their minutes, in one statement: an event delivered twice is stored once and counted once,
and a late event (any minute, however old) is added to its own minute.
"""

from __future__ import annotations

__all__ = ["ROLLUP_DDL", "ingest", "setup_rollup"]

ROLLUP_DDL = """
CREATE TABLE IF NOT EXISTS events_per_minute (
    minute timestamptz NOT NULL,
    kind text NOT NULL,
    events bigint NOT NULL,
    amount_cents bigint NOT NULL,
    PRIMARY KEY (minute, kind)
)"""

# date_bin with an origin at a UTC midnight: UTC minutes whatever the session's TimeZone.
MINUTE = "date_bin('1 minute', occurred_at, timestamptz '2000-01-01 00:00:00+00')"

_BACKFILL = f"""
INSERT INTO events_per_minute (minute, kind, events, amount_cents)
SELECT {MINUTE}, kind, count(*), coalesce(sum(amount_cents), 0)
FROM events
GROUP BY 1, 2
ON CONFLICT (minute, kind) DO UPDATE
SET events = excluded.events, amount_cents = excluded.amount_cents"""

_INGEST = f"""
WITH batch AS (
    SELECT DISTINCT ON (event_id) *
    FROM unnest(%s::bigint[], %s::timestamptz[], %s::text[], %s::integer[], %s::integer[])
         AS b(event_id, occurred_at, kind, user_id, amount_cents)
    ORDER BY event_id
), stored AS (
    INSERT INTO events (event_id, occurred_at, kind, user_id, amount_cents)
    SELECT * FROM batch
    ON CONFLICT (event_id) DO NOTHING
    RETURNING occurred_at, kind, amount_cents
), added AS (
    SELECT {MINUTE} AS minute, kind, count(*) AS events,
           coalesce(sum(amount_cents), 0) AS amount_cents
    FROM stored
    GROUP BY 1, 2
), counted AS (
    INSERT INTO events_per_minute AS r (minute, kind, events, amount_cents)
    SELECT minute, kind, events, amount_cents FROM added
    ORDER BY minute, kind  -- a fixed order: two ingests never wait on each other in a cycle
    ON CONFLICT (minute, kind) DO UPDATE
    SET events = r.events + excluded.events,
        amount_cents = r.amount_cents + excluded.amount_cents
)
SELECT coalesce(sum(events), 0)::bigint FROM added"""


def setup_rollup(conn) -> None:
    """Create ``events_per_minute`` and fill it from the events stored so far. The events
    table is locked against writes meanwhile, so no event can slip between the backfill and
    the first :func:`ingest`."""
    with conn.transaction():
        conn.execute(ROLLUP_DDL)
        conn.execute("LOCK TABLE events IN SHARE MODE")
        conn.execute(_BACKFILL)
    conn.execute("ANALYZE events_per_minute")


def ingest(conn, rows: list[tuple]) -> int:
    """Store ``rows`` (tuples in the columns of ``events``) and count them into their
    minutes; events already stored (a re-delivery) are skipped. Returns how many were new."""
    if not rows:
        return 0
    columns = [list(column) for column in zip(*rows, strict=True)]
    with conn.transaction():
        return conn.execute(_INGEST, columns).fetchone()[0]
