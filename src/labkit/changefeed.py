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

**Hygiene a production feed needs, here:** ``columns=`` in :func:`install` is an allowlist
(by default ``row`` is every column of the watched row: a password hash would go to every
client); a ``TRUNCATE`` is logged too (op ``TRUNCATE``, row ``{}``: clear your copy), in
commit order; :func:`trim` is the retention job, and a client that resumes from before
what it deleted is closed with code 4001 (load the current state again) rather than sent a
feed with a hole in it; ``origins=`` in :func:`start` refuses WebSocket handshakes from
other sites' pages (cross-site WebSocket hijacking: a browser sends its cookies with
them). **Not here:** authentication of the client and filtering rows by what it may see
(per tenant, e.g. with the row-level security of Step 11).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from labkit.errors import LabkitError

__all__ = [
    "CHANNEL",
    "Change",
    "FeedServer",
    "create_app",
    "horizon",
    "install",
    "since",
    "start",
    "stop",
    "trim",
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
#: Database connections shared by the clients' catch-ups (``LABKIT_FEED_CATCHUPS``):
#: at most this many clients read their backlog at once; the others wait their turn.
CATCHUPS = 10
ENV_CATCHUPS = "LABKIT_FEED_CATCHUPS"
#: Comma-separated origins (``https://app.example.com``) whose pages may connect; a
#: handshake with another ``Origin`` is refused. Unset: any origin (a course server).
ENV_ORIGINS = "LABKIT_FEED_ORIGINS"

_FUNCTION = """
CREATE OR REPLACE FUNCTION labkit_change_feed() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
DECLARE
    changed_table text := TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME;
    change_op text := TG_OP;
    changed_row jsonb;
BEGIN
    IF TG_ARGV[0] = 'ordered' THEN
        -- at COMMIT (a deferred trigger): ids in commit order, one committer at a time
        PERFORM pg_advisory_xact_lock(hashtextextended('labkit_change_feed', 0));
    END IF;
    IF TG_TABLE_NAME = 'change_log_truncates' THEN  -- a TRUNCATE, noted by its own trigger
        changed_table := NEW.table_name;
        change_op := 'TRUNCATE';
        changed_row := '{}';
        DELETE FROM public.change_log_truncates WHERE id = NEW.id;
    ELSE
        changed_row := to_jsonb(CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END);
        IF TG_NARGS > 2 THEN  -- a column allowlist: only these columns leave the database
            SELECT coalesce(jsonb_object_agg(key, value), '{}') INTO changed_row
            FROM jsonb_each(changed_row) WHERE key = ANY (TG_ARGV[2:TG_NARGS - 1]);
        END IF;
    END IF;
    INSERT INTO public.change_log (table_name, op, row_data)
    VALUES (changed_table, change_op, changed_row);
    -- one notification per transaction: identical ones are folded into one
    PERFORM pg_notify(TG_ARGV[1], '');
    RETURN NULL;
END $$;

-- A TRUNCATE fires a statement trigger, which cannot be deferred: it only notes the table
-- here, and the deferred trigger on this table logs it at COMMIT, in commit order.
CREATE OR REPLACE FUNCTION labkit_change_feed_truncate() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
    INSERT INTO public.change_log_truncates (table_name)
    VALUES (TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME);
    RETURN NULL;
END $$;
"""

_TABLES = """
CREATE TABLE IF NOT EXISTS public.change_log (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    table_name text NOT NULL, op text NOT NULL, row_data jsonb NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE TABLE IF NOT EXISTS public.change_log_truncates (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, table_name text NOT NULL);
CREATE TABLE IF NOT EXISTS public.change_log_horizon (
    one boolean PRIMARY KEY DEFAULT true CHECK (one), trimmed_upto bigint NOT NULL);
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


def install(
    conn: Any,
    table: str,
    *,
    ordered: bool = True,
    schema: str = "public",
    columns: Sequence[str] | None = None,
) -> None:
    """Create ``change_log`` and the trigger functions (if missing), and the triggers that
    feed ``schema.table``'s inserts, updates, deletes and TRUNCATEs into them, replacing
    earlier ones. With ``columns``, a change carries only those columns of the row (an
    allowlist: a password hash or an e-mail never leaves the database); a TRUNCATE
    carries ``{}``. ``conn`` is a psycopg connection; names are quoted as identifiers."""
    from psycopg import sql

    if not table or not isinstance(table, str):
        raise ValueError(f"name the table to watch, not {table!r}")
    target = sql.Identifier(schema, table)
    found = [row[0] for row in conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s)"
        " AND attnum > 0 AND NOT attisdropped", (target.as_string(conn),)
    ).fetchall()]  # fmt: skip
    if not found:
        raise ValueError(f"no table {schema}.{table} to watch: create it first")
    if columns is not None:
        unknown = sorted(set(columns) - set(found))
        if unknown or not columns:
            raise ValueError(
                f"columns must name columns of {schema}.{table} (it has {', '.join(found)}); "
                f"unknown: {', '.join(unknown) or 'none given'}"
            )
    conn.execute(_TABLES)
    conn.execute(_FUNCTION)
    mode = sql.Literal("ordered" if ordered else "unordered")
    deferred = sql.SQL("DEFERRABLE INITIALLY DEFERRED" if ordered else "")
    kind = sql.SQL("CONSTRAINT" if ordered else "")
    rows, truncates = (sql.Identifier(f"{table}_change_feed{end}") for end in ("", "_truncate"))
    arguments = sql.SQL(", ").join(
        [mode, sql.Literal(CHANNEL), *(sql.Literal(c) for c in (columns or ()))]
    )
    log_truncates = sql.Identifier("public", "change_log_truncates")
    for trigger, on in ((rows, target), (truncates, target), (sql.Identifier("change_feed_truncates"), log_truncates)):  # fmt: skip
        conn.execute(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(trigger, on))
    conn.execute(
        sql.SQL(
            "CREATE {} TRIGGER {} AFTER INSERT OR UPDATE OR DELETE ON {} {}"
            " FOR EACH ROW EXECUTE FUNCTION labkit_change_feed({})"
        ).format(kind, rows, target, deferred, arguments)
    )
    conn.execute(
        sql.SQL(
            "CREATE TRIGGER {} AFTER TRUNCATE ON {} FOR EACH STATEMENT"
            " EXECUTE FUNCTION labkit_change_feed_truncate()"
        ).format(truncates, target)
    )
    conn.execute(
        sql.SQL(
            "CREATE {} TRIGGER change_feed_truncates AFTER INSERT ON {} {}"
            " FOR EACH ROW EXECUTE FUNCTION labkit_change_feed({}, {})"
        ).format(kind, log_truncates, deferred, mode, sql.Literal(CHANNEL))
    )


def trim(conn: Any, *, older_than_s: float) -> int:
    """Retention: delete the changes logged more than ``older_than_s`` seconds ago (a
    prefix of ids), and remember the highest id deleted, so that the server refuses to
    resume a client from before it (code 4001: load the current state again) instead of
    sending it a feed with a hole. Returns how many changes were deleted. Run it from a
    scheduled job, e.g. daily with a week's retention."""
    row = conn.execute(
        "WITH cut AS (SELECT max(id) AS upto FROM public.change_log"
        "             WHERE changed_at < clock_timestamp() - make_interval(secs => %s)),"
        " gone AS (DELETE FROM public.change_log WHERE id <= (SELECT upto FROM cut) RETURNING id),"
        " moved AS (INSERT INTO public.change_log_horizon (trimmed_upto)"
        "           SELECT upto FROM cut WHERE upto IS NOT NULL"
        "           ON CONFLICT (one) DO UPDATE SET trimmed_upto = greatest("
        "               public.change_log_horizon.trimmed_upto, excluded.trimmed_upto))"
        " SELECT count(*) FROM gone",
        (float(older_than_s),),
    ).fetchone()
    return int(row[0])


def horizon(conn: Any) -> int:
    """The highest id :func:`trim` deleted (0 if none): resuming after a lower id is refused."""
    row = conn.execute("SELECT trimmed_upto FROM public.change_log_horizon").fetchone()
    return int(row[0]) if row else 0


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


class _Trimmed(LabkitError):
    """The client resumes from before the retention horizon: the feed has a hole there."""


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
        self.pool: Any = None  # the catch-ups' connection pool, opened by the lifespan

    async def fetch(self, conn: Any, after: int) -> list[Change]:
        cursor = await conn.execute(
            "SELECT id, table_name, op, row_data FROM public.change_log"
            " WHERE id > %s ORDER BY id LIMIT %s",
            (after, PAGE),
        )
        return [Change(*row) for row in await cursor.fetchall()]

    async def resume_page(self, conn: Any, after: int) -> list[Change]:
        """A page of the changes after ``after``, read in the same snapshot as the
        retention horizon; raises :class:`_Trimmed` if changes after ``after`` were
        deleted (before or while the client catches up)."""
        cursor = await conn.execute(
            "SELECT coalesce((SELECT trimmed_upto FROM public.change_log_horizon), 0),"
            " coalesce((SELECT json_agg(c ORDER BY c.id) FROM (SELECT id, table_name, op,"
            " row_data FROM public.change_log WHERE id > %s ORDER BY id LIMIT %s) c), '[]')",
            (after, PAGE),
        )
        trimmed, rows = await cursor.fetchone()
        if trimmed > after:
            raise _Trimmed(f"changes up to {trimmed} were deleted by the retention job")
        return [Change(r["id"], r["table_name"], r["op"], r["row_data"]) for r in rows]

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
    origins = {o.strip() for o in environ.get(ENV_ORIGINS, "").split(",") if o.strip()}
    catchups = int(environ.get(ENV_CATCHUPS, CATCHUPS))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        from psycopg_pool import AsyncConnectionPool

        from labkit.supervisor import running_until_ready

        # Catch-ups share a small pool: a reconnect storm of N clients waits for a
        # connection instead of opening N at once (and running out of max_connections).
        async with AsyncConnectionPool(
            hub.url, min_size=1, max_size=catchups, kwargs={"autocommit": True}, open=False
        ) as pool:
            hub.pool = pool
            async with running_until_ready(hub.run, hub.ready, f"LISTEN on {ENV_DATABASE}"):
                yield

    async def health(request):
        body = {"clients": len(hub.clients), "last": hub.last, "reconnects": hub.reconnects,
                "too_slow": hub.overflows}  # fmt: skip
        return JSONResponse(body, status_code=200 if hub.ready.is_set() else 503)

    async def changes(websocket):

        origin = websocket.headers.get("origin")
        if origins and origin is not None and origin not in origins:
            # a browser page of another site (cross-site WebSocket hijacking): refused
            await websocket.close(code=1008, reason="origin not allowed")
            return
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
            async with hub.pool.connection() as conn:
                while True:  # ... then catch up from the table, page by page
                    page = await hub.resume_page(conn, last)
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
            failure = tasks[0].exception() if tasks[0] in done else None
            if isinstance(failure, _TooSlow):
                await websocket.close(code=4000, reason="too slow: resume with after=<last id>")
            elif isinstance(failure, _Trimmed):
                await websocket.close(code=4001, reason="resume point trimmed: reload the state")
        finally:
            hub.clients.discard(me)
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(
                    asyncio.CancelledError,
                    WebSocketDisconnect,
                    OSError,
                    _TooSlow,
                    _Trimmed,
                    RuntimeError,
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
    supervisor: Any,
    database_url: str,
    *,
    name: str = "changefeed",
    queue_limit: int | None = None,
    origins: Sequence[str] = (),
    catchups: int = CATCHUPS,
) -> FeedServer:
    """Serve :func:`create_app` with uvicorn in a process of its own through ``supervisor``
    (127.0.0.1, a free port; stopped by :func:`stop` or when the Python process ends)."""
    from labkit.supervisor import serve_app

    env = {ENV_DATABASE: database_url, ENV_QUEUE_LIMIT: str(queue_limit or QUEUE_LIMIT),
           ENV_ORIGINS: ",".join(origins), ENV_CATCHUPS: str(int(catchups))}  # fmt: skip
    served = serve_app(supervisor, "labkit.changefeed:create_app", env, name=name)
    return FeedServer(served.port, served)


def stop(supervisor: Any, server: FeedServer) -> bool:
    """Stop ``server`` and remove its folder; True if it was running."""
    return server.served.stop(supervisor)
