"""Edge caching and preview environments.

**Edge caching.** :data:`origin_app` is an origin server (ASGI) whose responses carry
``Cache-Control`` (``s-maxage`` for shared caches, ``stale-while-revalidate``), a strong
``ETag``, and answer a matching ``If-None-Match`` with ``304 Not Modified`` and no body. It
counts every request it receives (``GET /_stats``), so the origin hits a cache saves are
counted, not guessed. :func:`serve_origin` runs it with uvicorn in a process of its own
through the supervisor; :func:`edge_client` is an httpx client behind hishel's RFC 9111
shared cache — what a CDN's edge does between the browser and the origin:

>>> from labkit.supervisor import Supervisor
>>> with Supervisor(say=lambda m: None) as sup, serve_origin(sup) as origin:
...     with edge_client(origin.url) as client:
...         statuses = [client.get("/articles/1").status_code for _ in range(5)]
...     statuses, origin.stats()["requests"]
([200, 200, 200, 200, 200], 1)

**Preview environments.** :func:`preview_database` gives a branch its own database,
copied from a template (``CREATE DATABASE ... TEMPLATE``), and drops it afterwards; both
steps are timed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Origin",
    "PreviewTiming",
    "branch_database_name",
    "cache_control",
    "edge_client",
    "origin_app",
    "origin_hits",
    "preview_database",
    "serve_origin",
]

#: The origin's caching policy, from its environment (so that a test or lesson may set it).
S_MAXAGE_ENV = "LABKIT_EDGE_S_MAXAGE"
SWR_ENV = "LABKIT_EDGE_SWR"

# --------------------------------------------------------------------------- the origin

COUNTS: dict[str, int] = {"requests": 0, "full": 0, "not_modified": 0, "writes": 0}
VERSIONS: dict[str, int] = {}


def cache_control(s_maxage: int, stale_while_revalidate: int = 0, max_age: int = 0) -> str:
    """The ``Cache-Control`` value of a public response that browsers keep ``max_age``
    seconds and shared caches (CDNs) ``s_maxage`` seconds, then may serve stale for
    ``stale_while_revalidate`` more seconds while they revalidate in the background.

    >>> cache_control(60, 30)
    'public, max-age=0, s-maxage=60, stale-while-revalidate=30'
    """
    if min(s_maxage, stale_while_revalidate, max_age) < 0:
        raise ValueError("cache lifetimes are seconds ≥ 0")
    value = f"public, max-age={max_age}, s-maxage={s_maxage}"
    return value + (f", stale-while-revalidate={stale_while_revalidate}" if stale_while_revalidate else "")  # fmt: skip


def etag_of(body: bytes) -> str:
    """A strong entity tag: a quoted digest of the body (same body, same tag).

    >>> etag_of(b"hello")
    '"2cf24dba5fb0a30e"'
    """
    return '"' + hashlib.sha256(body).hexdigest()[:16] + '"'


def _matches(if_none_match: str, etag: str) -> bool:
    tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return "*" in tags or etag in tags


async def _respond(send: Callable, status: int, headers: dict[str, str], body: bytes = b"") -> None:
    raw = [(k.encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def origin_app(scope: dict, receive: Callable, send: Callable) -> None:
    """The origin. ``GET /articles/<id>``: JSON with ``Cache-Control``, ``ETag``, and 304
    for a matching ``If-None-Match``; ``POST /articles/<id>``: a new version (a new ETag);
    ``GET /_stats``: the request counts (not counted themselves)."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    path, method = scope["path"], scope["method"]
    if path == "/_stats":
        await _respond(send, 200, {"content-type": "application/json"}, json.dumps(COUNTS).encode())
        return
    match = re.fullmatch(r"/articles/(\d+)", path)
    if not match:
        await _respond(send, 404, {"content-type": "text/plain"}, b"try /articles/<id>")
        return
    COUNTS["requests"] += 1
    article = match.group(1)
    if method == "POST":
        COUNTS["writes"] += 1
        VERSIONS[article] = VERSIONS.get(article, 0) + 1
        await _respond(send, 204, {"cache-control": "no-store"})
        return
    version = VERSIONS.get(article, 0)
    body = json.dumps({"id": int(article), "version": version, "title": f"Article {article}"}).encode()  # fmt: skip
    etag = etag_of(body)
    policy = cache_control(int(os.environ.get(S_MAXAGE_ENV, "60")), int(os.environ.get(SWR_ENV, "30")))  # fmt: skip
    headers = {"cache-control": policy, "etag": etag}
    request_headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
    if _matches(request_headers.get("if-none-match", ""), etag):
        COUNTS["not_modified"] += 1
        await _respond(send, 304, headers)  # validators and policy, no body
        return
    COUNTS["full"] += 1
    headers.update({"content-type": "application/json", "content-length": str(len(body))})
    await _respond(send, 200, headers, body)


