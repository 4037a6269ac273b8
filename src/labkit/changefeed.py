"""Database changes pushed to WebSocket clients: a trigger, ``LISTEN/NOTIFY``, and a feed
that a client can leave and resume without loss or duplicates.

**In PostgreSQL** (:func:`install`): a trigger on each watched table appends every insert,
update and delete to ``change_log`` (the row as JSON) and calls ``pg_notify`` with the new
id. Both are part of the writer's transaction: a notification is delivered at ``COMMIT``,
never before, and not at all after a ``ROLLBACK`` (the row of ``change_log`` is rolled back
with it).

**Ids in commit order.** An identity column hands out ids when a row is inserted, not when
it commits. Two writers, A then B, get ids 1 and 2; if B commits first, a client already
has 2 when 1 appears, and a client resuming "after 2" never sees 1. So with
``ordered=True`` (the default) the trigger is a *deferred constraint trigger*: it runs at
``COMMIT``, takes a transaction-level advisory lock (one per feed), and only then takes its
ids. The lock is held from that moment to the end of the commit, so commits that change
watched tables take their ids one at a time, in commit order. Taking it at commit, after
every row lock the transaction needed, is what keeps it from causing deadlocks: an
ordinary trigger taking it at the first change would make a writer hold it while it waits
for row locks of another writer who waits for it. The price: those commits queue for the
lock (briefly: no user code runs after it). ``ordered=False`` uses an ordinary trigger
without the lock, to show what goes wrong; every table of one feed must be ordered for the
guarantee to hold. What a large system uses instead is logical decoding (``pgoutput``,
Debezium): PostgreSQL's own commit order, read from the WAL, without a lock.

Each committing transaction sends **one** notification (its payload is empty, and
PostgreSQL folds identical notifications of a transaction into one): a bulk update of
10,000 rows wakes the listeners once, and they read the new rows in pages. Notifications
wait in a queue of 8 GB shared by the whole cluster until every listener has read them; a
listener that stops reading fills it, and then every commit that notifies fails
(``pg_notification_queue_usage()`` shows how full it is).

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
WebSocket route, ``/changes?after=<id>``. One connection per server process listens;
on each notification it reads the new rows of ``change_log`` in pages, on one long-lived
connection, and hands them to every connected client. If that connection drops it
reconnects (with a growing pause), listens again and reads everything after the last
id it handed out: the table, not the notifications, is the source of truth. While it is
down, ``/health`` answers 503. A client that connects with ``after`` first joins that live
stream, then is sent the rows after its id from the table, page by page, then the live
rows it has not had yet (compared by id): nothing committed while it connects falls
between the two, and nothing comes twice. A client that reads too slowly (its queue of
:data:`QUEUE_LIMIT` changes is full) is closed with code 4000; it resumes with the last id
it got. Each message is one change as JSON: ``id``, ``table``, ``op``, ``row``.

Not here, and needed in production: authentication and an ``Origin`` check on the
handshake, and a column allowlist (``row`` is every column of the watched row), and a
retention job for ``change_log``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

from labkit.errors import LabkitError

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
#: Changes read per query, when catching up and when woken.
PAGE = 1000
#: Changes a client may have waiting before the server closes it (code 4000) to resume
#: (``LABKIT_FEED_QUEUE_LIMIT`` changes it for a server process).
QUEUE_LIMIT = 10_000
ENV_QUEUE_LIMIT = "LABKIT_FEED_QUEUE_LIMIT"

_FUNCTION = """
CREATE OR REPLACE FUNCTION labkit_change_feed() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
    IF TG_ARGV[0] = 'ordered' THEN
        -- at COMMIT (a deferred trigger): ids in commit order, one committer at a time
        PERFORM pg_advisory_xact_lock(hashtextextended('labkit_change_feed', 0));
    END IF;
    INSERT INTO public.change_log (table_name, op, row_data)
    VALUES (TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, TG_OP,
            to_jsonb(CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END));
    -- one notification per transaction: identical ones are folded into one
    PERFORM pg_notify(TG_ARGV[1], '');
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
    feeds ``table``'s changes (in schema ``public``) into them, replacing an earlier one.
    ``conn`` is a psycopg connection; the table name is quoted as an identifier."""
    from psycopg import sql

    if not table or not isinstance(table, str):
        raise ValueError(f"name the table to watch, not {table!r}")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS public.change_log ("
        " id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
        " table_name text NOT NULL, op text NOT NULL, row_data jsonb NOT NULL,"
        " changed_at timestamptz NOT NULL DEFAULT clock_timestamp())"
    )
    conn.execute(_FUNCTION)
    trigger, target = sql.Identifier(f"{table}_change_feed"), sql.Identifier("public", table)
    conn.execute(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(trigger, target))
    conn.execute(
        sql.SQL(
            "CREATE {} TRIGGER {} AFTER INSERT OR UPDATE OR DELETE ON {} {}"
            " FOR EACH ROW EXECUTE FUNCTION labkit_change_feed({}, {})"
        ).format(
            sql.SQL("CONSTRAINT" if ordered else ""),
            trigger,
            target,
            sql.SQL("DEFERRABLE INITIALLY DEFERRED" if ordered else ""),
            sql.Literal("ordered" if ordered else "unordered"),
            sql.Literal(CHANNEL),
        )
    )


def since(conn: Any, after: int, *, limit: int = 10_000) -> list[Change]:
    """The committed changes with an id above ``after``, in id order (at most ``limit``)."""
    rows = conn.execute(
        "SELECT id, table_name, op, row_data FROM public.change_log"
        " WHERE id > %s ORDER BY id LIMIT %s",
        (int(after), int(limit)),
    ).fetchall()
    return [Change(*row) for row in rows]


# --------------------------------------------------------------------------- the server


class _TooSlow(LabkitError):
    """A client's queue is full: it is closed, to resume with its last id."""


