"""Collaborative editing: a CRDT document persisted in PostgreSQL, and three ways of
resolving concurrent edits compared on the same edits.

**The document** is a `pycrdt <https://github.com/y-crdt/pycrdt>`_ ``Doc`` (the Python
binding of Yrs, the Rust port of Yjs) holding one ``Text`` named :data:`ROOT`. Every
change a client makes to it is a small binary *update*. Updates are idempotent and
commutative: a document that receives the same updates, in any order and any number of
times, ends with the same text. That is what lets clients edit offline and still converge.

**The store.** :class:`DocStore` appends each update as one row of ``crdt_updates`` and
restores a document from its snapshot (``crdt_snapshots``) plus every update still stored,
read in one ``REPEATABLE READ`` transaction so that a compaction cannot slip between the
two reads. :meth:`DocStore.compact` folds the stored updates into a new snapshot and
deletes exactly the rows it folded, by id. It never deletes "every id up to N": an
identity column hands out ids at ``INSERT``, not at ``COMMIT``, so an update that commits
late can carry a lower id than one already folded, and "up to N" would delete it unseen.
An update appended during a compaction simply stays; applying it again on top of a
snapshot that already holds it changes nothing.

>>> from labkit import db
>>> demo = db.fresh_database("s14_doctest_collab")
>>> store = DocStore(demo)
>>> store.create_tables()
>>> alice, bob = new_doc(), new_doc()
>>> with recording(alice) as sent:
...     text(alice).insert(0, "hello")
>>> for update in sent:
...     _ = store.append("notes", update)
>>> bob.apply_update(store.load("notes").get_update())
>>> with recording(bob) as sent:  # bob edits offline
...     text(bob).insert(5, " world")
>>> with recording(alice) as sent_too:  # and so does alice, at the same moment
...     text(alice).insert(0, "oh, ")
>>> for update in sent + sent_too:
...     _ = store.append("notes", update)
>>> str(text(store.load("notes")))
'oh, hello world'
>>> compaction = store.compact("notes")
>>> compaction.folded, store.stored_updates("notes"), str(text(store.load("notes")))
(3, 0, 'oh, hello world')
>>> db.drop_database("s14_doctest_collab")

**Through a server** (:func:`create_app`, served by :func:`start`): a client opens the
WebSocket ``/docs/<name>`` and is sent the whole document (one update); then every update
it sends is stored and, once committed, sent to every client of that document, on every
server instance. Storing and fanning out share one transaction: the ``INSERT`` and a
``pg_notify`` naming the new row's id, delivered at ``COMMIT``. Each instance listens (``LISTEN``)
and fetches exactly the ids it is notified of (no "everything after the last id" cursor,
which a late commit with a lower id would slip past); an update compacted away before it
was fetched is sent as the whole document, which holds it. A sender gets its own update
back, harmlessly. A client that was offline reconnects, receives the whole document and sends
what the server lacks; :class:`Client` does this for a notebook. The server checks every
frame before storing it (:func:`check_update`: one malformed update stored would make the
document unreadable for everyone) and closes a client that sends garbage (1007); a client
too slow to take its updates, or connected while the server's listener reconnected, is
closed with code 4000 and, reconnecting, gets the whole document again.

**The comparison** (:func:`compare`) runs the same concurrent edits three ways against a
``shared_docs`` row: every client reads the same version, edits its copy, and writes it
back. *Last write wins* (a plain ``UPDATE``) keeps only the last client's edit: the others
are lost updates. *Optimistic locking* (``UPDATE ... WHERE version = %s``) detects each
lost update as a conflict (0 rows updated); the client re-reads and applies its edit again,
so nothing is lost, at the cost of one retry per conflict here (the clients take turns
on one connection; under real concurrency a retry can conflict again). *The CRDT* merges
every client's update: no insert lost, no conflict, no retry, and clients need not be
online. What a CRDT guarantees is that every copy converges to the same text, not that it
is the text anyone meant: two people who retype the same word at once get both versions
side by side, and someone has to read the result.

Not here, and needed in production: authentication and per-document permissions on the
WebSocket handshake, an ``Origin`` check, and a compaction job (nothing calls
:meth:`DocStore.compact` by itself).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from labkit.errors import LabkitError

__all__ = [
    "CHANNEL",
    "MAX_NAME_BYTES",
    "MAX_UPDATE_BYTES",
    "ROOT",
    "Client",
    "CollabServer",
    "Compaction",
    "DocStore",
    "Edit",
    "StrategyResult",
    "check_name",
    "check_update",
    "compare",
    "create_app",
    "new_doc",
    "recording",
    "start",
    "stop",
    "text",
]

#: The name of the document's one shared ``Text``.
ROOT = "body"
#: The notification channel that fans stored updates out to every server instance.
CHANNEL = "labkit_collab"
ENV_DATABASE = "LABKIT_COLLAB_DATABASE_URL"


def new_doc():
    """An empty ``pycrdt.Doc`` (its ``Text`` is :func:`text` of it)."""
    from pycrdt import Doc

    return Doc()


def text(doc):
    """The document's shared ``Text`` (created empty on first use)."""
    from pycrdt import Text

    return doc.get(ROOT, type=Text)


