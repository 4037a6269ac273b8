"""labkit.collab against the course's PostgreSQL: offline CRDT edits that converge and
survive a restart from the store, a compaction that keeps an update committed late with a
lower id (where "delete up to the last id folded" loses it), the three conflict
strategies counted on the same concurrent edits, and editors on two real server
instances (uvicorn) that converge, offline or not, across a compaction and a restart."""

from __future__ import annotations

import random
import time

import pytest

from labkit import collab, db
from labkit.supervisor import Supervisor


@pytest.fixture(scope="module")
def store():
    database = db.fresh_database("s14_test_collab")
    store = collab.DocStore(database)
    store.create_tables()
    store.create_tables()  # idempotent
    yield store
    db.drop_database("s14_test_collab")


def synced(store, doc):
    """A client that loads the document, as a browser tab does when it opens it."""
    return store.load(doc)


def test_offline_edits_converge_and_survive_a_restart(store):
    """Three clients edit the same words at once, offline; their updates reach the store
    shuffled and one twice. Every client, and the document restored from the store, ends
    with the same text holding every edit."""
    first = collab.new_doc()
    with collab.recording(first) as sent:
        collab.text(first).insert(0, "the cat sat")
    for update in sent:
        store.append("converge", update)
    clients = [synced(store, "converge") for _ in range(3)]
    updates = []
    for number, (client, (at, word)) in enumerate(
        zip(clients, [(4, "big "), (4, "old "), (11, " down")], strict=True)
    ):
        with collab.recording(client) as sent:
            collab.text(client).insert(at, word)
            collab.text(client).insert(0, f"[{number}]")
        updates += sent
    shuffled = updates + updates[:1]
    random.Random(7).shuffle(shuffled)
    for update in shuffled:
        store.append("converge", update)
    for client in clients:  # each receives everyone's updates, its own included
        for update in updates:
            client.apply_update(update)
    texts = {str(collab.text(client)) for client in clients}
    restored = str(collab.text(store.load("converge")))
    assert texts == {restored}, f"clients {texts} and the store {restored!r} differ"
    for word in ("big ", "old ", " down", "[0]", "[1]", "[2]", "the cat sat"[:3]):
        assert word in restored, f"{word!r} lost: {restored!r}"
    assert len(restored) == len("the cat sat") + len("big old  down") + 9


def test_compaction_keeps_an_update_committed_late_with_a_lower_id(store):
    """A's update gets its id first but commits after B's; a compaction in between folds
    only B's. The store keeps A's update, and the restored text holds both edits; deleting
    "every id up to the last one folded" instead would have lost A's."""
    base = collab.new_doc()
    with collab.recording(base) as sent:
        collab.text(base).insert(0, "draft")
    for update in sent:
        store.append("late", update)
    alice, bob = synced(store, "late"), synced(store, "late")
    with collab.recording(alice) as from_alice:
        collab.text(alice).insert(0, "ALICE ")
    with collab.recording(bob) as from_bob:
        collab.text(bob).insert(5, " BOB")
    slow = store.database.connect()  # alice's transaction: its id now, its commit later
    try:
        late_id = slow.execute(
            "INSERT INTO crdt_updates (doc, update) VALUES ('late', %s) RETURNING id",
            (from_alice[0],),
        ).fetchone()[0]
        bob_id = store.append("late", from_bob[0])
        assert late_id < bob_id
        compaction = store.compact("late")
        slow.commit()
    finally:
        slow.close()
    assert compaction.folded == 2, compaction  # "draft" and bob's edit; alice's not visible yet
    assert store.stored_updates("late") == 1
    assert str(collab.text(store.load("late"))) == "ALICE draft BOB"
    # The naive compaction, for contrast: alice's row goes with the ids "up to" bob's.
    with store.database.connect() as conn:
        conn.execute("DELETE FROM crdt_updates WHERE doc = 'late' AND id <= %s", (bob_id,))
    assert str(collab.text(store.load("late"))) == "draft BOB", "the control lost nothing"


