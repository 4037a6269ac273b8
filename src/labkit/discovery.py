"""Service discovery with a TTL heartbeat in Redis: each instance of a service (a real
process serving HTTP) renews its own key every ``ttl / 4`` seconds; a killed instance stops
renewing, and its key expires within the TTL. Clients ask the registry where to go.

>>> import tempfile
>>> from labkit import cache, discovery
>>> from labkit.supervisor import Supervisor
>>> registry = discovery.Registry(cache.redis_client(), "doctest_discovery:", "echo", ttl=1.0)
>>> with tempfile.TemporaryDirectory() as home, Supervisor(say=lambda m: None) as supervisor:
...     a, b = (discovery.InstanceProcess(registry, f"{home}/{n}", n) for n in "ab")
...     _ = supervisor.up(a), supervisor.up(b)
...     client = discovery.Client(registry)
...     served = sorted(client.get("/").json()["instance"] for _ in range(4))
...     client.reset()                              # count from the kill on
...     _ = discovery.kill(b)
...     left = registry.ttl_left("b")               # nobody renews it any more
...     _ = registry.wait_gone("b", timeout=5)
...     after = {client.get("/").json()["instance"] for _ in range(4)}
>>> served, after, client.dead_attempts({"b"}), client.failed
(['a', 'a', 'b', 'b'], {'a'}, 0, 0)
>>> registry.instances()                            # a stopped cleanly: deregistered at once
{}
>>> 0 < left <= registry.ttl                        # so it expires within the TTL
True
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from labkit.errors import LabkitError
from labkit.supervisor import HOST, ProcessServer

__all__ = ["Client", "InstanceProcess", "Registry", "StaticClient", "kill", "renewals"]


class Registry:
    """The instances of ``service``: one key per instance, ``<namespace>discovery:<service>:<id>``,
    holding its URL, with a time-to-live of ``ttl`` seconds that its heartbeat renews."""

    def __init__(self, redis_client: Any, namespace: str, service: str, ttl: float = 1.0) -> None:
        if ttl <= 0:
            raise ValueError(f"ttl must be positive seconds, not {ttl!r}")
        self.redis = redis_client
        self.namespace = namespace
        self.service = service
        self.ttl = ttl
        self.prefix = f"{namespace}discovery:{service}:"

    @property
    def heartbeat(self) -> float:
        """Seconds between two renewals of a live instance's key: a quarter of the TTL, so
        that three heartbeats in a row can be late before the key expires."""
        return self.ttl / 4

    def register(self, instance_id: str, url: str) -> None:
        """Register (or renew) ``instance_id`` at ``url`` for ``ttl`` seconds."""
        self.redis.set(self.prefix + instance_id, url, px=int(self.ttl * 1000))

    def deregister(self, instance_id: str) -> None:
        self.redis.delete(self.prefix + instance_id)

    def instances(self) -> dict[str, str]:
        """The live registrations: instance id → URL (an expired key is never returned)."""
        keys = sorted(self.redis.scan_iter(match=self.prefix + "*", count=500))
        if not keys:
            return {}
        urls = self.redis.mget(keys)
        return {k[len(self.prefix) :]: url for k, url in zip(keys, urls, strict=True) if url}

    def ttl_left(self, instance_id: str) -> float | None:
        """Seconds left before the registration expires (None: not registered)."""
        left = self.redis.pttl(self.prefix + instance_id)
        return None if left < 0 else left / 1000

    def wait_gone(self, instance_id: str, timeout: float = 10) -> float:
        """Wait until ``instance_id`` is no longer registered; returns the seconds waited."""
        started = time.monotonic()
        while instance_id in self.instances():
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"{instance_id} is still registered after {timeout} s")
            time.sleep(0.01)
        return time.monotonic() - started

    def watch(
        self, seconds: float, instance_ids: list[str], every: float = 0.02
    ) -> list[dict[str, Any]]:
        """Read each instance's remaining time to live (Redis's ``PTTL``) every ``every`` s
        for ``seconds``; returns one row per reading: ``t`` (s since the start),
        ``instance``, ``ttl_left`` (s; None once the key is gone). See :func:`renewals`."""
        if seconds <= 0 or every <= 0:
            raise ValueError(f"seconds and every must be positive, not {seconds!r}, {every!r}")
        started = time.monotonic()
        rows: list[dict[str, Any]] = []
        while (now := time.monotonic() - started) <= seconds:
            pipe = self.redis.pipeline(transaction=False)
            for instance_id in instance_ids:
                pipe.pttl(self.prefix + instance_id)
            for instance_id, left in zip(instance_ids, pipe.execute(), strict=True):
                rows.append(
                    {
                        "t": now,
                        "instance": instance_id,
                        "ttl_left": None if left < 0 else left / 1000,
                    }
                )
            time.sleep(every)
        return rows


def renewals(rows: list[dict[str, Any]]) -> dict[str, int]:
    """How many times each instance's key was renewed during :meth:`Registry.watch`: a
    key's remaining TTL only ever goes down, unless someone sets it again."""
    last: dict[str, float | None] = {}
    counted: Counter[str] = Counter()
    for row in rows:
        before, left = last.get(row["instance"]), row["ttl_left"]
        counted[row["instance"]] += 0
        if before is not None and left is not None and left > before:
            counted[row["instance"]] += 1
        last[row["instance"]] = left
    return dict(counted)