@contextlib.contextmanager
def recording(doc) -> Iterator[list[bytes]]:
    """Collect the updates ``doc`` emits inside the block (what a client sends to the
    server): a list of ``bytes``, filled as the block runs."""
    updates: list[bytes] = []
    subscription = doc.observe(lambda event: updates.append(bytes(event.update)))
    try:
        yield updates
    finally:
        doc.unobserve(subscription)


#: The largest update the store and the server accept (bytes).
MAX_UPDATE_BYTES = 1 << 20
#: The longest document name (bytes of UTF-8): it travels in a NOTIFY payload.
MAX_NAME_BYTES = 200


def check_update(update: Any) -> bytes:
    """``update`` as bytes, if it is one a pycrdt ``Doc`` can decode and not over
    :data:`MAX_UPDATE_BYTES`; ValueError otherwise. Stored unchecked, one malformed update
    would make the document fail to load for everyone."""
    if not isinstance(update, bytes | bytearray | memoryview) or not bytes(update):
        raise ValueError(
            f"an update is the non-empty bytes a pycrdt Doc emits (see recording()), "
            f"not {type(update).__name__}"
        )
    update = bytes(update)
    if len(update) > MAX_UPDATE_BYTES:
        raise ValueError(f"an update of {len(update):,} bytes: at most {MAX_UPDATE_BYTES:,}")
    try:
        new_doc().apply_update(update)
    except ValueError as exc:
        raise ValueError(f"not a CRDT update ({exc})") from None
    return update


def check_name(doc: str) -> str:
    if not doc or len(doc.encode()) > MAX_NAME_BYTES:
        raise ValueError(f"a document name is 1 to {MAX_NAME_BYTES} bytes, not {doc!r}")
    return doc


def _snapshot(parts: list[bytes]) -> bytes:
    """One update equal to ``parts`` together: the integrated document in its compact
    encoding, plus, as they are, the parts still waiting for an earlier update."""
    from pycrdt import get_update, merge_updates

    merged = merge_updates(*parts)
    doc = new_doc()
    text(doc)
    doc.apply_update(merged)
    return merge_updates(doc.get_update(), get_update(merged, doc.get_state()))


@dataclass(frozen=True)
class Compaction:
    """What :meth:`DocStore.compact` did: updates folded, and the bytes stored before and
    after (the snapshot and the updates of the document)."""

    folded: int
    bytes_before: int
    bytes_after: int


