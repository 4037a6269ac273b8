"""The JupyterHub kit (classroom/one-machine), run for real: a hub on 127.0.0.1 with three
students who are real Unix users, each with their own server, PostgreSQL and Redis.

One hub serves the whole module (``hub_class``): starting it and spawning the three servers
is most of the cost, so the tests share them and run in one xdist group, in file order; the
culling test comes last because it stops the servers. Everything the fixture creates (the
hub, its proxy, the users, their homes and processes) is removed at the end, even on
failure. Budget: 4 minutes in all on 2 busy cores.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from labkit import config
from labkit.course.hub import Hub, KernelSession, end_processes_of
from labkit.course.sharedenv import shared_python
from labkit.supervisor import mask_url

pytestmark = pytest.mark.xdist_group("hub")

STUDENTS = ("hubt-ada", "hubt-bob", "hubt-cy")
START_HERE = "notebooks/00-start-here.ipynb"
EDITED = "exercises/00-warmup/warmup.ipynb"
# The culler in this test: a server idle 20 s is stopped (checked every 5 s); the hub and
# the servers report activity every 5 s, and until the culling test a thread touches every
# server every 3 s (HubClass.keep_alive), so no server is culled before that test.
CULL_TIMEOUT_S, CULL_EVERY_S, ACTIVITY_S = 20, 5, 5


class HubClass:
    """The hub, its students, and what the tests learned about them (for the secret scan)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.shared = shared_python()
        self.tokens: dict[str, str] = {}
        self.spawn_s: dict[str, float] = {}
        self.printed: list[str] = []  # everything the tests print, scanned for secrets
        self.idle = threading.Event()

    def keep_alive(self) -> None:
        """Until ``idle`` is set, touch each server every 3 s through the proxy, as an open
        JupyterLab tab does (it polls the server's API): the culler's short timeout must not
        stop a server while the tests are busy elsewhere (e.g. as root, with runuser)."""
        while not self.idle.wait(3):
            for user, token in list(self.tokens.items()):
                with contextlib.suppress(OSError):
                    KernelSession(self.hub.url, user, token, START_HERE).rest("GET", "/status")

    def home(self, user: str) -> Path:
        return Path(pwd.getpwnam(user).pw_dir)

    def state(self, user: str) -> dict:
        return json.loads((self.home(user) / ".labkit" / "state.json").read_text())

    def env_file(self, user: str) -> dict:
        return config.read_env_file(self.home(user) / ".labkit" / "services.env")

    def secrets(self) -> list[str]:
        found = list(self.hub.secrets().values())
        found.append((self.hub.state / "cookie_secret").read_text().strip())
        found += self.tokens.values()
        for user in STUDENTS:
            with contextlib.suppress(OSError, KeyError):
                state = self.state(user)
                found += [state["postgres"]["password"], state["redis"]["password"]]
        return [s for s in found if s]

    def say(self, text: str) -> None:
        self.printed.append(text)
        print(text)

    def kernel(self, user: str, path: str = START_HERE) -> KernelSession:
        return KernelSession(self.hub.url, user, self.tokens[user], path)

    def server_pids(self, user: str) -> dict[str, int]:
        folder = self.home(user) / ".labkit"
        pids = {}
        with contextlib.suppress(OSError, ValueError, IndexError):
            pids["postgres"] = int((folder / "postgres/data/postmaster.pid").read_text().split()[0])
        with contextlib.suppress(OSError, ValueError):
            pids["redis"] = int((folder / "redis/redis.pid").read_text().strip())
        return pids


def running(pid: int) -> bool:
    with contextlib.suppress(psutil.Error):
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    return False


def spawn_all(hub: Hub) -> dict[str, float]:
    """All students' servers at once, through the REST API, as a class arriving would."""
    with ThreadPoolExecutor(len(STUDENTS)) as pool:
        return dict(zip(STUDENTS, pool.map(hub.spawn, STUDENTS), strict=True))


def remove_everything(hub: Hub) -> None:
    """The hub (it stops the servers and, through the hook, their services), then every
    process the students still own, then the students and their homes."""
    with contextlib.suppress(Exception):
        hub.down()
    for user in STUDENTS:
        with contextlib.suppress(KeyError):
            end_processes_of(pwd.getpwnam(user).pw_uid)
            subprocess.run(["userdel", "--remove", user], capture_output=True)


