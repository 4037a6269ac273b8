"""What indexes cost each write: the WAL a statement writes (``EXPLAIN (ANALYZE, WAL)``),
for tables with more or fewer indexes; HOT updates and ``fillfactor``.

The bench table has the blog's post columns; ``create_table`` gives it the primary key and
the first ``indexes`` of :data:`INDEXES`, and returns the DDL it ran:

>>> from labkit import data, db, write_cost
>>> demo = data.blog_database("doctest_write_cost", scale="tiny")
>>> conn = demo.connect(autocommit=True)
>>> ddl = write_cost.create_table(conn, "bench", indexes=2)
>>> print(ddl[-1])
CREATE INDEX ON "bench" (created_at)
>>> cost = write_cost.insert_rows(conn, "bench", 1_000)
>>> cost.rows, cost.wal_records >= 4 * 1_000           # a heap row and 3 index entries each
(1000, True)
>>> write_cost.vacuum(conn, "bench")
>>> write_cost.update_rows(conn, "bench", every=10).rows
100

Single-row updates, each in its own transaction, counted as HOT or not:

>>> _ = write_cost.create_table(conn, "roomy", indexes=1, fillfactor=70)
>>> _ = write_cost.insert_rows(conn, "roomy", 1_000)
>>> run = write_cost.single_row_updates(conn, "roomy", write_cost.spread_ids(1_000, 100))
>>> run.updates, run.hot, run.heap_pages_after == run.heap_pages_before
(100, 100, True)
>>> write_cost.drop_tables(conn, ["bench", "roomy"])
>>> conn.close(); db.drop_database("doctest_write_cost")
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "INDEXES",
    "UpdateRun",
    "WriteCost",
    "create_table",
    "drop_tables",
    "explain_write",
    "insert_rows",
    "per_row",
    "plot",
    "single_row_updates",
    "spread_ids",
    "table_pages",
    "update_rows",
    "vacuum",
]

#: The secondary indexes a bench table may get, in order (none holds ``view_count``, the
#: column the updates change).
INDEXES = (
    "(author_id)",
    "(created_at)",
    "(title)",
    "(author_id, created_at)",
    "(lower(title))",
    "(published, created_at)",
)

_COLUMNS = """
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    author_id integer NOT NULL,
    title text NOT NULL,
    body text NOT NULL,
    published boolean NOT NULL,
    view_count bigint NOT NULL,
    created_at timestamptz NOT NULL
"""

# Rows made on the server, the same on every run: no client round trip per row.
_INSERT = """
INSERT INTO {table} (author_id, title, body, published, view_count, created_at)
SELECT 1 + (g * 7919) % 5000, 'post ' || md5(g::text), 'Lorem ipsum dolor sit amet.',
       g % 5 <> 0, 0, timestamptz '2024-01-01' + g * interval '7 minutes'
