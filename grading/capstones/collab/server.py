"""The WebSocket server: ``/docs/{name}?token=...``.

The protocol (the acceptance suite's clients speak it):

1. The token names the tenant (see :mod:`.auth`); a missing or forged one is refused (HTTP 403 at the handshake).
2. On connecting, the client is sent the whole document: one binary frame.
3. Each binary frame the client sends is one CRDT update. Once it is committed, the server
   answers with a text frame ``{"ack": n}`` (n: updates of this connection committed so far).
4. Every committed update of the same tenant's document is sent to every client of that
   document, on every server instance: a binary frame (the sender gets its own back).

Fan-out: the ``INSERT`` and a ``pg_notify`` share one transaction, so the notification
leaves at ``COMMIT`` and never for an update that rolled back. Each instance ``LISTEN``s,
fetches the notified row as the notified tenant (row-level security checks the pair), and
delivers it to its clients of that tenant's document: rooms are keyed by (tenant, doc).
The notification carries the row's id, not the update (a payload holds 8,000 bytes at
most). A lost LISTEN connection loses the notifications sent while it was down: after
reconnecting, every open room gets its whole document again (a CRDT merge is idempotent).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field

from labkit.collab import check_name, check_update

from .auth import verify_token
from .schema import TENANT_SETTING
from .store import CHANNEL, INSERT, Store, notice

QUEUE_LIMIT = 10_000
POOL_SIZE = 10


@dataclass(eq=False)
class Editor:
    """One connected client: what waits to be sent to it (updates and acks)."""

    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(maxsize=QUEUE_LIMIT))
    overflowed: bool = False


def create_app(app_url: str, secret: str):
    """The ASGI app, connected to PostgreSQL as the app's role (``app_url``)."""
    import anyio
    import psycopg
    from psycopg import sql
    from psycopg_pool import AsyncConnectionPool
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route, WebSocketRoute

    # One small pool per instance: a connection per WebSocket would hit max_connections.
    pool = AsyncConnectionPool(app_url, min_size=1, max_size=POOL_SIZE, open=False)
    rooms: dict[tuple[int, str], set[Editor]] = {}
    ready = asyncio.Event()
    store = Store(app_url)

    def deliver(tenant_id: int, doc: str, update: bytes) -> None:
        for editor in list(rooms.get((tenant_id, doc), ())):
            try:
                editor.queue.put_nowait(("update", update))
            except asyncio.QueueFull:
                editor.overflowed = True

    async def catch_up() -> None:
        """After a lost LISTEN connection, send every open room its whole document (a CRDT
        merge ignores what a client already has)."""
        for tenant_id, doc in list(rooms):
            state = await anyio.to_thread.run_sync(
                lambda t=tenant_id, d=doc: store.load(t, d).get_update()
            )
            deliver(tenant_id, doc, state)

    async def listen() -> None:
        listened = False
        while True:
            with contextlib.suppress(psycopg.OperationalError, OSError):
                async with await psycopg.AsyncConnection.connect(app_url, autocommit=True) as lst, \
                        await psycopg.AsyncConnection.connect(app_url) as query:  # fmt: skip
                    await lst.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
                    if listened:
                        await catch_up()  # what was notified while nobody listened is gone
                    listened = True
                    ready.set()
                    async for note in lst.notifies():
                        try:
                            payload = json.loads(note.payload)
                            tenant_id, doc = int(payload["tenant"]), str(payload["doc"])
                            row_id = int(payload["id"])
                        except (ValueError, KeyError, TypeError):
                            continue
                        if not rooms.get((tenant_id, doc)):
                            continue
                        async with query.transaction():
                            await query.execute(
                                "SELECT set_config(%s, %s, true)", (TENANT_SETTING, str(tenant_id))
                            )
                            cursor = await query.execute(
                                "SELECT update FROM doc_updates WHERE id = %s AND doc = %s",
                                (row_id, doc),
                            )
                            row = await cursor.fetchone()
                        if row is not None:
                            deliver(tenant_id, doc, bytes(row[0]))
            ready.clear()
            await asyncio.sleep(0.2)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await pool.open()
        task = asyncio.create_task(listen())
        await asyncio.wait_for(ready.wait(), timeout=30)
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await pool.close()

    async def health(request):
        return JSONResponse({"rooms": len(rooms)}, status_code=200 if ready.is_set() else 503)

    async def document(websocket):
        name = websocket.path_params["name"]
        try:
            tenant_id = verify_token(websocket.query_params.get("token"), secret)
            check_name(name)
        except ValueError as exc:
            await websocket.close(code=1008, reason=str(exc)[:120])
            return
        await websocket.accept()
        me = Editor()
        room = rooms.setdefault((tenant_id, name), set())
        room.add(me)  # updates from now on ...

        async def send() -> None:
            state = await anyio.to_thread.run_sync(lambda: store.load(tenant_id, name).get_update())
            await websocket.send_bytes(state)  # ... and everything before
            while True:
                kind, value = await me.queue.get()
                if me.overflowed:
                    await websocket.close(code=4000, reason="too slow: reconnect")
                    return
                if kind == "ack":
                    await websocket.send_text(json.dumps({"ack": value}))
                else:
                    await websocket.send_bytes(value)

        async def receive() -> None:
            committed = 0
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                try:
                    update = check_update(message.get("bytes"))
                except ValueError as exc:
                    await websocket.close(code=1007, reason=str(exc)[:120])
                    return
                async with pool.connection() as conn:
                    async with conn.transaction():
                        await conn.execute(
                            "SELECT set_config(%s, %s, true)", (TENANT_SETTING, str(tenant_id))
                        )
                        cursor = await conn.execute(INSERT, (tenant_id, name, update))
                        row_id = (await cursor.fetchone())[0]
                        await conn.execute(
                            "SELECT pg_notify(%s, %s)", (CHANNEL, notice(tenant_id, name, row_id))
                        )
                    committed += 1  # acknowledged only once committed
                    await me.queue.put(("ack", committed))

        tasks = [asyncio.create_task(send()), asyncio.create_task(receive())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            room.discard(me)
            if not room:
                rooms.pop((tenant_id, name), None)
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task

    return Starlette(
        routes=[Route("/health", health), WebSocketRoute("/docs/{name}", document)],
        lifespan=lifespan,
    )