@pytest.fixture(scope="module")
def hub_class():
    assert os.geteuid() == 0, "the hub test creates Unix users: run it as root (sudo)"
    started = time.monotonic()
    state = Path(tempfile.mkdtemp(prefix="labkit-hub-test-"))
    hub = Hub(state)
    for user in STUDENTS:  # a previous run killed before its clean-up
        with contextlib.suppress(KeyError):
            end_processes_of(pwd.getpwnam(user).pw_uid)
            subprocess.run(["userdel", "--remove", user], capture_output=True)
    cls = HubClass(hub)  # builds the shared Python once per venv (~15 s) if needed
    try:
        hub.up(cull_timeout=CULL_TIMEOUT_S, cull_every=CULL_EVERY_S, activity_interval=ACTIVITY_S)
        for user in STUDENTS:
            assert hub.add_user(user), f"{user} was not created"
        cls.spawn_s = spawn_all(hub)
        cls.tokens = {user: hub.user_token(user) for user in STUDENTS}
        threading.Thread(target=cls.keep_alive, daemon=True).start()
        cls.say(
            f"hub {hub.url}: 3 servers ready, spawned concurrently in "
            + ", ".join(f"{u} {s:.1f} s" for u, s in cls.spawn_s.items())
            + f" ({time.monotonic() - started:.1f} s since the start of the fixture)"
        )
        yield cls
    finally:
        cls.idle.set()
        remove_everything(hub)
        shutil.rmtree(state, ignore_errors=True)
        for user in STUDENTS:
            with contextlib.suppress(KeyError):
                pwd.getpwnam(user)
                pytest.fail(f"{user} still exists after the clean-up")


def test_hub_and_proxy_on_loopback_with_private_state(hub_class):
    """The hub and the proxy listen on 127.0.0.1 only; the hub's secrets are in a folder
    only root can read; every student's home is private (0700)."""
    hub = hub_class.hub
    pids = {hub.pid(), int(hub.proxy_pid_file.read_text())}
    listening = {
        (c.laddr.ip, c.pid)
        for c in psutil.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.pid in pids
    }
    assert {pid for _, pid in listening} == pids, f"hub or proxy not listening: {listening}"
    assert {ip for ip, _ in listening} == {"127.0.0.1"}, f"not loopback only: {listening}"
    assert hub.state.stat().st_mode & 0o077 == 0, "the hub's state folder is not private"
    for name in ("secrets.json", "cookie_secret", "settings.json"):
        assert (hub.state / name).stat().st_mode & 0o077 == 0, f"{name} is readable by others"
    for user in STUDENTS:
        assert hub_class.home(user).stat().st_mode & 0o077 == 0, f"{user}'s home is not 0700"
    kit = hub.kit
    tracked = (kit / "jupyterhub_config.py").read_text() + (kit / "package.json").read_text()
    for secret in hub_class.secrets():
        assert secret not in tracked, "a secret of the hub is written in the kit"


def test_start_here_runs_in_each_users_own_kernel(hub_class):
    """00-start-here, read from each student's own copy and executed cell by cell in that
    student's kernel (REST API + kernel websocket through the proxy, with the student's
    token): no cell fails, and the kernel has the student's own DATABASE_URL and REDIS_URL."""

    check = (
        "import hashlib, os\n"
        "from labkit.supervisor import mask_url\n"
        "for key in ('DATABASE_URL', 'REDIS_URL'):\n"
        "    value = os.environ[key]\n"
        "    print(key, mask_url(value), hashlib.sha256(value.encode()).hexdigest())\n"
    )

    async def run(user: str):
        async with hub_class.kernel(user) as kernel:
            notebook = await asyncio.to_thread(kernel.notebook)
            runs = await kernel.run_notebook(notebook)
            seen = await kernel.execute(check)
        return notebook, runs, seen

    async def everyone():
        return await asyncio.gather(*(run(user) for user in STUDENTS))

    for user in STUDENTS:  # what the student's browser gets: JupyterLab, for a learner
        page = hub_class.kernel(user).get_page(f"/lab/tree/{START_HERE}")
        assert 'id="jupyter-config-data"' in page, f"{user}: no JupyterLab page: {page[:300]}"
        assert '"@jupyter/nbgrader"' in page, f"{user}: nbgrader's instructor tools are on"
    started = time.monotonic()
    results = asyncio.run(everyone())
    elapsed = time.monotonic() - started
    ports = set()
    for user, (notebook, runs, seen) in zip(STUDENTS, results, strict=True):
        code_cells = [c for c in notebook["cells"] if c["cell_type"] == "code"]
        assert len(runs) == len(code_cells) > 5, f"{user}: {len(runs)} of {len(code_cells)} ran"
        for index, cell in enumerate(runs):
            assert cell.status == "ok" and not cell.errors, (
                f"{user}: cell {index} failed: {cell.text()[-1500:]}\n{cell.source[:300]}"
            )
        assert "hello from Redis" in "".join(r.text() for r in runs)
        lines = dict(line.split(" ", 1) for line in seen.text().splitlines())
        expected = hub_class.env_file(user)
        for key in ("DATABASE_URL", "REDIS_URL"):
            masked, digest = lines[key].split()
            assert masked == mask_url(expected[key]) and "***" in masked, (key, masked)
            assert digest == hashlib.sha256(expected[key].encode()).hexdigest(), (
                f"{user}'s kernel has another {key} than the one {user}'s services wrote"
            )
            ports.add(masked.rsplit(":", 1)[1].split("/")[0])
        hub_class.say(
            f"{user}: {len(runs)} cells ok; kernel sees {lines['DATABASE_URL'].split()[0]}"
        )
        hub_class.printed += [r.text() for r in runs]
    assert len(ports) == 2 * len(STUDENTS), f"students share a server port: {sorted(ports)}"
    hub_class.say(f"00-start-here in 3 kernels at once: {elapsed:.1f} s")


