"""Database changes pushed to WebSocket clients: a trigger, ``LISTEN/NOTIFY``, and a feed
that a client can leave and resume without loss or duplicates.

**In PostgreSQL** (:func:`install`): a trigger on each watched table appends every insert,
update and delete to ``change_log`` (the row as JSON) and calls ``pg_notify`` with the new
id. Both are part of the writer's transaction: a notification is delivered at ``COMMIT``,
never before, and not at all after a ``ROLLBACK`` (the row of ``change_log`` is rolled back
with it).

**Ids in commit order.** An identity column hands out ids when a row is inserted, not when
it commits. Two writers, A then B, get ids 1 and 2; if B commits first, a client already
has 2 when 1 appears, and a client resuming "after 2" never sees 1. The trigger therefore
takes a transaction-level advisory lock before it takes an id (``ordered=True``, the
default): a second writer of the feed waits for the first one's ``COMMIT``, so ids are
handed out in commit order. The price is that writers of the watched tables run one at a
time from their first change to their commit, so keep those transactions short.
``ordered=False`` leaves the lock out, to show what goes wrong.

>>> from labkit import db
>>> demo = db.fresh_database("s14_doctest_changefeed")
>>> with demo.connect(autocommit=True) as conn:
...     _ = conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
...     install(conn, "notes")
...     _ = conn.execute("INSERT INTO notes VALUES (1, 'hello')")
...     with conn.transaction(force_rollback=True):
...         _ = conn.execute("INSERT INTO notes VALUES (2, 'never committed')")
...     _ = conn.execute("UPDATE notes SET body = 'hello, world' WHERE id = 1")
...     [(c.op, c.row["body"]) for c in since(conn, 0)]
[('INSERT', 'hello'), ('UPDATE', 'hello, world')]
>>> db.drop_database("s14_doctest_changefeed")

**The server** (:func:`create_app`, served by :func:`start`) is a Starlette app with one
WebSocket route, ``/changes?after=<id>``. One connection per server process ``LISTEN``\\s;
on each notification it reads the new rows of ``change_log`` once and hands them to every
connected client. A client that connects with ``after`` first joins that live stream, then
is sent the rows after its id from the table, then the live rows it has not had yet
(compared by id): nothing committed while it connects falls between the two, and nothing
comes twice. Each message is one change as JSON: ``id``, ``table``, ``op``, ``row``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "CHANNEL",
    "Change",
    "FeedServer",
    "create_app",
    "install",
    "since",
    "start",
    "stop",
]

#: The notification channel of the feed (``pg_notify``'s first argument).
CHANNEL = "labkit_changes"
ENV_DATABASE = "LABKIT_FEED_DATABASE_URL"

_FUNCTION = """
CREATE OR REPLACE FUNCTION labkit_change_feed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    new_id bigint;
BEGIN
    IF TG_ARGV[0] = 'ordered' THEN
        -- ids in commit order: one writer of the feed at a time, until its COMMIT
        PERFORM pg_advisory_xact_lock(hashtextextended('labkit_change_feed', 0));
    END IF;
    INSERT INTO change_log (table_name, op, row_data)
    VALUES (TG_TABLE_NAME, TG_OP,
            to_jsonb(CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END))
    RETURNING id INTO new_id;
    PERFORM pg_notify(TG_ARGV[1], new_id::text);
    RETURN NULL;