def test_compaction_shrinks_many_small_updates(store):
    """200 one-character updates fold into one snapshot: fewer bytes, same text, and a
    second compaction with nothing new folds 0."""
    writer = synced(store, "typing")
    for index in range(200):
        with collab.recording(writer) as sent:
            collab.text(writer).insert(index, "abcdefghij"[index % 10])
        for update in sent:
            store.append("typing", update)
    expected = str(collab.text(writer))
    compaction = store.compact("typing")
    assert compaction.folded == 200 and compaction.bytes_after < compaction.bytes_before / 3
    assert str(collab.text(store.load("typing"))) == expected
    assert store.compact("typing").folded == 0
    assert str(collab.text(store.load("typing"))) == expected


def test_three_strategies_on_the_same_concurrent_edits(store):
    """Four clients read the same version and each insert a word. Last write wins loses 3;
    optimistic locking loses none with one conflict (and retry) per later client; the
    CRDT loses none with no conflict."""
    edits = [
        collab.Edit("ana", "one", " alpha"),
        collab.Edit("ben", "two", " beta"),
        collab.Edit("cy", "three", " gamma"),
        collab.Edit("dee", "one", " delta"),  # the same place as ana's
    ]
    results = {r.strategy: r for r in collab.compare(store.database, edits, "one two three")}
    lww = results["last write wins"]
    assert (lww.lost_updates, lww.conflicts, lww.writes) == (3, 0, 4)
    assert lww.final_text == edits[-1].apply("one two three")
    locking = results["optimistic locking"]
    assert (locking.lost_updates, locking.conflicts, locking.writes) == (0, 3, 7)
    crdt = results["CRDT (pycrdt)"]
    assert (crdt.lost_updates, crdt.conflicts, crdt.writes) == (0, 0, 4)
    assert all(word in crdt.final_text for word in ("one", "two", "three"))
    assert locking.final_text.replace(" delta", "") == "one alpha two beta three gamma"