class DocStore:
    """CRDT documents in PostgreSQL: an append-only table of updates and a snapshot per
    document (see the module's doc). ``database`` is a :class:`labkit.db.Database`."""

    def __init__(self, database: Any) -> None:
        self.database = database

    def create_tables(self) -> None:
        """``crdt_updates`` and ``crdt_snapshots`` (idempotent)."""
        with self.database.connect(autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS crdt_updates ("
                " id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
                " doc text NOT NULL,"
                " update bytea NOT NULL,"
                " added_at timestamptz NOT NULL DEFAULT now())"
            )
            conn.execute("CREATE INDEX IF NOT EXISTS crdt_updates_doc ON crdt_updates (doc, id)")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS crdt_snapshots ("
                " doc text PRIMARY KEY,"
                " state bytea NOT NULL,"
                " folded bigint NOT NULL DEFAULT 0,"
                " compacted_at timestamptz NOT NULL DEFAULT now())"
            )

    def append(self, doc: str, update: bytes) -> int:
        """Store one update of ``doc`` (checked first: see :func:`check_update`); returns
        its row id."""
        update = check_update(update)
        check_name(doc)
        with self.database.connect() as conn:
            return conn.execute(
                "INSERT INTO crdt_updates (doc, update) VALUES (%s, %s) RETURNING id",
                (doc, bytes(update)),
            ).fetchone()[0]

    def load(self, doc: str):
        """The document restored: its snapshot, then every stored update (a new
        ``pycrdt.Doc``; an unknown ``doc`` is an empty one)."""
        restored = new_doc()
        with self.database.connect() as conn:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            row = conn.execute("SELECT state FROM crdt_snapshots WHERE doc = %s", (doc,)).fetchone()
            updates = conn.execute(
                "SELECT update FROM crdt_updates WHERE doc = %s ORDER BY id", (doc,)
            ).fetchall()
        text(restored)  # the root exists even for an empty document
        if row is not None:
            restored.apply_update(bytes(row[0]))
        for (update,) in updates:
            restored.apply_update(bytes(update))
        return restored

    def stored_updates(self, doc: str) -> int:
        """How many update rows ``doc`` has (0 right after a compaction)."""
        with self.database.connect() as conn:
            return conn.execute(
                "SELECT count(*) FROM crdt_updates WHERE doc = %s", (doc,)
            ).fetchone()[0]

    def stored_bytes(self, doc: str) -> int:
        """Bytes of ``doc``'s snapshot and updates (the values, not the rows' overhead)."""
        with self.database.connect() as conn:
            return conn.execute(
                "SELECT coalesce((SELECT sum(octet_length(update)) FROM crdt_updates"
                " WHERE doc = %s), 0) + coalesce((SELECT octet_length(state)"
                " FROM crdt_snapshots WHERE doc = %s), 0)",
                (doc, doc),
            ).fetchone()[0]

    def compact(self, doc: str) -> Compaction:
        """Fold ``doc``'s stored updates into its snapshot, in one transaction, and delete
        exactly the update rows folded (by id). One compaction per document at a time
        (a transaction-level advisory lock); appends go on meanwhile. An update still
        waiting for an earlier one that is not stored yet (*pending*) is kept in the
        snapshot as it is, and takes effect when that one arrives."""
        before = self.stored_bytes(doc)
        with self.database.connect() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"crdt:{doc}",))
            row = conn.execute(
                "SELECT state, folded FROM crdt_snapshots WHERE doc = %s FOR UPDATE", (doc,)
            ).fetchone()
            rows = conn.execute(
                "SELECT id, update FROM crdt_updates WHERE doc = %s ORDER BY id", (doc,)
            ).fetchall()
            parts = ([bytes(row[0])] if row is not None else []) + [bytes(u) for _, u in rows]
            if not rows:
                return Compaction(0, before, before)
            folded = (row[1] if row is not None else 0) + len(rows)
            conn.execute(
                "INSERT INTO crdt_snapshots (doc, state, folded) VALUES (%s, %s, %s)"
                " ON CONFLICT (doc) DO UPDATE SET state = excluded.state,"
                " folded = excluded.folded, compacted_at = now()",
                (doc, _snapshot(parts), folded),
            )
            conn.execute(
                "DELETE FROM crdt_updates WHERE id = ANY(%s)", ([row_id for row_id, _ in rows],)
            )
        return Compaction(len(rows), before, self.stored_bytes(doc))


