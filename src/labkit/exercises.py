"""Isolation and measurement helpers for the graded exercises.

>>> from labkit import exercises
>>> ns = exercises.redis_namespace("doctest_ns")    # its keys deleted; shared server untouched
>>> ns.key("user", 7)                              # after LABKIT_DB_PREFIX, if set
'...doctest_ns:user:7'
>>> ns.client.set(ns.key("user", 7), "Ada", ex=300)
True
>>> with exercises.count_round_trips(ns.client) as trips:
...     ns.client.pipeline().get(ns.key("user", 7)).get(ns.key("user", 8)).execute()
...     ns.client.get(ns.key("user", 7))
['Ada', None]
'Ada'
>>> trips                                          # a pipeline is one round trip
RoundTrips(count=2, commands=1, pipelines=[2])
>>> ns.keys()
['...doctest_ns:user:7']
>>> ns.clear()
1

Every exercise keeps its Redis keys under its own prefix, so that grading many students
one after another, or two test workers at once, never share a key. The prefix honours
``LABKIT_DB_PREFIX`` (set per pytest worker or grading run), as database names do.
Clearing uses ``SCAN`` + ``UNLINK`` on the prefix only: never ``FLUSHDB`` on a shared server.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RedisNamespace", "RoundTrips", "count_round_trips", "redis_namespace"]


def _qualified(name: str) -> str:
    """The namespace with ``LABKIT_DB_PREFIX`` applied, validated like a database name."""
    from labkit.db import qualified_name

    return qualified_name(name, "Redis namespace")


@dataclass
class RedisNamespace:
    """A key prefix of its own on a Redis server: build keys, list them, delete them."""

    name: str
    client: Any

    @property
    def prefix(self) -> str:
        """What every key of the namespace starts with, e.g. ``'ex01_step07:'``."""
        return self.name + ":"

    def key(self, *parts: object) -> str:
        """The key ``<prefix>part1:part2...`` (also usable as a pub/sub channel name)."""
        if not parts:
            raise ValueError("a key needs at least one part, e.g. ns.key('user', 7)")
        return self.prefix + ":".join(str(part) for part in parts)

    def keys(self) -> list[str]:
        """The namespace's keys, sorted (found with SCAN, so the server is never blocked)."""
        from labkit.caching import scan_prefix

        found = scan_prefix(self.client, self.prefix)
        return sorted(k.decode() if isinstance(k, bytes) else k for k in found)

    def clear(self) -> int:
        """Delete every key of the namespace (:func:`labkit.caching.delete_prefix`); return
        how many."""
        from labkit.caching import delete_prefix

        return delete_prefix(self.client, self.prefix)

    def __repr__(self) -> str:
        return f"RedisNamespace(prefix={self.prefix!r})"


def redis_namespace(name: str, *, client: Any = None, clear: bool = True) -> RedisNamespace:
    """The namespace ``name`` (prefixed with ``LABKIT_DB_PREFIX``) on ``client`` (default:
    :func:`labkit.cache.redis_client`, strings decoded); ``clear`` deletes its keys first."""
    if client is None:
        from labkit import cache

        client = cache.redis_client()
    namespace = RedisNamespace(_qualified(name), client)
    if clear:
        namespace.clear()
    return namespace


@dataclass
class RoundTrips:
    """Round trips a client made: one per command sent alone, one per pipeline executed."""

    commands: list[str] = field(default_factory=list)
    pipelines: list[int] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.commands) + len(self.pipelines)

    def __repr__(self) -> str:
        return (
            f"RoundTrips(count={self.count}, commands={len(self.commands)}, "
            f"pipelines={self.pipelines})"
        )


@contextlib.contextmanager
def count_round_trips(client: Any) -> Iterator[RoundTrips]:
    """Count the round trips ``client`` (a ``redis.Redis``) makes inside the block.

    A command such as ``GET`` is one round trip; a pipeline's ``execute()`` is one,
    however many commands it holds (``pipelines`` lists their sizes). The client is
    patched on the instance only, and restored on exit even if the block raises."""
    trips = RoundTrips()
    patched = {name: vars(client).get(name) for name in ("execute_command", "pipeline")}
    send_alone = client.execute_command
    make_pipeline = client.pipeline

    def execute_command(*args: Any, **options: Any) -> Any:
        trips.commands.append(str(args[0]) if args else "")
        return send_alone(*args, **options)

    def pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = make_pipeline(*args, **kwargs)
        execute = pipe.execute

        def counted_execute(*a: Any, **kw: Any) -> Any:
            if pipe.command_stack:  # an empty pipeline sends nothing
                trips.pipelines.append(len(pipe.command_stack))
            return execute(*a, **kw)

        pipe.execute = counted_execute
        return pipe

    client.execute_command = execute_command
    client.pipeline = pipeline
    try:
        yield trips
    finally:
        for name, previous in patched.items():
            if previous is None:
                delattr(client, name)
            else:
                setattr(client, name, previous)
