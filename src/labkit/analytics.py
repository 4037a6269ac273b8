"""Analytics off the primary: PostgreSQL tables exported to Parquet and queried with DuckDB.

>>> import tempfile
>>> from labkit import db
>>> demo = db.fresh_database("doctest_analytics")
>>> load_page_views(demo, views=2_000, progress=False)
{'visitors': 200, 'page_views': 2000}
>>> with tempfile.TemporaryDirectory() as folder:
...     report = export_parquet(demo, "page_views", f"{folder}/page_views.parquet")
...     con = duckdb_connection({"page_views": report.path})
...     rows = con.execute("SELECT count(*), sum(duration_ms) FROM page_views").fetchall()
>>> report.rows, rows == postgres_rows(demo, "SELECT count(*), sum(duration_ms) FROM page_views")
(2000, True)
>>> db.drop_database("doctest_analytics")

**The data.** :func:`load_page_views` generates, inside PostgreSQL (``generate_series``, no
randomness: the same rows on every machine), a ``visitors`` table and a wide
``page_views`` table: numbers an analyst aggregates (duration, bytes, status) beside long
text columns nobody aggregates (the user agent, the referrer).

**The export.** :func:`export_parquet` streams ``COPY (SELECT ...) TO STDOUT (FORMAT csv)``
from psycopg into a temporary file, parses it with pyarrow's CSV reader, with each column's
Arrow type taken from PostgreSQL's own column types (not guessed), and writes Parquet in
row groups. DuckDB cannot reach PostgreSQL offline (its ``postgres`` extension would have to be
downloaded), so files are the bridge, as they are for a warehouse.

**The measures.** :func:`postgres_profile` runs ``EXPLAIN (ANALYZE, BUFFERS)`` and reports
the bytes PostgreSQL touched (8 kB pages); :func:`duckdb_profile` turns on DuckDB's JSON
profiler and reports the bytes it read and the columns its Parquet scan asked for.
:func:`parquet_columns` lists the bytes each column takes in the file.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "PLANNER_SETTINGS",
    "DuckProfile",
    "ExportReport",
    "PostgresProfile",
    "duckdb_connection",
    "duckdb_profile",
    "export_parquet",
    "load_page_views",
    "parquet_columns",
    "plot_comparison",
    "postgres_profile",
    "postgres_rows",
]

DEVICES = ("desktop", "mobile", "tablet")
PLANS = ("free", "pro", "team")
USER_AGENTS = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36 Edg/131.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (Linux; Android 15; Pixel 9) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Mobile Safari/537.36",
    "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
)

_VISITORS_DDL = """
CREATE TABLE visitors (
    id integer PRIMARY KEY,
    country text NOT NULL,
    plan text NOT NULL,
    signed_up date NOT NULL
)"""
_VIEWS_DDL = """
CREATE TABLE page_views (
    id bigint PRIMARY KEY,
    visitor_id integer NOT NULL,
    path text NOT NULL,
    device text NOT NULL,
    status smallint NOT NULL,
    duration_ms integer NOT NULL,
    bytes_sent integer NOT NULL,
    viewed_at timestamptz NOT NULL,
    referrer text NOT NULL,
    user_agent text NOT NULL
)"""
# Pseudo-random but deterministic columns: multiplicative hashing of the row number.
_VISITORS_SQL = """
INSERT INTO visitors
SELECT g,
       (%(countries)s::text[])[1 + (g::bigint * 2654435761 %% 4294967291) %% 12],
       (%(plans)s::text[])[1 + (g::bigint * 40503 %% 65521) %% 3],
       date '2023-01-01' + (g::bigint * 7919 %% 700)::int
FROM generate_series(%(start)s::bigint, %(stop)s::bigint) AS g"""
_VIEWS_SQL = """
INSERT INTO page_views
SELECT g,
       1 + (g::bigint * 2654435761 %% 4294967291) %% %(visitors)s::bigint,
       '/posts/' || (1 + (g::bigint * 40503 %% 65521) %% 5000),
       (%(devices)s::text[])[1 + (g::bigint * 69069 %% 1000003) %% 3],
       CASE WHEN g %% 50 = 0 THEN 404 WHEN g %% 97 = 0 THEN 500 ELSE 200 END,
       20 + (g::bigint * 1103515245 %% 2147483647) %% 3000,
       500 + (g::bigint * 22695477 %% 4294967291) %% 200000,
       timestamptz '2024-01-01 00:00:00+00' + make_interval(secs => g * 17),
       'https://www.example.com/search?q=' || md5(g::text),
       (%(agents)s::text[])[1 + (g::bigint * 134775813 %% 1000003) %% 6]
