"""labkit.measure: timings and comparisons return numbers."""

from labkit import measure


def test_timeit_and_compare():
    calls = []
    timing = measure.timeit(lambda: calls.append(1), repeat=5, warmup=2)
    assert len(calls) == 7 and len(timing.runs_ms) == 5 and timing.median_ms >= 0
    table = measure.compare({"q": 10.0}, {"q": 1.0}, unit="buffers")
    assert table.loc["q", "speed-up (×)"] == 10.0
    assert table.loc["q", "change (%)"] == -90.0
    figure = measure.plot_comparison(table)
    assert figure.axes


def test_throwaway_redis_can_be_killed():
    """ThrowawayRedis is a real, separate server; after kill() commands fail fast."""
    import pytest
    import redis

    from labkit import cache

    with cache.ThrowawayRedis() as spare:
        client = spare.client()
        client.set("k", "v")
        assert client.get("k") == "v"
        spare.kill()
        with pytest.raises(redis.ConnectionError):
            client.get("k")
    assert cache.redis_client().ping(), "the course's own Redis is untouched"


def test_throwaway_redis_can_be_frozen():
    """After freeze() commands time out (TimeoutError, not ConnectionError); kill() still
    ends the frozen server."""
    import pytest
    import redis

    from labkit import cache

    with cache.ThrowawayRedis() as spare:
        client = spare.client()
        client.set("k", "v")
        spare.freeze()
        with pytest.raises(redis.TimeoutError):
            client.get("k")
        assert not issubclass(redis.TimeoutError, redis.ConnectionError)
        spare.kill()
        assert spare.process.poll() is not None
