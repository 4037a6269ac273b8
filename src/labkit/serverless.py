"""Serverless functions, run locally the way a platform runs them, and the connection storm.

**The function.** :data:`app` is a small ASGI app (what Vercel-style platforms and uvicorn
call); :func:`handler` is the same app behind the AWS Lambda signature ``(event, context)``,
adapted by mangum, for an API Gateway HTTP API (payload version 2.0) event that
:func:`http_api_event` builds. A :class:`FunctionInstance` is one execution environment: a
process of its own that imports the function once (its *init*, the cold start) and then
answers invocations one at a time, on the path of AWS's Runtime Interface Emulator
(``POST /2015-03-31/functions/function/invocations``). Stopping it and starting another is
a cold start; invoking the same one again is warm.

>>> from labkit.supervisor import Supervisor
>>> import tempfile
>>> with tempfile.TemporaryDirectory() as home, Supervisor(say=lambda m: None) as sup:
...     fn = FunctionInstance(home)
...     _ = sup.up(fn)
...     first = fn.invoke(http_api_event("GET", "/hello"))
...     second = fn.invoke(http_api_event("GET", "/hello"))
>>> first["statusCode"], second["body"]["invocation"], second["body"]["connections_opened"]
(200, 2, 1)

The function's engine is created once per instance, at module level (:func:`get_engine`),
and counts the connections it opens: warm invocations open none.

**The connection storm.** :class:`StormCluster` is a PostgreSQL with a small
``max_connections``; :func:`storm` starts N instances as processes, each with a pool of
its own, against it (as an ordinary role, :meth:`StormCluster.app_url`), and counts the
connections PostgreSQL refuses for want of a slot (``too many clients``, or ``remaining
connection slots are reserved``). The fixes are
measured the same way: one connection per instance (``NullPool``) with a bounded number of
instances at once, and :class:`PgBouncerServer` (transaction pooling) in front.

Nothing here starts at import; the heavy imports (SQLAlchemy, mangum) happen when first
needed, which is what keeps the function's cold start short.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labkit.errors import ServiceError
from labkit.supervisor import HOST, PostgresServer, ProcessServer, Runner, write_private

__all__ = [
    "ADMIN_SHOW",
    "SLOT_ERRORS",
    "STORM_CONNECT_ARGS",
    "FunctionInstance",
    "LambdaContext",
    "PgBouncerServer",
    "StormCluster",
    "StormResult",
    "app",
    "cold_warm",
    "get_engine",
    "handler",
    "http_api_event",
    "import_times",
    "pgbouncer_binary",
    "plot_import_times",
    "plot_phases",
    "plot_storm",
    "storm",
    "storm_report",
    "text_table",
]

#: The environment variable that gives a function its database (a platform's secret).
DATABASE_ENV = "LABKIT_S10_DATABASE_URL"
INVOKE_PATH = "/2015-03-31/functions/function/invocations"
READY_TEXT = "function ready"

# --------------------------------------------------------------------------- the function

#: What one execution environment keeps between invocations (module level: warm reuse).
STATE: dict[str, Any] = {
    "engine": None,
    "connections_opened": 0,
    "invocations": 0,
    "connect_ms": 0.0,
    "adapter": None,
    "import_ms": 0.0,
}


def _timed_import(*names: str) -> None:
    """Import ``names`` (lazily, when an invocation first needs them), adding the time it
    took to the instance's ``import_ms``."""
    import importlib

    started = time.perf_counter()
    for name in names:
        importlib.import_module(name)
    STATE["import_ms"] += (time.perf_counter() - started) * 1000


def _database_url() -> str:
    url = os.environ.get(DATABASE_ENV)
    if not url:
        from labkit import config

        url = config.database_url()
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _count_connect(dbapi_connection: Any, record: Any) -> None:
    STATE["connections_opened"] += 1


def _new_engine(**kwargs: Any):
    _timed_import("sqlalchemy", "sqlalchemy.dialects.postgresql.psycopg", "psycopg")
    from sqlalchemy import create_engine, event

    engine = create_engine(_database_url(), **kwargs)
    event.listen(engine, "connect", _count_connect)
    return engine


def get_engine():
    """The instance's engine: created by the first invocation, reused by every warm one.

    One connection is enough, since an instance serves one request at a time."""
    if STATE["engine"] is None:
        STATE["engine"] = _new_engine(pool_size=1, max_overflow=0, pool_pre_ping=True)
    return STATE["engine"]