ATTEMPTS = r"""
import json, os, sys
import psycopg, redis
from redis.backoff import NoBackoff
from redis.retry import Retry
own = json.load(open(os.path.expanduser("~/.labkit/state.json")))
out = {}
for target in json.loads(sys.argv[1]):
    name, result = target["user"], {}
    try:
        open(target["state"]).read()
        result["state_file"] = "read"
    except OSError as exc:
        result["state_file"] = type(exc).__name__
    try:
        os.listdir(target["data"])
        result["data_dir"] = "listed"
    except OSError as exc:
        result["data_dir"] = type(exc).__name__
    for label, password in (("pg_own_password", own["postgres"]["password"]), ("pg_no_password", None)):
        try:
            psycopg.connect(host="127.0.0.1", port=target["pg"], user="postgres", dbname="postgres",
                            password=password, connect_timeout=5).close()
            result[label] = "connected"
        except psycopg.OperationalError as exc:
            result[label] = str(exc).strip().splitlines()[-1][-90:]
    for label, password in (("redis_own_password", own["redis"]["password"]), ("redis_no_password", None)):
        try:
            # No retries: redis-py retries an AuthenticationError with backoff (~4 s each).
            redis.Redis(host="127.0.0.1", port=target["redis"], password=password,
                        socket_timeout=5, retry=Retry(NoBackoff(), 0)).ping()
            result[label] = "connected"
        except redis.RedisError as exc:
            result[label] = f"{type(exc).__name__}: {exc}"[:90]
    out[name] = result
print(json.dumps(out))
"""


