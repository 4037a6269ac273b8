"""labkit.streams against the course's real Redis and PostgreSQL, and real consumer processes:
consumer groups, at-least-once delivery, idempotent handling, XAUTOCLAIM after a SIGKILL,
and dead-lettering after N deliveries."""

from __future__ import annotations

import time
import uuid

import pytest

from labkit import cache, caching, db, streams
from labkit.supervisor import Supervisor

pytestmark = pytest.mark.xdist_group("services")


@pytest.fixture
def bus():
    """An EventBus on a stream of this test's own (deleted afterwards)."""
    client = cache.redis_client()
    prefix = f"test_streams:{uuid.uuid4().hex[:8]}:"
    event_bus = streams.EventBus(client, prefix + "orders", "shipping", max_deliveries=3)
    event_bus.reset()
    yield event_bus
    caching.delete_prefix(client, prefix)


@pytest.fixture(scope="module")
def consumer_db():
    """A database of this module's own with the consumer tables."""
    database = db.fresh_database("test_streams")
    with database.connect(autocommit=True) as conn:
        streams.prepare_consumer_database(conn)
    yield database
    db.drop_database(database.name, qualified=True)


@pytest.fixture
def conn(consumer_db):
    with consumer_db.connect(autocommit=True) as connection:
        connection.execute("TRUNCATE processed_messages, stream_effects")
        yield connection


def test_a_group_delivers_each_entry_to_one_consumer_and_keeps_it_pending_until_acked(bus):
    sent = [bus.publish("OrderPlaced", {"order_id": i}, event_id=f"o{i}") for i in range(4)]
    assert [m.deliveries for m in sent] == [0, 0, 0, 0]  # published, not delivered yet
    first = bus.read("a", count=2)
    assert [m.deliveries for m in first] == [1, 1]
    second = bus.read("b", count=10)
    assert [m.event_id for m in first + second] == [m.event_id for m in sent]
    assert bus.read("a") == []  # nothing new: ">" never hands out an entry twice
    assert {p.consumer for p in bus.pending()} == {"a", "b"}
    assert bus.ack(*first) == 2
    assert [p.stream_id for p in bus.pending()] == [m.stream_id for m in second]
    assert first[0].data == {"order_id": 0} and first[0].type == "OrderPlaced"
    # Redis does not redeliver a pending entry by itself: only a claim or a re-read of the
    # consumer's own history (from id 0) brings it back.
    assert bus.read("b") == []
    [[_, history]] = bus.client.xreadgroup(bus.group, "b", {bus.stream: "0"}, count=10)
    assert [(i if isinstance(i, str) else i.decode()) for i, _ in history] == [
        m.stream_id for m in second
    ]


def test_create_group_is_idempotent_and_reads_existing_entries(bus):
    assert bus.create_group() is False
    bus.client.delete(bus.stream)
    bus.publish("A", {}, event_id="before-group")
    assert bus.create_group() is True
    assert [m.event_id for m in bus.read("a")] == ["before-group"]


def test_handle_once_applies_an_event_once_however_often_it_is_delivered(conn):
    message = streams.Message("1-0", "evt-1", "OrderPlaced", {"order_id": 1})
    republished = streams.Message("2-0", "evt-1", "OrderPlaced", {"order_id": 1})
    assert streams.handle_once(conn, "shipping", message, streams.record_effect) is True
    assert streams.handle_once(conn, "shipping", message, streams.record_effect) is False
    assert streams.handle_once(conn, "shipping", republished, streams.record_effect) is False
    assert streams.handle_once(conn, "billing", message, streams.record_effect) is True
    assert streams.effects(conn) == {"evt-1": 2}  # once per consumer
    assert streams.processed_ids(conn, "shipping") == ["evt-1"]


def test_a_failing_effect_leaves_no_mark_so_the_event_is_retried(conn):
    message = streams.Message("1-0", "evt-2", "OrderPlaced", {})

    def fails(connection, msg):
        streams.record_effect(connection, msg)
        raise RuntimeError("payment service down")

    with pytest.raises(RuntimeError):
        streams.handle_once(conn, "shipping", message, fails)
    assert not streams.is_processed(conn, "shipping", "evt-2")
    assert streams.effects(conn) == {}  # the effect rolled back with the mark
    assert streams.handle_once(conn, "shipping", message, streams.record_effect) is True