def _query(mode: str) -> dict:
    """The invocation's database work: ``mode`` "warm" reuses the module-level engine,
    "per-call" creates and disposes of an engine inside the invocation (the anti-pattern)."""
    engine = get_engine() if mode == "warm" else _new_engine()  # imports SQLAlchemy, timed
    from sqlalchemy import text

    before = STATE["connections_opened"]
    started = time.perf_counter()
    try:
        with engine.connect() as conn:
            connected = time.perf_counter()  # a new connection is opened (and set up) here
            server_pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    finally:
        if mode != "warm":
            engine.dispose()
    elapsed = (time.perf_counter() - started) * 1000
    if STATE["connections_opened"] > before:
        STATE["connect_ms"] = (connected - started) * 1000
    return {"server_pid": server_pid, "db_ms": round(elapsed, 3)}


def _report_rows() -> dict:
    """A rarely used route whose dependency (pandas) is imported only when it is called."""
    import pandas as pd

    frame = pd.DataFrame({"n": [1, 2, 3]})
    return {"total": int(frame["n"].sum())}


async def _send_json(send: Callable, status: int, payload: dict) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def app(scope: dict, receive: Callable, send: Callable) -> None:
    """The function as an ASGI app. Routes: ``GET /hello?mode=warm|per-call`` (one query,
    with the instance's counters) and ``GET /report`` (the lazily imported dependency)."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] != "http":
        return
    from urllib.parse import parse_qs

    STATE["invocations"] += 1
    query = parse_qs(scope.get("query_string", b"").decode())
    path, method = scope["path"], scope["method"]
    if method != "GET":
        await _send_json(send, 405, {"error": f"{method} is not allowed: use GET"})
        return
    if path == "/hello":
        mode = query.get("mode", ["warm"])[0]
        if mode not in ("warm", "per-call"):
            await _send_json(send, 400, {"error": f"mode {mode!r}: use warm or per-call"})
            return
        result = await asyncio.to_thread(_query, mode)
    elif path == "/report":
        result = _report_rows()
    else:
        await _send_json(send, 404, {"error": f"no route {path}: try /hello or /report"})
        return
    await _send_json(
        send,
        200,
        {
            **result,
            "pid": os.getpid(),
            "invocation": STATE["invocations"],
            "connections_opened": STATE["connections_opened"],
            "connect_ms": round(STATE["connect_ms"], 3),
            "import_ms": round(STATE["import_ms"], 3),
            "modules_loaded": len(sys.modules),
        },
    )


def handler(event: dict, context: Any) -> dict:
    """The AWS Lambda entry point: mangum turns the API Gateway event into an ASGI call of
    :data:`app` (the adapter is built once per instance, like the engine)."""
    if STATE["adapter"] is None:
        _timed_import("mangum")
        from mangum import Mangum

        STATE["adapter"] = Mangum(app, lifespan="off", api_gateway_base_path="/")
    return STATE["adapter"](event, context)


@dataclass
class LambdaContext:
    """The context object Lambda passes to a handler (the fields handlers read)."""

    function_name: str = "labkit-s10"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 128
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "/aws/lambda/labkit-s10"
    log_stream_name: str = "local"
    timeout_s: float = 30.0
    _started: float = field(default_factory=time.monotonic)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:local:000000000000:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return int(max(0.0, self.timeout_s - (time.monotonic() - self._started)) * 1000)


def http_api_event(
    method: str, path: str, *, query: dict[str, str] | None = None,
    headers: dict[str, str] | None = None, body: str | None = None,
) -> dict:  # fmt: skip
    """An API Gateway HTTP API event (payload format 2.0), as the platform sends it.

    >>> event = http_api_event("GET", "/hello", query={"mode": "warm"})
    >>> event["version"], event["rawQueryString"], event["requestContext"]["http"]["method"]
    ('2.0', 'mode=warm', 'GET')
    """
    from urllib.parse import urlencode

    if not path.startswith("/"):
        raise ValueError(f"path {path!r} must start with '/' (API Gateway sends absolute paths)")
    now = time.time()
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": urlencode(query or {}),
        "headers": {"host": "local.execute-api", "user-agent": "labkit", **(headers or {})},
        "queryStringParameters": dict(query) if query else None,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "local",
            "domainName": "local.execute-api",
            "domainPrefix": "local",
            "http": {
                "method": method.upper(),
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": HOST,
                "userAgent": "labkit",
            },  # fmt: skip
            "requestId": str(uuid.uuid4()),
            "routeKey": "$default",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        "body": body,
        "isBase64Encoded": False,
    }


# --------------------------------------------------------------------------- one instance


def _serve(port: int, eager: bool) -> None:
    """An execution environment: init (import the function), then one invocation at a time."""
    from http.server import BaseHTTPRequestHandler, HTTPServer

    started = time.perf_counter()
    if eager:  # a function module that imports everything it might need at the top
        import mangum  # noqa: F401
        import pandas  # noqa: F401
        import sqlalchemy  # noqa: F401
    init_ms = (time.perf_counter() - started) * 1000
    init_modules = len(sys.modules)

    class Invocations(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the http.server API)
            if self.path != INVOKE_PATH:
                self.send_error(404, f"invoke {INVOKE_PATH}")
                return
            event = json.loads(self.rfile.read(int(self.headers["content-length"])))
            started = time.perf_counter()
            result = handler(event, LambdaContext())
            result["handlerMs"] = round((time.perf_counter() - started) * 1000, 3)
            result["initMs"] = round(init_ms, 3)
            result["initModules"] = init_modules
            body = json.dumps(result).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer((HOST, port), Invocations)
    print(f"{READY_TEXT} on {HOST}:{port} (init {init_ms:.1f} ms, {len(sys.modules)} modules)",
          flush=True)  # fmt: skip
    server.serve_forever()


class FunctionInstance(ProcessServer):
    """One execution environment of the function: a process of its own (its start is the
    cold start) that answers invocations on the Runtime Interface Emulator's path.

    ``eager=True`` imports every dependency at init, as a module with all its imports at
    the top would; the default imports them when an invocation first needs them."""

    name = "function"
    port_hint = 29100

    def __init__(self, home: Path | str, *, eager: bool = False, database_url: str | None = None) -> None:  # fmt: skip
        env = {DATABASE_ENV: database_url} if database_url else {}

        def command(port: int | None) -> list[str]:
            return [sys.executable, "-m", "labkit.serverless", "serve", "--port", str(port),
                    *(["--eager"] if eager else [])]  # fmt: skip

        super().__init__(home, command, name="function", ready_text=READY_TEXT, env=env)

    def invoke(self, event: dict, timeout: float = 30) -> dict:
        """Invoke the function with ``event``; the result, its JSON body decoded."""
        from urllib.request import Request, urlopen

        port = self.port()
        if self.pid() is None or port is None:
            raise ServiceError(f"{self.name} is not running: start it with supervisor.up(...)")
        request = Request(f"http://{HOST}:{port}{INVOKE_PATH}", data=json.dumps(event).encode(),
                          headers={"content-type": "application/json"}, method="POST")  # fmt: skip
        with urlopen(request, timeout=timeout) as response:
            result = json.loads(response.read())
        with contextlib.suppress(TypeError, ValueError):
            result["body"] = json.loads(result["body"])
        return result


# --------------------------------------------------------------------------- import time


def import_times(statement: str = "import labkit.serverless", python: str | None = None) -> dict[str, float]:  # fmt: skip
    """Milliseconds of import, per top-level package, for ``statement`` run in a fresh
    interpreter under ``python -X importtime`` (self times summed: nothing counted twice).

    >>> times = import_times("import json")
    >>> "json" in times and all(ms >= 0 for ms in times.values())
    True
    """
    out = subprocess.run(
        [python or sys.executable, "-X", "importtime", "-c", statement],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if out.returncode != 0:
        raise ServiceError(f"`{statement}` failed in a fresh interpreter:\n{out.stderr[-2000:]}")
    totals: dict[str, float] = defaultdict(float)
    for line in out.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+)\s+\|\s+(\d+)\s+\|\s+(.+)$", line)
        if match:
            package = match.group(3).strip().split(".")[0]
            totals[package] += int(match.group(1)) / 1000
    return dict(sorted(totals.items(), key=lambda item: -item[1]))


# --------------------------------------------------------------------------- the storm


class StormCluster(PostgresServer):
    """A PostgreSQL cluster of its own with a small ``max_connections`` (the storm's target;
    the course's own server is left alone).

    Applications connect as an ordinary LOGIN role (:attr:`app_user`, password generated at
    run time; :meth:`app_url`), not as the superuser: an ordinary role gets only
    ``max_connections - superuser_reserved_connections - reserved_connections`` slots
    (:meth:`slots`), and past them PostgreSQL answers "remaining connection slots are
    reserved ..." rather than "too many clients"."""

    name = "storm-pg"
    port_hint = 29432
    app_user = "storm_app"

    def __init__(self, home: Path | str, *, max_connections: int = 20, password: str | None = None) -> None:  # fmt: skip
        import secrets

        if max_connections < 5:
            raise ValueError(f"max_connections={max_connections}: use at least 5")
        super().__init__(home, password=password)
        self.max_connections = max_connections
        self.app_password = secrets.token_urlsafe(16)

    def app_url(self, database: str = "postgres") -> str:
        """The URL of the ordinary role the instances (and PgBouncer) log in as."""
        from urllib.parse import quote

        return (f"postgresql://{self.app_user}:{quote(self.app_password, safe='')}"
                f"@{HOST}:{self.port()}/{database}")  # fmt: skip

    def slots(self) -> dict[str, int]:
        """``max_connections``, the slots kept for superusers and for
        ``pg_use_reserved_connections``, and what is left for an ordinary role."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            got = {name: int(conn.execute(query).fetchone()[0]) for name, query in (
                ("max_connections", "SHOW max_connections"),
                ("superuser_reserved_connections", "SHOW superuser_reserved_connections"),
                ("reserved_connections", "SHOW reserved_connections"))}  # fmt: skip
        got["ordinary role"] = (got["max_connections"] - got["superuser_reserved_connections"]
                                - got["reserved_connections"])  # fmt: skip
        return got

    def start(self, port: int) -> None:
        # The last setting in postgresql.conf wins: rewritten at each start, so that a
        # cluster left by an earlier run with another limit gets this one.
        conf = self.data / "postgresql.conf"
        lines = [ln for ln in conf.read_text().splitlines() if not ln.startswith("max_connections = ")]  # fmt: skip
        conf.write_text("\n".join([*lines, f"max_connections = {self.max_connections}", ""]))
        super().start(port)
        self._ensure_app_role(port)

    def _ensure_app_role(self, port: int) -> None:
        """Create (or give a new password to) the ordinary LOGIN role, quoted by psycopg."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url(port), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (self.app_user,)).fetchone()  # fmt: skip
            verb = sql.SQL("ALTER ROLE" if exists else "CREATE ROLE")
            conn.execute(sql.SQL("{} {} LOGIN NOSUPERUSER PASSWORD {}").format(
                verb, sql.Identifier(self.app_user), sql.Literal(self.app_password)))  # fmt: skip


def pgbouncer_binary() -> str:
    """The pgbouncer executable (PATH, then /usr/sbin), or a ServiceError saying how to
    install it."""
    found = shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/local/sbin/pgbouncer") if os.access(p, os.X_OK)), None
    )  # fmt: skip
    if not found:
        raise ServiceError(
            "pgbouncer is not installed. Install it: `sudo apt-get install pgbouncer` (Debian/"
            "Ubuntu), `conda install -c conda-forge pgbouncer`, or `brew install pgbouncer`; "
            "then run this again."
        )
    return found