FROM generate_series(1, {rows}) AS g
"""


@dataclass(frozen=True)
class WriteCost:
    """One write statement's cost, from ``EXPLAIN (ANALYZE, WAL, BUFFERS)``: the WAL
    records, full-page images and bytes it wrote, the buffers it dirtied, its time."""

    statement: str
    rows: int
    wal_records: int
    wal_fpi: int
    wal_bytes: int
    buffers_dirtied: int
    ms: float


@dataclass(frozen=True)
class UpdateRun:
    """A run of single-row updates (:func:`single_row_updates`): how many were HOT, how
    many moved their row to another page, the pages touched, table and index sizes (8 kB
    pages) before and after, the WAL written, and the time."""

    updates: int
    hot: int
    new_page: int
    pages_touched: int
    heap_pages_before: int
    heap_pages_after: int
    index_pages_before: int
    index_pages_after: int
    wal_records: int
    wal_bytes: int
    seconds: float


def _identifier(name: str):
    from psycopg import sql

    return sql.Identifier(name)


def create_table(conn: Any, name: str, *, indexes: int = 0, fillfactor: int = 100) -> list[str]:
    """(Re)create the bench table ``name`` with a primary key, the first ``indexes`` of
    :data:`INDEXES` and ``fillfactor``; return the DDL statements run. Autovacuum is off
    for it, so that nothing but the measured statements changes it."""
    from psycopg import sql

    if not 0 <= indexes <= len(INDEXES):
        raise ValueError(f"indexes must be between 0 and {len(INDEXES)}")
    table = _identifier(name)
    statements = [
        sql.SQL("DROP TABLE IF EXISTS {}").format(table),
        sql.SQL("CREATE TABLE {} ({}) WITH (fillfactor = {}, autovacuum_enabled = off)").format(
            table, sql.SQL(_COLUMNS.strip()), sql.Literal(int(fillfactor))
        ),
    ]
    statements += [
        sql.SQL("CREATE INDEX ON {} {}").format(table, sql.SQL(columns))
        for columns in INDEXES[:indexes]
    ]
    for statement in statements:
        conn.execute(statement)
    return [statement.as_string(conn) for statement in statements]


def explain_write(conn: Any, statement: Any, params: Any = None) -> WriteCost:
    """Run ``statement`` (an INSERT, UPDATE or DELETE) under ``EXPLAIN (ANALYZE, WAL,
    BUFFERS)`` and return its :class:`WriteCost`. It really runs: on an autocommit
    connection its changes stay."""
    from psycopg import sql

    query = sql.SQL("EXPLAIN (ANALYZE, WAL, BUFFERS, FORMAT JSON) ") + (
        sql.SQL(statement) if isinstance(statement, str) else statement
    )
    raw = conn.execute(query, params).fetchone()[0][0]
    plan = raw["Plan"]
    text = statement if isinstance(statement, str) else statement.as_string(conn)
    return WriteCost(
        statement=" ".join(text.split()),
        rows=int(plan.get("Actual Rows", 0)) or _modified_rows(plan),
        wal_records=int(plan.get("WAL Records", 0)),
        wal_fpi=int(plan.get("WAL FPI", 0)),
        wal_bytes=int(plan.get("WAL Bytes", 0)),
        buffers_dirtied=int(plan.get("Shared Dirtied Blocks", 0)),
        ms=float(raw.get("Execution Time", 0.0)),
    )


def _modified_rows(plan: dict) -> int:
    # A ModifyTable node returns no rows; the rows it changed are its child's.
    return int(sum(child.get("Actual Rows", 0) for child in plan.get("Plans", [])))


def insert_rows(conn: Any, name: str, rows: int) -> WriteCost:
    """Insert ``rows`` generated rows into the bench table ``name``, in one statement."""
    from psycopg import sql

    statement = sql.SQL(_INSERT.strip()).format(table=_identifier(name), rows=sql.Literal(rows))
    return explain_write(conn, statement)


def update_rows(conn: Any, name: str, *, every: int = 5) -> WriteCost:
    """Add one view to every ``every``-th row of the bench table ``name``, in one statement
    (``view_count`` is in none of :data:`INDEXES`)."""
    from psycopg import sql

    statement = sql.SQL("UPDATE {} SET view_count = view_count + 1 WHERE id % {} = 0").format(
        _identifier(name), sql.Literal(int(every))
    )
    return explain_write(conn, statement)


def spread_ids(rows: int, count: int) -> list[int]:
    """``count`` distinct ids out of ``1..rows``, spread over the whole table the same way
    on every run (a stride of 7919, a prime, modulo ``rows``).

    >>> spread_ids(10, 5)
    [1, 10, 9, 8, 7]"""
    if rows % 7919 == 0 or count > rows:
        raise ValueError("count must not exceed rows, and rows must not be a multiple of 7919")
    return [1 + (i * 7919) % rows for i in range(count)]


def table_pages(conn: Any, name: str) -> tuple[int, int]:
    """The table's size and the size of all its indexes, in 8 kB pages."""
    return tuple(
        conn.execute(
            "SELECT pg_relation_size(%s::regclass) / 8192, pg_indexes_size(%s::regclass) / 8192",
            (name, name),
        ).fetchone()
    )


def _flushed_counters(conn: Any, name: str) -> tuple[int, ...]:
    # This backend's statistics reach the shared counters at the end of a transaction
    # once pg_stat_force_next_flush() asked for it: read them in the next one.
    conn.execute("SELECT pg_stat_force_next_flush()")
    return tuple(
        conn.execute(
            """
            SELECT t.n_tup_upd, t.n_tup_hot_upd, t.n_tup_newpage_upd, w.wal_records, w.wal_bytes
            FROM pg_stat_user_tables t, pg_stat_get_backend_wal(pg_backend_pid()) w
            WHERE t.relid = %s::regclass
            """,
            (name,),
        ).fetchone()
    )