# ----------------------------------------------------------------- strategies compared


@dataclass(frozen=True)
class Edit:
    """One client's edit: insert ``word`` right after the first ``after`` in the text (an
    intent, not a character offset: re-applied to a newer text it lands in the same place)."""

    client: str
    after: str
    word: str

    def position(self, body: str) -> int:
        found = body.find(self.after)
        if found < 0:
            raise ValueError(f"{self.client}'s edit goes after {self.after!r}, not in {body!r}")
        return found + len(self.after)

    def apply(self, body: str) -> str:
        at = self.position(body)
        return body[:at] + self.word + body[at:]


@dataclass(frozen=True)
class StrategyResult:
    """One strategy's outcome on the same concurrent edits."""

    strategy: str
    edits: int
    lost_updates: int  # edits whose word is not in the final text
    conflicts: int  # writes refused because someone wrote first
    writes: int  # statements (or updates) sent to the database
    final_text: str


def _lost(edits: Sequence[Edit], final: str) -> int:
    return sum(edit.word not in final for edit in edits)


def _shared_doc(conn, doc_id: int, initial: str) -> None:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS shared_docs ("
        " id int PRIMARY KEY, body text NOT NULL, version int NOT NULL DEFAULT 0)"
    )
    conn.execute(
        "INSERT INTO shared_docs (id, body) VALUES (%s, %s)"
        " ON CONFLICT (id) DO UPDATE SET body = excluded.body, version = 0",
        (doc_id, initial),
    )


def last_write_wins(database: Any, edits: Sequence[Edit], initial: str, doc_id: int = 1):
    """Every client reads the row, edits its copy and writes the whole body back."""
    with database.connect(autocommit=True) as conn:
        _shared_doc(conn, doc_id, initial)
        read = {e.client: conn.execute(
            "SELECT body FROM shared_docs WHERE id = %s", (doc_id,)
        ).fetchone()[0] for e in edits}  # fmt: skip
        for edit in edits:
            conn.execute(
                "UPDATE shared_docs SET body = %s WHERE id = %s",
                (edit.apply(read[edit.client]), doc_id),
            )
        final = conn.execute("SELECT body FROM shared_docs WHERE id = %s", (doc_id,)).fetchone()[0]
    return StrategyResult("last write wins", len(edits), _lost(edits, final), 0, len(edits), final)


def optimistic_locking(database: Any, edits: Sequence[Edit], initial: str, doc_id: int = 1):
    """Every client reads the row and its version, and writes back only if the version is
    unchanged; on a conflict it reads again and applies its edit to the newer text."""
    conflicts = writes = 0
    with database.connect(autocommit=True) as conn:
        _shared_doc(conn, doc_id, initial)
        read = {e.client: conn.execute(
            "SELECT body, version FROM shared_docs WHERE id = %s", (doc_id,)
        ).fetchone() for e in edits}  # fmt: skip
        for edit in edits:
            body, version = read[edit.client]
            while True:
                writes += 1
                done = conn.execute(
                    "UPDATE shared_docs SET body = %s, version = version + 1"
                    " WHERE id = %s AND version = %s",
                    (edit.apply(body), doc_id, version),
                ).rowcount
                if done:
                    break
                conflicts += 1
                body, version = conn.execute(
                    "SELECT body, version FROM shared_docs WHERE id = %s", (doc_id,)
                ).fetchone()
        final = conn.execute("SELECT body FROM shared_docs WHERE id = %s", (doc_id,)).fetchone()[0]
    return StrategyResult(
        "optimistic locking", len(edits), _lost(edits, final), conflicts, writes, final
    )


