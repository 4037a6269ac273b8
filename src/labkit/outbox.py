"""The transactional outbox against naive dual-write, and fault injection with real
processes killed (SIGKILL) at every point between the commit and the publish.

>>> from labkit import db, exercises, outbox, streams
>>> orders = db.fresh_database("doctest_outbox")
>>> conn = orders.connect(autocommit=True)
>>> outbox.prepare_orders_database(conn)
>>> outbox.place_order_with_outbox(conn, 1, "book", 2)   # order + event row, one transaction
'order-1'
>>> outbox.unsent(conn)
['order-1']
>>> ns = exercises.redis_namespace("doctest_outbox")
>>> bus = streams.EventBus(ns.client, ns.key("orders"), "shipping")
>>> bus.reset()
>>> outbox.relay_once(conn, bus)                          # publish, then mark sent
1
>>> [m.event_id for m in bus.entries()], outbox.unsent(conn)
(['order-1'], [])
>>> conn.close(); db.drop_database(orders.name, qualified=True)

- :func:`place_order_dual_write` commits the order, then publishes: a crash in between
  loses the event for good (the order exists, nobody downstream hears of it).
- :func:`place_order_with_outbox` writes the order and its event row in ONE transaction;
  :func:`relay_once` (run by a separate relay process, :func:`relay_process`) publishes unsent
  rows and marks them sent. A relay killed after publishing and before marking publishes
  again when restarted: at-least-once, so consumers must be idempotent
  (:func:`labkit.streams.handle_once`).
- :func:`fault_injection` runs writers and relays as real processes (through
  :class:`labkit.supervisor.Supervisor`), each told the point at which it SIGKILLs itself
  (:data:`KILL_POINTS`), K times per point, drains the stream with an idempotent consumer,
  and counts events lost, delivered twice and applied twice. The counts are deterministic:
  a process dies exactly at its point, never by timing luck.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from labkit import streams
from labkit.supervisor import ProcessServer

__all__ = [
    "KILL_POINTS",
    "MODES",
    "RELAY_POLL_S",
    "FaultResult",
    "fault_injection",
    "fault_table",
    "place_order_dual_write",
    "place_order_with_outbox",
    "plot_fault_table",
    "prepare_orders_database",
    "relay_once",
    "relay_process",
    "unsent",
    "writer_process",
]

#: The points in one event's life at which a process is killed: inside the order's
#: transaction, after its commit and before the publish, after the publish (for the outbox:
#: the relay, after XADD and before marking the row sent).
KILL_POINTS = ("before_commit", "after_commit", "after_publish")
MODES = ("dual-write", "outbox")
#: How long the relay sleeps after a pass that found nothing to publish (seconds).
RELAY_POLL_S = 0.02
EVENT_TYPE = "OrderPlaced"
_CHILD = "LABKIT_OUTBOX_WORKER"  # set in the processes allowed to kill themselves

ORDERS_TABLES = (
    """CREATE TABLE IF NOT EXISTS orders (
        id       bigint PRIMARY KEY,
        item     text    NOT NULL,
        quantity integer NOT NULL CHECK (quantity > 0)
    )""",
    """CREATE TABLE IF NOT EXISTS outbox (
        id           bigserial   PRIMARY KEY,
        event_id     text        NOT NULL UNIQUE,
        event_type   text        NOT NULL,
        payload      jsonb       NOT NULL,
        created_at   timestamptz NOT NULL DEFAULT now(),
        published_at timestamptz
    )""",
    "CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox (id) WHERE published_at IS NULL",
)


def prepare_orders_database(conn: Any) -> None:
    """Create the orders service's tables: ``orders`` and its ``outbox`` (psycopg 3 conn)."""
    with conn.transaction():
        for statement in ORDERS_TABLES:
            conn.execute(statement)


def event_id_of(order_id: int) -> str:
    """The producer's id of an order's event: the same however often it is published."""
    return f"order-{order_id}"


