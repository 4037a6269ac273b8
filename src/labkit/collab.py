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
the updates it made meanwhile; :class:`Client` does this for a notebook.

**The comparison** (:func:`compare`) runs the same concurrent edits three ways against a
``shared_docs`` row: every client reads the same version, edits its copy, and writes it
back. *Last write wins* (a plain ``UPDATE``) keeps only the last client's edit: the others
are lost updates. *Optimistic locking* (``UPDATE ... WHERE version = %s``) detects each
lost update as a conflict (0 rows updated); the client re-reads and applies its edit again,
so nothing is lost, at the cost of one retry per conflict. *The CRDT* merges every
client's update: nothing lost, no conflict, no retry, and clients need not be online.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CHANNEL",
    "ROOT",
    "Client",
    "CollabServer",
    "Compaction",
    "DocStore",
    "Edit",
    "StrategyResult",
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
        """Store one update of ``doc``; returns its row id."""
        if not isinstance(update, bytes | bytearray | memoryview) or not bytes(update):
            raise ValueError(
                f"an update is the non-empty bytes a pycrdt Doc emits (see recording()), "
                f"not {type(update).__name__}"
            )
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
        (a transaction-level advisory lock); appends go on meanwhile."""
        before = self.stored_bytes(doc)
        with self.database.connect() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"crdt:{doc}",))
            row = conn.execute(
                "SELECT state, folded FROM crdt_snapshots WHERE doc = %s FOR UPDATE", (doc,)
            ).fetchone()
            rows = conn.execute(
                "SELECT id, update FROM crdt_updates WHERE doc = %s ORDER BY id", (doc,)
            ).fetchall()
            merged = new_doc()
            text(merged)
            if row is not None:
                merged.apply_update(bytes(row[0]))
            for _, update in rows:
                merged.apply_update(bytes(update))
            folded = (row[1] if row is not None else 0) + len(rows)
            conn.execute(
                "INSERT INTO crdt_snapshots (doc, state, folded) VALUES (%s, %s, %s)"
                " ON CONFLICT (doc) DO UPDATE SET state = excluded.state,"
                " folded = excluded.folded, compacted_at = now()",
                (doc, merged.get_update(), folded),
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
    for edit in edits:  # ... and edits it
        replica = replicas[edit.client]
        at = edit.position(str(text(replica)))
        with recording(replica) as sent:
            text(replica).insert(at, edit.word)
        for update in sent:
            store.append(doc, update)
    final = str(text(store.load(doc)))
    return StrategyResult("CRDT (pycrdt)", len(edits), _lost(edits, final), 0, len(edits), final)


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
    rooms: dict[str, set[asyncio.Queue]] = {}
    ready = asyncio.Event()

    async def fan_out() -> None:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as listen, \
                await psycopg.AsyncConnection.connect(url, autocommit=True) as query:  # fmt: skip
            await listen.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
            ready.set()
            async for notify in listen.notifies():
                note = json.loads(notify.payload)
                if not rooms.get(note["doc"]):
                    continue  # no client of that document on this instance
                cursor = await query.execute(
                    "SELECT update FROM crdt_updates WHERE id = %s", (note["id"],)
                )
                row = await cursor.fetchone()
                if row is not None:
                    update = bytes(row[0])
                else:  # compacted away already: send the whole document, which holds it
                    update = await anyio.to_thread.run_sync(
                        lambda doc=note["doc"]: DocStore(_UrlDatabase(url)).load(doc).get_update()
                    )
                for queue in list(rooms.get(note["doc"], ())):
                    queue.put_nowait(update)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await anyio.to_thread.run_sync(DocStore(_UrlDatabase(url)).create_tables)
        task = asyncio.create_task(fan_out())
        await asyncio.wait([task, asyncio.create_task(ready.wait())], timeout=30,
                           return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        if task.done():
            task.result()  # the LISTEN connection failed: say why
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def health(request):
        return JSONResponse({name: len(queues) for name, queues in rooms.items()})

    async def document(websocket):
        name = websocket.path_params["name"]
        await websocket.accept()
        queue: asyncio.Queue = asyncio.Queue()
        rooms.setdefault(name, set()).add(queue)  # updates from now on ...
        store = DocStore(_UrlDatabase(url))
        state = await anyio.to_thread.run_sync(lambda: store.load(name).get_update())
        await websocket.send_bytes(state)  # ... and everything before

        async def relay() -> None:
            while True:
                await websocket.send_bytes(await queue.get())

        async def store_updates() -> None:
            async with await psycopg.AsyncConnection.connect(url) as conn:
                while True:
                    message = await websocket.receive()
                    if message["type"] == "websocket.disconnect":
                        return
                    update = message.get("bytes")
                    if not update:
                        continue  # text frames are not updates
                    async with conn.transaction():
                        cursor = await conn.execute(
                            "INSERT INTO crdt_updates (doc, update) VALUES (%s, %s) RETURNING id",
                            (name, update),
                        )
                        row_id = (await cursor.fetchone())[0]
                        note = json.dumps({"id": row_id, "doc": name})
                        await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, note))

        tasks = [asyncio.create_task(relay()), asyncio.create_task(store_updates())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            rooms[name].discard(queue)
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, OSError):
                    await task

    return Starlette(
        routes=[Route("/health", health), WebSocketRoute("/docs/{name}", document)],
        lifespan=lifespan,
    )


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
    process: Any = field(repr=False)
    folder: Any = field(repr=False)

    def url(self, doc: str) -> str:
        return f"ws://127.0.0.1:{self.port}/docs/{doc}"


def start(supervisor: Any, database_url: str, *, name: str = "collab") -> CollabServer:
    """Serve :func:`create_app` with uvicorn in a process of its own through ``supervisor``
    (127.0.0.1, a free port; stopped by :func:`stop` or when the Python process ends).
    Instances started on the same database share their documents."""
    import sys
    import tempfile
    from pathlib import Path

    from labkit.supervisor import HOST, ProcessServer

    folder = tempfile.TemporaryDirectory(prefix=f"labkit-{name}-")

    def command(port: int | None) -> list[str]:
        return [sys.executable, "-m", "uvicorn", "labkit.collab:create_app", "--factory",
                "--host", HOST, "--port", str(port), "--log-level", "info", "--no-access-log",
                "--ws", "websockets-sansio"]  # fmt: skip

    process = ProcessServer(
        Path(folder.name) / name, command, name=name, ready_text="Uvicorn running on",
        env={ENV_DATABASE: database_url},
    )  # fmt: skip
    try:
        port = supervisor.up(process)
    except BaseException:
        folder.cleanup()
        raise
    return CollabServer(port, process, folder)


def stop(supervisor: Any, server: CollabServer) -> bool:
    """Stop ``server`` and remove its folder; True if it was running."""
    stopped = supervisor.down(server.process)
    server.folder.cleanup()
    return stopped


class Client:
    """A notebook's editor of one document on a collab server: a local replica
    (``doc``), edits sent as updates, and what others sent applied when you :meth:`pull`.

    Offline editing: :meth:`disconnect`, edit (updates are kept), :meth:`connect` again —
    the whole document arrives and the kept updates are sent."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.doc = new_doc()
        text(self.doc)
        self.ws = None
        self.unsent: list[bytes] = []
        self.received = 0

    @property
    def text(self) -> str:
        return str(text(self.doc))

    def connect(self, timeout: float = 10) -> Client:
        from websockets.sync.client import connect

        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(connect(self.url, open_timeout=timeout))
        self.doc.apply_update(self.ws.recv(timeout=timeout))  # the whole document
        pending, self.unsent = self.unsent, []
        for update in pending:
            self.ws.send(update)
        return self

    def disconnect(self) -> None:
        if self.ws is not None:
            self._stack.close()
            self.ws = None

    def insert(self, index: int, value: str) -> None:
        """Insert ``value`` at ``index`` of the text; sent now, or on reconnecting."""
        with recording(self.doc) as sent:
            text(self.doc).insert(index, value)
        for update in sent:
            if self.ws is None:
                self.unsent.append(update)
            else:
                self.ws.send(update)

    def pull(self, timeout: float = 0.2) -> int:
        """Apply every update that arrives within ``timeout`` seconds of the last one;
        returns how many."""
        if self.ws is None:
            raise RuntimeError("this client is offline: connect() first")
        count = 0
        while True:
            try:
                update = self.ws.recv(timeout=timeout)
            except TimeoutError:
                return count
            self.doc.apply_update(update)
            count += 1
            self.received += 1

    def __enter__(self) -> Client:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.disconnect()