FROM generate_series(%(start)s::bigint, %(stop)s::bigint) AS g"""


def load_page_views(
    database: Any, *, views: int = 1_000_000, visitors: int | None = None, progress: bool = True
) -> dict[str, int]:
    """Create and fill ``visitors`` (default ``views // 10`` rows) and ``page_views`` in an
    empty ``database`` (a :class:`labkit.db.Database`), in chunks with a progress bar on
    stdout; then index, ``VACUUM ANALYZE``. Returns the row counts."""
    from tqdm import tqdm  # plain text on stdout: saved with the notebook, unlike a widget

    from labkit import data

    if views < 1:
        raise ValueError(f"views must be at least 1, not {views}")
    visitors = max(1, views // 10) if visitors is None else visitors
    arrays = {
        "countries": list(data.vocabulary().countries),  # data/countries.csv
        "plans": list(PLANS),
        "devices": list(DEVICES),
        "agents": list(USER_AGENTS),
    }
    chunk = 100_000
    with database.connect(autocommit=True) as conn:
        conn.execute(_VISITORS_DDL)
        conn.execute(_VIEWS_DDL)
        conn.execute(_VISITORS_SQL, {**arrays, "start": 1, "stop": visitors})
        with tqdm(
            total=views, desc="page_views", unit="rows", file=sys.stdout, disable=not progress
        ) as bar:
            for start in range(1, views + 1, chunk):
                stop = min(views, start + chunk - 1)
                conn.execute(
                    _VIEWS_SQL, {**arrays, "start": start, "stop": stop, "visitors": visitors}
                )
                bar.update(stop - start + 1)
        conn.execute("VACUUM ANALYZE visitors")
        conn.execute("VACUUM ANALYZE page_views")
    return {"visitors": visitors, "page_views": views}


# --------------------------------------------------------------------------- export

_ARROW_TYPES = {
    "int2": "int16",
    "int4": "int32",
    "int8": "int64",
    "float4": "float32",
    "float8": "float64",
    "bool": "bool_",
    "text": "string",
    "varchar": "string",
    "bpchar": "string",
    "date": "date32",
    "timestamptz": "timestamptz",
    "timestamp": "timestamp",
}


def _arrow_type(pa, name: str):
    kind = _ARROW_TYPES.get(name)
    if kind is None:
        raise ValueError(
            f"column type {name!r} has no Parquet mapping here: cast it in the query "
            "(e.g. ::float8 or ::text)"
        )
    if kind == "timestamptz":
        return pa.timestamp("us", tz="UTC")
    if kind == "timestamp":
        return pa.timestamp("us")
    return getattr(pa, kind)()


@dataclass(frozen=True)
class ExportReport:
    """One table exported: the file, its rows and bytes, and the seconds it took."""

    table: str
    path: Path
    rows: int
    file_bytes: int
    seconds: float

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else float("inf")


def export_parquet(
    database: Any,
    table: str,
    path: str | os.PathLike,
    *,
    row_group_size: int = 128_000,
    progress: bool | None = None,
) -> ExportReport:
    """Export ``table`` of ``database`` to the Parquet file ``path`` (COPY → CSV → Arrow with
    PostgreSQL's column types → Parquet, compressed with zstd). ``progress`` shows the bytes
    copied on stdout (default: for tables of 100 MB or more)."""
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq
    from psycopg import sql
    from tqdm import tqdm  # plain text on stdout: saved with the notebook, unlike a widget

    started = time.perf_counter()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    name = sql.Identifier(table)
    with tempfile.TemporaryDirectory() as folder:
        csv_path = Path(folder) / "export.csv"
        with database.connect() as conn:
            conn.execute("SET TimeZone = 'UTC'")
            conn.execute("SET DateStyle = 'ISO'")
            cursor = conn.execute(sql.SQL("SELECT * FROM {} LIMIT 0").format(name))
            columns = []
            for column in cursor.description:
                info = conn.adapters.types.get(column.type_code)
                columns.append((column.name, _arrow_type(pa, info.name if info else "?")))
            size = conn.execute("SELECT pg_relation_size(%s)", (table,)).fetchone()[0]
            copy = sql.SQL("COPY (SELECT * FROM {} ORDER BY 1) TO STDOUT (FORMAT csv)")
            bar = tqdm(
                desc=f"export {table}",
                unit="B",
                unit_scale=True,
                file=sys.stdout,
                disable=not (size >= 100_000_000 if progress is None else progress),
            )
            with bar, open(csv_path, "wb") as out, conn.cursor().copy(copy.format(name)) as stream:
                for block in stream:
                    out.write(block)
                    bar.update(len(block))
        schema = pa.schema(columns)
        reader = pcsv.open_csv(
            csv_path,
            read_options=pcsv.ReadOptions(column_names=schema.names, block_size=8 << 20),
            convert_options=pcsv.ConvertOptions(
                column_types=dict(zip(schema.names, schema.types, strict=True)),
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
        rows = 0
        with pq.ParquetWriter(path, schema, compression="zstd") as writer:
            for batch in reader:
                writer.write_batch(batch.cast(schema), row_group_size=row_group_size)
                rows += batch.num_rows
    return ExportReport(table, path, rows, path.stat().st_size, time.perf_counter() - started)


def parquet_columns(path: str | os.PathLike):
    """Bytes per column in a Parquet file (compressed, as stored; and uncompressed), summed
    over its row groups, largest first — a pandas DataFrame."""
    import pandas as pd
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    sizes: dict[str, list[int]] = {}
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for c in range(group.num_columns):
            chunk = group.column(c)
            stored = sizes.setdefault(chunk.path_in_schema, [0, 0])
            stored[0] += chunk.total_compressed_size
            stored[1] += chunk.total_uncompressed_size
    frame = pd.DataFrame(
        [(name, s[0], s[1]) for name, s in sizes.items()],
        columns=["column", "stored_bytes", "uncompressed_bytes"],
    )
    frame["share_of_file"] = (frame["stored_bytes"] / frame["stored_bytes"].sum()).round(3)
    return frame.sort_values("stored_bytes", ascending=False, ignore_index=True)


# --------------------------------------------------------------------------- querying


def duckdb_connection(tables: dict[str, str | os.PathLike]):
    """An in-memory DuckDB connection with one view per Parquet file: ``{name: path}``."""
    import duckdb

    con = duckdb.connect()
    for name, path in tables.items():
        quoted = '"' + name.replace('"', '""') + '"'
        literal = "'" + str(path).replace("'", "''") + "'"
        con.execute(f"CREATE VIEW {quoted} AS SELECT * FROM read_parquet({literal})")
    return con


def _is_connection(target: Any) -> bool:
    return hasattr(target, "cursor") and hasattr(target, "execute")


def postgres_rows(database: Any, query: str, params: Any = None) -> list[tuple]:
    """The rows of ``query`` as tuples, on ``database``: a :class:`labkit.db.Database` (a new
    connection for this one query) or an open psycopg connection (reused: what to time, since
    a new connection costs more than a small query)."""
    if _is_connection(database):
        return [tuple(row) for row in database.execute(query, params)]
    with database.connect() as conn:
        return [tuple(row) for row in conn.execute(query, params)]


#: The settings that decide how much of the machine one PostgreSQL query may use.
PLANNER_SETTINGS = ("jit", "max_parallel_workers_per_gather", "work_mem")


@dataclass(frozen=True)
class PostgresProfile:
    """One run of a query under ``EXPLAIN (ANALYZE, BUFFERS)``."""

    ms: float
    pages: int  # 8 kB buffers hit or read
    workers: int  # parallel workers launched (besides the leader)
    jit: bool  # the executor compiled expressions with LLVM
    settings: dict[str, str] = field(default_factory=dict)  # PLANNER_SETTINGS, as SHOW gives them

    @property
    def bytes_touched(self) -> int:
        return self.pages * 8192


def postgres_profile(database: Any, query: str) -> PostgresProfile:
    """Run ``query`` (a SELECT) under ``EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)`` on
    ``database`` (a :class:`labkit.db.Database` or an open psycopg connection): its execution
    time, the 8 kB pages it touched, the parallel workers it launched, whether JIT compiled it,
    and the session's :data:`PLANNER_SETTINGS`."""
    from contextlib import nullcontext

    if not query.lstrip().upper().startswith(("SELECT", "WITH")):
        raise ValueError("postgres_profile runs EXPLAIN ANALYZE: give it a SELECT")
    opened = nullcontext(database) if _is_connection(database) else database.connect()
    with opened as conn:
        plan = conn.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + query).fetchone()[0][0]
        settings = {
            name: conn.execute("SELECT current_setting(%s)", (name,)).fetchone()[0]
            for name in PLANNER_SETTINGS
        }
    top = plan["Plan"]
    workers = 0

    def walk(node: dict) -> None:
        nonlocal workers
        workers = max(workers, node.get("Workers Launched", 0))
        for child in node.get("Plans", []):
            walk(child)

    walk(top)
    pages = top.get("Shared Hit Blocks", 0) + top.get("Shared Read Blocks", 0)
    jit = plan.get("JIT", {}).get("Functions", 0) > 0
    return PostgresProfile(plan["Execution Time"], pages, workers, jit, settings)