#: The admin console's SHOW commands :meth:`PgBouncerServer.show` may send (constants).
ADMIN_SHOW = {"POOLS": "SHOW POOLS", "SERVERS": "SHOW SERVERS", "CLIENTS": "SHOW CLIENTS",
              "STATS": "SHOW STATS", "DATABASES": "SHOW DATABASES", "CONFIG": "SHOW CONFIG",
              "VERSION": "SHOW VERSION"}  # fmt: skip


class PgBouncerServer(ProcessServer):
    """PgBouncer in front of a :class:`~labkit.supervisor.PostgresServer`, on 127.0.0.1.

    ``pool_mode="transaction"`` lends a server connection for one transaction only;
    ``pool_size`` server connections per database and user serve up to ``max_client_conn``
    clients. ``databases`` maps extra names (aliases of the upstream ``postgres`` database)
    to their own pool size, e.g. ``{"pinned": 1}`` for a pool of one."""

    name = "pgbouncer"
    port_hint = 29632

    def __init__(
        self, home: Path | str, upstream: PostgresServer, *, pool_mode: str = "transaction",
        pool_size: int = 5, max_client_conn: int = 500, databases: dict[str, int] | None = None,
    ) -> None:  # fmt: skip
        if pool_mode not in ("session", "transaction", "statement"):
            raise ValueError(f"pool_mode {pool_mode!r}: use session, transaction or statement")
        self.upstream = upstream
        self.pool_mode = pool_mode
        self.pool_size = pool_size
        self.max_client_conn = max_client_conn
        self.databases = {"postgres": pool_size, **(databases or {})}
        runner = Runner()  # PgBouncer refuses to run as root: as root it runs as `labkit`

        def command(port: int | None) -> list[str]:
            self._write_config(port)
            return runner.command([pgbouncer_binary(), str(self.ini)])

        super().__init__(home, command, name="pgbouncer", ready_text="process up")
        self.runner = runner

    @property
    def ini(self) -> Path:
        return self.home / "pgbouncer.ini"

    def prepare(self) -> None:
        super().prepare()
        pgbouncer_binary()
        self.runner.ensure_user()
        self.runner.give(self.home)
        os.chmod(self.home, 0o700)

    def _write_config(self, port: int | None) -> None:
        upstream_port = self.upstream.port()
        if self.upstream.pid() is None or upstream_port is None:
            raise ServiceError(f"{self.name}: its PostgreSQL is not running: start it first.")
        users = self.home / "userlist.txt"
        lines = [f'"postgres" "{self.upstream.password}"']
        if self._app_user():
            lines.append(f'"{self._app_user()}" "{self.upstream.app_password}"')
        write_private(users, "\n".join(lines) + "\n")
        self.runner.give(users)
        dbs = "\n".join(
            f"{name} = host={HOST} port={upstream_port} dbname=postgres pool_size={size}"
            for name, size in self.databases.items()
        )
        write_private(
            self.ini,
            f"[databases]\n{dbs}\n\n[pgbouncer]\nlisten_addr = {HOST}\nlisten_port = {port}\n"
            f"unix_socket_dir =\nauth_type = scram-sha-256\nauth_file = {users}\n"
            f"admin_users = postgres\npool_mode = {self.pool_mode}\n"
            f"default_pool_size = {self.pool_size}\nmax_client_conn = {self.max_client_conn}\n"
            "ignore_startup_parameters = extra_float_digits\nserver_lifetime = 3600\n",
        )
        self.runner.give(self.ini)

    def _app_user(self) -> str | None:
        return getattr(self.upstream, "app_user", None)

    def url(self, database: str = "postgres") -> str:
        """A client URL: as the upstream's ordinary role when it has one (a
        :class:`StormCluster`), else as ``postgres``. PgBouncer logs in to PostgreSQL as
        the same role."""
        from urllib.parse import quote

        if self._app_user():
            user, password = self._app_user(), self.upstream.app_password
        else:
            user, password = "postgres", self.upstream.password or ""
        return f"postgresql://{user}:{quote(password, safe='')}@{HOST}:{self.port()}/{database}"

    def admin_url(self) -> str:
        """The admin console (database ``pgbouncer``), as ``postgres`` (``admin_users``)."""
        from urllib.parse import quote

        password = quote(self.upstream.password or "", safe="")
        return f"postgresql://postgres:{password}@{HOST}:{self.port()}/pgbouncer"

    def show(self, what: str = "POOLS") -> list[dict]:
        """The admin console's ``SHOW <what>`` (POOLS, SERVERS, CLIENTS, STATS, CONFIG,
        VERSION) as dicts."""
        import psycopg

        command = ADMIN_SHOW.get(what.upper())
        if command is None:
            raise ValueError(f"SHOW {what}: use one of {', '.join(ADMIN_SHOW)}")
        with psycopg.connect(self.admin_url(), autocommit=True, prepare_threshold=None) as conn:  # fmt: skip
            cursor = conn.execute(command)  # a constant from the allow-list, never built
            names = [column.name for column in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


#: The driver settings of every storm instance (psycopg's ``connect_args``): no server-side
#: prepared statements, so that a transaction pooler without their support works.
STORM_CONNECT_ARGS: dict[str, Any] = {"prepare_threshold": None, "connect_timeout": 10}

#: PostgreSQL's refusals for want of a connection slot (SQLSTATE 53300): every role meets
#: the first; an ordinary role meets the second once only reserved slots are left.
SLOT_ERRORS = ("too many clients", "connection slots are reserved")


@dataclass
class StormResult:
    """What a storm did: connection attempts that worked or were refused for want of a slot
    (``too_many_clients``: SQLSTATE 53300, either message of :data:`SLOT_ERRORS`), how many
    server connections PostgreSQL held at most (sampled), how many instances ran at most at
    once and how many had to wait for a free place (``concurrency``)."""

    label: str
    instances: int
    attempts: int = 0
    ok: int = 0
    too_many_clients: int = 0
    other_errors: int = 0
    peak_server_connections: int = 0
    peak_instances: int = 0
    waited: int = 0
    seconds: float = 0.0
    messages: list[str] = field(default_factory=list)

    def row(self) -> dict:
        return {"setup": self.label, "instances": self.instances, "attempts": self.attempts,
                "ok": self.ok, "refused (no slot)": self.too_many_clients,
                "other errors": self.other_errors,
                "peak server connections": self.peak_server_connections,
                "peak instances at once": self.peak_instances,
                "instances that waited": self.waited,
                "seconds": round(self.seconds, 2)}  # fmt: skip


def _storm_instance(mode: str, pool_size: int, hold_s: float) -> None:
    """One instance of the storm (run as ``python -m labkit.serverless storm-instance``):
    ``pool`` checks out ``pool_size`` connections at once (a handler that fans out);
    ``null`` runs the same queries one after another, a connection each (NullPool). It
    prints one JSON line after its work, then holds what it has until told to end (a line
    on stdin), so that a storm's instances overlap for certain."""
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError
    from sqlalchemy.pool import NullPool

    kwargs: dict[str, Any] = {"connect_args": dict(STORM_CONNECT_ARGS)}
    if mode == "null":
        kwargs["poolclass"] = NullPool
    else:
        kwargs.update(pool_size=pool_size, max_overflow=0)
    engine = _new_engine(**kwargs)
    held: list[Any] = []
    report = {"ok": 0, "too_many_clients": 0, "other_errors": 0, "messages": []}
    lock = threading.Lock()

    def one(keep: bool) -> None:
        try:
            conn = engine.connect()
            conn.execute(text("SELECT pg_sleep(:s)"), {"s": hold_s})
            conn.commit()  # ends the transaction: a transaction pooler may lend the server on
        except OperationalError as exc:
            message = str(exc.orig).strip().splitlines()[0]
            with lock:
                refused = any(text in message for text in SLOT_ERRORS)
                key = "too_many_clients" if refused else "other_errors"
                report[key] += 1
                if message not in report["messages"]:
                    report["messages"].append(message)
            return
        with lock:
            report["ok"] += 1
        if keep:
            held.append(conn)
        else:
            conn.close()

    if mode == "null":
        for _ in range(pool_size):
            one(keep=False)
    else:
        threads = [threading.Thread(target=one, args=(True,)) for _ in range(pool_size)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    print(json.dumps(report), flush=True)
    sys.stdin.readline()
    for conn in held:
        conn.close()
    engine.dispose()


_OTHER_CLIENTS = (
    "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
    "AND pid <> pg_backend_pid()"
)


def _wait_until_quiet(url: str, timeout: float = 30.0) -> None:
    """Wait until the server holds no client connection but this one. A connection closed by
    its client leaves its server process for a moment while it exits; a storm that starts
    right after another would count the first one's leftovers as its own."""
    import psycopg

    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while (count := conn.execute(_OTHER_CLIENTS).fetchone()[0]) > 0:
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"{count} other connection(s) still open on the storm's PostgreSQL after "
                    f"{timeout:.0f} s, so its peak would not be this storm's alone: close them "
                    "(an engine's dispose(), a cell still holding one, a PgBouncer's idle server "
                    "connections: stop it) and run again"
                )
            time.sleep(0.02)


def _peak_sampler(url: str, stop: threading.Event, peak: list[int]) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        while not stop.is_set():
            count = conn.execute(_OTHER_CLIENTS).fetchone()[0]
            peak[0] = max(peak[0], count)
            stop.wait(0.01)


def storm(
    url: str, *, instances: int, pool_size: int = 5, mode: str = "pool",
    concurrency: int | None = None, hold_s: float = 0.05, monitor_url: str | None = None,
    label: str = "", progress: bool = False,
) -> StormResult:  # fmt: skip
    """Start ``instances`` function instances as processes against ``url`` and count what
    their connections met.

    ``mode="pool"``: each instance checks out ``pool_size`` connections at once;
    ``mode="null"``: ``pool_size`` queries one after another, a connection each (NullPool).
    ``concurrency=None`` starts them all at once and lets none end before all have tried (a
    burst of traffic); an integer runs at most that many at a time (the platform's reserved
    concurrency): the others wait for a place, counted in ``waited``. ``monitor_url`` (the
    PostgreSQL itself) samples how many server connections it holds: one more connection,
    counted out of the peak; the storm starts once that server holds no other connection
    (a previous storm's may take a moment to exit). ``progress=True`` prints one line per
    finished instance."""
    if mode not in ("pool", "null"):
        raise ValueError(f"mode {mode!r}: use 'pool' (a pool per instance) or 'null' (NullPool)")
    if instances < 1 or pool_size < 1 or (concurrency is not None and concurrency < 1):
        raise ValueError("instances, pool_size and concurrency must be at least 1")
    from concurrent.futures import ThreadPoolExecutor

    result = StormResult(label or f"{mode} ×{instances}", instances)
    together = concurrency is None
    places = threading.Semaphore(instances if together else concurrency)
    running = [0]
    reported = threading.Semaphore(0)
    release = threading.Event()
    env = {**os.environ, DATABASE_ENV: url}
    argv = [sys.executable, "-m", "labkit.serverless", "storm-instance", mode, str(pool_size), str(hold_s)]  # fmt: skip
    reports: list[dict] = []
    lock = threading.Lock()

    def run_instance(_: int) -> None:
        if not places.acquire(blocking=False):  # every place taken: wait for one
            with lock:
                result.waited += 1
            places.acquire()
        with lock:
            running[0] += 1
            result.peak_instances = max(result.peak_instances, running[0])
        try:
            run_process()
        finally:
            with lock:
                running[0] -= 1
            places.release()

    def run_process() -> None:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
        try:
            line = proc.stdout.readline()
            reported.release()
            if together:
                release.wait(120)
            proc.stdin.write("end\n")
            proc.stdin.flush()
            proc.wait(60)
            try:
                report = json.loads(line)
            except ValueError:
                raise ServiceError(
                    f"a storm instance failed:\n{proc.stderr.read()[-2000:]}"
                ) from None
            with lock:
                reports.append(report)
                if progress:  # one finished line per instance, on stdout (not red in a notebook)
                    print(f"{result.label}: instance {len(reports)}/{instances} done, "
                          f"{report['ok']} connected, {report['too_many_clients']} refused",
                          flush=True)  # fmt: skip
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    stop, peak = threading.Event(), [0]
    sampler = None
    if monitor_url:
        _wait_until_quiet(monitor_url)
        sampler = threading.Thread(
            target=_peak_sampler, args=(monitor_url, stop, peak), daemon=True
        )
        sampler.start()
        time.sleep(0.05)
    started = time.perf_counter()
    try:
        with ThreadPoolExecutor(max_workers=instances) as pool:
            futures = [pool.submit(run_instance, i) for i in range(instances)]
            if together:
                for _ in range(instances):
                    if not reported.acquire(timeout=120):
                        break
                release.set()
            for future in futures:
                future.result()
    finally:
        release.set()
        stop.set()
        if sampler:
            sampler.join(5)
    result.seconds = time.perf_counter() - started
    for report in reports:
        result.ok += report["ok"]
        result.too_many_clients += report["too_many_clients"]
        result.other_errors += report["other_errors"]
        result.messages += [m for m in report["messages"] if m not in result.messages]
    result.attempts = result.ok + result.too_many_clients + result.other_errors
    result.peak_server_connections = peak[0]
    return result


# --------------------------------------------------------------------------- plots


def plot_import_times(times: dict[str, float], *, top: int = 8, title: str = ""):
    """A horizontal bar per top-level package (the ``top`` largest; the rest as "other")."""
    import matplotlib.pyplot as plt

    items = list(times.items())
    shown = items[:top] + [("other", sum(ms for _, ms in items[top:]))]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(shown) + 1))
    ax.barh([name for name, _ in shown][::-1], [ms for _, ms in shown][::-1], color="tab:blue")
    ax.set_xlabel("import time (ms, self time summed per package)")
    ax.set_title(title or f"{sum(times.values()):.0f} ms of imports in a fresh interpreter")
    fig.tight_layout()
    return fig