def _kill_here(point: str, kill_at: str | None) -> None:
    """SIGKILL this process if ``point`` is the one it was told to die at."""
    if kill_at is None or point != kill_at:
        return
    if os.environ.get(_CHILD) != "1":
        raise RuntimeError(
            "kill_at is for worker processes only (writer_process / relay_process): it would "
            "kill this Python process, e.g. your notebook's kernel"
        )
    print(f"SIGKILL at {point}", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def _check_kill_point(kill_at: str | None) -> None:
    if kill_at is not None and kill_at not in KILL_POINTS:
        raise ValueError(f"kill_at must be None or one of {KILL_POINTS} (got {kill_at!r})")


def _insert_order(conn: Any, order_id: int, item: str, quantity: int) -> None:
    conn.execute(
        "INSERT INTO orders (id, item, quantity) VALUES (%s, %s, %s)", (order_id, item, quantity)
    )


def place_order_dual_write(
    conn: Any,
    bus: streams.EventBus,
    order_id: int,
    item: str,
    quantity: int,
    *,
    kill_at: str | None = None,
) -> str:
    """The naive way: commit the order, THEN publish its event (two systems, two writes).
    Returns the event id."""
    _check_kill_point(kill_at)
    with conn.transaction():
        _insert_order(conn, order_id, item, quantity)
        _kill_here("before_commit", kill_at)
    _kill_here("after_commit", kill_at)  # committed; the event exists nowhere yet
    data = {"order_id": order_id, "item": item, "quantity": quantity}
    bus.publish(EVENT_TYPE, data, event_id=event_id_of(order_id))
    _kill_here("after_publish", kill_at)
    return event_id_of(order_id)


def place_order_with_outbox(
    conn: Any, order_id: int, item: str, quantity: int, *, kill_at: str | None = None
) -> str:
    """The order and its event row in ONE transaction: both are committed, or neither.
    Returns the event id. Publishing is the relay's job (:func:`relay_once`)."""
    _check_kill_point(kill_at)
    with conn.transaction():
        _insert_order(conn, order_id, item, quantity)
        conn.execute(
            "INSERT INTO outbox (event_id, event_type, payload) VALUES (%s, %s, %s)",
            (
                event_id_of(order_id),
                EVENT_TYPE,
                json.dumps({"order_id": order_id, "item": item, "quantity": quantity}),
            ),
        )
        _kill_here("before_commit", kill_at)
    _kill_here("after_commit", kill_at)
    return event_id_of(order_id)


def relay_once(
    conn: Any, bus: streams.EventBus, *, batch: int = 100, kill_at: str | None = None
) -> int:
    """One pass of the relay: publish up to ``batch`` unsent outbox rows, oldest first, then
    mark them sent; returns how many. The rows are locked (``FOR UPDATE SKIP LOCKED``), so
    two relays never publish the same row at the same time. A crash after the publish and
    before the commit of the marks leaves the rows unsent: they are published again."""
    _check_kill_point(kill_at)
    with conn.transaction():
        rows = conn.execute(
            "SELECT id, event_id, event_type, payload FROM outbox WHERE published_at IS NULL "
            "ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
            (batch,),
        ).fetchall()
        for _, event_id, event_type, payload in rows:
            bus.publish(event_type, payload, event_id=event_id)
        if rows:
            _kill_here("after_publish", kill_at)
        conn.execute(
            "UPDATE outbox SET published_at = now() WHERE id = ANY(%s)", ([r[0] for r in rows],)
        )
    return len(rows)


def unsent(conn: Any) -> list[str]:
    """The event ids still waiting in the outbox, oldest first."""
    rows = conn.execute(
        "SELECT event_id FROM outbox WHERE published_at IS NULL ORDER BY id"
    ).fetchall()
    return [row[0] for row in rows]


# --------------------------------------------------------------------------- processes


def _process(home: Path | str, argv: list[str], name: str, ready: str):
    return ProcessServer(
        home, lambda _port: argv, name=name, ready_text=ready, needs_port=False,
        env={_CHILD: "1"},
    )  # fmt: skip


def writer_process(
    home: Path | str, *, mode: str, database: str, stream: str, group: str, inbox: str
):
    """A :class:`labkit.supervisor.ProcessServer` running ``python -m labkit.outbox writer``:
    it places the orders pushed (as JSON ``{"order_id", "item", "quantity", "kill_at"}``) on
    the Redis list ``inbox``, with ``mode`` ("dual-write" or "outbox"), and pushes each event
    id it finished on ``inbox + ":done"``. ``database`` is a qualified database name."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES} (got {mode!r})")
    argv = [sys.executable, "-m", "labkit.outbox", "writer", "--mode", mode, "--database",
            database, "--stream", stream, "--group", group, "--inbox", inbox]  # fmt: skip
    return _process(home, argv, f"{mode} writer", "writer ready")


def relay_process(
    home: Path | str,
    *,
    database: str,
    stream: str,
    group: str,
    kill_at: str | None = None,
    poll_s: float = RELAY_POLL_S,
):
    """A :class:`labkit.supervisor.ProcessServer` running ``python -m labkit.outbox relay``:
    :func:`relay_once` in a loop (``poll_s`` between empty passes). With
    ``kill_at="after_publish"`` it SIGKILLs itself after its first publish, before marking."""
    _check_kill_point(kill_at)
    argv = [sys.executable, "-m", "labkit.outbox", "relay", "--database", database,
            "--stream", stream, "--group", group, "--poll", str(poll_s)]  # fmt: skip
    if kill_at:
        argv += ["--kill-at", kill_at]
    return _process(home, argv, "outbox relay", "relay ready")


def _writer(args: argparse.Namespace) -> None:
    from labkit import cache, db

    client = cache.redis_client()
    bus = streams.EventBus(client, args.stream, args.group)
    parent = os.getppid()
    with db.connect(args.database, autocommit=True) as conn:
        print("writer ready", flush=True)
        while os.getppid() == parent:
            popped = client.blpop([args.inbox], timeout=1)
            if popped is None:
                continue
            order = json.loads(popped[1])
            fields = (order["order_id"], order.get("item", "book"), order.get("quantity", 1))
            if args.mode == "dual-write":
                event_id = place_order_dual_write(conn, bus, *fields, kill_at=order.get("kill_at"))
            else:
                event_id = place_order_with_outbox(conn, *fields, kill_at=order.get("kill_at"))
            client.rpush(args.inbox + ":done", event_id)


def _relay(args: argparse.Namespace) -> None:
    from labkit import cache, db

    bus = streams.EventBus(cache.redis_client(), args.stream, args.group)
    parent = os.getppid()
    with db.connect(args.database, autocommit=True) as conn:
        print("relay ready", flush=True)
        while os.getppid() == parent:
            sent = relay_once(conn, bus, kill_at=args.kill_at)
            if sent:
                print(f"published {sent}", flush=True)
            else:
                time.sleep(args.poll)


# --------------------------------------------------------------------------- fault injection


@dataclass(frozen=True)
class FaultResult:
    """One (mode, kill point) run of :func:`fault_injection`, K kills long."""

    mode: str
    kill_at: str
    kills: int  # processes SIGKILLed
    orders: int  # orders committed
    lost: int  # committed orders whose event no consumer ever received
    delivered_twice: int  # stream entries beyond the first for one event
    applied_twice: int  # events whose effect the (idempotent) consumer applied more than once
    ghosts: int  # "ghosts": events delivered for an order that was never committed
    seconds: float


def _wait_dead(server: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while server.pid() is not None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{server.name} did not die at its kill point within {timeout} s")
        time.sleep(0.01)


def _wait_until(check, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def fault_injection(
    supervisor: Any,
    home: Path | str,
    *,
    orders_db: Any,
    consumer_db: Any,
    bus: streams.EventBus,
    repeats: int = 3,
    modes: Iterable[str] = MODES,
    kill_points: Iterable[str] = KILL_POINTS,
    progress: bool = True,
) -> list[FaultResult]:
    """For each mode and kill point, place ``repeats`` orders each of which costs one process
    a SIGKILL at that point, finish what a restarted relay would, drain the stream with an
    idempotent consumer, and count. ``orders_db`` and ``consumer_db`` are
    :class:`labkit.db.Database` objects (two services, two databases); ``bus``'s stream is
    reset for each run; processes go through ``supervisor`` (its start and stop messages
    muted meanwhile: a progress bar counts the kills instead), with homes under ``home``."""
    from tqdm.auto import tqdm

    if repeats < 1:
        raise ValueError(f"repeats must be at least 1 (got {repeats})")
    home = Path(home)
    plan = [(mode, point) for mode in modes for point in kill_points]
    for mode, point in plan:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES} (got {mode!r})")
        _check_kill_point(point)
    results = []
    bar = tqdm(total=len(plan) * repeats, desc="SIGKILLs", disable=not progress)
    say, supervisor.say = supervisor.say, lambda _message: None  # dozens of start lines
    try:
        with (
            orders_db.connect(autocommit=True) as orders,
            consumer_db.connect(autocommit=True) as seen,
        ):
            prepare_orders_database(orders)
            streams.prepare_consumer_database(seen)
            for mode, point in plan:
                orders.execute("TRUNCATE orders, outbox")
                seen.execute("TRUNCATE processed_messages, stream_effects")
                bus.reset()
                started = time.perf_counter()
                kills = _one_run(
                    supervisor, home, mode, point, repeats, orders, orders_db, bus, bar
                )
                results.append(_count(mode, point, kills, orders, seen, bus, started))
    finally:
        supervisor.say = say
        bar.close()
    return results


def _one_run(supervisor, home, mode, point, repeats, orders, orders_db, bus, bar) -> int:
    inbox = bus.stream + ":inbox"
    bus.client.delete(inbox, inbox + ":done")
    relay_kwargs = {"database": orders_db.name, "stream": bus.stream, "group": bus.group}
    relay_home = home / "relay"
    relay_is_victim = mode == "outbox" and point == "after_publish"
    kills = 0
    for order_id in range(1, repeats + 1):
        if relay_is_victim:
            victim = relay_process(relay_home, kill_at=point, **relay_kwargs)
        else:
            victim = writer_process(
                home / "writer", mode=mode, database=orders_db.name, stream=bus.stream,
                group=bus.group, inbox=inbox,
            )  # fmt: skip
        supervisor.up(victim)  # ready and waiting: only now is it given its order
        if relay_is_victim:
            # The writer's part succeeds; the relay publishes the row and dies before marking it.
            place_order_with_outbox(orders, order_id, "book", 1)
        else:
            order = {"order_id": order_id, "item": "book", "quantity": 1, "kill_at": point}
            bus.client.rpush(inbox, json.dumps(order))
        _wait_dead(victim)
        supervisor.down(victim)
        kills += 1
        bar.update()
        if relay_is_victim:  # restarted: it publishes the unmarked row again, and marks it
            _drain_outbox(supervisor, relay_process(relay_home, **relay_kwargs), orders)
    if mode == "outbox":  # a relay empties what the killed writers committed, then stops
        _drain_outbox(supervisor, relay_process(relay_home, **relay_kwargs), orders)
    return kills


def _drain_outbox(supervisor: Any, relay: Any, orders: Any) -> None:
    if relay.pid() is None and not unsent(orders):
        return  # no relay to stop, nothing to publish: starting one would only cost time
    supervisor.up(relay)
    _wait_until(lambda: not unsent(orders), "the relay to empty the outbox")
    supervisor.down(relay)


def _count(mode, point, kills, orders, seen, bus, started) -> FaultResult:
    consumer = "shipping"

    def handler(message: streams.Message) -> None:
        streams.handle_once(seen, consumer, message, streams.record_effect)

    while bus.process("drain", handler, count=100).handled:
        pass
    committed = {event_id_of(row[0]) for row in orders.execute("SELECT id FROM orders")}
    entries = bus.entries()
    applied = streams.effects(seen)
    return FaultResult(
        mode=mode,
        kill_at=point,
        kills=kills,
        orders=len(committed),
        lost=len(committed - applied.keys()),
        delivered_twice=len(entries) - len({m.event_id for m in entries}),
        applied_twice=sum(1 for n in applied.values() if n > 1),
        ghosts=len(applied.keys() - committed),
        seconds=time.perf_counter() - started,
    )


def fault_table(results: Iterable[FaultResult]):
    """The results as a DataFrame: one row per kill point, dual-write and outbox side by side."""
    import pandas as pd

    frame = pd.DataFrame([asdict(r) for r in results])
    wide = frame.pivot(
        index="kill_at",
        columns="mode",
        values=["orders", "lost", "delivered_twice", "applied_twice", "ghosts"],
    )
    wide = wide.reindex([p for p in KILL_POINTS if p in set(frame.kill_at)])
    wide.columns = [f"{mode}: {what.replace('_', ' ')}" for what, mode in wide.columns]
    wide.index.name = "SIGKILL at"
    order = [f"{m}: {w}" for m in MODES for w in
             ("orders", "lost", "delivered twice", "applied twice", "ghosts")]  # fmt: skip
    return wide[[c for c in order if c in wide.columns]]


def plot_fault_table(results: Iterable[FaultResult]):
    """Bars: events lost and events delivered twice, per kill point, dual-write vs outbox
    (applied twice is drawn too, and stays at 0 with an idempotent consumer)."""
    import matplotlib.pyplot as plt

    results = list(results)
    points = [p for p in KILL_POINTS if any(r.kill_at == p for r in results)]
    measures = (("lost", "events lost"), ("delivered_twice", "delivered twice"),
                ("applied_twice", "applied twice"))  # fmt: skip
    fig, axes = plt.subplots(1, len(measures), figsize=(11, 3.2), sharey=True)
    width = 0.38
    for ax, (field, title) in zip(axes, measures, strict=True):
        for offset, mode in ((-width / 2, "dual-write"), (width / 2, "outbox")):
            values = [
                next((getattr(r, field) for r in results if r.mode == mode and r.kill_at == p), 0)
                for p in points
            ]
            bars = ax.bar([i + offset for i in range(len(points))], values, width, label=mode)
            ax.bar_label(bars)  # a 0 is a result too: write it
        ax.set_xticks(range(len(points)), [p.replace("_", " ") for p in points])
        ax.set_title(title)
    axes[0].set_ylabel("events (of K orders per point)")
    axes[0].legend()
    fig.suptitle("SIGKILL between commit and publish: naive dual-write against the outbox")
    fig.tight_layout()
    return fig


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m labkit.outbox")
    commands = parser.add_subparsers(dest="command", required=True)
    writer = commands.add_parser("writer", help="place the orders pushed on a Redis list")
    writer.add_argument("--mode", choices=MODES, required=True)
    relay = commands.add_parser("relay", help="publish the outbox's unsent rows, in a loop")
    relay.add_argument("--kill-at", choices=KILL_POINTS)
    relay.add_argument("--poll", type=float, default=RELAY_POLL_S)
    table = commands.add_parser("table", help="run the fault injection and print the table")
    table.add_argument("--repeats", type=int, default=3, help="SIGKILLs per mode and point (K)")
    for command in (writer, relay):
        command.add_argument("--database", required=True, help="the (qualified) database name")
        command.add_argument("--stream", required=True)
        command.add_argument("--group", required=True)
    writer.add_argument("--inbox", required=True, help="the Redis list of orders to place")
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.command == "writer":
        _writer(args)
    elif args.command == "relay":
        _relay(args)
    else:
        _print_table(args.repeats)


def _print_table(repeats: int) -> None:
    """``python -m labkit.outbox table``: the lesson's measurement, from a terminal."""
    import tempfile

    import pandas as pd

    from labkit import db, exercises
    from labkit.supervisor import Supervisor

    ns = exercises.redis_namespace("outbox_table")
    orders_db = db.fresh_database("outbox_table_orders")
    consumer_db = db.fresh_database("outbox_table_shipping")
    bus = streams.EventBus(ns.client, ns.key("orders"), "shipping")
    try:
        with tempfile.TemporaryDirectory() as home, Supervisor(say=lambda _m: None) as sup:
            results = fault_injection(
                sup, home, orders_db=orders_db, consumer_db=consumer_db, bus=bus, repeats=repeats
            )
        with pd.option_context("display.width", 200, "display.max_columns", None):
            print(f"K = {repeats} SIGKILLs per mode and kill point\n")
            print(fault_table(results).to_string())
    finally:
        ns.clear()
        db.drop_database(orders_db.name, qualified=True)
        db.drop_database(consumer_db.name, qualified=True)


if __name__ == "__main__":
    main()