class Client:
    """Routes each request to a registered instance, in turn (round robin).

    It reads the registry on every request. Between an instance's death and its key's
    expiry the registry still lists it: a request that finds its port closed ejects that
    instance locally (for ``ttl`` seconds) and is retried on the next one, so the caller
    sees no failure. ``attempts`` counts, per instance, the requests sent to it."""

    def __init__(self, registry: Registry, *, timeout: float = 5) -> None:
        self.registry = registry
        self.http = _http_client(timeout)
        self.attempts: Counter[str] = Counter()
        self.connection_errors: Counter[str] = Counter()
        self.failed = 0
        self._ejected: dict[str, float] = {}
        self._turn = 0

    def get(self, path: str = "/"):
        import httpx

        live = self.registry.instances()
        now = time.monotonic()
        candidates = [i for i in sorted(live) if self._ejected.get(i, 0) <= now]
        for attempt in range(len(candidates)):
            instance = candidates[(self._turn + attempt) % len(candidates)]
            self.attempts[instance] += 1
            try:
                response = self.http.get(live[instance] + path)
            except httpx.TransportError:
                self.connection_errors[instance] += 1
                self._ejected[instance] = now + self.registry.ttl
                continue
            self._turn += 1
            return response
        self.failed += 1
        raise LabkitError(
            f"no healthy instance of {self.registry.service} answered "
            f"({len(live)} registered): start one, or wait for the heartbeats"
        )

    def reset(self) -> None:
        """Zero the counters."""
        self.attempts.clear()
        self.connection_errors.clear()
        self.failed = 0

    def dead_attempts(self, dead: set[str]) -> int:
        """How many requests this client sent to instances in ``dead``."""
        return sum(self.attempts[i] for i in dead)

    def close(self) -> None:
        self.http.close()


class StaticClient:
    """The naive client: a fixed list of instance URLs (a configuration file), in turn, with
    no registry and no retry — what happens to its requests when an instance dies."""

    def __init__(self, urls: dict[str, str], *, timeout: float = 5) -> None:
        self.urls = dict(sorted(urls.items()))
        self.http = _http_client(timeout)
        self.attempts: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()  # per instance: requests that failed
        self._turn = 0

    @property
    def failed(self) -> int:
        """Requests that failed, whichever instance they were sent to."""
        return sum(self.failures.values())

    def get(self, path: str = "/"):
        import httpx

        instance = list(self.urls)[self._turn % len(self.urls)]
        self._turn += 1
        self.attempts[instance] += 1
        try:
            return self.http.get(self.urls[instance] + path)
        except httpx.TransportError:
            self.failures[instance] += 1
            return None

    def dead_attempts(self, dead: set[str]) -> int:
        return sum(self.attempts[i] for i in dead)

    def dead_failures(self, dead: set[str]) -> int:
        """How many of the requests sent to instances in ``dead`` failed."""
        return sum(self.failures[i] for i in dead)

    def close(self) -> None:
        self.http.close()


