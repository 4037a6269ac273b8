"""labkit.loadtest against the course's PostgreSQL (a database of the test's own)."""

from __future__ import annotations

import math
from collections import Counter

import psycopg
import pytest

from labkit import db
from labkit.loadtest import (
    WorkloadResult,
    copy_rows,
    generate_rows,
    percentile,
    plot_latency,
    run_workload,
)


@pytest.fixture(scope="module")
def ledger():
    database = db.fresh_database("s13a_loadtest")
    with database.connect(autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE entries (id bigint PRIMARY KEY, account_id int NOT NULL, "
            "amount int NOT NULL, memo text NOT NULL)"
        )
    yield database
    db.drop_database("s13a_loadtest")


def test_copy_loads_every_generated_row_exactly(ledger):
    """COPY loads the rows generate_rows makes, all of them, in chunks that do not divide
    the count; bad sizes and a missing table are refused."""
    report = copy_rows(ledger.url, rows=25_001, accounts=97, chunk_rows=4_000, progress=False)
    expected = list(generate_rows(1, 25_001, 97))
    with ledger.connect() as conn:
        got = conn.execute(
            "SELECT count(*), sum(amount), count(DISTINCT account_id), max(id), "
            "min(memo), sum(length(memo)) FROM entries"
        ).fetchone()
    assert got == (
        25_001,
        sum(r[2] for r in expected),
        97,
        25_001,
        min(r[3] for r in expected),
        sum(len(r[3]) for r in expected),
    )
    assert report.rows == 25_001 and report.seconds > 0 and report.build_seconds > 0
    assert report.rows_per_s == pytest.approx(25_001 / report.seconds)
    assert "25,001 rows into entries" in str(report) and "not counted" in str(report)
    with pytest.raises(ValueError, match="at least 1"):
        copy_rows(ledger.url, rows=0, progress=False)
    with pytest.raises(psycopg.errors.UndefinedTable):
        copy_rows(ledger.url, table="no_such_table", rows=10, progress=False)


def test_workload_runs_threads_at_once_with_a_seeded_mix(ledger):
    """Each thread makes its requests on its own connection, the threads overlap, the mix
    is the same for the same seed, and an exception is counted, not lost."""

    def request(rng, state):
        conn = state.get("conn")
        if conn is None:
            conn = state["conn"] = psycopg.connect(ledger.url, autocommit=True)
        state["backend"] = conn.info.backend_pid
        if rng.random() < 0.1:
            raise RuntimeError("a failing request")
        conn.execute("SELECT pg_sleep(0.01)")
        return "read" if rng.random() < 0.7 else "write"

    first = run_workload(request, threads=4, requests_per_thread=30, seed=7, progress=False)
    second = run_workload(request, threads=4, requests_per_thread=30, seed=7, progress=False)
    for result in (first, second):
        for state in result.states:
            state["conn"].close()
    assert first.count == 120 and len(first.latencies_ms) == 120
    assert Counter(first.kinds) == Counter(second.kinds)
    assert len(first.errors) == Counter(first.kinds)["error"] > 0
    assert all(isinstance(e, RuntimeError) for e in first.errors)
    assert len({s["backend"] for s in first.states}) == 4
    # 4 threads sleeping 10 ms at once: far less wall time than the sum of the latencies
    assert first.seconds < 0.6 * sum(first.latencies_ms) / 1000
    assert first.throughput == pytest.approx(120 / first.seconds)
    table = first.percentiles()
    assert list(table.index) == ["error", "read", "write", "all"]
    assert table.loc["all", "requests"] == 120
    assert table.loc["all", "per_s"] == pytest.approx(first.throughput, abs=0.01)
    everything = sorted(first.latencies_ms)  # nearest rank: measured values, never between
    assert table.loc["all", "p50_ms"] == round(everything[59], 2)
    assert table.loc["all", "p95_ms"] == round(everything[113], 2)
    assert table.loc["all", "p99_ms"] == round(everything[118], 2)  # ceil(1.188) = 119th
    assert (table["p50_ms"] <= table["max_ms"]).all()
    assert len(plot_latency(first).axes) == 2
    with pytest.raises(ValueError, match="no requests"):
        plot_latency(WorkloadResult())
    with pytest.raises(ValueError, match="at least 1"):
        run_workload(request, threads=0)


def test_percentiles_by_nearest_rank_and_not_from_too_few_requests():
    """p-th percentile = the smallest measured value with p % at or below it; p95 needs 20
    requests, p99 100: fewer give NaN (the "p99" of 26 requests is just their maximum)."""
    values = [float(v) for v in range(1, 101)]  # 1 .. 100
    assert [percentile(values, q) for q in (50, 95, 99, 100)] == [50.0, 95.0, 99.0, 100.0]
    assert percentile([5.0, 1.0, 9.0], 50) == 5.0 and percentile([7.0], 99) == 7.0
    for bad in ([], [1.0]):
        with pytest.raises(ValueError):
            percentile(bad, 0 if bad else 101)
    small = WorkloadResult(kinds=["read"] * 19 + ["write"] * 100,
                           latencies_ms=[1.0] * 19 + values, seconds=2.0)  # fmt: skip
    table = small.percentiles()
    assert math.isnan(table.loc["read", "p95_ms"]) and table.loc["read", "p50_ms"] == 1.0
    assert (table.loc["write", "p95_ms"], table.loc["write", "p99_ms"]) == (95.0, 99.0)
    assert table.loc["all", "requests"] == 119 and table.loc["all", "per_s"] == 59.5
    assert (
        math.isnan(table.loc["read", "p99_ms"]) and table.loc["all", "p99_ms"] == 99.0
    )  # 118th of 119