def test_a_poison_message_is_dead_lettered_after_max_deliveries(bus):
    bus.publish("Poison", {"bad": True}, event_id="p1")
    bus.publish("OrderPlaced", {"order_id": 1}, event_id="g1")
    calls = []

    def handler(message):
        calls.append(message.event_id)
        if message.type == "Poison":
            raise ValueError("cannot parse")

    rounds = [bus.process("w", handler, min_idle_ms=0) for _ in range(5)]
    assert calls == ["p1", "g1", "p1", "p1"]  # three deliveries of p1, then no more
    assert [r.dead for r in rounds] == [[], [], [], ["p1"], []]
    [dead] = bus.dead_letters()
    assert (dead.event_id, dead.data, dead.deliveries) == ("p1", {"bad": True}, 3)
    assert bus.pending() == []


def test_reclaim_respects_min_idle_and_counts_deliveries(bus):
    bus.publish("OrderPlaced", {}, event_id="e1")
    [message] = bus.read("crashed")
    assert bus.reclaim("rescuer", min_idle_ms=60_000).messages == []  # not idle long enough
    time.sleep(0.05)
    [claimed] = bus.reclaim("rescuer", min_idle_ms=20).messages
    assert (claimed.event_id, claimed.deliveries) == ("e1", 2)
    assert [(p.consumer, p.times_delivered) for p in bus.pending()] == [("rescuer", 2)]
    assert message.stream_id == claimed.stream_id


def test_bad_arguments_get_clear_errors(bus):
    with pytest.raises(ValueError, match="max_deliveries"):
        streams.EventBus(bus.client, "s", "g", max_deliveries=0)
    bus.client.xadd(bus.stream, {"hello": "world"})
    with pytest.raises(ValueError, match="EventBus.publish"):
        bus.read("a")
    with pytest.raises(ValueError, match="crash_at"):
        streams.consumer_process("/tmp/x", stream="s", group="g", consumer="c",
                                 database="d", crash_at="later")  # fmt: skip


@pytest.mark.parametrize("crash_at", streams.CRASH_POINTS)
def test_a_killed_consumers_entry_is_reclaimed_and_applied_exactly_once(
    bus, consumer_db, conn, crash_at, tmp_path
):
    """A real consumer process SIGKILLs itself mid-message; XAUTOCLAIM hands the entry to
    another consumer, and the processed-message table keeps the effect to one."""
    worker = streams.consumer_process(
        tmp_path / "c1", stream=bus.stream, group=bus.group, consumer="c1",
        database=consumer_db.name, crash_on="Crash", crash_at=crash_at,
    )  # fmt: skip
    with Supervisor(say=lambda _m: None) as supervisor:
        supervisor.up(worker)  # ready, waiting on XREADGROUP: now the events arrive
        with bus.client.pipeline(transaction=True) as pipe:  # one batch for the consumer
            for i in range(3):
                pipe.xadd(bus.stream, streams.Message("", f"ok{i}", "OrderPlaced", {}).fields())
            pipe.xadd(bus.stream, streams.Message("", "boom", "Crash", {}).fields())
            pipe.xadd(bus.stream, streams.Message("", "after", "OrderPlaced", {}).fields())
            pipe.execute()
        deadline = time.monotonic() + 20
        while worker.pid() is not None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert worker.pid() is None, "the consumer should have killed itself"
        assert worker.record.exists()  # what a SIGKILL leaves behind...
        supervisor.down(worker)
        assert not worker.record.exists()  # ...and down() removes: no stale record next run
    pending = bus.pending()
    assert [p.consumer for p in pending] == ["c1", "c1"]  # 'boom' and 'after' (same batch)
    applied_by_c1 = streams.effects(conn)
    assert ("boom" in applied_by_c1) is (crash_at == "after_commit")
    rescued = bus.process(
        "c2",
        lambda m: streams.handle_once(conn, bus.group, m, streams.record_effect),
        min_idle_ms=0,
    )
    assert sorted(rescued.handled) == ["after", "boom"]
    assert streams.effects(conn) == {"after": 1, "boom": 1, "ok0": 1, "ok1": 1, "ok2": 1}
    assert bus.pending() == []
