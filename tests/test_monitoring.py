"""labkit.monitoring: Prometheus quantiles as PromQL computes them, the alert's states, and
real statements counted by the metrics, pg_stat_statements and pg_stat_database."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import text

from labkit import db, monitoring
from labkit.monitoring import AlertRule, QueryMetrics, histogram_quantile

INF = float("inf")


def test_histogram_quantile_interpolates_like_prometheus():
    """Linear inside the bucket; the first bucket starts at 0; +Inf gives the top bound."""
    buckets = [(0.1, 50), (0.5, 90), (1.0, 100), (INF, 100)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.05)
    assert histogram_quantile(0.95, buckets) == pytest.approx(0.75)
    assert histogram_quantile(0.99, [(0.1, 10), (INF, 20)]) == 0.1
    assert math.isnan(histogram_quantile(0.95, [(0.1, 0), (INF, 0)]))
    assert monitoring.bucket_delta([(0.1, 5), (INF, 7)], [(0.1, 6), (INF, 10)]) == [
        (0.1, 1),
        (INF, 3),
    ]
    with pytest.raises(ValueError, match=r"\+Inf"):
        histogram_quantile(0.5, [(0.1, 3)])


def test_exact_quantile_lies_in_the_estimates_bucket():
    """Nearest rank; the estimate from buckets falls in the bucket of the exact value, so
    the two differ by less than its width, and a threshold on a bound decides alike."""
    values = [0.001 * (i % 7) + 0.0004 for i in range(57)] + [0.1013, 0.1021, 0.1049]
    assert monitoring.exact_quantile(0.5, [3.0, 1.0, 2.0, 4.0]) == 2.0
    assert monitoring.exact_quantile(0.95, values) == max(values[:57])  # 57th of 60
    assert monitoring.exact_quantile(0.96, values) == 0.1013  # 58th of 60
    assert math.isnan(monitoring.exact_quantile(0.95, []))
    assert monitoring.bucket_of(0.1013, monitoring.BUCKETS) == (0.1, 0.15)
    assert monitoring.bucket_of(0.1, monitoring.BUCKETS) == (0.05, 0.1)
    assert monitoring.bucket_of(9.0, monitoring.BUCKETS) == (2.5, INF)
    for q in (0.5, 0.9, 0.95, 0.99):
        buckets = [(le, sum(v <= le for v in values)) for le in (*monitoring.BUCKETS, INF)]
        estimate, exact = histogram_quantile(q, buckets), monitoring.exact_quantile(q, values)
        lower, upper = monitoring.bucket_of(exact, monitoring.BUCKETS)
        assert lower < estimate <= upper
        assert (estimate > 0.05) == (exact > 0.05)


def test_alert_needs_for_ticks_and_clears_at_once():
    rule = AlertRule("p95", threshold=0.05, for_ticks=2)
    states = [rule.evaluate(v) for v in (0.01, 0.06, 0.07, 0.08, 0.05, float("nan"), 0.2)]
    assert states == ["inactive", "pending", "firing", "firing", "inactive", "inactive", "pending"]


def test_metrics_and_server_statistics_count_real_statements():
    """Counter and histogram per operation on a fresh registry; the alert fires on injected
    pg_sleep and clears; pg_stat_statements and pg_stat_database deltas see the same calls."""
    database = db.fresh_database("test_s13b_monitor")
    engine = database.engine()
    try:
        metrics = QueryMetrics(CollectorRegistry(), keep_raw=True)
        metrics.instrument(engine)
        with pytest.raises(ValueError, match="Duplicated"):
            QueryMetrics(metrics.registry)
        before = monitoring.statements_snapshot(database)
        stats = monitoring.database_snapshot(database)
        rule = AlertRule("slow", threshold=0.1, for_ticks=1)

        def workload(tick):
            with engine.connect() as conn:
                for _ in range(10):
                    conn.execute(text("SELECT 1"))
                if tick == 2:  # 2 slow of the window's 22: the p95 lands among them
                    conn.execute(text("SELECT pg_sleep(0.25)"))
                    conn.execute(text("SELECT pg_sleep(0.25)"))

        board = monitoring.watch(
            metrics.registry, rule, workload, ticks=6, window=2, raw=metrics.raw, progress=False
        )
        assert len(metrics.raw) == 62
        assert list(board["bucket_ms"])[2:4] == ["250-500", "250-500"]  # pg_sleep(0.25) + trip
        assert (board["exact_p95_ms"][2:4] > 250).all()
        assert list(board["state"]) == [
            "inactive",
            "inactive",
            "firing",
            "firing",
            "inactive",
            "inactive",
        ]
        assert list(board["queries"]) == [10, 10, 12, 10, 10, 10]
        assert metrics.count("SELECT") == 62
        assert metrics.buckets()[-1] == (INF, 62)
        assert 'db_queries_total{operation="SELECT"} 62.0' in metrics.exposition()
        metrics.uninstrument(engine)
        engine.dispose()
        delta = monitoring.snapshot_delta(before, monitoring.statements_snapshot(database))
        assert delta["query"][0].startswith("SELECT pg_sleep") and delta["calls"][0] == 2
        assert int(delta[delta["query"] == "SELECT $1"]["calls"].sum()) == 60
        assert not delta["query"].str.contains("pg_stat_|xact_commit").any()
        after = monitoring.wait_for_counters(database, {"xact_commit": stats["xact_commit"] + 6})
        assert after["xact_commit"] - stats["xact_commit"] >= 6
    finally:
        engine.dispose()
        db.drop_database("test_s13b_monitor")


def test_snapshot_delta_keeps_roles_apart():
    """pg_stat_statements has one row per (userid, dbid, queryid, toplevel): the same query by
    two roles must stay two rows, each with its own calls (merging on queryid alone would
    cross the two roles' rows)."""
    database = db.fresh_database("test_s13b_roles")
    reader = db.login_role("s13b_mon_reader")
    admin, other = database.engine(), reader.engine(database.name)
    try:
        before = monitoring.statements_snapshot(database)
        for engine, times in ((admin, 3), (other, 5)):
            with engine.connect() as conn:
                for _ in range(times):
                    conn.execute(text("SELECT 1 + 1"))
        admin.dispose()
        other.dispose()
        middle = monitoring.statements_snapshot(database)
        with other.connect() as conn:
            conn.execute(text("SELECT 1 + 1"))
        other.dispose()
        after = monitoring.statements_snapshot(database)
        first = monitoring.snapshot_delta(before, middle, top=100, roles=True)
        calls = first[first["query"] == "SELECT $1 + $2"].set_index("role")["calls"].to_dict()
        assert calls[reader.name] == 5 and len(calls) == 2 and sum(calls.values()) == 8
        second = monitoring.snapshot_delta(middle, after, top=100, roles=True)
        mine = second[second["query"] == "SELECT $1 + $2"]
        assert list(mine["role"]) == [reader.name] and list(mine["calls"]) == [1]
    finally:
        admin.dispose()
        other.dispose()
        db.drop_database("test_s13b_roles")
