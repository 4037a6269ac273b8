"""The heavy analytical queries, answered twice: by PostgreSQL on the live table, and by
DuckDB on a Parquet export of it. Plus the exports themselves (CSV and Parquet).

Both engines must give the same rows. The traps are the buckets: days and hours are UTC
(never the session's time zone: PostgreSQL's ``TimeZone`` and DuckDB's local zone differ
from one machine to the next), and an hour without purchases is a row with 0, not a missing
row and not NULL.
"""

from __future__ import annotations

import tempfile
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
    "hourly_purchases": """
        WITH bought AS (
            SELECT date_bin('1 hour', occurred_at, timestamptz '2000-01-01 00:00:00+00') AS hour,
                   count(*) AS purchases, sum(amount_cents) AS revenue_cents
            FROM events WHERE kind = 'purchase' GROUP BY 1
        ), span AS (
            SELECT date_bin('1 hour', min(occurred_at), timestamptz '2000-01-01 00:00:00+00') AS first,
                   date_bin('1 hour', max(occurred_at), timestamptz '2000-01-01 00:00:00+00') AS last
            FROM events
        )
        SELECT h.hour, coalesce(b.purchases, 0) AS purchases,
               coalesce(b.revenue_cents, 0) AS revenue_cents
        FROM span, generate_series(span.first, span.last, interval '1 hour') AS h(hour)
        LEFT JOIN bought AS b ON b.hour = h.hour
        ORDER BY 1""",
    "top_buyers": """
        SELECT user_id, count(*) AS purchases, sum(amount_cents) AS revenue_cents
        FROM events WHERE kind = 'purchase'
        GROUP BY user_id ORDER BY revenue_cents DESC, user_id LIMIT 10""",
}

DUCKDB_QUERIES = {
    "daily_summary": """
        SELECT CAST(timezone('UTC', occurred_at) AS DATE) AS day, kind, count(*) AS events,
               count(DISTINCT user_id) AS users, coalesce(sum(amount_cents), 0) AS revenue_cents
        FROM events GROUP BY ALL ORDER BY 1, 2""",
    "hourly_purchases": """
        WITH bought AS (
            SELECT date_trunc('hour', occurred_at) AS hour,
                   count(*) AS purchases, sum(amount_cents) AS revenue_cents
            FROM events WHERE kind = 'purchase' GROUP BY 1
        ), hours AS (
            SELECT unnest(generate_series(date_trunc('hour', min(occurred_at)),
                                          date_trunc('hour', max(occurred_at)),
                                          INTERVAL 1 HOUR)) AS hour
            FROM events
        )
        SELECT h.hour, coalesce(b.purchases, 0) AS purchases,
               coalesce(b.revenue_cents, 0) AS revenue_cents
        FROM hours AS h LEFT JOIN bought AS b USING (hour)
        ORDER BY 1""",
    "top_buyers": POSTGRES_QUERIES["top_buyers"],
}


def analytics_postgres(conn, name: str) -> list[tuple]:
    """The rows of query ``name`` (one of :data:`QUERIES`), from PostgreSQL."""
    return [tuple(row) for row in conn.execute(POSTGRES_QUERIES[name])]


def analytics_duckdb(parquet_path, name: str) -> list[tuple]:
    """The rows of query ``name``, from DuckDB over the Parquet export at ``parquet_path``."""
    import duckdb

    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")  # DuckDB's default is this machine's zone
        literal = "'" + str(parquet_path).replace("'", "''") + "'"
        con.execute(f"CREATE VIEW events AS SELECT * FROM read_parquet({literal})")
        return [tuple(row) for row in con.execute(DUCKDB_QUERIES[name]).fetchall()]
    finally:
        con.close()


def export_csv(conn, table: str, path) -> dict:
    """``table`` as CSV with a header, as PostgreSQL's COPY writes it: NULL is an empty
    field, an empty string is ``""``, timestamps carry their UTC offset."""
    started = time.perf_counter()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    copy = sql.SQL("COPY (SELECT * FROM {} ORDER BY 1) TO STDOUT (FORMAT csv, HEADER true)")
    with open(path, "wb") as out, conn.cursor().copy(copy.format(sql.Identifier(table))) as rows:
        for block in rows:
            out.write(block)
    return {"path": path, "bytes": path.stat().st_size, "seconds": time.perf_counter() - started}


_ARROW = {
    "int2": "int16",
    "int4": "int32",
    "int8": "int64",
    "float4": "float32",
    "float8": "float64",
    "bool": "bool_",
    "text": "string",
    "date": "date32",
}


def _arrow_type(pa, name: str):
    if name == "timestamptz":
        return pa.timestamp("us", tz="UTC")
    if name == "timestamp":
        return pa.timestamp("us")
    if name not in _ARROW:
        raise ValueError(f"no Parquet type for PostgreSQL type {name!r}: add it to _ARROW")
    return getattr(pa, _ARROW[name])()


def export_parquet(conn, table: str, path) -> dict:
    """``table`` as Parquet, each column typed from PostgreSQL's own column type (bigint →
    int64, integer → int32 even with NULLs, timestamptz → timestamp in UTC), NULL kept apart
    from the empty string, rows sorted by the first timestamptz column (then the first
    column). Types outside ``_ARROW`` raise: add them there."""
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    started = time.perf_counter()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    name = sql.Identifier(table)
    with tempfile.TemporaryDirectory() as folder:
        csv_path = Path(folder) / "export.csv"
        with conn.transaction():
            conn.execute("SET LOCAL TimeZone = 'UTC'")  # offsets "+00": one format to parse
            cursor = conn.execute(sql.SQL("SELECT * FROM {} LIMIT 0").format(name))
            fields, times = [], []
            for column in cursor.description:
                info = conn.adapters.types.get(column.type_code)
                fields.append(pa.field(column.name, _arrow_type(pa, info.name if info else "?")))
                if info and info.name == "timestamptz":
                    times.append(sql.Identifier(column.name))
            # sorted by time: each row group then covers one stretch of time, and a reader
            # filtering on time skips the others (their min/max statistics say so)
            order = sql.SQL(", ").join([*times[:1], sql.SQL("1")])
            copy = sql.SQL("COPY (SELECT * FROM {} ORDER BY {}) TO STDOUT (FORMAT csv)")
            with (
                open(csv_path, "wb") as out,
                conn.cursor().copy(copy.format(name, order)) as rows,
            ):
                for block in rows:
                    out.write(block)
        schema = pa.schema(fields)
        reader = pcsv.open_csv(
            csv_path,
            read_options=pcsv.ReadOptions(column_names=schema.names, block_size=16 << 20),
            convert_options=pcsv.ConvertOptions(
                column_types=dict(zip(schema.names, schema.types, strict=True)),
                # COPY writes NULL as an empty field and '' as "": only the unquoted empty
                # field is NULL (not pyarrow's default list, which turns the text "NULL" or
                # "NA" into NULL too)
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
            ),
        )
        rows = 0
        with pq.ParquetWriter(path, schema, compression="zstd") as writer:
            for batch in reader:
                writer.write_batch(batch.cast(schema), row_group_size=256_000)
                rows += batch.num_rows
    return {
        "path": path,
        "rows": rows,
        "bytes": path.stat().st_size,
        "seconds": time.perf_counter() - started,
    }
