"""Presence: who is online in a document, from heartbeats with expiring keys in Redis.

Each connected client sends a heartbeat every few seconds; the server that holds its
WebSocket calls :meth:`Presence.heartbeat`, which sets the key ``presence:<room>:<member>``
with a time to live (``SET ... PX ttl``) and adds the member to the room's index set. A
client that leaves cleanly is removed at once (:meth:`Presence.leave`). One that just
vanishes (a closed laptop, a dropped network) sends no more heartbeats: its key expires
after at most ``ttl_ms``, and the next :meth:`Presence.online` drops it from the index.
Redis's clock decides expiry, so servers with different clocks agree.

Because the state lives in Redis, every server instance sees the same room: a client
connected to instance A is online for the clients of instance B. Joins and departures are
also published on :meth:`Presence.channel`, so that each instance can push them to its
own WebSocket clients (``join``, ``leave``, and ``gone`` for an expired one). Two things
to know about those events:

- they are *at most once*: Redis pub/sub keeps nothing, so a subscriber that was not
  listening (or reconnects) missed some; after subscribing, read :meth:`Presence.online`
  once and apply the events from there;
- ``gone`` is noticed by whoever calls :meth:`Presence.online` next: each instance should
  call it every few seconds (a vanished member is otherwise never announced).

Presence here is per member id. A person with two tabs open should use an id per tab
(``"ada#1"``, ``"ada#2"``) and be shown online while any is; with one id, closing one tab
takes them offline while the other is still open.

>>> from labkit import exercises
>>> ns = exercises.redis_namespace("doctest_presence")
>>> a, b = Presence(ns, "doc-1", ttl_ms=60_000), Presence(ns, "doc-1", ttl_ms=60_000)  # two instances
>>> a.heartbeat("ada"), a.heartbeat("ada"), b.heartbeat("bob")  # True: newly online
(True, False, True)
>>> b.online()
['ada', 'bob']
>>> a.leave("ada")
True
>>> b.online()
['bob']
>>> _ = ns.clear()
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["Presence"]

# The member's key (KEYS[1]) for ARGV[1] ms, the member (ARGV[2]) in the index (KEYS[2]),
# and the index kept at least that long (never shortened: instances may use other ttls),
# so that an abandoned room's index goes too. Returns the key's previous value (nil: a join).
_HEARTBEAT = """
local previous = redis.call('SET', KEYS[1], '1', 'PX', ARGV[1], 'GET')
redis.call('SADD', KEYS[2], ARGV[2])
local left = redis.call('PTTL', KEYS[2])
if left == -1 or left < tonumber(ARGV[1]) then
  redis.call('PEXPIRE', KEYS[2], ARGV[1])
end
return previous
"""

# Remove from the index (KEYS[1]) the members (ARGV[2:]) whose key (ARGV[1] .. member) is
# gone, and return them: atomic, so a member whose heartbeat lands meanwhile stays. (The
# member keys are built inside the script: one Redis server, not a cluster.)
_PRUNE = """
local gone = {}
for i = 2, #ARGV do
  if redis.call('EXISTS', ARGV[1] .. ARGV[i]) == 0 and redis.call('SREM', KEYS[1], ARGV[i]) == 1 then
    table.insert(gone, ARGV[i])
  end
end
return gone
"""


class Presence:
    """Who is online in ``room``, kept in the Redis namespace ``namespace`` (a
    :class:`labkit.exercises.RedisNamespace`); a member without a heartbeat for
    ``ttl_ms`` milliseconds is offline."""

    def __init__(self, namespace: Any, room: str, *, ttl_ms: int = 10_000) -> None:
        if not isinstance(ttl_ms, int) or ttl_ms < 10:
            raise ValueError(
                f"ttl_ms is the milliseconds a member stays online without a heartbeat "
                f"(an int, at least 10; a few heartbeat intervals), not {ttl_ms!r}"
            )
        if not room or ":" in room:
            raise ValueError(f"a room is a non-empty name without ':', not {room!r}")
        self.namespace, self.room, self.ttl_ms = namespace, room, ttl_ms
        self.client = namespace.client
        self.member_prefix = namespace.key("presence", room, "member") + ":"
        self._prune = self.client.register_script(_PRUNE)
        self._heartbeat = self.client.register_script(_HEARTBEAT)

    @property
    def index(self) -> str:
        """The set of members that may be online (pruned by :meth:`online`)."""
        return self.namespace.key("presence", self.room)

    @property
    def channel(self) -> str:
        """The pub/sub channel of the room's joins and departures (JSON messages)."""
        return self.namespace.key("presence", self.room, "events")

    def _member_key(self, member: str) -> str:
        if not member:
            raise ValueError("a member needs a non-empty id")
        return self.member_prefix + member

    def _publish(self, pipe: Any, member: str, event: str) -> None:
        pipe.publish(self.channel, json.dumps({"member": member, "event": event}))

    def heartbeat(self, member: str) -> bool:
        """``member`` is online for ``ttl_ms`` more; True if it was not online before (a
        join, also published)."""
        previous = self._heartbeat(
            keys=[self._member_key(member), self.index], args=[self.ttl_ms, member]
        )
        joined = previous is None
        if joined:
            self.client.publish(self.channel, json.dumps({"member": member, "event": "join"}))
        return joined

    def leave(self, member: str) -> bool:
        """``member`` left cleanly: offline now; True if it was online."""
        with self.client.pipeline(transaction=True) as pipe:
            pipe.delete(self._member_key(member))
            pipe.srem(self.index, member)
            deleted, removed = pipe.execute()
        if deleted or removed:  # (expired but not yet pruned: a departure all the same)
            self.client.publish(self.channel, json.dumps({"member": member, "event": "leave"}))
        return bool(deleted or removed)

    def online(self) -> list[str]:
        """The members online now, sorted. Members whose key has expired are removed from
        the index, atomically (a Lua script: a member whose heartbeat lands meanwhile is
        kept), and a ``gone`` event is published for each by the one call that removed it."""
        members = sorted(
            m.decode() if isinstance(m, bytes) else m for m in self.client.smembers(self.index)
        )
        if not members:
            return []
        with self.client.pipeline(transaction=False) as pipe:
            for member in members:
                pipe.exists(self._member_key(member))
            alive = pipe.execute()
        expired = [m for m, up in zip(members, alive, strict=True) if not up]
        if expired:
            gone = self._prune(keys=[self.index], args=[self.member_prefix, *expired])
            with self.client.pipeline(transaction=False) as pipe:
                for member in gone:
                    self._publish(
                        pipe, member.decode() if isinstance(member, bytes) else member, "gone"
                    )
                pipe.execute()
        return [m for m, up in zip(members, alive, strict=True) if up]

    def __repr__(self) -> str:
        return f"Presence(room={self.room!r}, ttl_ms={self.ttl_ms})"