def plot_phases(phases: dict[str, dict[str, float]], *, unit: str = "ms"):
    """Stacked horizontal bars: for each row (e.g. "cold", "warm"), its phases' durations."""
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(phase for row in phases.values() for phase in row))
    fig, ax = plt.subplots(figsize=(8, 0.6 * len(phases) + 1.2))
    rows = list(phases)[::-1]
    left = [0.0] * len(rows)
    for name in names:
        widths = [phases[row].get(name, 0.0) for row in rows]
        ax.barh(rows, widths, left=left, label=name)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.set_xlabel(unit)
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    return fig


def plot_storm(results: list[StormResult]):
    """Connection attempts that worked against "too many clients" errors, per set-up, with
    the peak number of server connections."""
    import matplotlib.pyplot as plt

    labels = [r.label for r in results]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.2))
    left.bar(labels, [r.ok for r in results], label="connected", color="tab:green")
    left.bar(labels, [r.too_many_clients for r in results], bottom=[r.ok for r in results],
             label='"too many clients"', color="tab:red")  # fmt: skip
    left.set_ylabel("connection attempts")
    left.legend()
    right.bar(labels, [r.peak_server_connections for r in results], color="tab:gray")
    right.set_ylabel("peak PostgreSQL connections")
    for ax in (left, right):
        ax.tick_params(axis="x", labelrotation=15)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- the report


