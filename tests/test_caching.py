"""labkit.caching against the course's real Redis: codec, counters, workload, clean-up,
stampede protection and the concurrent runner."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from labkit import cache, caching


@pytest.fixture
def redis_prefix():
    """A client and a key prefix unique to this test; its keys are deleted afterwards."""
    client = cache.redis_client()
    prefix = f"test_caching:{uuid.uuid4().hex[:8]}:"
    yield client, prefix
    caching.delete_prefix(client, prefix)


def test_codec_round_trips_datetimes_dates_and_decimals():
    value = {
        "id": 7,
        "created_at": datetime(2024, 5, 1, 12, 30, tzinfo=UTC),
        "local": datetime(2024, 5, 1, 12, 30, tzinfo=timezone(timedelta(hours=2))),
        "naive": datetime(2024, 5, 1, 12, 30, 1, 123456),
        "born": date(1990, 2, 3),
        "avg_views": Decimal("123.4500"),
        "tags": ["a", "b"],
        "missing": None,
        "nested": {"price": Decimal("-0.01")},
    }
    back = caching.loads(caching.dumps(value))
    assert back == value
    assert type(back["created_at"]) is datetime and back["created_at"].utcoffset() == timedelta(0)
    assert type(back["born"]) is date
    assert type(back["avg_views"]) is Decimal and str(back["avg_views"]) == "123.4500"
    assert caching.loads(caching.dumps(None)) is None
    assert caching.loads(caching.dumps({"$other": 1})) == {"$other": 1}


def test_codec_refuses_unknown_types_with_a_helpful_message():
    with pytest.raises(TypeError, match="cannot cache a set"):
        caching.dumps({"s": {1, 2}})


def test_hit_counter_counts_and_rolls():
    counter = caching.HitCounter()
    assert counter.hit_rate == 0.0
    for hit in [False, False, True, True, True, True]:
        counter.hit() if hit else counter.miss()
    assert (counter.hits, counter.misses, counter.total) == (4, 2, 6)
    assert counter.hit_rate == pytest.approx(4 / 6)
    assert counter.rolling(2) == [0.0, 0.0, 0.5, 1.0, 1.0, 1.0]
    assert counter.rolling(100)[-1] == pytest.approx(4 / 6)
    with pytest.raises(ValueError):
        counter.rolling(0)
    counter.reset()
    assert (counter.hits, counter.misses, counter.events) == (0, 0, [])


def test_zipf_workload_is_seeded_and_skewed():
    keys = list(range(100, 1100))
    reads = caching.zipf_workload(keys, 20_000, s=1.2, seed=3)
    assert reads == caching.zipf_workload(keys, 20_000, s=1.2, seed=3)
    assert reads != caching.zipf_workload(keys, 20_000, s=1.2, seed=4)
    assert set(reads) <= set(keys)
    counts = Counter(reads)
    assert counts.most_common(1)[0][0] == keys[0], "the first key is the most popular"
    head = sum(counts[k] for k in keys[:10])
    tail = sum(counts[k] for k in keys[-500:])
    assert head > 5 * tail, "ten head keys outdraw five hundred tail keys"
    flatter = Counter(caching.zipf_workload(keys, 20_000, s=0.6, seed=3))
    assert sum(flatter[k] for k in keys[:10]) < head, "a smaller s spreads reads out"
    with pytest.raises(ValueError):
        caching.zipf_workload([], 10)
    with pytest.raises(ValueError):
        caching.zipf_workload(keys, 10, s=0)


def test_delete_prefix_touches_only_its_prefix(redis_prefix):
    client, prefix = redis_prefix
    client.mset({f"{prefix}a:{i}": i for i in range(1_200)})
    client.set(f"{prefix}b*[x]", 1)  # glob characters in a key are matched literally
    client.set(f"{prefix}b", 1)
    assert caching.delete_prefix(client, f"{prefix}a:") == 1_200
    assert caching.delete_prefix(client, f"{prefix}b*") == 1
    assert client.exists(f"{prefix}b") == 1
    with pytest.raises(ValueError, match="empty prefix"):
        caching.delete_prefix(client, "")


def test_get_or_compute_hits_after_the_first_call(redis_prefix):
    client, prefix = redis_prefix
    calls, counter = [], caching.HitCounter()

    def compute():
        calls.append(1)
        return {"at": datetime(2024, 1, 1, tzinfo=UTC), "avg": Decimal("1.5")}

    first = caching.get_or_compute(client, f"{prefix}k", compute, ttl=30, counter=counter)
    second = caching.get_or_compute(client, f"{prefix}k", compute, ttl=30, counter=counter)
    assert first == second and len(calls) == 1
    assert (counter.hits, counter.misses) == (1, 1)
    assert 0 < client.pttl(f"{prefix}k") <= 30_000
    assert client.exists(f"{prefix}k:lock") == 0, "the lock is released after computing"


@pytest.mark.parametrize("lock", [True, False])
def test_stampede_computes_once_only_with_the_lock(redis_prefix, lock):
    client, prefix = redis_prefix
    calls, guard = [], threading.Lock()

    def slow_compute():
        with guard:
            calls.append(1)
        time.sleep(0.2)
        return 42

    results = caching.run_concurrently(
        lambda _: caching.get_or_compute(client, f"{prefix}hot", slow_compute, ttl=30, lock=lock),
        8,
    )
    assert results == [42] * 8
    if lock:
        assert len(calls) == 1, f"with the lock one reader computes, not {len(calls)}"
    else:
        assert len(calls) > 1, "without the lock concurrent readers all miss and compute"


def test_lock_is_released_when_compute_fails(redis_prefix):
    client, prefix = redis_prefix

    def broken():
        raise RuntimeError("database down")

    with pytest.raises(RuntimeError, match="database down"):
        caching.get_or_compute(client, f"{prefix}k", broken, ttl=30)
    assert client.exists(f"{prefix}k:lock") == 0
    assert client.exists(f"{prefix}k") == 0


def test_waiter_computes_itself_when_the_holder_never_finishes(redis_prefix):
    """A waiter polls for `wait` seconds (not until the 10 s lock expires), then computes
    the value itself; it never releases (or takes) someone else's lock."""
    from labkit.exercises import count_round_trips

    client, prefix = redis_prefix
    client.set(f"{prefix}k:lock", "someone-else", px=10_000)
    started = time.monotonic()
    with count_round_trips(client) as trips:
        value = caching.get_or_compute(
            client, f"{prefix}k", lambda: "fallback", ttl=30, wait=0.1, poll=0.01
        )
    assert value == "fallback"
    assert time.monotonic() - started >= 0.1, "it gave up before `wait` had passed"
    polls = trips.commands.count("GET") - 1  # the first GET is the cache lookup itself
    assert 1 <= polls <= 0.1 / 0.01 + 1, f"{polls} polls in 0.1 s with a 10 ms poll interval"
    assert trips.commands.count("SET") == 1, "one failed SET NX for the lock; no other write"
    assert client.get(f"{prefix}k:lock") == "someone-else", "a waiter never releases a lock"