class _Subscriber:
    """One connected client: the changes waiting for it, and whether some were dropped."""

    def __init__(self, limit: int) -> None:
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=limit)
        self.overflowed = False


class _Hub:
    """The server's LISTEN connection (reconnected when lost), fanning each new change out
    to the clients' queues."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.clients: set[_Subscriber] = set()
        self.last = 0
        self.ready = asyncio.Event()
        self.reconnects = 0
        self.overflows = 0

    async def fetch(self, conn: Any, after: int) -> list[Change]:
        cursor = await conn.execute(
            "SELECT id, table_name, op, row_data FROM public.change_log"
            " WHERE id > %s ORDER BY id LIMIT %s",
            (after, PAGE),
        )
        return [Change(*row) for row in await cursor.fetchall()]

    def deliver(self, change: Change) -> None:
        for client in list(self.clients):
            try:
                client.queue.put_nowait(change)
            except asyncio.QueueFull:  # it stops hearing; it is closed once it has read all
                self.clients.discard(client)
                client.overflowed = True
                self.overflows += 1

    async def catch_up(self, conn: Any) -> None:
        while True:
            page = await self.fetch(conn, self.last)
            for change in page:
                self.last = change.id
                self.deliver(change)
            if len(page) < PAGE:
                return

    async def listen_once(self, first: bool) -> None:
        import psycopg
        from psycopg import sql

        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as listen, \
                await psycopg.AsyncConnection.connect(self.url, autocommit=True) as query:  # fmt: skip
            await listen.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
            if first:
                cursor = await query.execute("SELECT coalesce(max(id), 0) FROM public.change_log")
                self.last = (await cursor.fetchone())[0]
            else:  # what was committed while we were away
                await self.catch_up(query)
            self.ready.set()
            async for _ in listen.notifies():
                await self.catch_up(query)

    async def run(self) -> None:
        import psycopg

        pause, first = 0.1, True
        while True:
            try:
                await self.listen_once(first)
            except (psycopg.OperationalError, OSError):
                pass
            self.ready.clear()
            first = False
            self.reconnects += 1
            await asyncio.sleep(pause)
            pause = min(pause * 2, 5.0)


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
    limit = int(environ.get(ENV_QUEUE_LIMIT, QUEUE_LIMIT))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        from labkit.supervisor import running_until_ready

        async with running_until_ready(hub.run, hub.ready, f"LISTEN on {ENV_DATABASE}"):
            yield

    async def health(request):
        body = {"clients": len(hub.clients), "last": hub.last, "reconnects": hub.reconnects,
                "too_slow": hub.overflows}  # fmt: skip
        return JSONResponse(body, status_code=200 if hub.ready.is_set() else 503)

    async def changes(websocket):
        import psycopg

        try:
            after = int(websocket.query_params.get("after", "0"))
        except ValueError:
            await websocket.close(code=1008, reason="after must be an integer id")
            return
        await websocket.accept()
        me = _Subscriber(limit)

        async def send() -> None:
            last = after
            hub.clients.add(me)  # join the live stream first ...
            async with await psycopg.AsyncConnection.connect(hub.url, autocommit=True) as conn:
                while True:  # ... then catch up from the table, page by page
                    page = await hub.fetch(conn, last)
                    for change in page:
                        await websocket.send_text(change.as_json())
                        last = change.id
                    if len(page) < PAGE:
                        break
            while True:
                if me.overflowed and me.queue.empty():
                    raise _TooSlow
                change = await me.queue.get()
                if change.id > last:  # already sent while catching up
                    await websocket.send_text(change.as_json())
                    last = change.id

        async def until_closed() -> None:
            while (await websocket.receive())["type"] != "websocket.disconnect":
                pass  # clients send nothing; a message is ignored

        tasks = [asyncio.create_task(send()), asyncio.create_task(until_closed())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if tasks[0] in done and isinstance(tasks[0].exception(), _TooSlow):
                await websocket.close(code=4000, reason="too slow: resume with after=<last id>")
        finally:
            hub.clients.discard(me)
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(
                    asyncio.CancelledError, WebSocketDisconnect, OSError, _TooSlow, RuntimeError
                ):
                    await task

    return Starlette(
        routes=[Route("/health", health), WebSocketRoute("/changes", changes)], lifespan=lifespan
    )


@dataclass
class FeedServer:
    """One running feed server: its port, URL, and the supervisor's handle."""

    port: int
    served: Any = field(repr=False)

    def url(self, after: int = 0) -> str:
        return f"ws://127.0.0.1:{self.port}/changes?after={int(after)}"

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/health"


def start(
    supervisor: Any, database_url: str, *, name: str = "changefeed", queue_limit: int | None = None
) -> FeedServer:
    """Serve :func:`create_app` with uvicorn in a process of its own through ``supervisor``
    (127.0.0.1, a free port; stopped by :func:`stop` or when the Python process ends)."""
    from labkit.supervisor import serve_app

    env = {ENV_DATABASE: database_url, ENV_QUEUE_LIMIT: str(queue_limit or QUEUE_LIMIT)}
    served = serve_app(supervisor, "labkit.changefeed:create_app", env, name=name)
    return FeedServer(served.port, served)


def stop(supervisor: Any, server: FeedServer) -> bool:
    """Stop ``server`` and remove its folder; True if it was running."""
    return server.served.stop(supervisor)
