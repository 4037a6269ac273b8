"""labkit.changefeed against the course's PostgreSQL and a real uvicorn server: ids in
commit order (and the skipped change without the lock), nothing delivered before COMMIT
or after a ROLLBACK, resume by last-seen id with no loss and no duplicates, and a client
that connects while changes are being committed gets each of them once, in order."""

from __future__ import annotations

import json
import statistics
import threading
import time

import pytest
from websockets.sync.client import connect

from labkit import changefeed, db
from labkit.supervisor import Supervisor


@pytest.fixture(scope="module")
def demo():
    database = db.fresh_database("s14_test_changefeed")
    with database.connect(autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, label text NOT NULL)")
        changefeed.install(conn, "items")
    yield database
    db.drop_database("s14_test_changefeed")


@pytest.fixture(scope="module")
def server(demo):
    with Supervisor(say=lambda message: None) as supervisor:
        running = changefeed.start(supervisor, demo.url)
        yield running
        changefeed.stop(supervisor, running)


def last_id(database) -> int:
    with database.connect() as conn:
        return conn.execute("SELECT coalesce(max(id), 0) FROM change_log").fetchone()[0]


def insert(database, item_id: int, label: str) -> float:
    """Insert one item and commit; returns the time the COMMIT returned."""
    with database.connect() as conn:
        conn.execute("INSERT INTO items VALUES (%s, %s)", (item_id, label))
        conn.commit()
        return time.perf_counter()


def receive(ws, timeout: float = 10) -> dict:
    return json.loads(ws.recv(timeout=timeout))


def test_ids_follow_commit_order_only_with_the_lock(demo):
    """Without the lock, A takes id n, B takes n+1 and commits first: a reader that went on
    from n+1 never sees A's change. With it, B waits for A's COMMIT (an advisory lock wait
    in pg_stat_activity) and gets the later id: the reader misses nothing."""
    with demo.connect(autocommit=True) as conn:
        changefeed.install(conn, "items", ordered=False)
    try:
        cursor = last_id(demo)
        slow = demo.connect()
        slow.execute("INSERT INTO items VALUES (101, 'A, committed last')")
        insert(demo, 102, "B, committed first")
        with demo.connect() as reader:
            seen = changefeed.since(reader, cursor)
            cursor = seen[-1].id
            slow.commit()
            slow.close()
            missed = changefeed.since(reader, cursor)
            everything = changefeed.since(reader, 0)
        assert [c.row["id"] for c in seen] == [102] and missed == []
        assert 101 in [c.row["id"] for c in everything], "A's change is in the log, skipped"
    finally:
        with demo.connect(autocommit=True) as conn:
            changefeed.install(conn, "items")  # ordered again
    cursor = last_id(demo)
    slow = demo.connect()
    slow.execute("INSERT INTO items VALUES (103, 'A, first to change')")
    second = threading.Thread(target=insert, args=(demo, 104, "B, waits for A"))
    second.start()
    with demo.connect(autocommit=True) as watcher:
        for _ in range(200):
            waiting = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE wait_event_type = 'Lock' AND wait_event = 'advisory'"
                " AND datname = current_database()"
            ).fetchone()[0]
            if waiting:
                break
            time.sleep(0.05)
    assert waiting == 1, "B did not wait for A's transaction"
    slow.commit()
    slow.close()
    second.join(timeout=10)
    with demo.connect() as reader:
        ids = [(c.id, c.row["id"]) for c in changefeed.since(reader, cursor)]
    assert [item for _, item in ids] == [103, 104], ids


def test_delivered_at_commit_never_before_and_never_after_a_rollback(demo, server):
    """A client sees a change only once its transaction commits; a rolled-back change never
    arrives, and the next committed one does. Commit-to-client latency over 20 changes."""
    with connect(server.url(last_id(demo))) as ws:
        writer = demo.connect()
        writer.execute("INSERT INTO items VALUES (201, 'pending')")
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.5)  # not committed yet
        writer.commit()
        assert receive(ws)["row"] == {"id": 201, "label": "pending"}
        writer.execute("INSERT INTO items VALUES (202, 'rolled back')")
        writer.rollback()
        writer.close()
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.5)
        latencies = []
        for item_id in range(203, 223):
            committed = insert(demo, item_id, "timed")
            change = receive(ws)
            latencies.append(time.perf_counter() - committed)
            assert change["row"]["id"] == item_id and change["op"] == "INSERT"
    p50 = statistics.median(latencies)
    print(f"commit to client: p50 {p50 * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms")
    assert len(latencies) == 20


def test_resume_after_the_last_seen_id(demo, server):
    """A client leaves after id X; three changes are committed; it comes back with
    after=X and gets exactly those three, in order, then the live ones, none twice."""
    start = last_id(demo)
    insert(demo, 301, "seen")
    with connect(server.url(start)) as ws:
        seen = receive(ws)
    assert seen["row"]["id"] == 301
    for item_id in (302, 303, 304):
        insert(demo, item_id, "missed while away")
    with connect(server.url(seen["id"])) as ws:
        back = [receive(ws)["row"]["id"] for _ in range(3)]
        insert(demo, 305, "live")
        live = receive(ws)["row"]["id"]
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.5)  # nothing twice
    assert back == [302, 303, 304] and live == 305


def test_joining_while_changes_are_committed_loses_and_repeats_nothing(demo, server):
    """A writer commits 60 changes; a client connects after the first 20 with after=<id
    before them>: it gets all 60 exactly once, in id order."""
    start = last_id(demo)
    begun = threading.Event()

    def write():
        for item_id in range(400, 460):
            insert(demo, item_id, "burst")
            if item_id == 419:
                begun.set()

    writer = threading.Thread(target=write)
    writer.start()
    assert begun.wait(30)
    with connect(server.url(start)) as ws:
        got = [receive(ws) for _ in range(60)]
        writer.join(timeout=30)
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.5)
    assert [c["row"]["id"] for c in got] == list(range(400, 460))
    assert [c["id"] for c in got] == sorted(c["id"] for c in got)


def test_bad_input_says_what_to_do(demo):
    with pytest.raises(ValueError, match="name the table"), demo.connect() as conn:
        changefeed.install(conn, "")
    with pytest.raises(RuntimeError, match=changefeed.ENV_DATABASE):
        changefeed.create_app({})