def test_run_concurrently_returns_in_order_and_reraises():
    assert caching.run_concurrently(lambda i: i * i, 5) == [0, 1, 4, 9, 16]

    def fail(i):
        if i == 2:
            raise KeyError("boom")
        return i

    with pytest.raises(KeyError):
        caching.run_concurrently(fail, 4)
    with pytest.raises(ValueError):
        caching.run_concurrently(fail, 0)


def test_simulate_counts_first_reads_warming_and_expiry():
    reads = ["a", "b", "a", "c", "a", "b"]
    cold = caching.simulate(reads)
    assert (cold.hits, cold.misses) == (3, 3), "every key misses once, then hits forever"
    warm = caching.simulate(reads, warmed=["a", "b"])
    assert (warm.hits, warm.misses) == (5, 1), "only c misses"
    # one read per second, entries live 1.5 s: a at t=0 expires before its read at t=2
    expiring = caching.simulate(reads, ttl=1.5, rate=1.0)
    assert expiring.events == [False, False, False, False, False, False]
    longer = caching.simulate(reads, ttl=2.5, rate=1.0)
    assert longer.events == [False, False, True, False, False, False], "a hit does not extend a TTL"
    with pytest.raises(ValueError, match="both ttl and rate"):
        caching.simulate(reads, ttl=10)


def test_predict_matches_a_simulated_run_of_the_same_workload():
    keys = list(range(1, 501))
    model = caching.predict(keys, 5_000, s=1.2, warm=100, seed=9)
    reads = caching.zipf_workload(keys, 5_000, s=1.2, seed=9)
    replay = caching.simulate(reads, warmed=keys[:100])
    assert (model.reads, model.hits, model.misses) == (5_000, replay.hits, replay.misses)
    assert model.warmed == 100 and model.statements == replay.misses + 1, "one warm-up statement"
    assert model.hit_rate == pytest.approx(replay.hit_rate)
    assert model.saved == pytest.approx(1 - model.statements / 5_000)
    cold = caching.predict(keys, 5_000, s=1.2, seed=9)
    assert cold.statements == cold.misses == len(set(reads)), "cold: one statement per miss"
    expiring = caching.predict(keys, 5_000, s=1.2, warm=100, ttl=5, seed=9)
    assert expiring.misses > model.misses, "entries that expire miss again"
    assert caching.predict(keys, 0).saved == 0.0


def test_workload_table_measures_savings_against_the_first_run():
    warm = caching.HitCounter()
    for hit in (True, True, True, False):
        warm.hit() if hit else warm.miss()
    table = caching.workload_table({"no cache": (200, None, 1.234), "warmed": (20, warm, 0.5)})
    assert list(table.index) == ["no cache", "warmed"]
    assert table.loc["warmed", "statements saved (%)"] == 90.0
    assert table.loc["warmed", "hit rate (%)"] == 75.0
    assert table.loc["no cache", "seconds"] == 1.23
    assert table["hit rate (%)"].isna()["no cache"], "an uncached run has no hit rate"
    with pytest.raises(ValueError):
        caching.workload_table({})


def test_plot_hit_rate_draws_one_line_per_counter_and_the_target():
    counters = {"a": caching.HitCounter(), "b": caching.HitCounter()}
    for i in range(50):
        counters["a"].hit() if i % 2 else counters["a"].miss()
        counters["b"].hit()
    figure = caching.plot_hit_rate(counters, window=10, target=0.7, target_label="goal")
    (axes,) = figure.axes
    labels = [line.get_label() for line in axes.get_lines()]
    assert labels == ["a", "b", "goal"]
    assert list(axes.get_lines()[1].get_ydata()) == [1.0] * 50
    assert axes.get_ylabel() == "hit rate (last 10 reads)"


def test_wait_for_subscribers_sees_a_real_subscription(redis_prefix):
    client, prefix = redis_prefix
    channel = f"{prefix}events"
    assert caching.wait_for_subscribers(client, channel, timeout=0.05) == 0, "nobody yet"
    subscriber = cache.redis_client().pubsub()
    subscriber.subscribe(channel)
    try:
        assert caching.wait_for_subscribers(client, channel, timeout=5) == 1
        assert client.publish(channel, "hello") == 1
    finally:
        subscriber.close()
