"""The heavy analytical queries, answered twice: by PostgreSQL on the live table, and by
DuckDB on a Parquet export of it. Plus the exports themselves (CSV and Parquet).

Both engines must give the same rows. The traps are the buckets: days and hours are UTC
(never the session's time zone: PostgreSQL's ``TimeZone`` and DuckDB's local zone differ
from one machine to the next), and an hour without purchases is a row with 0, not a missing
row and not NULL.
"""

from __future__ import annotations

import time
from pathlib import Path

from psycopg import sql

__all__ = [
    "DUCKDB_QUERIES",
    "POSTGRES_QUERIES",
    "QUERIES",
    "analytics_duckdb",
    "analytics_postgres",
    "export_csv",
    "export_parquet",
]

QUERIES = ("daily_summary", "hourly_purchases", "top_buyers")

POSTGRES_QUERIES = {
    "daily_summary": """
        SELECT (occurred_at AT TIME ZONE 'UTC')::date AS day, kind, count(*) AS events,
               count(DISTINCT user_id) AS users, coalesce(sum(amount_cents), 0) AS revenue_cents
        FROM events GROUP BY 1, 2 ORDER BY 1, 2""",
    # TODO R4: "hourly_purchases" and "top_buyers", as the brief defines them.
}

DUCKDB_QUERIES: dict[str, str] = {
    # TODO R4: the same three queries in DuckDB's dialect, with the same answers.
}


def analytics_postgres(conn, name: str) -> list[tuple]:
    """The rows of query ``name`` (one of :data:`QUERIES`), from PostgreSQL."""
    if name not in POSTGRES_QUERIES:
        raise NotImplementedError(f"TODO R4: write the PostgreSQL query {name!r} in warehouse.py")
    return [tuple(row) for row in conn.execute(POSTGRES_QUERIES[name])]


def analytics_duckdb(parquet_path, name: str) -> list[tuple]:
    """The rows of query ``name``, from DuckDB over the Parquet export at ``parquet_path``."""
    # TODO R4: open a DuckDB connection, make a view ``events`` over read_parquet(path), run
    # DUCKDB_QUERIES[name]. Mind DuckDB's TimeZone setting: it is this machine's zone.
    raise NotImplementedError(f"TODO R4: answer {name!r} with DuckDB over {parquet_path}")


def _frame(conn, table: str):
    import pandas as pd

    cursor = conn.execute(sql.SQL("SELECT * FROM {} ORDER BY 1").format(sql.Identifier(table)))
    return pd.DataFrame(cursor.fetchall(), columns=[c.name for c in cursor.description])


def export_csv(conn, table: str, path) -> dict:
    """``table`` as a CSV file with a header line."""
    # TODO R5: look at the file this writes: what became of NULL amounts and of integers?
    # Loading it back into a table like ``events`` must give the same rows.
    started = time.perf_counter()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _frame(conn, table).to_csv(path, index=False)
    return {"path": path, "bytes": path.stat().st_size, "seconds": time.perf_counter() - started}


def export_parquet(conn, table: str, path) -> dict:
    """``table`` as a Parquet file."""
    # TODO R5: read the file's schema back (pyarrow.parquet.read_schema): each column must
    # keep PostgreSQL's type (integer -> int32, also with NULLs; timestamptz -> a timestamp
    # with a time zone). Streaming COPY output avoids holding 10 million rows in pandas.
    started = time.perf_counter()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = _frame(conn, table)
    frame.to_parquet(path, index=False)
    return {
        "path": path,
        "rows": len(frame),
        "bytes": path.stat().st_size,
        "seconds": time.perf_counter() - started,
    }
