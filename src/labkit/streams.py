"""An event bus on Redis Streams: consumer groups, at-least-once delivery, idempotent
consumers, reclaim of a crashed consumer's messages, and a dead-letter stream.

>>> from labkit import exercises, streams
>>> ns = exercises.redis_namespace("doctest_streams")     # keys of our own on the server
>>> bus = streams.EventBus(ns.client, ns.key("orders"), "shipping", max_deliveries=3)
>>> bus.reset()                                   # delete both streams, create the group
>>> sent = bus.publish("OrderPlaced", {"order_id": 1}, event_id="order-1")
>>> sent.deliveries                                # published, not yet delivered
0
>>> [m.event_id for m in bus.read("worker-1")]    # delivered, pending until acked
['order-1']
>>> [p.times_delivered for p in bus.pending()]
[1]

The pieces, in the order the lesson builds them:

- :meth:`EventBus.publish` is ``XADD``. Every event carries an ``event_id`` chosen by its
  producer (an outbox row's id, an order's key): the same event published twice (a relay
  that crashed before marking it sent) is two stream entries with one ``event_id``.
- :meth:`EventBus.read` is ``XREADGROUP ... >``: each entry goes to one consumer of the
  group and stays in the group's pending entries list (PEL) until :meth:`EventBus.ack`
  (``XACK``). A consumer that dies before acking loses nothing: at-least-once delivery. Redis
  never hands a pending entry out again by itself (``>`` serves only new entries): it comes
  back when a consumer claims it (``XCLAIM``/``XAUTOCLAIM``, :meth:`EventBus.reclaim`) or when
  its own consumer re-reads its history (``XREADGROUP ... 0``).
- :func:`handle_once` makes a consumer idempotent: in ONE PostgreSQL transaction it inserts
  ``(consumer, event_id)`` into ``processed_messages`` (primary key) and applies the effect,
  so a redelivered or republished event finds its mark and changes nothing.
- :meth:`EventBus.reclaim` is ``XAUTOCLAIM``: entries idle for ``min_idle_ms`` in another
  (crashed) consumer's PEL move to this one. Each claim counts a delivery; an entry
  delivered ``max_deliveries`` times and still not acked (a poison message) is copied to the
  dead-letter stream and acked instead of being delivered again (the count comes from
  ``XPENDING``). ``XAUTOCLAIM`` counts its claim before our code sees the entry, so at that
  moment ``XPENDING`` says ``max_deliveries + 1``; the dead letter records
  ``max_deliveries``, the deliveries actually handed to a handler.
- :meth:`EventBus.process` is one round of a worker's loop: reclaim, read, handle, ack.

``python -m labkit.streams consume ...`` runs a consumer as a process of its own (started
through :class:`labkit.supervisor.ProcessServer` by :func:`consumer_process`), which can be
told to SIGKILL itself in the middle of a message.

Clients: any ``redis.Redis`` (``decode_responses`` either way); database work takes a psycopg
3 connection (:func:`labkit.db.connect`).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labkit.supervisor import ProcessServer

__all__ = [
    "CRASH_POINTS",
    "DEFAULT_MAX_DELIVERIES",
    "EventBus",
    "Message",
    "PendingEntry",
    "Reclaimed",
    "Round",
    "consumer_process",
    "effects",
    "handle_once",
    "is_processed",
    "prepare_consumer_database",
    "processed_ids",
    "record_effect",
]

DEFAULT_MAX_DELIVERIES = 3
# Where ``python -m labkit.streams consume --crash-at ...`` SIGKILLs itself, mid-message:
# before the effect's transaction commits, or after it commits but before the XACK.
CRASH_POINTS = ("before_commit", "after_commit")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class Message:
    """One stream entry as a consumer sees it.

    ``stream_id`` is the entry's id in the stream (Redis picks it); ``event_id`` is the
    producer's id of the event, the key an idempotent consumer deduplicates on.
    ``deliveries``: how many times the group has delivered it (``XPENDING``'s count; 0 for
    an event :meth:`EventBus.publish` just sent, 1 for a first read)."""

    stream_id: str
    event_id: str
    type: str
    data: dict
    deliveries: int = 1

    @classmethod
    def from_entry(cls, stream_id: Any, fields: dict, deliveries: int = 1) -> Message:
        """Decode an entry (``(id, {field: value})`` as redis-py returns it)."""
        fields = {_text(k): _text(v) for k, v in (fields or {}).items()}
        missing = {"event_id", "type", "data"} - fields.keys()
        if missing:
            raise ValueError(
                f"stream entry {_text(stream_id)} lacks {sorted(missing)}: publish events with "
                "EventBus.publish (fields event_id, type, data)"
            )
        return cls(
            _text(stream_id),
            fields["event_id"],
            fields["type"],
            json.loads(fields["data"]),
            deliveries,
        )

    def fields(self) -> dict[str, str]:
        """The entry's fields as stored by ``XADD``."""
        return {"event_id": self.event_id, "type": self.type, "data": json.dumps(self.data)}