def crdt_merge(database: Any, edits: Sequence[Edit], initial: str, doc: str = "compare"):
    """Every client starts from the same document, edits its own replica (offline, if it
    likes) and sends its update; the store merges them all."""
    store = DocStore(database)
    store.create_tables()
    with database.connect(autocommit=True) as conn:
        conn.execute("DELETE FROM crdt_updates WHERE doc = %s", (doc,))
        conn.execute("DELETE FROM crdt_snapshots WHERE doc = %s", (doc,))
    origin = new_doc()
    with recording(origin) as first:
        text(origin).insert(0, initial)
    for update in first:
        store.append(doc, update)
    replicas = {}
    for edit in edits:  # everyone reads the same version ...
        replicas[edit.client] = store.load(doc)
    writes = 0
    for edit in edits:  # ... and edits it
        replica = replicas[edit.client]
        at = edit.position(str(text(replica)))
        with recording(replica) as sent:
            text(replica).insert(at, edit.word)
        for update in sent:
            store.append(doc, update)
            writes += 1
    final = str(text(store.load(doc)))
    return StrategyResult("CRDT (pycrdt)", len(edits), _lost(edits, final), 0, writes, final)


def compare(database: Any, edits: Sequence[Edit], initial: str) -> list[StrategyResult]:
    """The three strategies on the same edits (see the module's doc)."""
    if len({edit.word for edit in edits}) != len(edits):
        raise ValueError("give every edit a distinct word, so that a lost one can be counted")
    if len({edit.client for edit in edits}) != len(edits):
        raise ValueError("one edit per client: each client reads once and writes once")
    for edit in edits:
        edit.position(initial)  # every anchor is in the text the clients read
    return [
        last_write_wins(database, edits, initial),
        optimistic_locking(database, edits, initial),
        crdt_merge(database, edits, initial),
    ]


# --------------------------------------------------------------------------- the server


#: Updates a client may have waiting before the server closes it (code 4000); on
#: reconnecting it is sent the whole document, so nothing is lost.
QUEUE_LIMIT = 1000


