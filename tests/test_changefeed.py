"""labkit.changefeed against the course's PostgreSQL and real uvicorn servers: ids in
commit order (and the change a reader skips without the deferred lock), no deadlock from
that lock, nothing delivered before COMMIT or after a ROLLBACK, resume by last-seen id,
a client joining mid-burst, a catch-up longer than a page, a dropped LISTEN connection,
and a client too slow to keep up, closed and resuming — each change once, in order."""

from __future__ import annotations

import json
import statistics
import threading
import time

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
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
def supervisor():
    with Supervisor(say=lambda message: None) as running:
        yield running


@pytest.fixture(scope="module")
def server(demo, supervisor):
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


def late_commit(database, ordered: bool) -> tuple[list[int], list[int]]:
    """A inserts first and commits last; B commits in between. Returns what a reader saw
    after B's commit, and what it saw after A's when it went on from there (item ids)."""
    with database.connect(autocommit=True) as conn:
        changefeed.install(conn, "items", ordered=ordered)
    base = 1000 if ordered else 2000
    cursor = last_id(database)
    slow = database.connect()
    try:
        slow.execute("INSERT INTO items VALUES (%s, 'A: first in, last to commit')", (base,))
        insert(database, base + 1, "B: commits first")
        with database.connect() as reader:
            seen = changefeed.since(reader, cursor)
            cursor = seen[-1].id
            slow.commit()
            later = changefeed.since(reader, cursor)
    finally:
        slow.close()
        with database.connect(autocommit=True) as conn:
            changefeed.install(conn, "items")  # ordered, as the other tests expect
    return [c.row["id"] for c in seen], [c.row["id"] for c in later]


def test_a_late_commit_is_skipped_without_the_lock_and_not_with_it(demo):
    """Without the lock, A's id comes before B's although A commits after: a reader that
    went on from B's id never sees A. With the deferred lock, A's change takes its id at its
    COMMIT, after B's: the reader gets it."""
    assert late_commit(demo, ordered=False) == ([2001], [])
    assert late_commit(demo, ordered=True) == ([1001], [1000])


def test_the_lock_taken_at_commit_causes_no_deadlock(demo):
    """A changes row 1; B changes row 2; A then waits for row 2, and B commits: with the
    lock taken only at COMMIT, B is not waiting for A, and both commit."""
    with demo.connect(autocommit=True) as conn:
        conn.execute("INSERT INTO items VALUES (3001, 'one'), (3002, 'two')")
    a, b = demo.connect(), demo.connect()
    errors: list[BaseException] = []
    try:
        a.execute("UPDATE items SET label = 'A' WHERE id = 3001")
        b.execute("UPDATE items SET label = 'B' WHERE id = 3002")

        def a_goes_on() -> None:
            try:
                a.execute("UPDATE items SET label = 'A' WHERE id = 3002")  # waits for B
                a.commit()
            except Exception as exc:
                errors.append(exc)

        waiter = threading.Thread(target=a_goes_on)
        waiter.start()
        time.sleep(0.3)
        b.commit()
        waiter.join(timeout=20)
        assert not waiter.is_alive() and errors == [], errors
    finally:
        a.close()
        b.close()
    with demo.connect() as conn:
        labels = conn.execute("SELECT label FROM items WHERE id IN (3001, 3002) ORDER BY id")
        assert [row[0] for row in labels] == ["A", "A"]


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
            assert change["table"] == "public.items"
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


def test_a_bulk_change_longer_than_a_page_arrives_whole(demo, server):
    """One transaction inserts 2.5 pages of rows: a connected client gets them all live,
    and a client resuming from before them gets them all from the table, each once."""
    rows = changefeed.PAGE * 5 // 2
    start = last_id(demo)
    with connect(server.url(start)) as live:
        with demo.connect() as conn:
            conn.execute(
                "INSERT INTO items SELECT n, 'bulk' FROM generate_series(10000, %s) AS n",
                (10000 + rows - 1,),
            )
        heard = [receive(live)["row"]["id"] for _ in range(rows)]
    with connect(server.url(start)) as late:
        replayed = [receive(late)["row"]["id"] for _ in range(rows)]
        with pytest.raises(TimeoutError):
            late.recv(timeout=0.5)
    assert heard == replayed == list(range(10000, 10000 + rows))