def test_students_cannot_reach_each_others_services(hub_class):
    """As student A (runuser), try student B's PostgreSQL and Redis with A's own password and
    with none, and read B's state file and data folder: every attempt fails, while the same
    script reaches A's own servers (so B's were up and answering: the refusals are theirs)."""
    shared = hub_class.shared
    states = {user: hub_class.state(user) for user in STUDENTS}
    passwords = [states[u][s]["password"] for u in STUDENTS for s in ("postgres", "redis")]
    assert len(set(passwords)) == len(passwords), "two servers share a password"
    targets = [
        {
            "user": user,
            "pg": states[user]["postgres"]["port"],
            "redis": states[user]["redis"]["port"],
            "state": str(hub_class.home(user) / ".labkit" / "state.json"),
            "data": str(hub_class.home(user) / ".labkit" / "postgres" / "data"),
        }
        for user in STUDENTS
    ]

    def attempt(user: str) -> dict:
        home = str(hub_class.home(user))
        env = [f"HOME={home}", f"PATH={shared.bin}:/usr/bin:/bin"]
        proc = subprocess.run(
            ["runuser", "-u", user, "--", "env", "-i", *env, "python", "-c", ATTEMPTS,
             json.dumps(targets)],
            capture_output=True, text=True, timeout=120, cwd="/",
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
        return json.loads(proc.stdout)

    started = time.monotonic()
    with ThreadPoolExecutor(len(STUDENTS)) as pool:
        results = dict(zip(STUDENTS, pool.map(attempt, STUDENTS), strict=True))
    hub_class.say(f"isolation attempts, 3 students at once: {time.monotonic() - started:.1f} s")
    for user, seen in results.items():
        own = seen[user]
        assert own["state_file"] == "read" and own["data_dir"] == "listed", own
        assert own["pg_own_password"] == "connected", own
        assert own["redis_own_password"] == "connected", own
        for other in STUDENTS:
            if other == user:
                continue
            got = seen[other]
            hub_class.say(f"{user} -> {other}: {json.dumps(got)}")
            assert got["state_file"] == got["data_dir"] == "PermissionError", got
            assert "password authentication failed" in got["pg_own_password"], got
            assert "no password supplied" in got["pg_no_password"], got
            assert got["redis_own_password"].startswith("AuthenticationError"), got
            assert got["redis_no_password"].startswith("AuthenticationError"), got


def test_idle_servers_are_culled_with_their_services_and_come_back_with_data(hub_class):
    """Each student writes a row and edits an exercise; the idle culler (a hub service)
    stops the idle servers, and their PostgreSQL and Redis stop with them; spawned again,
    each server finds its row and the student's edit (the course copy did not overwrite it)."""
    hub = hub_class.hub
    write = (
        "import os, psycopg\n"
        "with psycopg.connect(os.environ['DATABASE_URL'], autocommit=True) as conn:\n"
        "    conn.execute('CREATE TABLE IF NOT EXISTS hub_kept (note text)')\n"
        "    conn.execute('INSERT INTO hub_kept VALUES (%s)', [os.environ['USER'] + ' was here'])\n"
        "print('written')\n"
    )
    read = (
        "import os, psycopg\n"
        "with psycopg.connect(os.environ['DATABASE_URL']) as conn:\n"
        "    print(conn.execute('SELECT note FROM hub_kept').fetchall())\n"
    )

    async def before(user: str):
        async with hub_class.kernel(user) as kernel:
            assert "written" in (await kernel.execute(write)).text()
            notebook = await asyncio.to_thread(kernel.rest, "GET", f"/contents/{EDITED}")
            notebook["content"]["metadata"]["edited_by"] = user
            body = {"type": "notebook", "format": "json", "content": notebook["content"]}
            await asyncio.to_thread(kernel.rest, "PUT", f"/contents/{EDITED}", body)

    async def after(user: str):
        async with hub_class.kernel(user) as kernel:
            rows = (await kernel.execute(read)).text().strip()
            notebook = await asyncio.to_thread(kernel.rest, "GET", f"/contents/{EDITED}")
        return rows, notebook["content"]["metadata"].get("edited_by")

    async def for_all(step):
        return await asyncio.gather(*(step(user) for user in STUDENTS))

    asyncio.run(for_all(before))
    pids = {user: hub_class.server_pids(user) for user in STUDENTS}
    for user, found in pids.items():
        assert set(found) == {"postgres", "redis"}, f"{user}: {found}"
        assert all(map(running, found.values())), f"{user}'s services are not running: {found}"

    # Idle now: nothing talks to the servers until the culler has stopped all three.
    hub_class.idle.set()
    idle_since = time.monotonic()
    deadline = idle_since + CULL_TIMEOUT_S + CULL_EVERY_S + 2 * ACTIVITY_S + 60
    left = set(STUDENTS)
    while left and time.monotonic() < deadline:
        left = {user for user in left if hub.server(user) is not None}
        time.sleep(1)
    culled_after = time.monotonic() - idle_since
    assert not left, f"not culled after {culled_after:.0f} s: {sorted(left)}"
    log = hub.log_file.read_text(errors="replace")
    for user in STUDENTS:
        assert f"DELETE /hub/api/users/{user}/server (idle-culler@127.0.0.1)" in log, (
            f"{user}'s server stopped, but not by the idle culler"
        )
    # post_stop_hook: their PostgreSQL and Redis are gone too (zombies left by PID 1 count
    # as stopped). Poll briefly: the hook runs right after the server stops.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(
        running(pid) for found in pids.values() for pid in found.values()
    ):
        time.sleep(0.5)
    still = {u: n for u, found in pids.items() for n, pid in found.items() if running(pid)}
    assert not still, f"services still running after the cull: {still}"
    hub_class.say(f"culled after {culled_after:.1f} s idle; PostgreSQL and Redis stopped")

    respawn = spawn_all(hub)
    results = asyncio.run(for_all(after))
    for user, (rows, edited_by) in zip(STUDENTS, results, strict=True):
        assert rows == f"[('{user} was here',)]", f"{user}'s row after the cull: {rows}"
        assert edited_by == user, f"{user}'s edit of {EDITED} was overwritten on respawn"
    hub_class.say("back: " + ", ".join(f"{u} {s:.1f} s" for u, s in respawn.items()))


def test_no_secret_in_logs_or_outputs(hub_class):
    """No password or token appears in what the tests printed, in the kernels' outputs, in
    the hub's log, or in the students' start logs."""
    texts = {"printed by the tests": "\n".join(hub_class.printed)}
    texts["the hub's log"] = hub_class.hub.log_file.read_text(errors="replace")
    for user in STUDENTS:
        start_log = hub_class.home(user) / ".labkit" / "start.log"
        texts[f"{user}'s start.log"] = start_log.read_text(errors="replace")
    secrets = hub_class.secrets()
    assert len(secrets) >= 4 + 2 * len(STUDENTS)
    for where, text in texts.items():
        assert text, f"{where} is empty"
        leaked = sum(secret in text for secret in secrets)
        assert leaked == 0, f"{leaked} secret(s) appear in {where}"
