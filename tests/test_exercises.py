"""labkit.exercises against the course's Redis: namespaces that isolate, clear only their
own keys, and honour LABKIT_DB_PREFIX; a round-trip counter that tells a pipeline from a loop."""

from __future__ import annotations

import pytest

from labkit import cache, exercises


@pytest.fixture
def client():
    r = cache.redis_client()
    yield r
    r.close()


def test_namespace_keys_carry_the_prefix(client, monkeypatch):
    """Keys and channels start with LABKIT_DB_PREFIX + name + ':'."""
    monkeypatch.setenv("LABKIT_DB_PREFIX", "tw9_")
    ns = exercises.redis_namespace("test_ns_keys", client=client)
    assert ns.prefix == "tw9_test_ns_keys:"
    assert ns.key("user", 7) == "tw9_test_ns_keys:user:7"
    with pytest.raises(ValueError):
        ns.key()


def test_without_env_prefix_the_name_is_the_prefix(client, monkeypatch):
    monkeypatch.delenv("LABKIT_DB_PREFIX", raising=False)
    assert exercises.redis_namespace("test_ns_plain", client=client).prefix == "test_ns_plain:"


def test_clear_deletes_only_the_namespace(client):
    """clear() empties the namespace (more keys than one SCAN batch) and nothing else."""
    ns = exercises.redis_namespace("test_ns_clear", client=client)
    neighbour = exercises.redis_namespace("test_ns_clear_neighbour", client=client)
    outside = ns.name + "_outside"  # shares the text prefix but not the ':' separator
    pipe = client.pipeline(transaction=False)
    for i in range(1200):
        pipe.set(ns.key("item", i), i, ex=120)
    pipe.set(neighbour.key("keep"), 1, ex=120)
    pipe.set(outside, 1, ex=120)
    pipe.execute()
    assert len(ns.keys()) == 1200

    assert ns.clear() == 1200
    assert ns.keys() == []
    assert client.get(neighbour.key("keep")) == "1"
    assert client.get(outside) == "1"
    client.delete(neighbour.key("keep"), outside)


def test_a_new_namespace_starts_empty(client):
    """redis_namespace() clears leftovers of an earlier run unless clear=False."""
    first = exercises.redis_namespace("test_ns_fresh", client=client)
    client.set(first.key("left", "over"), "x", ex=120)
    kept = exercises.redis_namespace("test_ns_fresh", client=client, clear=False)
    assert kept.keys() == [first.key("left", "over")]
    again = exercises.redis_namespace("test_ns_fresh", client=client)
    assert again.keys() == []


def test_namespace_rejects_unsafe_names(client):
    with pytest.raises(ValueError):
        exercises.redis_namespace("Bad Name*", client=client)


def test_namespaces_work_on_a_bytes_client():
    """keys() returns str even when the client does not decode responses."""
    raw = cache.redis_client(decode_responses=False)
    ns = exercises.redis_namespace("test_ns_bytes", client=raw)
    raw.set(ns.key("a"), b"1", ex=120)
    assert ns.keys() == [ns.key("a")]
    assert ns.clear() == 1
    raw.close()


def test_round_trips_tell_a_pipeline_from_a_loop(client):
    """Ten SETs in a loop are ten round trips; in a pipeline, one; the client is restored."""
    ns = exercises.redis_namespace("test_ns_trips", client=client)
    with exercises.count_round_trips(client) as loop:
        for i in range(10):
            client.set(ns.key(i), i, ex=60)
    assert loop.count == 10 and loop.commands == ["SET"] * 10 and loop.pipelines == []

    with exercises.count_round_trips(client) as piped:
        with client.pipeline() as pipe:
            for i in range(10):
                pipe.set(ns.key(i), i, ex=60)
            pipe.execute()
        client.get(ns.key(0))
        client.pipeline().execute()  # an empty pipeline sends nothing
    assert piped.pipelines == [10] and piped.commands == ["GET"] and piped.count == 2

    assert "execute_command" not in vars(client) and "pipeline" not in vars(client)
    with exercises.count_round_trips(client) as after:
        pass
    client.get(ns.key(0))
    assert after.count == 0
    ns.clear()


def test_round_trip_counter_restores_on_error(client):
    with pytest.raises(RuntimeError):
        with exercises.count_round_trips(client):
            raise RuntimeError("boom")
    assert "execute_command" not in vars(client)
