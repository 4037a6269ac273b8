"""labkit.caching's expiry and memory helpers against real Redis servers: TTL jitter and
the expiry seconds it spreads (the course's Redis), and what each ``maxmemory-policy`` does
when memory runs out (a private ``ThrowawayRedis``: never CONFIG SET on the shared one)."""

from __future__ import annotations

import random
import uuid
from collections import Counter

import pytest

from labkit import cache, caching


@pytest.fixture
def redis_prefix():
    """A client and a key prefix unique to this test; its keys are deleted afterwards."""
    client = cache.redis_client()
    prefix = f"test_caching_expiry:{uuid.uuid4().hex[:8]}:"
    yield client, prefix
    caching.delete_prefix(client, prefix)


def test_jittered_ttl_stays_within_the_spread_and_repeats_with_a_seed():
    ttls = [caching.jittered_ttl(300, spread=0.1, rng=random.Random(i)) for i in range(2_000)]
    assert min(ttls) >= 270 and max(ttls) <= 330
    assert max(ttls) - min(ttls) >= 55, "the factor covers the whole spread"
    first = [caching.jittered_ttl(60, 0.2, random.Random(5)) for _ in range(3)]
    again = [caching.jittered_ttl(60, 0.2, random.Random(5)) for _ in range(3)]
    assert first == again
    assert caching.jittered_ttl(0.2, 0.5) == 1, "never below one second"


@pytest.mark.parametrize("ttl, spread", [(0, 0.1), (-5, 0.1), (300, -0.1), (300, 1.0)])
def test_jittered_ttl_rejects_nonsense(ttl, spread):
    with pytest.raises(ValueError):
        caching.jittered_ttl(ttl, spread)


def test_expiry_seconds_spreads_with_jitter_and_bunches_without(redis_prefix):
    client, prefix = redis_prefix
    keys = [f"{prefix}{i}" for i in range(200)]
    rng = random.Random(2024)
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.set(key, "v", ex=300)
    pipe.execute()
    same = caching.expiry_seconds(client, keys)
    for key in keys:
        pipe.set(key, "v", ex=caching.jittered_ttl(300, 0.1, rng))
    pipe.execute()
    jittered = caching.expiry_seconds(client, keys)
    assert max(Counter(same).values()) >= 100  # one pipeline: one or two seconds
    assert max(Counter(jittered).values()) <= 20
    assert 268 <= min(jittered) and max(jittered) <= 330
    client.persist(keys[0])
    assert caching.expiry_seconds(client, [keys[0], f"{prefix}missing"]) == [None, None]


def test_plot_expiries_draws_one_row_per_run():
    fig = caching.plot_expiries({"same TTL": [299] * 5, "jittered": [280, 290, None]})
    assert len(fig.axes) == 2
    assert "at most 5 keys" in fig.axes[0].get_title(loc="left")


def test_fill_past_maxmemory_refuses_a_shared_server():
    with pytest.raises(TypeError, match="ThrowawayRedis"):
        caching.fill_past_maxmemory(cache.redis_client(), "allkeys-lru")


def test_each_policy_when_memory_runs_out():
    """noeviction refuses writes; allkeys-* evict any key (keys without a TTL too); LFU keeps
    the keys read often; volatile-lru evicts only keys with a TTL, and none without them."""
    with cache.ThrowawayRedis() as spare:
        runs = {
            (policy, with_ttl): caching.fill_past_maxmemory(
                spare, policy, entries_have_ttl=with_ttl
            )
            for policy, with_ttl in [
                ("noeviction", True),
                ("allkeys-lru", True),
                ("allkeys-lfu", True),
                ("volatile-lru", True),
                ("volatile-lru", False),
            ]
        }
        limit = spare.client().config_get("maxmemory")["maxmemory"]
    assert limit == "0", "the limit is lifted afterwards"
    full = runs["noeviction", True]
    assert full.refused > full.written // 2 and full.evicted == 0
    assert (full.untimed_left, full.hot_left) == (full.untimed, full.hot)
    for policy in ("allkeys-lru", "allkeys-lfu"):
        run = runs[policy, True]
        assert run.refused == 0 and run.evicted > run.written // 2, run
        assert run.untimed_left < run.untimed, f"{policy} evicts keys without a TTL too"
    assert runs["allkeys-lfu", True].hot_left == runs["allkeys-lfu", True].hot
    volatile = runs["volatile-lru", True]
    assert volatile.refused == 0 and volatile.evicted > 0
    assert volatile.untimed_left == volatile.untimed, "volatile-lru never evicts a key without TTL"
    no_ttl = runs["volatile-lru", False]
    assert no_ttl.refused > 0 and no_ttl.evicted == 0, "nothing to evict: like noeviction"
    assert set(full.row()) == set(no_ttl.row())
