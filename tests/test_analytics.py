"""labkit.analytics against a real PostgreSQL: the export keeps every row and type, DuckDB
gives PostgreSQL's answer, and its scan reads only the columns a query names."""

from __future__ import annotations

import datetime as dt

import pyarrow.parquet as pq
import pytest

from labkit import analytics, db

REPORT = """SELECT v.country, p.device, count(*), sum(p.duration_ms), max(p.viewed_at)
FROM page_views p JOIN visitors v ON v.id = p.visitor_id WHERE p.status = 200
GROUP BY v.country, p.device ORDER BY v.country, p.device"""


def test_export_and_duckdb_match_postgres(tmp_path):
    """Parquet holds PostgreSQL's rows with its types; the same SQL gives the same rows; the
    profile names the columns read and fewer bytes than PostgreSQL touched."""
    warehouse = db.fresh_database("test_s13b_analytics")
    try:
        assert analytics.load_page_views(warehouse, views=20_000, progress=False) == {
            "visitors": 2000, "page_views": 20_000}  # fmt: skip
        views = analytics.export_parquet(warehouse, "page_views", tmp_path / "pv.parquet")
        visitors = analytics.export_parquet(warehouse, "visitors", tmp_path / "v.parquet")
        assert (views.rows, visitors.rows) == (20_000, 2000)
        schema = pq.read_schema(views.path)
        assert str(schema.field("status").type) == "int16"
        assert str(schema.field("viewed_at").type) == "timestamp[us, tz=UTC]"
        first = pq.read_table(views.path).slice(0, 1).to_pylist()[0]
        assert first["viewed_at"] == dt.datetime(2024, 1, 1, 0, 0, 17, tzinfo=dt.UTC)
        con = analytics.duckdb_connection({"page_views": views.path, "visitors": visitors.path})
        assert analytics.postgres_rows(warehouse, REPORT) == [
            tuple(r) for r in con.execute(REPORT).fetchall()
        ]
        profile = analytics.duckdb_profile(con, REPORT)
        assert set(profile.columns["pv"]) == {
            "visitor_id",
            "device",
            "status",
            "duration_ms",
            "viewed_at",
        }
        pg = analytics.postgres_profile(warehouse, REPORT)
        assert 0 < profile.bytes_read < pg.bytes_touched
        assert set(pg.settings) == set(analytics.PLANNER_SETTINGS) and isinstance(pg.jit, bool)
        with warehouse.connect(autocommit=True) as conn:  # one connection, reused
            conn.execute("SET max_parallel_workers_per_gather = 0")
            pids = {analytics.postgres_rows(conn, "SELECT pg_backend_pid()")[0] for _ in "ab"}
            assert pids == {(conn.info.backend_pid,)}
            serial = analytics.postgres_profile(conn, REPORT)
            assert serial.workers == 0 and serial.settings["max_parallel_workers_per_gather"] == "0"
            assert serial.pages == pg.pages
        sizes = analytics.parquet_columns(views.path)
        assert sizes["stored_bytes"].sum() < views.file_bytes
        assert sizes["column"][0] == "referrer"
        with pytest.raises(ValueError, match="SELECT"):
            analytics.postgres_profile(warehouse, "DELETE FROM visitors")
        with warehouse.connect(autocommit=True) as conn:
            conn.execute("CREATE TABLE odd (n numeric)")
        with pytest.raises(ValueError, match="cast it"):
            analytics.export_parquet(warehouse, "odd", tmp_path / "odd.parquet")
    finally:
        db.drop_database("test_s13b_analytics")
