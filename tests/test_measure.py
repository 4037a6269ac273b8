"""labkit.measure: timings and comparisons return numbers."""

import pytest

from labkit import measure


def test_timeit_measures_each_call():
    """Warm-up calls are not measured; each measured run lasts at least what the call does
    (a 20 ms sleep), and the summary figures come from those runs."""
    import time

    calls = []

    def sleep_20_ms():
        calls.append(1)
        time.sleep(0.02)

    timing = measure.timeit(sleep_20_ms, repeat=5, warmup=2)
    assert len(calls) == 7 and len(timing.runs_ms) == 5
    assert timing.min_ms >= 20, timing.runs_ms
    assert timing.min_ms <= timing.median_ms <= timing.max_ms
    assert str(timing).endswith("over 5 runs")


def test_compare_and_plot_show_the_numbers():
    table = measure.compare({"q": 10.0, "r": 4.0}, {"q": 1.0, "r": 8.0}, unit="buffers")
    assert table.loc["q", "speed-up (×)"] == 10.0
    assert table.loc["q", "change (%)"] == -90.0
    assert table.loc["r", "change (%)"] == 100.0
    (ax,) = measure.plot_comparison(table).axes
    assert [label.get_text() for label in ax.get_yticklabels()] == ["q", "r"]
    bars = {
        container.get_label(): [b.get_width() for b in container] for container in ax.containers
    }
    assert bars == {"before": [10.0, 4.0], "after": [1.0, 8.0]}
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "(buffers)"


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

    from labkit import cache, supervisor

    with cache.ThrowawayRedis() as spare:
        client = spare.client()
        client.set("k", "v")
        spare.freeze()
        with pytest.raises(redis.TimeoutError):
            client.get("k")
        assert not issubclass(redis.TimeoutError, redis.ConnectionError)
        pid = spare.pid
        spare.kill()
        assert spare.pid is None and supervisor.process_name(pid) is None


def test_throwaway_redis_never_adopts_a_server_on_a_taken_port(monkeypatch):
    """If the chosen port is taken before redis-server binds it, start() moves to another
    port instead of handing out the server that already listens there (someone else's,
    without a password: it answers PING all the same)."""
    from labkit import cache, supervisor

    with cache.ThrowawayRedis() as first:
        real = supervisor.Supervisor.pick_port
        picks = []

        def first_pick_is_taken(self, hint, avoid=frozenset()):
            picks.append(hint)
            return first.port if len(picks) == 1 else real(self, hint, avoid)

        monkeypatch.setattr(supervisor.Supervisor, "pick_port", first_pick_is_taken)
        # The first check says the port is free (another program takes it just after the
        # check): the daemon's bind fails, and the server that answers there is the first one.
        real_check, lied = supervisor.port_is_free, []

        def first_check_lies(port):
            if not lied:
                lied.append(port)
                return True
            return real_check(port)

        monkeypatch.setattr(supervisor, "port_is_free", first_check_lies)
        with cache.ThrowawayRedis() as second:
            monkeypatch.undo()
            assert len(picks) >= 2, "the taken port was not detected"
            assert second.port != first.port
            assert int(second.client().info("server")["process_id"]) == second.pid


def test_a_killed_throwaway_redis_port_reused_by_another_refuses_the_old_clients(monkeypatch):
    """Killed, a throwaway server frees its port; another program's throwaway server may
    start there at once (grading sandboxes start them all the time). The old clients must be
    refused, not served someone else's keys: each throwaway server has its own password."""
    import redis

    from labkit import cache, supervisor

    with cache.ThrowawayRedis() as first:
        old = first.client(socket_timeout=5)
        old.set("mine", "1")
        port = first.port
        first.kill()
        real = supervisor.Supervisor.pick_port
        monkeypatch.setattr(
            supervisor.Supervisor, "pick_port", lambda self, hint, avoid=frozenset(): port
        )
        with cache.ThrowawayRedis() as second:
            monkeypatch.setattr(supervisor.Supervisor, "pick_port", real)
            assert second.port == port, "the newcomer did not take the freed port"
            second.client().set("theirs", "1")
            with pytest.raises(redis.ConnectionError) as refused:
                old.get("theirs")
            assert isinstance(refused.value, redis.AuthenticationError), repr(refused.value)
            assert "1" == second.client().get("theirs")