def test_a_dropped_listen_connection_is_reconnected(demo, server):
    """The server's LISTEN connection is killed (a restart, a failover): it reconnects, and
    a change committed meanwhile still reaches a connected client."""
    start = last_id(demo)
    with connect(server.url(start)) as ws, demo.connect(autocommit=True) as admin:
        killed = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND query LIKE 'LISTEN%%'"
        ).fetchone()[0]
        assert killed == 1
        insert(demo, 501, "committed while the server was reconnecting")
        assert receive(ws, timeout=20)["row"]["id"] == 501
    health = httpx.get(server.health_url, timeout=10).json()
    assert health["reconnects"] >= 1


def test_a_client_too_slow_is_closed_and_resumes(demo, supervisor):
    """A server whose clients may have 50 changes waiting; a client that does not read
    while 3,000 large changes are committed is closed with code 4000 once it has read what
    was queued, and resuming after its last id it gets the rest: each change once."""
    small = changefeed.start(supervisor, demo.url, name="changefeed-small", queue_limit=50)
    try:
        start = last_id(demo)
        got: list[int] = []
        with connect(small.url(start), max_size=None) as ws:
            with demo.connect() as conn:
                conn.execute(
                    "INSERT INTO items SELECT n, repeat('x', 4000) FROM generate_series(20000, 22999) AS n"
                )
            deadline = time.monotonic() + 30  # its socket buffers fill, then our queue
            while httpx.get(small.health_url, timeout=10).json()["too_slow"] == 0:
                assert time.monotonic() < deadline, "the queue never overflowed"
                time.sleep(0.1)
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    change = receive(ws)
                    got.append(change["id"])
            assert closed.value.rcvd.code == 4000
        with connect(small.url(got[-1]), max_size=None) as ws:
            while len(got) < 3000:
                got.append(receive(ws)["id"])
        assert len(got) == len(set(got)) == 3000 and got == sorted(got)
    finally:
        changefeed.stop(supervisor, small)


def test_bad_input_says_what_to_do(demo):
    with pytest.raises(ValueError, match="name the table"), demo.connect() as conn:
        changefeed.install(conn, "")
    with pytest.raises(RuntimeError, match=changefeed.ENV_DATABASE):
        changefeed.create_app({})


def test_a_column_allowlist_keeps_other_columns_in_the_database(demo):
    """With columns=, a change carries only those columns; unknown ones are refused."""
    with demo.connect(autocommit=True) as conn:
        conn.execute("CREATE TABLE members (id int PRIMARY KEY, name text, password_hash text)")
        changefeed.install(conn, "members", columns=["id", "name"])
        cursor = last_id(demo)
        conn.execute("INSERT INTO members VALUES (1, 'ada', 'argon2id$secret')")
        (change,) = changefeed.since(conn, cursor)
        assert change.row == {"id": 1, "name": "ada"} and change.table == "public.members"
        with pytest.raises(ValueError, match="unknown: email"):
            changefeed.install(conn, "members", columns=["id", "email"])
        with pytest.raises(ValueError, match="no table public.nowhere"):
            changefeed.install(conn, "nowhere")


