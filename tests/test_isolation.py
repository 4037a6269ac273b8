"""labkit.isolation against the course's PostgreSQL and Redis: the token bucket's arithmetic
and atomicity, the Redis semaphore's bound and leases, the per-transaction statement
timeout, and one short noisy-neighbour load with and without the limits."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import psycopg
import pytest

from labkit import cache, db, isolation
from labkit.isolation import (
    ConcurrencyLimiter,
    Gateway,
    RateLimited,
    RateLimiter,
    SlotUnavailable,
)


@pytest.fixture(scope="module")
def redis_client():
    client = cache.redis_client()
    yield client
    from labkit.caching import delete_prefix

    delete_prefix(client, isolation.default_namespace("test:"))


@pytest.fixture(scope="module")
def demo():
    database = db.fresh_database("s12b_test_isolation")
    # 6,000 orders: 36 M pairs in the noisy report (1.1 s here); with 3,000 (284 ms on a quiet
    # 2-core machine) it did not outlast 3x the starter timeout, as the tests require
    info = isolation.load_demo(database, tenants=4, rows=500, noisy_rows=6_000)
    with database.connect() as conn:
        plans = isolation.load_plans(conn)
    info["role"] = isolation.grant_app_role(database, "s12b_test_app")
    yield database, info, plans
    db.drop_database("s12b_test_isolation")


def test_token_bucket_refills_at_its_rate_and_tells_when_to_retry(redis_client):
    """A bucket of 3 at 10 tokens/s: 3 pass at once, then one per 100 ms (given clock)."""
    limiter = RateLimiter(redis_client, namespace=isolation.default_namespace("test:rate1:"))
    limiter.reset()
    allow = lambda t: limiter.allow("t", rate_per_s=10, burst=3, now_ms=t)  # noqa: E731
    assert [allow(0).allowed for _ in range(4)] == [True, True, True, False]
    assert allow(0).retry_after_ms == 100
    refused = allow(50)  # half a token refilled
    assert (refused.allowed, refused.retry_after_ms) == (False, 50)
    assert allow(100).allowed and not allow(100).allowed
    assert [allow(10_000).allowed for _ in range(4)] == [True, True, True, False]  # capped at 3
    assert limiter.allow("t", rate_per_s=10, burst=3, cost=3, now_ms=20_000).allowed
    with pytest.raises(ValueError, match="never pass"):
        limiter.allow("t", rate_per_s=10, burst=3, cost=4)
    with pytest.raises(ValueError, match="namespace"):
        RateLimiter(redis_client, namespace="")


def test_token_bucket_is_atomic_under_concurrent_requests(redis_client):
    """20 threads ask at once for a bucket of 5 that barely refills: exactly 5 pass."""
    limiter = RateLimiter(redis_client, namespace=isolation.default_namespace("test:rate2:"))
    limiter.reset()
    start = threading.Barrier(20)
    answers: list[bool] = []

    def ask() -> None:
        start.wait()
        answers.append(limiter.allow("burst", rate_per_s=0.001, burst=5).allowed)

    threads = [threading.Thread(target=ask) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == [False] * 15 + [True] * 5


def test_semaphore_bounds_holders_and_expires_a_dead_holders_lease(redis_client):
    """6 threads through a limit of 2: never more than 2 inside, all get through, ≥ 4
    wait; a slot never released frees itself when its lease ends; waits end on time."""
    slots = ConcurrencyLimiter(redis_client, namespace=isolation.default_namespace("test:slots:"))
    slots.reset()
    inside, peak, lock = 0, 0, threading.Lock()
    start = threading.Barrier(6)
    done: list[int] = []

    def work(i: int) -> None:
        nonlocal inside, peak
        start.wait()
        with slots.slot("t", limit=2, wait_s=10):
            with lock:
                inside += 1
                peak = max(peak, inside)
            time.sleep(0.05)
            with lock:
                inside -= 1
        done.append(i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (peak, sorted(done), slots.holders("t")) == (2, list(range(6)), 0)
    assert slots.waits >= 4
    assert int(redis_client.get(slots.waiting_key("t"))) == 0  # every waiter deregistered
    # With no waiter, releases push no wake token: none pile up to wake later waiters.
    redis_client.delete(slots.wake_key("idle"))
    pushed = []
    for _ in range(5):
        pushed.append(slots.release("idle", slots.try_acquire("idle", limit=1)))
    assert pushed == [False] * 5 and redis_client.llen(slots.wake_key("idle")) == 0

    dead = slots.try_acquire("lease", limit=1, lease_ms=150)
    assert dead and slots.try_acquire("lease", limit=1) is None
    time.sleep(0.2)
    assert slots.try_acquire("lease", limit=1) is not None
    started = time.perf_counter()
    with pytest.raises(SlotUnavailable, match="max_concurrent"):
        with slots.slot("lease", limit=1, wait_s=0.1):
            pass
    stop = threading.Event()
    stop.set()
    with pytest.raises(SlotUnavailable):
        with slots.slot("lease", limit=1, wait_s=30, stop=stop):
            pass
    assert time.perf_counter() - started < 2


def test_statement_timeout_is_per_transaction_and_per_plan(demo):
    """With timeouts, a starter tenant's 0.3 s statement is cancelled by its 100 ms
    timeout, a pro tenant's is not, and the setting ends with the transaction."""
    database, info, plans = demo
    starter, pro = info["noisy"], 1
    assert (plans[starter].name, plans[pro].name) == ("starter", "pro")
    gateway = Gateway(plans, timeouts=True)
    with psycopg.connect(info["role"].url(database.name), autocommit=True) as conn:
        user, superuser = conn.execute(
            "SELECT rolname, rolsuper FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        assert (user, superuser) == (info["role"].name, False)
        with pytest.raises(psycopg.errors.QueryCanceled, match="statement timeout"):
            gateway.execute(conn, starter, "SELECT pg_sleep(0.3)", ())
        assert conn.execute("SHOW statement_timeout").fetchone()[0] == "0"
        assert gateway.execute(conn, pro, "SELECT pg_sleep(0.15), 1", ())[0][1] == 1
        assert Gateway(plans).execute(conn, starter, "SELECT pg_sleep(0.15), 2", ())[0][1] == 2
    with pytest.raises(ValueError, match="tenants table"):
        gateway.plan(99)
    with pytest.raises(ValueError, match="'read' or 'report'"):
        plans[1].rate("write")


def test_gateway_meters_every_statement_that_ran(demo):
    """A Gateway with a meter bills each statement to its tenant: the rows of one that
    completed, and the time of one the timeout cancelled (0 rows)."""
    from labkit import metering

    database, info, plans = demo
    meter = metering.UsageMeter()
    gateway = Gateway(plans, timeouts=True, meter=meter)
    noisy = info["noisy"]
    with database.connect(autocommit=True) as conn:
        assert len(gateway.execute(conn, 1, "SELECT generate_series(1, 7)", ())) == 7
        with pytest.raises(psycopg.errors.QueryCanceled):
            gateway.execute(conn, noisy, "SELECT pg_sleep(0.3)", ())
    billed = meter.pending(timed=True)
    assert {t: (c["queries"], c["rows"]) for t, c in billed.items()} == {1: (1, 7), noisy: (1, 0)}
    assert 100 <= billed[noisy]["statement_ms"] < 300  # cancelled at its 100 ms timeout


def test_percentiles_are_nearest_rank_and_need_enough_samples():
    """Nearest rank on 1..200: p50 = 100, p95 = 190, p99 = 198; p99 of 99 samples is NaN."""
    result = isolation.PhaseResult("x", latencies_ms={1: [float(x) for x in range(200, 0, -1)]})
    assert (result.percentile(50), result.percentile(95), result.percentile(99)) == (100, 190, 198)
    few = isolation.PhaseResult("y", latencies_ms={1: [1.0] * 99})
    assert few.percentile(95) == 1.0 and few.percentile(99) != few.percentile(99)


def test_rate_limited_gateway_refuses_reports_but_not_reads(demo, redis_client):
    """The starter plan allows 1 report in a burst: the 2nd is refused with a retry time;
    reads are not rate limited by default."""
    database, info, plans = demo
    limiter = RateLimiter(redis_client, namespace=isolation.default_namespace("test:gw:"))
    limiter.reset()
    gateway = Gateway(plans, limiter=limiter)
    noisy = info["noisy"]
    with database.connect(autocommit=True) as conn:
        gateway.execute(conn, noisy, "SELECT 1", (), kind="report")
        with pytest.raises(RateLimited, match="retry after") as refused:
            gateway.execute(conn, noisy, "SELECT 1", (), kind="report")
        assert 0 < refused.value.retry_after_ms <= 2_000
        for _ in range(5):
            gateway.execute(conn, noisy, "SELECT 1", (), kind="read")


def test_noisy_neighbour_is_contained(demo, redis_client):
    """Without limits the noisy tenant runs 3 reports at once; with all three limits at most
    1 is active, timeouts cancel every report, the bucket bounds what passes, and no
    quiet query is refused or cancelled (the tenants connect as the application's role)."""
    database, info, plans = demo
    # The report outlasts 3× the starter timeout run plainly (no EXPLAIN overhead), alone.
    margin = 3 * plans[info["noisy"]].statement_timeout_ms
    patient = Gateway({info["noisy"]: replace(plans[info["noisy"]], statement_timeout_ms=margin)})
    patient.timeouts = True
    with database.connect(autocommit=True) as conn:
        with pytest.raises(psycopg.errors.QueryCanceled, match="statement timeout"):
            patient.execute(conn, info["noisy"], isolation.REPORT_QUERY, (info["noisy"],) * 2)
    namespace = isolation.default_namespace("test:load:")
    slots = ConcurrencyLimiter(redis_client, namespace=namespace + "slots:")
    limiter = RateLimiter(redis_client, namespace=namespace + "rate:")
    phases = [
        (Gateway(plans, label="noisy"), True),
        (Gateway(plans, timeouts=True, slots=slots, limiter=limiter, label="contained"), True),
    ]
    noisy, contained = isolation.run_rounds(
        database,
        phases,
        rounds=1,
        quiet_tenants=[1, 2],
        noisy_tenant=info["noisy"],
        noisy_threads=3,
        duration_s=0.8,
        progress=False,
        role=info["role"],
    )
    assert noisy.max_noisy_active >= 2 and noisy.noisy_cancelled == 0
    assert noisy.noisy_users == contained.noisy_users == {info["role"].name}
    assert contained.max_noisy_active <= plans[info["noisy"]].max_concurrent
    assert contained.noisy_completed == 0 and contained.noisy_cancelled >= 1
    assert contained.noisy_refused >= 1
    assert contained.noisy_allowed <= contained.allowed_bound
    assert noisy.quiet_errors == contained.quiet_errors == {}
    assert min(len(v) for v in contained.latencies_ms.values()) > 10
    table = isolation.phase_table([noisy, contained])
    assert list(table.index) == ["noisy", "contained"]