def _http_client(timeout: float):
    """An HTTP client that opens a connection per request. Kept-alive connections race with
    the server's idle timeout (uvicorn closes one after 5 s): a request sent as the server
    closes fails, and would be counted against a live instance."""
    import httpx

    return httpx.Client(timeout=timeout, limits=httpx.Limits(max_keepalive_connections=0))


# --------------------------------------------------------------------------- an instance


class InstanceProcess(ProcessServer):
    """One instance of the registry's service: a real process (``python -m
    labkit.discovery``) serving a tiny ASGI app with uvicorn on a free loopback port and
    renewing its registration every ``ttl / 4`` s. SIGTERM (the supervisor's stop)
    deregisters it at once; SIGKILL leaves its key to expire."""

    def __init__(self, registry: Registry, home: Path | str, instance_id: str) -> None:
        def command(port: int | None) -> list[str]:
            return [
                sys.executable, "-m", "labkit.discovery", "--namespace", registry.namespace,
                "--service", registry.service, "--instance", instance_id,
                "--port", str(port), "--ttl", str(registry.ttl),
            ]  # fmt: skip

        super().__init__(
            home,
            command,
            name=f"{registry.service}-{instance_id}",
            ready_text=f"registered {instance_id}",
            env={"PYTHONUNBUFFERED": "1"},
        )
        self.instance_id = instance_id


def kill(server: ProcessServer, timeout: float = 10) -> int:
    """SIGKILL a running process server (nothing of its own runs: no deregistration) and
    wait until it is gone; returns its pid."""
    pid = server.pid()
    if pid is None:
        raise LabkitError(f"{server.name} is not running: start it with Supervisor.up first")
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while server.pid() is not None:
        if time.monotonic() > deadline:
            raise LabkitError(f"{server.name} (pid {pid}) is still alive {timeout} s after SIGKILL")
        time.sleep(0.02)
    return pid


def make_app(instance_id: str):
    """A tiny ASGI app: every GET answers ``{"instance": id, "served": n}``."""
    served = Counter()

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        served["n"] += 1
        body = json.dumps({"instance": instance_id, "served": served["n"]}).encode()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def main(argv: list[str] | None = None) -> None:
    """``python -m labkit.discovery``: serve one instance and keep its registration alive."""
    import uvicorn

    from labkit import cache

    parser = argparse.ArgumentParser(prog="python -m labkit.discovery", description=main.__doc__)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--service", required=True)
    parser.add_argument("--instance", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ttl", type=float, default=1.0)
    args = parser.parse_args(argv)

    registry = Registry(cache.redis_client(), args.namespace, args.service, args.ttl)
    config = uvicorn.Config(make_app(args.instance), host=HOST, port=args.port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            sys.exit(f"uvicorn could not serve on {HOST}:{args.port}")
        time.sleep(0.01)
    stopping = threading.Event()

    def stop(signum, frame):  # SIGTERM: leave cleanly, and say so to the registry at once
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    url = f"http://{HOST}:{args.port}"
    registry.register(args.instance, url)
    print(f"registered {args.instance} at {url} (pid {os.getpid()})", flush=True)
    while not stopping.wait(registry.heartbeat):
        registry.register(args.instance, url)
    registry.deregister(args.instance)
    server.should_exit = True
    thread.join(5)


if __name__ == "__main__":
    main()