@dataclass
class Origin:
    """A running origin: its URL and request counts; :meth:`stop` (or the end of a ``with``
    block) stops its process."""

    url: str
    process: Any = field(repr=False)
    supervisor: Any = field(repr=False)
    folder: Any = field(repr=False, default=None)

    def stats(self) -> dict[str, int]:
        """What the origin received so far (``requests``, ``full``, ``not_modified``, ``writes``)."""
        import httpx

        return httpx.get(f"{self.url}/_stats", timeout=10).json()

    def stop(self) -> None:
        self.supervisor.down(self.process)
        if self.folder is not None:
            self.folder.cleanup()

    def __enter__(self) -> Origin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_origin(supervisor: Any, *, s_maxage: int = 60, stale_while_revalidate: int = 30) -> Origin:  # fmt: skip
    """Serve :data:`origin_app` with uvicorn in a process of its own (127.0.0.1, a free
    port) through ``supervisor``; stop it with ``origin.stop()``, a ``with`` block, or the
    supervisor (at the latest when the Python process exits)."""
    from labkit.supervisor import HOST, ProcessServer

    folder = tempfile.TemporaryDirectory(prefix="labkit-origin-")
    env = {S_MAXAGE_ENV: str(s_maxage), SWR_ENV: str(stale_while_revalidate)}

    def command(port: int | None) -> list[str]:
        return [sys.executable, "-m", "uvicorn", "labkit.edge:origin_app", "--host", HOST,
                "--port", str(port), "--log-level", "info", "--no-access-log",
                "--lifespan", "off"]  # fmt: skip

    process = ProcessServer(Path(folder.name) / "origin", command, name="origin",
                            ready_text="Uvicorn running on", env=env)  # fmt: skip
    try:
        port = supervisor.up(process)
    except BaseException:
        folder.cleanup()
        raise
    return Origin(f"http://{HOST}:{port}", process, supervisor, folder)


def edge_client(origin_url: str, *, storage_path: str | Path | None = None, shared: bool = True):
    """An httpx client behind hishel's RFC 9111 cache (a shared cache by default: it obeys
    ``s-maxage`` and never stores ``private`` responses), with its own SQLite storage
    (a fresh temporary file unless ``storage_path``). Each response says what the cache
    did in ``response.extensions["caching"]`` (``from_cache``, ``revalidated``, ``stored``)."""
    import hishel
    from hishel.httpx import CacheClient

    if storage_path is None:
        handle, name = tempfile.mkstemp(prefix="labkit-edge-", suffix=".db")
        os.close(handle)
        storage_path = name
    storage = hishel.SqliteStorage(database_path=str(storage_path))
    return CacheClient(base_url=origin_url, storage=storage,
                       rfc=hishel.CacheOptions(shared=shared), timeout=10)  # fmt: skip


def origin_hits(supervisor: Any, *, requests: int = 60, articles: int = 5) -> list[dict]:
    """``requests`` GETs spread over ``articles`` pages, through no cache (plain httpx),
    through hishel with ``s-maxage=60``, and with ``s-maxage=0`` (every reuse revalidated):
    what reached the origin, as the origin counted it."""
    import httpx

    rows = []
    for policy, s_maxage in (("no cache", 60), ("hishel, s-maxage=60", 60), ("hishel, s-maxage=0", 0)):  # fmt: skip
        with serve_origin(supervisor, s_maxage=s_maxage, stale_while_revalidate=0) as origin:
            cached = policy != "no cache"
            client = edge_client(origin.url) if cached else httpx.Client(base_url=origin.url, timeout=10)  # fmt: skip
            with client:
                for i in range(requests):
                    client.get(f"/articles/{i % articles}").raise_for_status()
            seen = origin.stats()
        rows.append({"policy": policy, "requests": requests,
                     "origin hits": seen["requests"], "full responses": seen["full"],
                     "304s": seen["not_modified"], "full responses saved": requests - seen["full"]})  # fmt: skip
    return rows


# --------------------------------------------------------------------------- previews


def branch_database_name(branch: str, prefix: str = "preview_") -> str:
    """A database name for a git branch: lower case, runs of other characters as ``_``,
    cut to fit PostgreSQL's 63 bytes with a short digest that keeps names apart.

    >>> branch_database_name("feature/Add-Login")
    'preview_feature_add_login_dddb1d'
    """
    if not branch.strip():
        raise ValueError("a branch name is needed (e.g. 'feature/login')")
    slug = re.sub(r"[^a-z0-9]+", "_", branch.lower()).strip("_")
    digest = hashlib.sha256(branch.encode()).hexdigest()[:6]
    return f"{prefix}{slug[: 63 - len(prefix) - 7]}_{digest}"


@dataclass
class PreviewTiming:
    """How long a preview database took to create and to drop (seconds)."""

    name: str
    create_s: float = 0.0
    drop_s: float = 0.0


@contextlib.contextmanager
def preview_database(branch: str, template: str) -> Iterator[tuple[Any, PreviewTiming]]:
    """A database for ``branch``, copied from ``template`` (``CREATE DATABASE ...
    TEMPLATE``, identifiers quoted by psycopg.sql), dropped when the block ends; yields
    the :class:`labkit.db.Database` and its :class:`PreviewTiming`.

    The template must have no other session open while it is copied (PostgreSQL's rule)."""
    from psycopg import errors, sql

    from labkit import db

    name = db.qualified_name(branch_database_name(branch))
    timing = PreviewTiming(name)
    create = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template))  # fmt: skip
    with db.connect(autocommit=True) as conn:
        db.drop_database(name, qualified=True, conn=conn)  # left by a crashed run
        started = time.perf_counter()
        try:
            conn.execute(create)
        except errors.ObjectInUse as exc:
            raise RuntimeError(
                f"cannot copy {template!r}: another session is connected to it. Close the "
                "connections to the template (or dispose of their engine) and try again."
            ) from exc
        timing.create_s = time.perf_counter() - started
    try:
        yield db.database(name, qualified=True), timing
    finally:
        with db.connect(autocommit=True) as conn:
            started = time.perf_counter()
            db.drop_database(name, qualified=True, conn=conn)
            timing.drop_s = time.perf_counter() - started


if __name__ == "__main__":
    from labkit.serverless import text_table
    from labkit.supervisor import Supervisor

    with Supervisor(say=lambda message: None) as _supervisor:
        print("Edge cache: 60 requests over 5 articles (origin hits counted by the origin):")
        print(text_table(origin_hits(_supervisor)))