@dataclass(frozen=True)
class PendingEntry:
    """A delivered, not yet acknowledged entry (one line of ``XPENDING``)."""

    stream_id: str
    consumer: str
    idle_ms: int
    times_delivered: int


@dataclass
class Reclaimed:
    """What :meth:`EventBus.reclaim` did: entries now ours to handle, and entries moved to the
    dead-letter stream."""

    messages: list[Message] = field(default_factory=list)
    dead: list[Message] = field(default_factory=list)


@dataclass
class Round:
    """One round of :meth:`EventBus.process`: event ids handled (and acked), failed (left
    pending for a later delivery) and dead-lettered."""

    handled: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)


class EventBus:
    """A stream, a consumer group on it, and a dead-letter stream.

    ``EventBus(r, "orders", "shipping")``: events go to the stream ``orders``; the group
    ``shipping`` shares them among its consumers; poison messages go to ``orders:dead``
    (or ``dead_letter``) after ``max_deliveries`` deliveries."""

    def __init__(
        self,
        client: Any,
        stream: str,
        group: str,
        *,
        dead_letter: str | None = None,
        max_deliveries: int = DEFAULT_MAX_DELIVERIES,
    ) -> None:
        if max_deliveries < 1:
            raise ValueError(f"max_deliveries must be at least 1 (got {max_deliveries})")
        self.client = client
        self.stream = stream
        self.group = group
        self.dead_letter = dead_letter or f"{stream}:dead"
        self.max_deliveries = max_deliveries

    def __repr__(self) -> str:
        return (
            f"EventBus(stream={self.stream!r}, group={self.group!r}, "
            f"dead_letter={self.dead_letter!r}, max_deliveries={self.max_deliveries})"
        )

    # -- set-up
    def create_group(self, start: str = "0") -> bool:
        """``XGROUP CREATE ... MKSTREAM``: True if created, False if it existed already.
        ``start="0"``: the group also gets the entries already in the stream."""
        import redis

        try:
            self.client.xgroup_create(self.stream, self.group, id=start, mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
            return False
        return True

    def reset(self) -> None:
        """Delete the stream and its dead-letter stream, then create the group afresh."""
        self.client.delete(self.stream, self.dead_letter)
        self.create_group()

    # -- producing
    def publish(self, event_type: str, data: dict, *, event_id: str | None = None) -> Message:
        """``XADD`` one event (``event_id`` defaults to a new UUID); returns it as sent
        (``deliveries=0``: nobody has read it yet)."""
        message = Message("", event_id or str(uuid.uuid4()), event_type, data)
        stream_id = self.client.xadd(self.stream, message.fields())
        return Message(_text(stream_id), message.event_id, event_type, data, deliveries=0)

    # -- consuming
    def read(self, consumer: str, *, count: int = 10, block_ms: int | None = None) -> list[Message]:
        """``XREADGROUP GROUP <group> <consumer> ... STREAMS <stream> >``: up to ``count``
        entries never delivered to this group (waits up to ``block_ms`` if given; keep it
        under the client's socket timeout)."""
        reply = self.client.xreadgroup(
            self.group, consumer, {self.stream: ">"}, count=count, block=block_ms
        )
        return [Message.from_entry(i, f) for _, entries in reply or [] for i, f in entries]

    def ack(self, *messages: Message) -> int:
        """``XACK``: these entries are done; returns how many were pending."""
        if not messages:
            return 0
        return self.client.xack(self.stream, self.group, *(m.stream_id for m in messages))

    def pending(self, consumer: str | None = None, *, count: int = 1000) -> list[PendingEntry]:
        """The group's pending entries (``XPENDING`` extended form), oldest first."""
        rows = self.client.xpending_range(
            self.stream, self.group, "-", "+", count, consumername=consumer
        )
        return [
            PendingEntry(
                _text(row["message_id"]),
                _text(row["consumer"]),
                int(row["time_since_delivered"]),
                int(row["times_delivered"]),
            )
            for row in rows
        ]

    def reclaim(self, consumer: str, *, min_idle_ms: int, count: int = 100) -> Reclaimed:
        """``XAUTOCLAIM``: take over entries pending for at least ``min_idle_ms`` (whoever holds
        them, e.g. a consumer that crashed). Each claim is one more delivery; entries now
        delivered more than ``max_deliveries`` times go to the dead-letter stream (with
        ``XADD`` + ``XACK`` in one ``MULTI``) instead of being handed out again. (The claim
        that finds a poison entry is its delivery ``max_deliveries + 1``, counted by
        ``XAUTOCLAIM`` itself; the dead letter's ``deliveries`` field says
        ``max_deliveries``: the deliveries that reached a handler.)"""
        found = Reclaimed()
        start = "0-0"
        while True:
            reply = self.client.xautoclaim(
                self.stream, self.group, consumer, min_idle_ms, start_id=start, count=count
            )
            start, entries = _text(reply[0]), [e for e in reply[1] if e and e[1]]
            if entries:
                ids = [_text(i) for i, _ in entries]
                counts = {
                    p.stream_id: p.times_delivered
                    for p in self.pending(consumer, count=max(count, len(ids)) * 4)
                    if p.stream_id in set(ids)
                }
                for stream_id, fields in entries:
                    sid = _text(stream_id)
                    message = Message.from_entry(sid, fields, counts.get(sid, 1))
                    if message.deliveries > self.max_deliveries:
                        self._dead_letter(message)
                        found.dead.append(message)
                    else:
                        found.messages.append(message)
            if start == "0-0" or len(found.messages) >= count:
                return found

    def _dead_letter(self, message: Message) -> None:
        fields = {
            **message.fields(),
            "original_id": message.stream_id,
            "deliveries": str(message.deliveries - 1),
        }
        with self.client.pipeline(transaction=True) as pipe:
            pipe.xadd(self.dead_letter, fields)
            pipe.xack(self.stream, self.group, message.stream_id)
            pipe.execute()

    def dead_letters(self) -> list[Message]:
        """The entries of the dead-letter stream (``deliveries``: how often each was tried)."""
        return [
            Message.from_entry(i, f, int(_text(f.get("deliveries", f.get(b"deliveries", 0)))))
            for i, f in self.client.xrange(self.dead_letter)
        ]

    def entries(self) -> list[Message]:
        """Every entry of the stream (``XRANGE``), delivered or not."""
        return [Message.from_entry(i, f) for i, f in self.client.xrange(self.stream)]

    def process(
        self,
        consumer: str,
        handler: Callable[[Message], object],
        *,
        min_idle_ms: int | None = None,
        count: int = 10,
        block_ms: int | None = None,
    ) -> Round:
        """One round of a worker: reclaim entries idle ``min_idle_ms`` (if given), read new
        ones, call ``handler(message)`` on each and ``XACK`` those it returned from. An
        exception leaves the entry pending: it is delivered again by a later reclaim, until
        ``max_deliveries``."""
        done = Round()
        messages: list[Message] = []
        if min_idle_ms is not None:
            reclaimed = self.reclaim(consumer, min_idle_ms=min_idle_ms, count=count)
            messages += reclaimed.messages
            done.dead += [m.event_id for m in reclaimed.dead]
        messages += self.read(consumer, count=count, block_ms=None if messages else block_ms)
        for message in messages:
            try:
                handler(message)
            except Exception as exc:  # noqa: BLE001 — any failure leaves the entry pending
                print(
                    f"{consumer}: {message.event_id} failed: {exc!r}"
                )  # a log line, not an error of yours
                done.failed.append(message.event_id)
                continue
            self.ack(message)
            done.handled.append(message.event_id)
        return done


# --------------------------------------------------------------------------- idempotency

PROCESSED_TABLE = """
CREATE TABLE IF NOT EXISTS processed_messages (
    consumer     text        NOT NULL,
    message_id   text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
)"""
EFFECTS_TABLE = """
CREATE TABLE IF NOT EXISTS stream_effects (
    id         bigserial PRIMARY KEY,
    event_id   text  NOT NULL,
    event_type text  NOT NULL,
    data       jsonb NOT NULL
)"""


def prepare_consumer_database(conn: Any) -> None:
    """Create ``processed_messages`` (the idempotency marks) and ``stream_effects`` (the demo
    effect: one row per application, with no unique key, so a double application shows)."""
    with conn.transaction():
        conn.execute(PROCESSED_TABLE)
        conn.execute(EFFECTS_TABLE)


def handle_once(
    conn: Any, consumer: str, message: Message, effect: Callable[[Any, Message], object]
) -> bool:
    """Apply ``effect(conn, message)`` at most once per ``(consumer, message.event_id)``.

    The mark (``INSERT ... ON CONFLICT DO NOTHING`` into ``processed_messages``) and the effect
    run in ONE transaction: either both are committed or neither. Returns False, changing
    nothing, when the event was already processed. ``conn`` is a psycopg 3 connection."""
    with conn.transaction():
        marked = conn.execute(
            "INSERT INTO processed_messages (consumer, message_id) VALUES (%s, %s) "
            "ON CONFLICT DO NOTHING RETURNING 1",
            (consumer, message.event_id),
        ).fetchone()
        if marked is None:
            return False
        effect(conn, message)
    return True


def is_processed(conn: Any, consumer: str, event_id: str) -> bool:
    """True if ``consumer`` has a mark for ``event_id``."""
    row = conn.execute(
        "SELECT 1 FROM processed_messages WHERE consumer = %s AND message_id = %s",
        (consumer, event_id),
    ).fetchone()
    return row is not None


def processed_ids(conn: Any, consumer: str) -> list[str]:
    """The event ids ``consumer`` has processed, sorted."""
    rows = conn.execute(
        "SELECT message_id FROM processed_messages WHERE consumer = %s ORDER BY message_id",
        (consumer,),
    ).fetchall()
    return [row[0] for row in rows]


def record_effect(conn: Any, message: Message) -> None:
    """The demo effect: append a row to ``stream_effects`` (an event applied twice shows as
    two rows with one ``event_id``)."""
    conn.execute(
        "INSERT INTO stream_effects (event_id, event_type, data) VALUES (%s, %s, %s)",
        (message.event_id, message.type, json.dumps(message.data)),
    )


def effects(conn: Any) -> dict[str, int]:
    """How many times each event's effect was applied: ``{event_id: count}``."""
    rows = conn.execute(
        "SELECT event_id, count(*) FROM stream_effects GROUP BY event_id ORDER BY event_id"
    ).fetchall()
    return {event_id: count for event_id, count in rows}


# --------------------------------------------------------------------------- consumer process


def consumer_process(
    home: Path | str,
    *,
    stream: str,
    group: str,
    consumer: str,
    database: str,
    crash_on: str | None = None,
    crash_at: str = "after_commit",
    min_idle_ms: int | None = None,
    max_deliveries: int = DEFAULT_MAX_DELIVERIES,
    handler: str = "labkit.streams:record_effect",
):
    """A :class:`labkit.supervisor.ProcessServer` running ``python -m labkit.streams consume``:
    a consumer of ``group`` that applies ``handler`` (``"module:function"``, called as
    ``function(conn, message)``) with :func:`handle_once` on the (already qualified) database
    ``database``, marking events processed under the GROUP's name (the service: whichever
    of its instances handles a redelivered event finds the mark). With ``crash_on=<event_type>`` it SIGKILLs itself at ``crash_at`` while
    handling the first event of that type. Start it with ``Supervisor().up(...)``."""
    if crash_at not in CRASH_POINTS:
        raise ValueError(f"crash_at must be one of {CRASH_POINTS} (got {crash_at!r})")
    argv = [sys.executable, "-m", "labkit.streams", "consume", "--stream", stream,
            "--group", group, "--consumer", consumer, "--database", database,
            "--handler", handler, "--max-deliveries", str(max_deliveries)]  # fmt: skip
    if crash_on:
        argv += ["--crash-on", crash_on, "--crash-at", crash_at]
    if min_idle_ms is not None:
        argv += ["--min-idle-ms", str(min_idle_ms)]
    return ProcessServer(
        home, lambda _port: argv, name=f"consumer {consumer}", ready_text="consumer ready",
        needs_port=False,
    )  # fmt: skip


def _load_handler(spec: str) -> Callable[[Any, Message], object]:
    module, _, name = spec.partition(":")
    if not name:
        raise SystemExit(f"--handler must be module:function (got {spec!r})")
    return getattr(importlib.import_module(module), name)


def _consume(args: argparse.Namespace) -> None:
    from labkit import cache, db

    effect = _load_handler(args.handler)
    client = cache.redis_client()
    bus = EventBus(client, args.stream, args.group, max_deliveries=args.max_deliveries)
    bus.create_group()
    parent = os.getppid()
    with db.connect(args.database, autocommit=True) as conn:
        prepare_consumer_database(conn)

        def handle(message: Message) -> None:
            crash = args.crash_on is not None and message.type == args.crash_on

            def apply(conn: Any, message: Message) -> None:
                effect(conn, message)
                if crash and args.crash_at == "before_commit":
                    print(f"crashing before commit on {message.event_id}", flush=True)
                    os.kill(os.getpid(), signal.SIGKILL)

            handle_once(conn, args.group, message, apply)  # the service's mark, not the instance's
            if crash and args.crash_at == "after_commit":
                print(f"crashing after commit, before XACK, on {message.event_id}", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)

        print("consumer ready", flush=True)
        while os.getppid() == parent:  # the process that started us is gone: stop
            done = bus.process(
                args.consumer, handle, min_idle_ms=args.min_idle_ms, count=10, block_ms=200
            )
            if done.handled or done.dead:
                print(f"handled {len(done.handled)}, dead-lettered {len(done.dead)}", flush=True)
            if done.failed:
                time.sleep(0.05)


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m labkit.streams")
    commands = parser.add_subparsers(dest="command", required=True)
    consume = commands.add_parser("consume", help="run an idempotent consumer until stopped")
    consume.add_argument("--stream", required=True)
    consume.add_argument("--group", required=True)
    consume.add_argument("--consumer", required=True)
    consume.add_argument("--database", required=True, help="the (qualified) database name")
    consume.add_argument("--handler", default="labkit.streams:record_effect")
    consume.add_argument("--crash-on", help="SIGKILL while handling the first event of this type")
    consume.add_argument("--crash-at", choices=CRASH_POINTS, default="after_commit")
    consume.add_argument("--min-idle-ms", type=int, help="also reclaim entries idle this long")
    consume.add_argument("--max-deliveries", type=int, default=DEFAULT_MAX_DELIVERIES)
    args = parser.parse_args(list(argv) if argv is not None else None)
    _consume(args)


if __name__ == "__main__":
    main()