def text_table(rows: list[dict]) -> str:
    """Rows (dicts with the same keys) as a plain-text table, for a terminal."""
    columns = list(rows[0])
    cells = [[f"{row[c]:.1f}" if isinstance(row[c], float) else str(row[c]) for c in columns] for row in rows]  # fmt: skip
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def cold_warm(supervisor: Any, home: Path | str, *, warm_invocations: int = 5) -> list[dict]:
    """One cold start (a new instance: process start, then its first invocation) against the
    median of ``warm_invocations`` warm ones: time and connections opened."""
    from statistics import median

    instance = FunctionInstance(Path(home) / "cold-warm")
    started = time.perf_counter()
    supervisor.up(instance)
    ready_ms = (time.perf_counter() - started) * 1000
    try:
        started = time.perf_counter()
        cold = instance.invoke(http_api_event("GET", "/hello"))["body"]
        cold_ms = (time.perf_counter() - started) * 1000
        warm_ms, last = [], cold
        for _ in range(warm_invocations):
            started = time.perf_counter()
            last = instance.invoke(http_api_event("GET", "/hello"))["body"]
            warm_ms.append((time.perf_counter() - started) * 1000)
    finally:
        supervisor.down(instance)
    return [
        {"invocation": "cold", "connections opened": cold["connections_opened"],
         "ms": ready_ms + cold_ms, "process start ms": ready_ms, "imports ms": cold["import_ms"],
         "connect ms": cold["connect_ms"],
         "rest ms": cold_ms - cold["import_ms"] - cold["connect_ms"]},
        {"invocation": f"warm (median of {warm_invocations})",
         "connections opened": last["connections_opened"] - cold["connections_opened"],
         "ms": median(warm_ms), "process start ms": 0.0, "imports ms": 0.0, "connect ms": 0.0,
         "rest ms": median(warm_ms)},
    ]  # fmt: skip