def test_truncate_is_logged_at_commit_and_not_after_a_rollback(demo):
    with demo.connect(autocommit=True) as conn:
        conn.execute("CREATE TABLE scratch (id int PRIMARY KEY)")
        changefeed.install(conn, "scratch")
        conn.execute("INSERT INTO scratch VALUES (1), (2)")
    cursor = last_id(demo)
    with demo.connect() as conn:
        conn.execute("TRUNCATE scratch")
        conn.rollback()
        conn.execute("TRUNCATE scratch")
        with demo.connect() as reader:
            assert changefeed.since(reader, cursor) == []  # not before COMMIT
        conn.commit()
        changes = changefeed.since(conn, cursor)
        pending = conn.execute("SELECT count(*) FROM change_log_truncates").fetchone()[0]
    assert [(c.table, c.op, c.row) for c in changes] == [("public.scratch", "TRUNCATE", {})]
    assert pending == 0


def test_a_client_resuming_from_before_the_retention_horizon_is_told_to_reload(demo, server):
    """trim deletes old changes and records the horizon; resuming from before it closes
    the client with 4001 (never a feed with a hole); from after it, the feed goes on."""
    before = last_id(demo)
    insert(demo, 700, "old")
    insert(demo, 701, "old")
    with demo.connect() as conn:
        deleted = changefeed.trim(conn, older_than_s=0)
        conn.commit()
        horizon = changefeed.horizon(conn)
    assert deleted >= 2 and horizon >= before + 2
    with connect(server.url(after=before)) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd.code == 4001
    with connect(server.url(after=horizon)) as ws:
        insert(demo, 702, "new")
        assert receive(ws)["row"]["id"] == 702


def test_handshakes_from_other_origins_are_refused(demo, supervisor):
    from websockets.exceptions import InvalidStatus

    guarded = changefeed.start(supervisor, demo.url, name="feed-origins",
                               origins=["https://course.example"])  # fmt: skip
    try:
        with pytest.raises(InvalidStatus) as refused:
            connect(guarded.url(), origin="https://evil.example").close()
        assert refused.value.response.status_code == 403
        for allowed in ("https://course.example", None):  # None: not a browser
            with connect(guarded.url(after=last_id(demo)), origin=allowed) as ws:
                insert(demo, 800 if allowed else 801, "seen")
                assert receive(ws)["op"] == "INSERT"
    finally:
        changefeed.stop(supervisor, guarded)


def test_a_reconnect_storm_shares_a_few_catch_up_connections(demo, supervisor):
    """12 clients resume at once, each with a backlog of 2,500 changes, on a server whose
    catch-ups share 2 connections: the server never holds more than its LISTEN and query
    connections plus those 2, and every client gets every change once, in order."""
    small = changefeed.start(supervisor, demo.url, name="feed-pool", catchups=2)
    try:
        start = last_id(demo)
        with demo.connect() as conn:
            conn.execute("INSERT INTO items SELECT g, 'backlog' FROM generate_series(5000, 7499) g")
            conn.commit()
        expected = list(range(start + 1, start + 2501))
        peak, stop = [0], threading.Event()

        def sample() -> None:
            with demo.connect(autocommit=True) as watcher:
                while not stop.is_set():
                    (n,) = watcher.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
                    ).fetchone()
                    peak[0] = max(peak[0], n)
                    time.sleep(0.005)

        got: dict[int, list[int]] = {}
        with demo.connect(autocommit=True) as counter:  # the idle servers' connections
            (baseline,) = counter.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
            ).fetchone()

        def client(index: int) -> None:
            with connect(small.url(after=start), max_size=None) as ws:
                ids = got.setdefault(index, [])
                while len(ids) < len(expected):
                    ids.append(receive(ws, timeout=30)["id"])

        watcher = threading.Thread(target=sample, daemon=True)
        watcher.start()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        stop.set()
        watcher.join(5)
    finally:
        changefeed.stop(supervisor, small)
    assert all(got.get(i) == expected for i in range(12)), {i: len(v) for i, v in got.items()}
    # the pool holds 1 connection when idle (in the baseline) and 2 at most; the watcher
    # itself is one more connection (its own pid is excluded)
    assert peak[0] - baseline <= 1, f"{peak[0]} connections at the peak, {baseline} idle"
