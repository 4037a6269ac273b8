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


def test_throwaway_redis_never_adopts_a_server_on_a_taken_port(monkeypatch):
    """If the chosen port is taken before redis-server binds it, start() tries another port
    instead of handing out the server that already listens there (someone else's)."""
    import socket

    from labkit import cache

    with cache.ThrowawayRedis() as first:
        real = socket.socket.getsockname
        picks = []

        def first_pick_is_taken(sock):
            picks.append(1)
            return ("127.0.0.1", first.port) if len(picks) == 1 else real(sock)

        monkeypatch.setattr(socket.socket, "getsockname", first_pick_is_taken)
        with cache.ThrowawayRedis() as second:
            monkeypatch.undo()
            assert second.port != first.port
            assert second.client().info("server")["process_id"] == second.process.pid
