"""labkit.serverless against real processes and a real PostgreSQL: the Lambda handler and
the ASGI app, cold and warm instances, the connection storm and its two fixes (NullPool with
bounded concurrency; PgBouncer in transaction mode) and what transaction pooling breaks."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import threading
import time

import httpx
import psycopg
import pytest

from labkit import serverless
from labkit.errors import ServiceError
from labkit.serverless import (
    FunctionInstance,
    LambdaContext,
    PgBouncerServer,
    StormCluster,
    http_api_event,
    storm,
)
from labkit.supervisor import AsgiServer, Supervisor

QUIET = {"say": lambda message: None}


def test_handler_answers_an_http_api_event_as_lambda_calls_it():
    """The (event, context) handler: 200 with the instance's counters, 404 and 400 with a
    message that says what to do; the adapter and engine are built once."""
    ok = serverless.handler(http_api_event("GET", "/hello"), LambdaContext())
    again = serverless.handler(http_api_event("GET", "/hello"), LambdaContext())
    assert ok["statusCode"] == 200, ok
    assert '"connections_opened": 1' in again["body"] and '"invocation": 2' not in ok["body"]
    missing = serverless.handler(http_api_event("GET", "/nope"), LambdaContext())
    assert missing["statusCode"] == 404 and "/hello" in missing["body"]
    bad = serverless.handler(http_api_event("GET", "/hello", query={"mode": "x"}), LambdaContext())
    assert bad["statusCode"] == 400 and "warm or per-call" in bad["body"]
    with pytest.raises(ValueError, match="must start with"):
        http_api_event("GET", "hello")
    assert 0 < LambdaContext(timeout_s=3).get_remaining_time_in_millis() <= 3000


def test_cold_and_warm_instances_count_connections():
    """A warm invocation reuses the instance's engine (1 connection for 3 invocations); the
    per-call anti-pattern opens one per invocation; a new instance (cold) starts over."""
    with tempfile.TemporaryDirectory() as home, Supervisor(**QUIET) as sup:
        first = FunctionInstance(f"{home}/a")
        sup.up(first)
        warm = [first.invoke(http_api_event("GET", "/hello"))["body"] for _ in range(3)]
        assert [b["connections_opened"] for b in warm] == [1, 1, 1]
        assert len({b["server_pid"] for b in warm}) == 1
        assert warm[0]["import_ms"] > 0 and warm[0]["connect_ms"] > 0
        per_call = [first.invoke(http_api_event("GET", "/hello", query={"mode": "per-call"}))["body"]
                    for _ in range(2)]  # fmt: skip
        assert [b["connections_opened"] for b in per_call] == [2, 3]
        sup.down(first)
        second = FunctionInstance(f"{home}/b")
        sup.up(second)
        cold = second.invoke(http_api_event("GET", "/hello"))["body"]
        assert cold["invocation"] == 1 and cold["connections_opened"] == 1
        assert cold["pid"] != warm[0]["pid"]
        with pytest.raises(ServiceError, match="not running"):
            first.invoke(http_api_event("GET", "/hello"))


def test_lazy_imports_load_fewer_modules_at_init():
    """An eager instance imports pandas, SQLAlchemy and mangum before its first request; a
    lazy one imports them when a route needs them."""
    with tempfile.TemporaryDirectory() as home, Supervisor(**QUIET) as sup:
        lazy, eager = (
            FunctionInstance(f"{home}/lazy"),
            FunctionInstance(f"{home}/eager", eager=True),
        )
        sup.up(lazy)
        sup.up(eager)
        lazy_init = lazy.invoke(http_api_event("GET", "/hello"))["initModules"]
        eager_init = eager.invoke(http_api_event("GET", "/hello"))["initModules"]
        assert eager_init > lazy_init + 200, (lazy_init, eager_init)
        report = lazy.invoke(http_api_event("GET", "/report"))["body"]
        assert report["total"] == 6 and report["modules_loaded"] > lazy_init + 200
    times = serverless.import_times("import json")
    assert "json" in times
    with pytest.raises(ServiceError, match="failed in a fresh interpreter"):
        serverless.import_times("import no_such_module_here")


def test_the_same_app_served_as_asgi_reuses_its_engine():
    """The ASGI app under uvicorn (a Vercel-style platform): warm requests, one connection."""
    with tempfile.TemporaryDirectory() as home, Supervisor(**QUIET) as sup:
        server = AsgiServer("labkit.serverless:app", f"{home}/asgi")
        port = sup.up(server)
        bodies = [httpx.get(f"http://127.0.0.1:{port}/hello", timeout=30).json() for _ in range(3)]
        assert [b["connections_opened"] for b in bodies] == [1, 1, 1]
        assert [b["invocation"] for b in bodies] == [1, 2, 3]
        assert httpx.post(f"http://127.0.0.1:{port}/hello", timeout=30).status_code == 405


def require_pgbouncer() -> str:
    """PgBouncer, installed from the OS packages when missing and root with apt-get; else
    the test fails and says how to install it (a storm fix that is not measured is not
    shown to work)."""
    try:
        return serverless.pgbouncer_binary()
    except ServiceError:
        pass
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        install = ["apt-get", "install", "-y", "-q", "pgbouncer"]
        if subprocess.run(install, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
            subprocess.run(install, env=env, capture_output=True)
    try:
        return serverless.pgbouncer_binary()
    except ServiceError as exc:
        pytest.fail(f"PgBouncer is needed for the storm's second fix: {exc}", pytrace=False)


@pytest.fixture(scope="module")
def storm_servers():
    """A PostgreSQL with max_connections=10 and a PgBouncer (transaction mode) in front."""
    require_pgbouncer()
    folder = tempfile.TemporaryDirectory(prefix="labkit-test-storm-")
    os.chmod(folder.name, 0o755)  # the service user reaches the cluster's folder
    with Supervisor(**QUIET) as sup:
        cluster = StormCluster(f"{folder.name}/pg", max_connections=10,
                               password=secrets.token_urlsafe(16))  # fmt: skip
        sup.up(cluster)
        bouncer = PgBouncerServer(f"{folder.name}/pgbouncer", cluster, pool_size=4,
                                  databases={"pinned": 1, "pair": 2})  # fmt: skip
        sup.up(bouncer)
        yield cluster, bouncer
    folder.cleanup()


def test_storm_errors_then_each_fix(storm_servers):
    """3 instances × a pool of 5, as an ordinary role, against max_connections=10: the role
    has 10 − 3 (superuser_reserved_connections) slots, so at least 15 − 7 real refusals
    ("remaining connection slots are reserved"); NullPool with 2 instances at a time: 0
    errors, ≤ 2 server connections, the third instance waited; PgBouncer: 0 errors, ≤ 4
    server connections for 15 clients, no instance waited."""
    cluster, bouncer = storm_servers
    slots = cluster.slots()
    assert (slots["max_connections"], slots["ordinary role"]) == (10, 7), slots
    url, monitor = cluster.app_url(), cluster.url()
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT current_user, rolsuper FROM pg_roles "
                            "WHERE rolname = current_user").fetchone() == ("storm_app", False)  # fmt: skip
    burst = storm(url, instances=3, pool_size=5, monitor_url=monitor)
    assert burst.too_many_clients >= 3 * 5 - 7 and burst.attempts == 15
    assert burst.ok <= 7 and burst.other_errors == 0
    assert burst.messages and all(  # "too many clients" or "connection slots are reserved"
        any(text in message for text in serverless.SLOT_ERRORS) for message in burst.messages
    ), burst.messages
    assert (burst.peak_instances, burst.waited) == (3, 0)
    # A connection still open when a storm starts (a previous storm's server process that
    # is still exiting, here one held for 0.5 s) is waited out, not counted in its peak.
    leftover = psycopg.connect(url)
    threading.Timer(0.5, leftover.close).start()
    started = time.monotonic()
    bounded = storm(url, instances=3, pool_size=5, mode="null", concurrency=2, monitor_url=monitor)
    assert bounded.seconds < time.monotonic() - started - 0.4  # it waited for the leftover
    assert (bounded.ok, bounded.too_many_clients, bounded.other_errors) == (15, 0, 0)
    assert 1 <= bounded.peak_server_connections <= 2
    assert (bounded.peak_instances, bounded.waited) == (2, 1)
    pooled = storm(bouncer.url(), instances=3, pool_size=5, monitor_url=monitor)
    assert (pooled.ok, pooled.too_many_clients, pooled.other_errors) == (15, 0, 0)
    assert 1 <= pooled.peak_server_connections <= 4
    assert (pooled.peak_instances, pooled.waited) == (3, 0)
    pools = {row["database"]: row for row in bouncer.show("POOLS")}
    assert (
        pools["postgres"]["pool_mode"] == "transaction" and pools["postgres"]["user"] == "storm_app"
    )
    assert pools["postgres"]["sv_idle"] + pools["postgres"]["sv_active"] <= 4
    with pytest.raises(ValueError, match="mode"):
        storm(url, instances=1, mode="bounded")
    with pytest.raises(ValueError, match="use one of POOLS"):
        bouncer.show("POOLS; SHUTDOWN")


def test_a_storm_refuses_to_start_beside_a_connection_that_stays(storm_servers):
    """A connection that stays open would be counted in the storm's peak: after the wait,
    the error names the cause and what to do."""
    cluster, _ = storm_servers  # PgBouncer may hold idle server connections of its own
    with psycopg.connect(cluster.app_url()):
        with pytest.raises(ServiceError, match=r"[1-9]\d* other connection\(s\) still open.*close"):
            serverless._wait_until_quiet(cluster.url(), timeout=0.3)


def test_transaction_mode_breaks_session_state(storm_servers):
    """Through PgBouncer in transaction mode a SET leaks to another client that gets the
    same server connection, and is lost when the next transaction gets another one; SET
    LOCAL stays inside its transaction."""
    _, bouncer = storm_servers
    options = {"autocommit": True, "prepare_threshold": None}
    with psycopg.connect(bouncer.url("pinned"), **options) as a, \
            psycopg.connect(bouncer.url("pinned"), **options) as b:  # fmt: skip
        a.execute("SET statement_timeout = '1234ms'")
        assert b.execute("SHOW statement_timeout").fetchone()[0] == "1234ms"  # leaked
        a.execute("RESET statement_timeout")
        with a.transaction():
            a.execute("SET LOCAL statement_timeout = '4321ms'")
            assert a.execute("SHOW statement_timeout").fetchone()[0] == "4321ms"
        assert b.execute("SHOW statement_timeout").fetchone()[0] == "0"
    with psycopg.connect(bouncer.url("pair"), **options) as a, \
            psycopg.connect(bouncer.url("pair"), **options) as c:  # fmt: skip
        a.execute("SET statement_timeout = '1234ms'")
        with c.transaction():  # holds the server connection a used
            assert c.execute("SHOW statement_timeout").fetchone()[0] == "1234ms"
            assert a.execute("SHOW statement_timeout").fetchone()[0] == "0"  # lost
        c.execute("RESET statement_timeout")


def test_transaction_mode_breaks_server_side_prepared_statements(storm_servers):
    """PgBouncer 1.18 does not track prepared statements: two clients that prepare on the
    same server connection collide (prepare_threshold=0); prepare_threshold=None works."""
    _, bouncer = storm_servers
    url = bouncer.url("pinned")
    with psycopg.connect(url, autocommit=True, prepare_threshold=0) as a, \
            psycopg.connect(url, autocommit=True, prepare_threshold=0) as b:  # fmt: skip
        assert a.execute("SELECT 1").fetchone() == (1,)
        with pytest.raises(psycopg.errors.DuplicatePreparedStatement):
            b.execute("SELECT 2")
    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as a, \
            psycopg.connect(url, autocommit=True, prepare_threshold=None) as b:  # fmt: skip
        assert [a.execute("SELECT 1").fetchone(), b.execute("SELECT 2").fetchone()] == [(1,), (2,)]
    # prepared on one server connection, executed on the other: it does not exist there
    pair = bouncer.url("pair")
    with psycopg.connect(pair, autocommit=True, prepare_threshold=0) as a, \
            psycopg.connect(pair, autocommit=True, prepare_threshold=None) as c:  # fmt: skip
        assert a.execute("SELECT 1").fetchone() == (1,)  # prepared on the server a got
        with c.transaction():  # c holds that server (the most recently released one)
            c.execute("SELECT 0")
            with pytest.raises(psycopg.errors.InvalidSqlStatementName, match="does not exist"):
                a.execute("SELECT 1")


def test_bad_settings_say_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="at least 5"):
        StormCluster(tmp_path, max_connections=2)
    with pytest.raises(ValueError, match="pool_mode"):
        PgBouncerServer(tmp_path, StormCluster(tmp_path), pool_mode="sometimes")
    with pytest.raises(ValueError, match="at least 1"):
        storm("postgresql://x", instances=0)


def test_cold_warm_table():
    """The report's cold/warm rows: one connection for the cold start, none for warm ones."""
    with tempfile.TemporaryDirectory() as home, Supervisor(**QUIET) as sup:
        cold, warm = serverless.cold_warm(sup, home, warm_invocations=3)
    assert (cold["connections opened"], warm["connections opened"]) == (1, 0)
    assert cold["imports ms"] > 0 and cold["connect ms"] > 0 and warm["imports ms"] == 0
    assert "connections opened" in serverless.text_table([cold, warm]).splitlines()[0]
