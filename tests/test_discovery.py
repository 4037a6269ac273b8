"""labkit.discovery against the course's Redis and real instance processes: a SIGKILLed
instance disappears within the TTL; the discovery client sends it no request once it is
gone, and loses no request meanwhile; a naive static client fails on every request for it."""

from __future__ import annotations

import uuid

import pytest

from labkit import cache, caching, discovery
from labkit.supervisor import Supervisor

pytestmark = pytest.mark.xdist_group("services")

TTL = 1.0


@pytest.fixture
def registry():
    namespace = f"test_discovery:{uuid.uuid4().hex[:8]}:"
    client = cache.redis_client()
    yield discovery.Registry(client, namespace, "catalog", ttl=TTL)
    caching.delete_prefix(client, namespace)


def test_a_killed_instance_disappears_within_the_ttl_and_gets_no_request(registry, tmp_path):
    with Supervisor(say=lambda message: None) as supervisor:
        instances = {n: discovery.InstanceProcess(registry, tmp_path / n, n) for n in "abc"}
        for instance in instances.values():
            supervisor.up(instance)
        assert sorted(registry.instances()) == ["a", "b", "c"]
        client = discovery.Client(registry)
        served = [client.get("/").json()["instance"] for _ in range(9)]
        assert sorted(served) == ["a"] * 3 + ["b"] * 3 + ["c"] * 3
        static = discovery.StaticClient(registry.instances())

        client.reset()
        discovery.kill(instances["b"])
        left = registry.ttl_left("b")  # no process renews it any more
        assert left is not None and 0 < left <= TTL
        # Until the key expires, the registry still lists b: the client finds its port
        # closed once, ejects it and retries elsewhere; the caller sees no failure.
        during = [client.get("/").json()["instance"] for _ in range(6)]
        assert "b" not in during and client.failed == 0
        assert client.dead_attempts({"b"}) <= 1
        # Watch every key's PTTL for longer than a TTL: the live keys rise at each heartbeat
        # (a key set with px=TTL can only outlive a TTL if renewed); b's only falls, then ends.
        readings = registry.watch(TTL + registry.heartbeat, ["a", "b", "c"])
        renewed = discovery.renewals(readings)
        assert renewed["b"] == 0 and renewed["a"] >= 1 and renewed["c"] >= 1, renewed
        assert all(r["ttl_left"] is not None for r in readings if r["instance"] != "b")
        assert [r["ttl_left"] for r in readings if r["instance"] == "b"][-1] is None
        assert "b" not in registry.instances()

        fresh = discovery.Client(registry)
        after = [fresh.get("/").json()["instance"] for _ in range(10)]
        assert sorted(after) == ["a"] * 5 + ["c"] * 5
        assert fresh.dead_attempts({"b"}) == 0 and fresh.failed == 0

        for _ in range(9):
            static.get("/")
        assert static.dead_attempts({"b"}) == 3 and static.failed == 3
        for c in (client, fresh, static):
            c.close()


def test_a_stopped_instance_deregisters_at_once(registry, tmp_path):
    with Supervisor(say=lambda message: None) as supervisor:
        instance = discovery.InstanceProcess(registry, tmp_path / "a", "a")
        supervisor.up(instance)
        assert list(registry.instances()) == ["a"]
        supervisor.down(instance)  # SIGTERM: the instance deletes its own key
        assert registry.instances() == {}


def test_the_heartbeat_is_a_quarter_of_the_ttl_and_renewals_count_rises(registry):
    assert registry.heartbeat == TTL / 4
    readings = [
        {"t": 0.0, "instance": "a", "ttl_left": 0.9},
        {"t": 0.1, "instance": "a", "ttl_left": 0.8},
        {"t": 0.2, "instance": "a", "ttl_left": 1.0},  # renewed
        {"t": 0.0, "instance": "b", "ttl_left": 0.1},
        {"t": 0.2, "instance": "b", "ttl_left": None},  # expired
    ]
    assert discovery.renewals(readings) == {"a": 1, "b": 0}
    with pytest.raises(ValueError, match="must be positive"):
        registry.watch(0, ["a"])


def test_no_instance_left_is_a_clear_error(registry):
    client = discovery.Client(registry)
    with pytest.raises(discovery.LabkitError, match="no healthy instance of catalog"):
        client.get("/")
    assert client.failed == 1
    with pytest.raises(ValueError, match="ttl must be positive"):
        discovery.Registry(registry.redis, "x:", "y", ttl=0)