def test_bad_input_says_what_to_do(store):
    with pytest.raises(ValueError, match="bytes a pycrdt Doc emits"):
        store.append("bad", "not bytes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="distinct word"):
        collab.compare(store.database, [collab.Edit("a", "", "x"), collab.Edit("b", "", "x")], "")
    with pytest.raises(ValueError, match="after 'four'"):
        collab.compare(store.database, [collab.Edit("a", "four", " x")], "one two")
    assert str(collab.text(store.load("never written"))) == ""


def converge(clients, parts, timeout: float = 20) -> str:
    """Pull until every client shows the same text holding every part; that text."""
    deadline = time.monotonic() + timeout
    while True:
        for client in clients:
            client.pull(timeout=0.05)
        texts = {client.text for client in clients}
        if len(texts) == 1 and all(part in client.text for part in parts):
            return texts.pop()
        assert time.monotonic() < deadline, f"no convergence: {[c.text for c in clients]}"


def test_editors_on_two_instances_converge_offline_and_after_a_restart(store):
    """ana on instance 1 and ben on instance 2 edit at the same moment; carl edits offline
    and reconnects; the document is compacted mid-session; then both instances stop, a new
    one starts, and a new editor opens the same text, restored from PostgreSQL."""
    url = store.database.url
    with Supervisor(say=lambda message: None) as supervisor:
        one = collab.start(supervisor, url, name="collab-1")
        two = collab.start(supervisor, url, name="collab-2")
        with collab.Client(one.url("shared")) as ana, collab.Client(two.url("shared")) as ben:
            ana.insert(0, "hello")
            converge([ana, ben], ["hello"])
            ana.insert(5, " world")  # both at once, neither has the other's edit yet
            ben.insert(0, "oh, ")
            converge([ana, ben], ["oh, hello world"])
            carl = collab.Client(one.url("shared")).connect()
            converge([ana, ben, carl], ["oh, hello world"])
            carl.disconnect()
            carl.insert(0, "[carl, offline] ")
            ben.insert(len(ben.text), "!")
            converge([ana, ben], ["hello world!"])
            assert store.compact("shared").folded >= 4  # hello, world, oh, !
            ana.insert(0, "> ")
            carl.connect()
            converge([ana, ben, carl], ["[carl, offline] ", "hello world!", "> "])
            carl.disconnect()
            collab.stop(supervisor, one)
            collab.stop(supervisor, two)
            ana.insert(0, "(sent to a dead server) ")  # lost in flight
            three = collab.start(supervisor, url, name="collab-3")
            ana.url = three.url("shared")
            ana.disconnect()
            ana.connect()  # the handshake sends what the server lacks
            with collab.Client(three.url("shared")) as dana:
                final = converge(
                    [ana, dana], ["(sent to a dead server) ", "[carl, offline] ", "> ", "world!"]
                )
        assert store.stored_updates("shared") >= 1  # after the compaction
        with collab.Client(three.url("shared")) as fresh:
            assert fresh.text == final == str(collab.text(store.load("shared")))
        with collab.Client(three.url("other")) as eve:
            assert eve.text == "", "documents are separate"
        collab.stop(supervisor, three)
    with pytest.raises(RuntimeError, match=collab.ENV_DATABASE):
        collab.create_app({})


def test_compaction_keeps_an_update_still_waiting_for_an_earlier_one(store):
    """u2 is stored, u1 (which it builds on) not yet: compaction must keep u2, so that the
    text is whole once u1 arrives."""
    writer = collab.new_doc()
    with collab.recording(writer) as sent:
        collab.text(writer).insert(0, "one ")
    with collab.recording(writer) as sent_later:
        collab.text(writer).insert(4, "two")
    store.append("pending", sent_later[0])
    assert store.compact("pending").folded == 1
    assert str(collab.text(store.load("pending"))) == ""  # u2 waits
    store.append("pending", sent[0])
    assert str(collab.text(store.load("pending"))) == "one two"
    store.compact("pending")
    assert str(collab.text(store.load("pending"))) == "one two"


def test_the_server_refuses_garbage_ignores_stray_notifications_and_resyncs(store):
    """A client sending a malformed frame is closed (1007) and nothing is stored; a NOTIFY
    on the channel that is not ours is ignored; the server's listener killed, its clients
    are closed to resync (4000), reconnect by themselves, and edits still converge."""
    import httpx
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    with Supervisor(say=lambda message: None) as supervisor:
        server = collab.start(supervisor, store.database.url, name="collab-guard")
        with (
            collab.Client(server.url("guarded")) as ana,
            collab.Client(server.url("guarded")) as ben,
        ):
            ana.insert(0, "safe")
            converge([ana, ben], ["safe"])
            with connect(server.url("guarded")) as rogue:
                rogue.recv(timeout=10)
                rogue.send(b"\x00garbage\xff\xff")
                with pytest.raises(ConnectionClosed) as closed:
                    rogue.recv(timeout=10)
            assert closed.value.rcvd.code == 1007
            with store.database.connect(autocommit=True) as conn:
                conn.execute("SELECT pg_notify(%s, 'hi')", (collab.CHANNEL,))
                conn.execute(
                    "SELECT pg_notify(%s, %s)", (collab.CHANNEL, '{"doc": "guarded", "id": -1}')
                )
            ben.insert(4, " and sound")
            converge([ana, ben], ["safe and sound"])
            with store.database.connect(autocommit=True) as conn:
                killed = conn.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND query LIKE 'LISTEN%%'"
                ).fetchone()[0]
            assert killed == 1
            ana.insert(0, "still ")
            converge([ana, ben], ["still safe and sound"])
            assert ana.resyncs + ben.resyncs >= 1
            health = httpx.get(f"http://127.0.0.1:{server.port}/health", timeout=10).json()
        assert health["rejected"] == 1 and health["ignored"] >= 1 and health["reconnects"] >= 1
        assert str(collab.text(store.load("guarded"))) == "still safe and sound"
        collab.stop(supervisor, server)
    with pytest.raises(ValueError, match="not a CRDT update"):
        store.append("guarded", b"\x00garbage\xff\xff")
    with pytest.raises(ValueError, match="document name"):
        store.append("x" * 300, collab.new_doc().get_update())
