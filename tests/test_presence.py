"""labkit.presence against the course's Redis: two server instances see one room; a clean
leave is immediate, a vanished client goes offline once its key expires, and each join,
leave and expiry is published once, whichever instance notices it."""

from __future__ import annotations

import json
import time

import pytest

from labkit import exercises
from labkit.presence import Presence


@pytest.fixture
def ns():
    namespace = exercises.redis_namespace("test_presence")
    yield namespace
    namespace.clear()


def events(subscriber, count: int, timeout: float = 5.0) -> list[tuple[str, str]]:
    """The next ``count`` presence events (member, event) on a subscribed channel."""
    found, deadline = [], time.monotonic() + timeout
    while len(found) < count and time.monotonic() < deadline:
        message = subscriber.get_message(ignore_subscribe_messages=True, timeout=0.2)
        if message:
            body = json.loads(message["data"])
            found.append((body["member"], body["event"]))
    return found


def test_two_instances_share_a_room_and_publish_each_change_once(ns):
    """ada joins on instance A, bob on B: both see both. ada leaves cleanly (offline at
    once); carl vanishes (ttl 300 ms) and is gone after it, reported once although both
    instances look. Events: join ×3, leave, gone — and no second gone."""
    a = Presence(ns, "doc-7", ttl_ms=60_000)
    b = Presence(ns, "doc-7", ttl_ms=60_000)
    flaky = Presence(ns, "doc-7", ttl_ms=300)  # carl's instance: a short ttl
    subscriber = ns.client.pubsub()
    subscriber.subscribe(a.channel)
    try:
        assert subscriber.get_message(timeout=5)["type"] == "subscribe"
        assert (a.heartbeat("ada"), b.heartbeat("bob"), flaky.heartbeat("carl")) == (True,) * 3
        assert ns.client.pttl(a.index) > 30_000, "carl's short ttl shortened the room's index"
        assert a.heartbeat("ada") is False  # a heartbeat of someone online: no new join
        # (carl's 300 ms may already be over on a busy machine: only the others are sure)
        assert {"ada", "bob"} <= set(a.online()) and {"ada", "bob"} <= set(b.online())
        assert a.leave("ada") is True and a.leave("ada") is False
        assert "ada" not in b.online()
        time.sleep(0.6)  # carl sent no heartbeat for twice his ttl
        assert a.online() == ["bob"] and b.online() == ["bob"]
        assert ns.client.sismember(a.index, "carl") == 0, "an expired member stays indexed"
        got = events(subscriber, 5)
        assert sorted(got) == sorted(
            [("ada", "join"), ("bob", "join"), ("carl", "join"), ("ada", "leave"), ("carl", "gone")]
        ), got
        assert events(subscriber, 1, timeout=0.5) == [], "an event was published twice"
        assert a.heartbeat("carl") is True, "carl came back: a join again"
        assert b.online() == ["bob", "carl"]
        ns.client.pexpire(a._member_key("carl"), 1)  # carl's key expires ...
        time.sleep(0.05)
        assert b.leave("carl") is True  # ... before anyone pruned it: still a departure
        assert events(subscriber, 2) == [("carl", "join"), ("carl", "leave")]
    finally:
        subscriber.close()


def test_rooms_are_separate_and_bad_input_says_what_to_do(ns):
    one, two = Presence(ns, "room-1"), Presence(ns, "room-2")
    one.heartbeat("ada")
    assert two.online() == [] and one.online() == ["ada"]
    with pytest.raises(ValueError, match="ttl_ms"):
        Presence(ns, "room-1", ttl_ms=0)
    with pytest.raises(ValueError, match="without ':'"):
        Presence(ns, "a:b")
    with pytest.raises(ValueError, match="non-empty id"):
        one.heartbeat("")
