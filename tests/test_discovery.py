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


class _HTTPServer:
    """A loopback HTTP/1.1 server (keeps connections alive) that counts the connections it
    accepts; ``hang_up=True``: it accepts each connection and closes it without answering."""

    def __init__(self, hang_up: bool = False) -> None:
        import http.server
        import threading

        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                outer.connections += 1
                super().setup()

            def handle(self):
                if hang_up:
                    return
                super().handle()

            def do_GET(self):
                body = b'{"instance": "x"}'
                self.send_response(200)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.connections = 0
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _closed_port_url() -> str:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"  # nothing listens once closed


def test_the_static_client_counts_failures_per_instance():
    """The lesson asserts that every request to the dead instance failed: a failure at a
    live instance (here one that hangs up) is counted against that instance, not the dead."""
    live, hangs_up = _HTTPServer(), _HTTPServer(hang_up=True)
    static = discovery.StaticClient({"a": live.url, "b": _closed_port_url(), "c": hangs_up.url})
    try:
        answers = [static.get("/") for _ in range(9)]
        assert [r is not None for r in answers] == [True, False, False] * 3
        assert static.dead_attempts({"b"}) == static.dead_failures({"b"}) == 3
        assert dict(static.failures) == {"b": 3, "c": 3} and static.failed == 6
    finally:
        static.close()
        live.close()
        hangs_up.close()


def test_clients_open_a_connection_per_request(registry):
    """No kept-alive connection: one the server closes as a request is sent (uvicorn closes
    idle ones after 5 s, and a starved client can be that slow) would fail a live instance."""
    server = _HTTPServer()
    registry.register("a", server.url)
    clients = [discovery.StaticClient({"a": server.url}), discovery.Client(registry)]
    try:
        for client in clients:
            for _ in range(3):
                assert client.get("/").status_code == 200
        assert server.connections == 6
    finally:
        for client in clients:
            client.close()
        server.close()
