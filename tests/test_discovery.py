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
        waited = registry.wait_gone("b", timeout=5)
        assert waited <= left + 1.0, f"b was still registered {waited:.2f} s later"  # a busy CI

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


def test_no_instance_left_is_a_clear_error(registry):
    client = discovery.Client(registry)
    with pytest.raises(discovery.LabkitError, match="no healthy instance of catalog"):
        client.get("/")
    assert client.failed == 1
    with pytest.raises(ValueError, match="ttl must be positive"):
        discovery.Registry(registry.redis, "x:", "y", ttl=0)