END $$
"""


@dataclass(frozen=True)
class Change:
    """One row of ``change_log``: its id, table, operation and the row as a dict."""

    id: int
    table: str
    op: str
    row: dict

    def as_json(self) -> str:
        return json.dumps({"id": self.id, "table": self.table, "op": self.op, "row": self.row})


def install(conn: Any, table: str, *, ordered: bool = True) -> None:
    """Create ``change_log`` and the trigger function (if missing), and the trigger that
    feeds ``table``'s changes into them (replaced if it exists). ``conn`` is a psycopg
    connection; the table name is quoted as an identifier."""
    from psycopg import sql

    if not table or not isinstance(table, str):
        raise ValueError(f"name the table to watch, not {table!r}")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS change_log ("
        " id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
        " table_name text NOT NULL, op text NOT NULL, row_data jsonb NOT NULL,"
        " changed_at timestamptz NOT NULL DEFAULT clock_timestamp())"
    )
    conn.execute(_FUNCTION)
    conn.execute(
        sql.SQL(
            "CREATE OR REPLACE TRIGGER {} AFTER INSERT OR UPDATE OR DELETE ON {}"
            " FOR EACH ROW EXECUTE FUNCTION labkit_change_feed({}, {})"
        ).format(
            sql.Identifier(f"{table}_change_feed"),
            sql.Identifier(table),
            sql.Literal("ordered" if ordered else "unordered"),
            sql.Literal(CHANNEL),
        )
    )


def since(conn: Any, after: int, *, limit: int = 10_000) -> list[Change]:
    """The committed changes with an id above ``after``, in id order (at most ``limit``)."""
    rows = conn.execute(
        "SELECT id, table_name, op, row_data FROM change_log WHERE id > %s ORDER BY id LIMIT %s",
        (int(after), int(limit)),
    ).fetchall()
    return [Change(*row) for row in rows]


# --------------------------------------------------------------------------- the server


class _Hub:
    """The server's one LISTEN connection, fanning each new change out to the clients."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.clients: set[asyncio.Queue] = set()
        self.last = 0
        self.ready = asyncio.Event()

    async def fetch(self, after: int) -> list[Change]:
        import psycopg

        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
            cursor = await conn.execute(
                "SELECT id, table_name, op, row_data FROM change_log"
                " WHERE id > %s ORDER BY id LIMIT 10000",
                (after,),
            )
            return [Change(*row) for row in await cursor.fetchall()]

    async def run(self) -> None:
        import psycopg
        from psycopg import sql

        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as listen:
            await listen.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
            cursor = await listen.execute("SELECT coalesce(max(id), 0) FROM change_log")
            self.last = (await cursor.fetchone())[0]
            self.ready.set()
            async for _ in listen.notifies():
                for change in await self.fetch(self.last):
                    self.last = change.id
                    for queue in list(self.clients):
                        queue.put_nowait(change)


def create_app(environ: dict[str, str] | None = None):
    """The ASGI app (Starlette): ``/changes?after=<id>`` (WebSocket) and ``/health``.
    Configured by ``LABKIT_FEED_DATABASE_URL`` (a postgresql:// URL, required)."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocketDisconnect

    environ = dict(os.environ if environ is None else environ)
    if not environ.get(ENV_DATABASE):
        raise RuntimeError(f"set {ENV_DATABASE} to the postgresql:// URL of the watched database")
    hub = _Hub(environ[ENV_DATABASE])

    @contextlib.asynccontextmanager
    async def lifespan(app):
        task = asyncio.create_task(hub.run())
        await asyncio.wait([task, asyncio.create_task(hub.ready.wait())], timeout=30,
                           return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        if task.done():
            task.result()  # the LISTEN connection failed: say why
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def health(request):
        return JSONResponse({"clients": len(hub.clients), "last": hub.last})

    async def changes(websocket):
        try:
            after = int(websocket.query_params.get("after", "0"))
        except ValueError:
            await websocket.close(code=1008, reason="after must be an integer id")
            return
        await websocket.accept()
        queue: asyncio.Queue = asyncio.Queue()
        hub.clients.add(queue)  # join the live stream first ...

        async def send() -> None:
            last = after
            for change in await hub.fetch(after):  # ... then catch up from the table
                await websocket.send_text(change.as_json())
                last = change.id
            while True:
                change = await queue.get()
                if change.id > last:  # already sent while catching up
                    await websocket.send_text(change.as_json())
                    last = change.id

        async def until_closed() -> None:
            while (await websocket.receive())["type"] != "websocket.disconnect":
                pass  # clients send nothing; a message is ignored

        tasks = [asyncio.create_task(send()), asyncio.create_task(until_closed())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            hub.clients.discard(queue)
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, OSError):
                    await task

    return Starlette(
        routes=[Route("/health", health), WebSocketRoute("/changes", changes)], lifespan=lifespan
    )


@dataclass
class FeedServer:
    """One running feed server: its port, URL, and the supervisor's handle."""

    port: int
    process: Any = field(repr=False)
    folder: Any = field(repr=False)

    def url(self, after: int = 0) -> str:
        return f"ws://127.0.0.1:{self.port}/changes?after={int(after)}"


def start(supervisor: Any, database_url: str, *, name: str = "changefeed") -> FeedServer:
    """Serve :func:`create_app` with uvicorn in a process of its own through ``supervisor``
    (127.0.0.1, a free port; stopped by :func:`stop` or when the Python process ends)."""
    import tempfile

    from labkit.supervisor import HOST, ProcessServer

    folder = tempfile.TemporaryDirectory(prefix=f"labkit-{name}-")

    def command(port: int | None) -> list[str]:
        return [sys.executable, "-m", "uvicorn", "labkit.changefeed:create_app", "--factory",
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
    return FeedServer(port, process, folder)


def stop(supervisor: Any, server: FeedServer) -> bool:
    """Stop ``server`` and remove its folder; True if it was running."""
    stopped = supervisor.down(server.process)
    server.folder.cleanup()
    return stopped
