"""labkit.contention against the course's real PostgreSQL: what the sampler sees of sessions
that wait for a row lock, and what it leaves out."""

from __future__ import annotations

import threading

import pytest

from labkit import contention, db

pytestmark = pytest.mark.xdist_group("services")


@pytest.fixture
def counter_db():
    """A database with one row to fight over; dropped afterwards."""
    demo = db.fresh_database("test_contention")
    with demo.connect(autocommit=True) as conn:
        conn.execute("CREATE TABLE counter (id int PRIMARY KEY, n int NOT NULL)")
        conn.execute("INSERT INTO counter VALUES (1, 0)")
    yield demo
    db.drop_database("test_contention")


def add_one(demo, name: str) -> None:
    with demo.connect(application_name=name) as conn:
        conn.execute("UPDATE counter SET n = n + 1 WHERE id = 1")


def test_a_session_alone_never_waits_on_a_lock(counter_db):
    with contention.sample_waits(counter_db, "alone") as waits:
        for _ in range(20):
            add_one(counter_db, "alone")
    assert waits.samples >= 1 and waits.lock_waits == 0
    assert list(waits.table().columns) == ["wait_event_type", "wait_event", "session-samples"]


def test_a_blocked_writer_is_seen_waiting_for_the_holders_transaction(counter_db):
    holder = counter_db.connect(application_name="writers")
    holder.execute("UPDATE counter SET n = n + 1 WHERE id = 1")  # holds the row lock
    second = threading.Thread(target=add_one, args=(counter_db, "writers"))
    with contention.sample_waits(counter_db, "writers") as waits:
        second.start()
        assert contention.wait_for_lock_wait(waits), "the second writer was never seen waiting"
        holder.commit()
        second.join(10)
    holder.close()
    assert waits.seen[("Lock", "transactionid")] >= 1
    table = waits.table()
    assert ("Lock", "transactionid") in set(
        zip(table["wait_event_type"], table["wait_event"], strict=True)
    )
    with counter_db.connect() as conn:
        assert conn.execute("SELECT n FROM counter").fetchone()[0] == 2  # no increment lost


def test_sessions_of_another_name_are_not_counted(counter_db):
    holder = counter_db.connect(application_name="someone-else")
    holder.execute("UPDATE counter SET n = n + 1 WHERE id = 1")
    second = threading.Thread(target=add_one, args=(counter_db, "someone-else"))
    with contention.sample_waits(counter_db, "watched") as waits:
        second.start()
        with contention.sample_waits(counter_db, "someone-else") as control:
            assert contention.wait_for_lock_wait(control)
        holder.commit()
        second.join(10)
    holder.close()
    assert waits.samples >= 1 and waits.lock_waits == 0


def test_wait_for_lock_wait_gives_up_after_its_timeout():
    assert contention.wait_for_lock_wait(contention.WaitSamples(), timeout=0.05) is False


def test_a_sampler_that_cannot_connect_raises_in_the_caller():
    class Unreachable:
        def connect(self, **kwargs):
            raise ConnectionError("no server here")

    with pytest.raises(ConnectionError, match="no server here"):
        with contention.sample_waits(Unreachable(), "anyone"):
            pass
