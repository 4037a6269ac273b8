"""labkit.course.services against real servers, in throwaway state folders (the course's own
servers are never touched): up/down, idempotence, crash recovery, port conflicts, URL
override, and clear errors."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import pytest
import redis

from labkit import config
from labkit.course.services import ServiceError, Services, mask_url

pytestmark = pytest.mark.xdist_group("services")


@pytest.fixture
def state(monkeypatch):
    """A fresh state folder, reachable by the service user when we run as root."""
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    folder = Path(tempfile.mkdtemp(prefix="labkit-test-"))
    os.chmod(folder, 0o755)
    services = Services(folder, quiet=True)
    yield services
    services.down()
    shutil.rmtree(folder, ignore_errors=True)


def urls(services: Services) -> dict[str, str]:
    return config.read_env_file(services.env_file)


def test_up_starts_both_and_writes_urls(state):
    """`up` starts PostgreSQL (with pg_stat_statements) and Redis, on loopback, and writes URLs."""
    result = state.up()
    assert result["postgres"].running and result["postgres"].version.startswith("18")
    assert result["redis"].running
    env = urls(state)
    assert env["DATABASE_URL"].startswith("postgresql://postgres:")
    assert "@127.0.0.1:" in env["DATABASE_URL"] and "@127.0.0.1:" in env["REDIS_URL"]
    assert oct(state.env_file.stat().st_mode)[-3:] == "600", "the env file holds passwords"
    with psycopg.connect(env["DATABASE_URL"]) as conn:
        libraries = conn.execute("SHOW shared_preload_libraries").fetchone()[0]
        assert "pg_stat_statements" in libraries
        assert conn.execute("SHOW listen_addresses").fetchone()[0] == "127.0.0.1"
        extensions = conn.execute("SELECT extname FROM pg_extension").fetchall()
        assert ("pg_stat_statements",) in extensions
    assert redis.Redis.from_url(env["REDIS_URL"]).ping()
    if os.geteuid() == 0:
        owner = subprocess.run(
            ["ps", "-o", "user=", "-p", str(result["postgres"].pid)], capture_output=True, text=True
        ).stdout.strip()
        assert owner == "labkit", f"as root, PostgreSQL must run as 'labkit', not {owner!r}"


def test_up_is_idempotent_when_running(state):
    """A second `up` starts nothing, keeps the same pids and ports. (Its time is a budget
    that `python -m labkit bench` measures; a busy CI machine must not fail this test.)"""
    first = state.up()
    again = Services(state.state_dir, quiet=True)
    started = time.perf_counter()
    second = again.up()
    print(f"`up` on running servers: {time.perf_counter() - started:.2f} s")
    assert first["postgres"].pid == second["postgres"].pid
    assert first["redis"].pid == second["redis"].pid
    assert first["postgres"].url == second["postgres"].url
    assert first["redis"].url == second["redis"].url
    assert again.messages == [], f"the second `up` did something: {again.messages}"


def test_ports_are_remembered_across_restarts(state, monkeypatch):
    """down then up uses the same ports (notebooks' URLs stay valid).

    The first ports tried are moved to a range no other test starts servers in: with the
    usual ones, a Services of another test (on the other xdist worker) took the port freed
    by `down` before `up` came back, once in CI. That is the supervisor's documented
    behaviour (another port, with a message), but not the promise tested here."""
    from labkit.course import services as services_module

    monkeypatch.setattr(services_module, "PG_PORT_HINT", 23432)
    monkeypatch.setattr(services_module, "REDIS_PORT_HINT", 24379)
    before = urls(state.up() and state)
    state.down()
    assert not state.env_file.exists(), "down removes the env file"
    after = urls(state.up() and state)
    assert before == after


def test_recovers_from_crashes(state):
    """SIGKILLed servers (stale pid files) are detected and started again."""
    result = state.up()
    os.kill(result["postgres"].pid, signal.SIGKILL)
    os.kill(result["redis"].pid, signal.SIGKILL)
    deadline = time.monotonic() + 10  # until the kernel has taken both down
    while (status := state.status())["postgres"].running or status["redis"].running:
        assert time.monotonic() < deadline, f"still running 10 s after SIGKILL: {status}"
        time.sleep(0.05)
    assert not status["postgres"].running and not status["redis"].running
    again = Services(state.state_dir, quiet=True).up()
    assert again["postgres"].running and again["redis"].running
    with psycopg.connect(urls(state)["DATABASE_URL"]) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_stale_pid_files_of_other_live_servers_are_not_ours(state):
    """After a crash, a pid file may name a pid that now belongs to another PostgreSQL or
    redis-server (another cluster, a grading sandbox's Redis). Those are not ours: `status`
    says stopped, `up` starts our own, and neither `up` nor `down` touches the others."""
    others = state.up()
    mine = Services(Path(tempfile.mkdtemp(prefix="labkit-test-")), quiet=True)
    os.chmod(mine.state_dir, 0o755)
    try:
        mine.up()
        mine.down()
        (mine.postgres.data / "postmaster.pid").write_text(
            f"{others['postgres'].pid}\n{mine.postgres.data}\n"
        )
        mine.redis.pidfile.write_text(f"{others['redis'].pid}\n")
        status = mine.status()
        assert not status["postgres"].running and not status["redis"].running, status
        again = mine.up()
        assert again["postgres"].pid != others["postgres"].pid
        assert again["redis"].pid != others["redis"].pid
        mine.down()
    finally:
        mine.down()
        shutil.rmtree(mine.state_dir, ignore_errors=True)
    after = state.status()
    assert after["postgres"].running and after["postgres"].pid == others["postgres"].pid
    assert after["redis"].running and after["redis"].pid == others["redis"].pid


def test_port_taken_by_someone_else_gives_a_message_and_another_port(state, monkeypatch):
    """If a remembered port is taken by another program, `up` says so and moves.

    The first ports tried are in a range no other test starts servers in: with the usual
    ones, another test's server (on the other xdist worker) took the port freed by `down`
    before the squatter could, once in CI."""
    from labkit.course import services as services_module

    monkeypatch.setattr(services_module, "PG_PORT_HINT", 23532)
    monkeypatch.setattr(services_module, "REDIS_PORT_HINT", 24479)
    state.up()
    old_port = int(urls(state)["DATABASE_URL"].rsplit(":", 1)[1].split("/")[0])
    state.down()
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.0.0.1", old_port))
    squatter.listen()
    try:
        services = Services(state.state_dir, quiet=True)
        services.up()
        new_port = int(urls(services)["DATABASE_URL"].rsplit(":", 1)[1].split("/")[0])
        assert new_port != old_port
        assert any(f"port {old_port} is taken" in m for m in services.messages), services.messages
    finally:
        squatter.close()


def test_external_urls_start_nothing(state, monkeypatch):
    """With DATABASE_URL/REDIS_URL set, `up` only checks them and starts no server."""
    course = config.read_env_file()
    monkeypatch.setenv("DATABASE_URL", course["DATABASE_URL"])
    monkeypatch.setenv("REDIS_URL", course["REDIS_URL"])
    result = Services(state.state_dir, quiet=True).up()
    assert result["postgres"].mode == "external" and result["redis"].mode == "external"
    assert not (state.state_dir / "postgres").exists(), "no embedded server may be created"


def test_external_url_that_does_not_answer_is_a_clear_error(state, monkeypatch):
    """A DATABASE_URL that points nowhere fails with what to do, not a driver traceback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("DATABASE_URL", f"postgresql://u:secret@127.0.0.1:{port}/x")
    with pytest.raises(ServiceError) as info:
        Services(state.state_dir, quiet=True).up()
    message = str(info.value)
    assert "does not answer" in message and "DATABASE_URL" in message
    assert "secret" not in message, "passwords must not appear in error messages"


def test_unwritable_state_dir_is_a_clear_error(tmp_path):
    """A state folder that cannot be created says so and names LABKIT_STATE_DIR."""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ServiceError, match="LABKIT_STATE_DIR"):
        Services(blocker / "state", quiet=True).up()


def test_missing_binary_is_a_clear_error(state, monkeypatch):
    """A PostgreSQL binary folder without pg_ctl gives a message that says what to do."""
    monkeypatch.setenv("LABKIT_PG_BIN", str(state.state_dir / "nowhere"))
    with pytest.raises(ServiceError, match="pg_ctl not found"):
        state.up()


def test_mask_url_hides_passwords():
    assert mask_url("postgresql://u:p%40ss@h:1/d") == "postgresql://u:***@h:1/d"
    assert mask_url("redis://:pw@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    assert mask_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_cli_status_and_env(state):
    """`python -m labkit services status|env` report the servers of a state folder."""
    state.up()
    run = [sys.executable, "-m", "labkit", "services"]
    status = subprocess.run(
        [*run, "status", "--state-dir", str(state.state_dir)], capture_output=True, text=True
    )
    assert status.returncode == 0, status.stderr
    assert "postgres" in status.stdout and "running" in status.stdout and "***" in status.stdout
    env = subprocess.run(
        [*run, "env", "--state-dir", str(state.state_dir)], capture_output=True, text=True
    )
    assert env.stdout.startswith("export DATABASE_URL=")


def test_no_side_effects_at_import(tmp_path):
    """Importing every module of the package (labkit.course's too) starts nothing, creates
    no folder, registers nothing to run at exit and leaves logging alone."""
    code = (
        "import atexit, importlib, logging, pkgutil, threading, labkit\n"
        "hooks, register = [], atexit.register\n"
        "atexit.register = lambda fn, *a, **k: hooks.append(fn) or register(fn, *a, **k)\n"
        "names = [m.name for m in pkgutil.walk_packages(labkit.__path__, 'labkit.')\n"
        "         if m.name != 'labkit.__main__']\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "assert len(names) >= 20 and 'labkit.course.nbgrader_ext' in names, names\n"
        "assert logging.getLogger().handlers == [], 'an import configured logging'\n"
        "assert threading.active_count() == 1, f'an import started {threading.enumerate()}'\n"
        "ours = [h for h in hooks if getattr(h, '__module__', '').startswith('labkit')]\n"
        "assert not ours, f'an import registered atexit hooks: {ours}'\n"
    )
    env = dict(
        os.environ,
        LABKIT_STATE_DIR=str(tmp_path / "state"),
        LABKIT_PROGRESS_DIR=str(tmp_path / "progress"),
    )
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "an import created a folder"


@pytest.mark.parametrize("service", ["postgres", "redis"])
def test_port_taken_between_check_and_bind_moves_to_another_port(state, monkeypatch, service):
    """If another program binds the port after our check (a race no check can close), the
    server's own bind fails: `up` reads that in the server's log, says so and moves."""
    import labkit.course.services as services_module

    state.up()
    taken = int(urls(state)["DATABASE_URL" if service == "postgres" else "REDIS_URL"]
                .rsplit(":", 1)[1].split("/")[0])  # fmt: skip
    state.down()
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the port may be in TIME_WAIT
    squatter.bind(("127.0.0.1", taken))
    squatter.listen()
    real_check = services_module._port_is_free
    # The check "wins the race": it reports the squatted port free, as it would have been
    # a moment earlier. Every other port is checked for real.
    monkeypatch.setattr(
        services_module, "_port_is_free", lambda port: port == taken or real_check(port)
    )
    try:
        services = Services(state.state_dir, quiet=True)
        result = services.up()
        assert result[service].running
        moved = int(urls(services)["DATABASE_URL" if service == "postgres" else "REDIS_URL"]
                    .rsplit(":", 1)[1].split("/")[0])  # fmt: skip
        assert moved != taken
        assert any(f"port {taken} was taken while starting" in m for m in services.messages), (
            services.messages
        )
    finally:
        squatter.close()