@dataclass(frozen=True)
class DuckProfile:
    """One run of a query under DuckDB's profiler."""

    ms: float
    bytes_read: int
    columns: dict[str, list[str]]  # Parquet scan → the columns it projected


def duckdb_profile(con, query: str) -> DuckProfile:
    """Run ``query`` on the DuckDB connection ``con`` with JSON profiling: its time, the
    bytes read from files, and the columns each Parquet scan read (projections and
    filters)."""
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "profile.json"
        con.execute("PRAGMA enable_profiling = 'json'")
        con.execute(f"SET profiling_output = '{out}'")
        try:
            con.execute(query).fetchall()
        finally:
            con.execute("PRAGMA disable_profiling")
        profile = json.loads(out.read_text())
    columns: dict[str, list[str]] = {}

    def walk(node: dict) -> None:
        info = node.get("extra_info") or {}
        if info.get("Function") == "READ_PARQUET":
            path = str(info.get("Filename(s)", ""))
            text = " ".join(
                value if isinstance(value, str) else " ".join(value)
                for value in (info.get("Projections", ""), info.get("Filters", ""))
            )
            words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text))
            names = pq.read_schema(path).names if Path(path).exists() else sorted(words)
            columns[Path(path).stem] = [name for name in names if name in words]
        for child in node.get("children", []):
            walk(child)

    for child in profile.get("children", []):
        walk(child)
    for child in profile.get("operator", []):
        walk(child)
    query_info = profile.get("query", {})
    seconds = query_info.get("total_time") or profile.get("latency") or 0.0
    io = profile.get("io", {})
    return DuckProfile(seconds * 1000, int(io.get("total_bytes_read", 0)), columns)


def plot_comparison(rows: list[dict], *, title: str = "The same aggregate, two engines"):
    """Bars of milliseconds and megabytes read per engine: ``rows`` of ``{"engine":, "ms":,
    "bytes":}``, each with an optional ``"uncompressed_bytes"`` drawn as an outlined bar
    behind (the same data before compression, to compare with row pages fairly)."""
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    names = [r["engine"] for r in rows]
    colors = ["#4c72b0", "#dd8452", "#55a868", "#c44e52"][: len(rows)]
    left.bar(names, [r["ms"] for r in rows], color=colors)
    left.set_ylabel("median ms")
    left.set_title("time")
    if any("uncompressed_bytes" in r for r in rows):
        right.bar(
            names,
            [r.get("uncompressed_bytes", r["bytes"]) / 1e6 for r in rows],
            fill=False,
            edgecolor="#555555",
            linestyle="--",
            label="uncompressed",
        )
    right.bar(names, [r["bytes"] / 1e6 for r in rows], color=colors, label="as read")
    right.set_ylabel("MB")
    right.set_title("data read")
    if any("uncompressed_bytes" in r for r in rows):
        right.legend(loc="upper right")
    fig.suptitle(title)
    fig.tight_layout()
    return fig
