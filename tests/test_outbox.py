"""labkit.outbox against the course's real PostgreSQL and Redis, with real writer and relay
processes SIGKILLed at every point between commit and publish."""

from __future__ import annotations

import uuid

import pytest

from labkit import cache, caching, db, outbox, streams
from labkit.supervisor import Supervisor

pytestmark = pytest.mark.xdist_group("services")


@pytest.fixture(scope="module")
def databases():
    """Two services, two databases: the orders service's and the shipping consumer's."""
    orders = db.fresh_database("test_outbox_orders")
    shipping = db.fresh_database("test_outbox_shipping")
    yield orders, shipping
    db.drop_database(orders.name, qualified=True)
    db.drop_database(shipping.name, qualified=True)


@pytest.fixture
def bus():
    client = cache.redis_client()
    prefix = f"test_outbox:{uuid.uuid4().hex[:8]}:"
    event_bus = streams.EventBus(client, prefix + "orders", "shipping")
    event_bus.reset()
    yield event_bus
    caching.delete_prefix(client, prefix)


@pytest.fixture
def orders(databases):
    with databases[0].connect(autocommit=True) as conn:
        outbox.prepare_orders_database(conn)
        conn.execute("TRUNCATE orders, outbox")
        yield conn


def test_the_outbox_row_commits_or_rolls_back_with_the_order(orders):
    assert outbox.place_order_with_outbox(orders, 1, "book", 2) == "order-1"
    with pytest.raises(Exception, match="quantity"):  # the CHECK fails: neither row stays
        outbox.place_order_with_outbox(orders, 2, "pen", 0)
    assert orders.execute("SELECT id FROM orders").fetchall() == [(1,)]
    assert outbox.unsent(orders) == ["order-1"]


def test_relay_once_publishes_in_order_and_marks_sent(orders, bus):
    for order_id in (3, 1, 2):
        outbox.place_order_with_outbox(orders, order_id, "book", 1)
    assert outbox.relay_once(orders, bus, batch=2) == 2
    assert outbox.unsent(orders) == ["order-2"]
    assert outbox.relay_once(orders, bus) == 1
    assert outbox.relay_once(orders, bus) == 0
    entries = bus.entries()
    assert [m.event_id for m in entries] == ["order-3", "order-1", "order-2"]
    assert entries[0].data == {"order_id": 3, "item": "book", "quantity": 1}


def test_dual_write_publishes_after_commit(orders, bus):
    assert outbox.place_order_dual_write(orders, bus, 5, "book", 1) == "order-5"
    assert [m.event_id for m in bus.entries()] == ["order-5"]
    assert outbox.unsent(orders) == []  # no outbox row: the event went straight to Redis


def test_kill_points_are_refused_in_this_process_and_checked(orders, bus):
    with pytest.raises(RuntimeError, match="worker processes only"):
        outbox.place_order_with_outbox(orders, 7, "book", 1, kill_at="after_commit")
    with pytest.raises(ValueError, match="kill_at must be"):
        outbox.place_order_dual_write(orders, bus, 8, "book", 1, kill_at="somewhere")
    with pytest.raises(ValueError, match="mode must be"):
        outbox.writer_process("/tmp/x", mode="both", database="d", stream="s", group="g",
                              inbox="i")  # fmt: skip
    relay = outbox.relay_process("/tmp/x", database="d", stream="s", group="g")
    argv = relay.command(None)
    assert argv[argv.index("--poll") + 1] == str(outbox.RELAY_POLL_S)  # the lesson prints it


def test_fault_injection_loses_events_with_dual_write_and_none_with_the_outbox(
    databases, bus, tmp_path
):
    """K = 2 real SIGKILLs per mode and point: dual-write loses exactly the events of the
    orders killed after commit; the outbox loses none, and the relay killed after publishing
    delivers them twice, which the idempotent consumer applies once."""
    orders_db, shipping_db = databases
    with Supervisor(say=lambda _m: None) as supervisor:
        results = outbox.fault_injection(
            supervisor, tmp_path, orders_db=orders_db, consumer_db=shipping_db, bus=bus,
            repeats=2, progress=False,
        )  # fmt: skip
    found = {
        (r.mode, r.kill_at): (r.kills, r.orders, r.lost, r.delivered_twice, r.applied_twice)
        for r in results
    }
    assert found == {
        ("dual-write", "before_commit"): (2, 0, 0, 0, 0),
        ("dual-write", "after_commit"): (2, 2, 2, 0, 0),
        ("dual-write", "after_publish"): (2, 2, 0, 0, 0),
        ("outbox", "before_commit"): (2, 0, 0, 0, 0),
        ("outbox", "after_commit"): (2, 2, 0, 0, 0),
        ("outbox", "after_publish"): (2, 2, 0, 2, 0),
    }
    assert all(r.ghosts == 0 for r in results)
    table = outbox.fault_table(results)
    assert list(table.index) == list(outbox.KILL_POINTS)
    assert table.loc["after_commit", "dual-write: lost"] == 2
    assert table.loc["after_commit", "outbox: lost"] == 0
    assert outbox.plot_fault_table(results).axes[0].get_title() == "events lost"


def test_the_table_command_prints_the_counts():
    """`python -m labkit.outbox table` (the command the lesson and the closing note name)
    runs the same fault injection from a terminal and prints the table."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "labkit.outbox", "table", "--repeats", "1"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    rows = {line.split()[0]: line.split()[1:] for line in done.stdout.splitlines()[3:]}
    # orders, lost, delivered twice, applied twice, ghosts — dual-write, then outbox
    assert rows["after_commit"] == ["1", "1", "0", "0", "0", "1", "0", "0", "0", "0"]
    assert rows["after_publish"] == ["1", "0", "0", "0", "0", "1", "0", "1", "0", "0"]
    assert rows["before_commit"] == ["0"] * 10