def storm_report(
    supervisor: Any, home: Path | str, *, max_connections: int = 20, instances: int = 8,
    pool_size: int = 5, concurrency: int = 4, pgbouncer_pool: int = 5,
    say: Callable[[str], None] = print,
) -> list[StormResult]:  # fmt: skip
    """The storm against a fresh :class:`StormCluster`, then its two fixes (the PgBouncer one
    only where PgBouncer is installed: otherwise ``say`` tells how to install it)."""
    import secrets

    cluster = StormCluster(Path(home) / "storm-pg", max_connections=max_connections,
                           password=secrets.token_urlsafe(16))  # fmt: skip
    supervisor.up(cluster)
    url, monitor = cluster.app_url(), cluster.url()  # an ordinary role; the monitor as superuser
    results = [
        storm(url, instances=instances, pool_size=pool_size, monitor_url=monitor,
              label="a pool per instance"),
        storm(url, instances=instances, pool_size=pool_size, mode="null",
              concurrency=concurrency, monitor_url=monitor, label=f"NullPool, <= {concurrency} at once"),
    ]  # fmt: skip
    try:
        bouncer = PgBouncerServer(Path(home) / "pgbouncer", cluster, pool_size=pgbouncer_pool)
        supervisor.up(bouncer)
    except ServiceError as exc:
        say(str(exc))
        return results
    results.append(storm(bouncer.url(), instances=instances, pool_size=pool_size,
                         monitor_url=monitor, label="PgBouncer (transaction)"))  # fmt: skip
    return results


