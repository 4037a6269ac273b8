"""The WebSocket server: ``/docs/{name}?token=...`` (the protocol is in the brief).

1. The token names the tenant; a missing or invalid one is refused (closing before the
   handshake, code 1008, answers HTTP 403).
2. On connecting, the client is sent the whole document: one binary frame.
3. Each binary frame the client sends is one CRDT update; the server answers with a text
   frame ``{"ack": n}`` (n: updates of this connection acknowledged so far).
4. Every update is sent to every client of the same document (a binary frame).
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from labkit.collab import check_name, check_update

from .auth import verify_token
from .store import Store


def create_app(app_url: str, secret: str):
    """The ASGI app, connected to PostgreSQL with ``app_url``."""
    import anyio
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route, WebSocketRoute

    # TODO (R2): rooms keyed by the document's name alone mix tenants: tenant 1's
    # "notes" and tenant 2's "notes" are one room. Key them by (tenant, name).
    rooms: dict[str, set[asyncio.Queue]] = {}
    store = Store(app_url)

    def deliver(name: str, update: bytes) -> None:
        # TODO (R1): this reaches the clients of THIS process only. With two instances
        # behind a load balancer, half the clients never see the other half's edits.
        # Fan out through PostgreSQL: pg_notify in the transaction that stores the
        # update, and a LISTEN task per instance (see labkit.collab for one).
        for queue in list(rooms.get(name, ())):
            queue.put_nowait(("update", update))

    async def health(request):
        return JSONResponse({"rooms": len(rooms)})

    async def document(websocket):
        name = websocket.path_params["name"]
        try:
            tenant_id = verify_token(websocket.query_params.get("token"), secret)
            check_name(name)
        except ValueError as exc:
            await websocket.close(code=1008, reason=str(exc)[:120])
            return
        await websocket.accept()
        queue: asyncio.Queue = asyncio.Queue()
        room = rooms.setdefault(name, set())
        room.add(queue)

        async def send() -> None:
            state = await anyio.to_thread.run_sync(lambda: store.load(tenant_id, name).get_update())
            await websocket.send_bytes(state)
            while True:
                kind, value = await queue.get()
                if kind == "ack":
                    await websocket.send_text(json.dumps({"ack": value}))
                else:
                    await websocket.send_bytes(value)

        async def receive() -> None:
            received = 0
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                try:
                    update = check_update(message.get("bytes"))
                except ValueError as exc:
                    await websocket.close(code=1007, reason=str(exc)[:120])
                    return
                received += 1
                # TODO (R3): this acknowledges the update before it is stored: a server
                # killed now loses an edit the client believes is safe. Ack after COMMIT.
                await queue.put(("ack", received))
                await anyio.to_thread.run_sync(store.append, tenant_id, name, update)
                deliver(name, update)

        tasks = [asyncio.create_task(send()), asyncio.create_task(receive())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            room.discard(queue)
            if not room:
                rooms.pop(name, None)
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task

    return Starlette(routes=[Route("/health", health), WebSocketRoute("/docs/{name}", document)])