def single_row_updates(conn: Any, name: str, ids: list[int]) -> UpdateRun:
    """Add one view to each row of ``ids`` in the bench table ``name``, one UPDATE per row,
    each its own transaction (as an application's requests do), and count the HOT ones.

    ``conn`` must be in autocommit mode. The updates are pipelined (one network round trip
    for all), and ``synchronous_commit`` is off meanwhile, so that each commit does not
    wait for a disk flush: the WAL written is the same, only faster."""
    from psycopg import sql

    if not conn.autocommit:
        raise ValueError("single_row_updates needs an autocommit connection")
    table = _identifier(name)
    touched = conn.execute(
        sql.SQL("SELECT count(DISTINCT (ctid::text::point)[0]) FROM {} WHERE id = ANY(%s)").format(
            table
        ),
        (list(ids),),
    ).fetchone()[0]
    heap_before, index_before = table_pages(conn, name)
    before = _flushed_counters(conn, name)
    update = sql.SQL("UPDATE {} SET view_count = view_count + 1 WHERE id = %s").format(table)
    previous = conn.execute("SHOW synchronous_commit").fetchone()[0]
    conn.execute("SET synchronous_commit = off")
    started = time.perf_counter()
    try:
        with conn.pipeline() as pipeline:
            for row_id in ids:
                conn.execute(update, (row_id,))
                pipeline.sync()  # ends the implicit transaction: one commit per row
        seconds = time.perf_counter() - started
    finally:
        conn.execute("SELECT set_config('synchronous_commit', %s, false)", (previous,))
    after = _flushed_counters(conn, name)
    heap_after, index_after = table_pages(conn, name)
    upd, hot, new_page, records, wal_bytes = (
        int(b - a) for a, b in zip(before, after, strict=True)
    )
    return UpdateRun(
        updates=upd,
        hot=hot,
        new_page=new_page,
        pages_touched=int(touched),
        heap_pages_before=int(heap_before),
        heap_pages_after=int(heap_after),
        index_pages_before=int(index_before),
        index_pages_after=int(index_after),
        wal_records=records,
        wal_bytes=wal_bytes,
        seconds=seconds,
    )


def vacuum(conn: Any, name: str) -> None:
    """``VACUUM (ANALYZE)`` the bench table ``name`` (on an autocommit connection): it sets
    the rows' hint bits and the visibility map, so that the updates measured afterwards
    write only their own WAL (with data checksums on, a first hint bit may log a page)."""
    from psycopg import sql

    conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(_identifier(name)))


def drop_tables(conn: Any, names: list[str]) -> None:
    """Drop the bench tables ``names`` (those that exist)."""
    from psycopg import sql

    for name in names:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(_identifier(name)))


def per_row(costs: Mapping[Any, Mapping[str, WriteCost]]):
    """A DataFrame with one row per key of ``costs`` (e.g. the number of indexes), and for
    each kind of statement (``"insert"``, ``"update"``...) its WAL records, WAL bytes and
    microseconds per row changed.

    >>> cost = WriteCost("INSERT ...", rows=10, wal_records=20, wal_fpi=0, wal_bytes=1_000,
    ...                  buffers_dirtied=1, ms=0.5)
    >>> per_row({0: {"insert": cost}}).iloc[0].tolist()
    [2.0, 100.0, 50.0]"""
    import pandas as pd

    rows = {
        key: {
            f"{kind}: {label}": value
            for kind, cost in by_kind.items()
            for label, value in (
                ("WAL records/row", cost.wal_records / cost.rows),
                ("WAL bytes/row", cost.wal_bytes / cost.rows),
                ("µs/row", cost.ms * 1000 / cost.rows),
            )
        }
        for key, by_kind in costs.items()
    }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("secondary indexes")


def plot(frame, *, title: str = "What each row costs, by number of secondary indexes"):
    """Bars of WAL records per row and time per row, for inserts and updates (returns the
    matplotlib Figure); ``frame`` is :func:`per_row`'s table."""
    import matplotlib.pyplot as plt

    fig, (wal_ax, time_ax) = plt.subplots(1, 2, figsize=(8, 2.8))
    frame[[c for c in frame.columns if c.endswith("WAL records/row")]].plot.bar(ax=wal_ax, rot=0)
    wal_ax.set_title("WAL records per row (deterministic)")
    frame[[c for c in frame.columns if c.endswith("µs/row")]].plot.bar(ax=time_ax, rot=0)
    time_ax.set_title("time per row, µs (varies)")
    for ax in (wal_ax, time_ax):
        ax.set_xlabel("secondary indexes")
        ax.legend(fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    plt.close(fig)
    return fig