def _report() -> None:
    import tempfile

    from labkit.supervisor import Supervisor

    with tempfile.TemporaryDirectory(prefix="labkit-s10-report-") as home, \
            Supervisor(say=lambda message: None) as supervisor:  # fmt: skip
        os.chmod(home, 0o755)  # PostgreSQL's service user must reach its cluster's folder
        print("Cold against warm (one function instance; the course's PostgreSQL):")
        print(text_table(cold_warm(supervisor, home)))
        print("\nThe connection storm: 8 instances x a pool of 5, max_connections = 20:")
        print(text_table([r.row() for r in storm_report(supervisor, home)]))


def _main(argv: list[str]) -> None:
    if argv[:1] == ["report"]:
        _report()
    elif argv[:1] == ["serve"]:
        _serve(int(argv[argv.index("--port") + 1]), "--eager" in argv)
    elif argv[:1] == ["storm-instance"] and len(argv) == 4:
        _storm_instance(argv[1], int(argv[2]), float(argv[3]))
    else:
        raise SystemExit(
            "usage: python -m labkit.serverless report\n"
            "       python -m labkit.serverless serve --port N [--eager]\n"
            "       python -m labkit.serverless storm-instance pool|null POOL_SIZE HOLD_S"
        )


if __name__ == "__main__":
    _main(sys.argv[1:])