def create_app(environ: dict[str, str] | None = None):
    """The ASGI app (Starlette): ``/docs/<name>`` (WebSocket, binary updates both ways) and
    ``/health``. Configured by ``LABKIT_COLLAB_DATABASE_URL`` (required); the tables are
    created if missing."""
    import asyncio

    import anyio
    import psycopg
    from psycopg import sql
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocketDisconnect

    environ = dict(os.environ if environ is None else environ)
    url = environ.get(ENV_DATABASE)
    if not url:
        raise RuntimeError(
            f"set {ENV_DATABASE} to the postgresql:// URL of the documents' database"
        )
    rooms: dict[str, set[_Editor]] = {}
    ready = asyncio.Event()
    counts = {"reconnects": 0, "ignored": 0, "rejected": 0}

    def deliver(doc: str, update: bytes) -> None:
        for editor in list(rooms.get(doc, ())):
            try:
                editor.queue.put_nowait(update)
            except asyncio.QueueFull:  # too slow: closed; it gets the whole document back
                editor.resync = True

    async def listen_once() -> None:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as listen, \
                await psycopg.AsyncConnection.connect(url, autocommit=True) as query:  # fmt: skip
            await listen.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
            ready.set()
            async for notify in listen.notifies():
                try:  # anyone who can connect can NOTIFY: check what it says
                    note = json.loads(notify.payload)
                    doc, row_id = str(note["doc"]), int(note["id"])
                except (ValueError, KeyError, TypeError):
                    counts["ignored"] += 1
                    continue
                if not rooms.get(doc):
                    continue  # no client of that document on this instance
                cursor = await query.execute(
                    "SELECT update FROM crdt_updates WHERE id = %s AND doc = %s", (row_id, doc)
                )
                row = await cursor.fetchone()
                if row is not None:
                    deliver(doc, bytes(row[0]))
                else:  # compacted away already (or a forged id): the whole document holds it
                    state = await anyio.to_thread.run_sync(
                        lambda doc=doc: DocStore(_UrlDatabase(url)).load(doc).get_update()
                    )
                    deliver(doc, state)

    async def fan_out() -> None:
        pause = 0.1
        while True:
            try:
                await listen_once()
            except (psycopg.OperationalError, OSError):
                pass
            ready.clear()
            counts["reconnects"] += 1
            # Updates notified while we were away were missed: close every client, which
            # reconnects and is sent the whole document.
            for editor in [e for editors in rooms.values() for e in editors]:
                editor.resync = True
                with contextlib.suppress(asyncio.QueueFull):
                    editor.queue.put_nowait(b"")  # wakes it up
            await asyncio.sleep(pause)
            pause = min(pause * 2, 5.0)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await anyio.to_thread.run_sync(DocStore(_UrlDatabase(url)).create_tables)
        from labkit.supervisor import running_until_ready

        async with running_until_ready(fan_out, ready, f"LISTEN on {ENV_DATABASE}"):
            yield

    async def health(request):
        body = {"rooms": {name: len(editors) for name, editors in rooms.items()}, **counts}
        return JSONResponse(body, status_code=200 if ready.is_set() else 503)

    async def document(websocket):
        name = websocket.path_params["name"]
        try:
            check_name(name)
        except ValueError as exc:
            await websocket.close(code=1008, reason=str(exc)[:120])
            return
        await websocket.accept()
        me = _Editor(asyncio.Queue(maxsize=QUEUE_LIMIT))

        async def relay() -> None:
            rooms.setdefault(name, set()).add(me)  # updates from now on ...
            state = await anyio.to_thread.run_sync(
                lambda: DocStore(_UrlDatabase(url)).load(name).get_update()
            )
            await websocket.send_bytes(state)  # ... and everything before
            while True:
                update = await me.queue.get()
                if me.resync:
                    raise _Resync
                await websocket.send_bytes(update)

        async def store_updates() -> None:
            async with await psycopg.AsyncConnection.connect(url) as conn:
                while True:
                    message = await websocket.receive()
                    if message["type"] == "websocket.disconnect":
                        return
                    try:
                        update = check_update(message.get("bytes"))
                    except ValueError as exc:
                        counts["rejected"] += 1
                        raise _Rejected(str(exc)) from None
                    async with conn.transaction():
                        cursor = await conn.execute(
                            "INSERT INTO crdt_updates (doc, update) VALUES (%s, %s) RETURNING id",
                            (name, update),
                        )
                        note_id = (await cursor.fetchone())[0]
                        note = json.dumps({"id": note_id, "doc": name})
                        await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, note))

        tasks = [asyncio.create_task(relay()), asyncio.create_task(store_updates())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            failure = next((t.exception() for t in done if not t.cancelled()), None)
            if isinstance(failure, _Rejected):
                await websocket.close(code=1007, reason=str(failure)[:120])
            elif isinstance(failure, _Resync):
                await websocket.close(code=4000, reason="reconnect: the document is sent whole")
        finally:
            room = rooms.get(name, set())
            room.discard(me)
            if not room:
                rooms.pop(name, None)
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(
                    asyncio.CancelledError, WebSocketDisconnect, OSError, RuntimeError,
                    _Rejected, _Resync,
                ):  # fmt: skip
                    await task

    return Starlette(
        routes=[Route("/health", health), WebSocketRoute("/docs/{name}", document)],
        lifespan=lifespan,
    )


@dataclass(eq=False)
class _Editor:
    """One connected client: the updates waiting for it, and whether it missed some."""

    queue: Any
    resync: bool = False


class _Rejected(LabkitError):
    """A client sent something that is not an update: it is closed (1007)."""


class _Resync(LabkitError):
    """A client missed updates (too slow, or the listener reconnected): closed (4000)."""


@dataclass(frozen=True)
class _UrlDatabase:
    """A :class:`DocStore` database given by URL (what a server process receives)."""

    url: str

    def connect(self, **kwargs: Any):
        import psycopg

        return psycopg.connect(self.url, **kwargs)


@dataclass
class CollabServer:
    """One running instance: its port, and the supervisor's handle."""

    port: int
    served: Any = field(repr=False)

    def url(self, doc: str) -> str:
        return f"ws://127.0.0.1:{self.port}/docs/{doc}"


def start(supervisor: Any, database_url: str, *, name: str = "collab") -> CollabServer:
    """Serve :func:`create_app` with uvicorn in a process of its own through ``supervisor``
    (127.0.0.1, a free port; stopped by :func:`stop` or when the Python process ends).
    Instances started on the same database share their documents."""
    from labkit.supervisor import serve_app

    served = serve_app(supervisor, "labkit.collab:create_app", {ENV_DATABASE: database_url},
                       name=name)  # fmt: skip
    return CollabServer(served.port, served)


def stop(supervisor: Any, server: CollabServer) -> bool:
    """Stop ``server`` and remove its folder; True if it was running."""
    return server.served.stop(supervisor)


class Client:
    """A notebook's editor of one document on a collab server: a local replica
    (``doc``), edits sent as updates, and what others sent applied when you :meth:`pull`.

    Connecting is a handshake (as y-websocket's sync step): the server sends the whole
    document, and the client answers with everything the server lacks — edits made
    offline, and any update that was lost in flight. A client the server closed to resync
    (code 4000) reconnects by itself in :meth:`pull`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.doc = new_doc()
        text(self.doc)
        self.ws = None
        self._stack: contextlib.ExitStack | None = None
        self.received = 0
        self.resyncs = 0

    @property
    def text(self) -> str:
        return str(text(self.doc))

    def connect(self, timeout: float = 10) -> Client:
        from websockets.sync.client import connect

        stack = contextlib.ExitStack()
        try:
            ws = stack.enter_context(connect(self.url, open_timeout=timeout, max_size=None))
            whole = ws.recv(timeout=timeout)  # the server's document
            server = new_doc()
            server.apply_update(whole)
            self.doc.apply_update(whole)
            missing = self.doc.get_update(server.get_state())  # what the server lacks
            if missing != new_doc().get_update():
                ws.send(missing)
        except BaseException:
            stack.close()
            raise
        self.ws, self._stack = ws, stack
        return self

    def disconnect(self) -> None:
        if self._stack is not None:
            self._stack.close()
        self.ws = self._stack = None

    def insert(self, index: int, value: str) -> None:
        """Insert ``value`` at ``index`` of the text; sent now if online (if not, or if
        it is lost on the way, the next :meth:`connect` sends it)."""
        from websockets.exceptions import ConnectionClosed

        with recording(self.doc) as sent:
            text(self.doc).insert(index, value)
        if self.ws is not None:
            with contextlib.suppress(ConnectionClosed):
                for update in sent:
                    self.ws.send(update)

    def pull(self, timeout: float = 0.2) -> int:
        """Apply every update that arrives within ``timeout`` seconds of the last one;
        returns how many."""
        from websockets.exceptions import ConnectionClosed

        if self.ws is None:
            raise RuntimeError("this client is offline: connect() first")
        count = 0
        while True:
            try:
                update = self.ws.recv(timeout=timeout)
            except TimeoutError:
                return count
            except ConnectionClosed as closed:
                if closed.rcvd is None or closed.rcvd.code != 4000:
                    raise
                self.disconnect()  # the server asks for a resync: the handshake again
                self.resyncs += 1
                self.connect()
                continue
            self.doc.apply_update(update)
            count += 1
            self.received += 1

    def __enter__(self) -> Client:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.disconnect()
