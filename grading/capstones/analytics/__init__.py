"""Capstone: an analytics dashboard on time-series data (reference solution).

The public interface the acceptance suite calls (``python -m labkit check
capstone-analytics``); every function takes an open psycopg connection (autocommit) first:

- ``load_events(conn, count, seed=14, progress=True)``: create ``events`` and bulk-load it.
- ``setup_rollup(conn)`` / ``ingest(conn, rows)``: per-minute counters kept up to date.
- ``dashboard_data(conn, start, end, kinds=None, bucket="hour")`` and ``dashboard(conn)``.
- ``analytics_postgres(conn, name)`` / ``analytics_duckdb(parquet_path, name)``.
- ``export_csv(conn, table, path)`` / ``export_parquet(conn, table, path)``.
- ``load_temperatures(conn, path=None)``: the real Seattle dataset, times in their zone.
"""

from .dashboard import BUCKETS, dashboard, dashboard_data, plot
from .events import EPOCH, KINDS, event_batches, generate_events, load_events
from .rollup import ingest, setup_rollup
from .temperatures import dataset_path, load_temperatures
from .warehouse import (
    QUERIES,
    analytics_duckdb,
    analytics_postgres,
    export_csv,
    export_parquet,
)

__all__ = [
    "BUCKETS",
    "EPOCH",
    "KINDS",
    "QUERIES",
    "analytics_duckdb",
    "analytics_postgres",
    "dashboard",
    "dashboard_data",
    "dataset_path",
    "event_batches",
    "export_csv",
    "export_parquet",
    "generate_events",
    "ingest",
    "load_events",
    "load_temperatures",
    "plot",
    "setup_rollup",
]
