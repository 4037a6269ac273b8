"""Grading contains the code it runs (labkit.course.gradeuser): a hostile submission,
graded through the real `labkit grade` pipeline (collected from a folder, autograded)
between honest ones, tries to read other submissions and the gradebook, run a program
through PostgreSQL, reach and drop other databases, abuse Redis, fork without end and
take all the memory. Every attempt fails, the evidence says so, and the honest
submissions get their usual scores. Also: the sandbox's PostgreSQL role lacks each
privilege it must lack (fast)."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import nbformat
import psycopg
import pytest
import redis
from gradingpool import grading_pool
from psycopg import sql

from labkit import config, db
from labkit.course import gradeuser, grading

HERE = Path(__file__).resolve().parent / "hostile"
ROOT = Path(__file__).resolve().parents[2]
#: Pool users of these tests (deleted at the end): the classroom helpers' prefix.
USERS = "labkit-gsh"
ASSIGNMENT = "00-warmup"


@pytest.fixture(scope="module")
def pool():
    """The grading pool's users for these tests, deleted afterwards, even on failure."""
    with grading_pool(USERS):
        yield USERS


def cell_source(*names: str, targets: dict) -> str:
    """A hostile answer cell: the shared recorder, the targets, then the attack(s)."""
    common = (
        (HERE / "common.py")
        .read_text()
        .replace("TARGETS: dict = {}", f"TARGETS = json.loads({json.dumps(json.dumps(targets))})")
    )
    return "\n\n".join([common, *((HERE / name).read_text() for name in names)])


def hostile_results(notebook: Path) -> dict:
    found: dict = {}
    for cell in nbformat.read(notebook, as_version=4).cells:
        for output in cell.get("outputs", []):
            for line in output.get("text", "").splitlines():
                if line.startswith("HOSTILE "):
                    found.update(json.loads(line[len("HOSTILE ") :]))
    return found


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def responsive_seconds() -> float:
    """How long the machine takes to start a trivial process."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True, timeout=60)
    return time.perf_counter() - started


def test_a_hostile_submission_fails_at_everything(pool, tmp_path):
    """Graded between honest students by `labkit grade collect` + `autograde`: each attack
    fails with the error that stops it, nothing outside the sandbox changes, and the honest
    students score what they always do."""
    limits = gradeuser.Limits.from_env()
    bystander = db.qualified_name(f"bystander_{uuid.uuid4().hex[:8]}")
    # Looks like another grading slot's database: only that slot's roles may connect.
    lookalike = f"{gradeuser.SLOT_PREFIX}{gradeuser.MAX_SLOTS}_00000000_bystander"
    sentinel = Path(f"/tmp/labkit-hostile-sentinel-{uuid.uuid4().hex[:8]}")
    shared_redis_port = int(config.redis_url().rsplit(":", 1)[1].split("/")[0])
    with db.connect(autocommit=True) as conn:
        for name in (bystander, lookalike):
            db.drop_database(name, qualified=True, conn=conn)
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    graded, found = None, {}
    try:
        with grading.scratch_course(released=ASSIGNMENT) as course:
            release = course.release_dir(ASSIGNMENT) / "warmup.ipynb"
            solutions = grading.solution_cells(course.source_dir(ASSIGNMENT) / "warmup.ipynb")
            targets = {
                "course": str(course.root),
                "other_submission": str(
                    course.submission_dir(ASSIGNMENT, "alice") / "warmup.ipynb"
                ),
                "submitted": str(course.root / "submitted"),
                "archive": str(course.archive_dir(ASSIGNMENT)),
                "gradebook": str(course.root / "gradebook.db"),
                "source": str(course.source_dir(ASSIGNMENT) / "warmup.ipynb"),
                "services_env": str(config.state_dir() / config.ENV_FILE_NAME),
                "sentinel": str(sentinel),
                "bystanders": [bystander, lookalike],
                "shared_redis_port": shared_redis_port,
                "hog_bytes": 2 * limits.address_space,
            }
            received = tmp_path / "received"
            grading.apply_answers(release, solutions, received / "alice" / "warmup.ipynb")
            grading.apply_answers(release, {}, received / "bob" / "warmup.ipynb")
            grading.apply_answers(
                release,
                {
                    "top_authors": cell_source("files_db_redis.py", targets=targets),
                    "published_titles": cell_source("fork_bomb.py", targets=targets),
                    "most_viewed_posts": cell_source("memory_hog.py", targets=targets),
                },
                received / "mallory" / "warmup.ipynb",
            )
            grading.apply_answers(release, solutions, received / "zoe" / "warmup.ipynb")
            cli = [sys.executable, "-m", "labkit", "grade"]
            where = ["--course-dir", str(course.root)]
            subprocess.run(
                [*cli, "collect", ASSIGNMENT, "--folder", str(received), *where],
                check=True, capture_output=True, text=True, timeout=300,
            )  # fmt: skip
            started = time.perf_counter()
            graded = subprocess.run(
                [*cli, "autograde", ASSIGNMENT, *where],
                capture_output=True, text=True, timeout=900,
            )  # fmt: skip
            seconds = time.perf_counter() - started
            assert graded.returncode == 0, graded.stdout[-3000:] + graded.stderr[-3000:]
            scores = course.scores(ASSIGNMENT)
            found = hostile_results(course.autograded_dir(ASSIGNMENT, "mallory") / "warmup.ipynb")
            gradebook_ok = (
                sqlite3.connect(course.root / "gradebook.db")
                .execute("PRAGMA integrity_check")
                .fetchone()
            )
            pwned_rdb = list(course.root.rglob("pwned.rdb"))
            autograded_text = (
                course.autograded_dir(ASSIGNMENT, "mallory") / "warmup.ipynb"
            ).read_text()
    finally:
        sentinel_written = sentinel.exists()
        sentinel.unlink(missing_ok=True)
        with db.connect(autocommit=True) as conn:
            alive = {
                name
                for (name,) in conn.execute(
                    "SELECT datname FROM pg_database WHERE datname = ANY(%s)",
                    ([bystander, lookalike],),
                )
            }
            role = found.get("role", {}).get("outcome", "") if graded else ""
            leftovers = conn.execute(
                "SELECT (SELECT count(*) FROM pg_roles WHERE rolname = %s) "
                "+ (SELECT count(*) FROM pg_database WHERE starts_with(datname, %s))",
                (role, role + "_"),
            ).fetchone()[0]
            for name in (bystander, lookalike):
                db.drop_database(name, qualified=True, conn=conn)

    # The honest students: the scores the notebook's points give, as without a sandbox.
    assert {s: scores[s].score for s in ("alice", "bob", "zoe")} == {
        "alice": scores["alice"].max_score, "bob": 0.0, "zoe": scores["zoe"].max_score
    }  # fmt: skip
    assert scores["alice"].max_score == 6.0 and scores["mallory"].score == 0.0
    # Each attack ran, as the grading user, and failed for the right reason.
    assert found["uid"]["outcome"] != "0" and found["uid"]["failed"], found["uid"]
    expected = {
        "read_other_submission": "PermissionError",
        "list_submitted": "PermissionError",
        "read_archive": "PermissionError",
        "read_gradebook": "PermissionError",
        "write_gradebook": "PermissionError",
        "read_hidden_tests": "PermissionError",
        "read_services_env": "PermissionError",
        "copy_to_program": "permission denied to COPY to or from an external program",
        "grant_execute_program": "InsufficientPrivilege",
        "become_superuser": "InsufficientPrivilege",
        "create_role": "permission denied to create role",
        f"connect:{bystander}": "pg_hba.conf rejects connection",
        f"drop:{bystander}": "must be owner of database",
        f"connect:{lookalike}": "pg_hba.conf rejects connection",
        f"drop:{lookalike}": "must be owner of database",
        "redis_config_set_dir": "Permission denied",
        "shared_redis": "AuthenticationError",
        "fork_bomb": "BlockingIOError",
        "memory_hog": "MemoryError",
    }
    for name, error in expected.items():
        assert name in found, f"the attack {name!r} did not run: {sorted(found)}"
        assert found[name]["failed"] and error in found[name]["error"], (name, found[name])
    others = [k for k in found if k.startswith(("connect:", "drop:"))]
    assert len(others) >= 4 and all(found[k]["failed"] for k in others), {
        k: found[k] for k in others if not found[k]["failed"]
    }
    # The evidence outside the notebook.
    assert alive == {bystander, lookalike}, "a bystander database was dropped"
    assert not sentinel_written, "COPY ... TO PROGRAM ran a program"
    assert gradebook_ok == ("ok",) and not pwned_rdb
    assert int(found["fork_bomb_children"]["outcome"]) < limits.processes
    assert role.startswith(gradeuser.SLOT_PREFIX) and leftovers == 0, (
        "the hostile sandbox's role or databases outlived its notebook"
    )
    admin_password = psycopg.conninfo.conninfo_to_dict(db.admin_url()).get("password") or ""
    assert admin_password and admin_password not in autograded_text
    assert responsive_seconds() < 5, "the machine is not responsive after grading"
    print(f"\nautograde of 4 submissions (one hostile): {seconds:.1f} s")


def test_the_sandbox_role_lacks_every_privilege_it_must_lack(pool):
    """A sandbox's role: no superuser, CREATEROLE, replication, BYPASSRLS, no predefined
    roles; it cannot reach or drop databases that are not its own, cannot run programs,
    and its Redis runs as the slot's user and cannot write where that user cannot."""
    bystander = db.qualified_name(f"bystander_{uuid.uuid4().hex[:8]}")
    with db.connect(autocommit=True) as conn:
        db.drop_database(bystander, qualified=True, conn=conn)
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(bystander)))
    slot = gradeuser.Slot.acquire()
    sandbox = gradeuser.UserSandbox(slot)
    try:
        env = sandbox.start()
        url = env["DATABASE_URL"]
        admin = db.connect(autocommit=True)  # a superuser's session it must not end
        admin_pid = sql.Literal(admin.info.backend_pid)
        with psycopg.connect(url, autocommit=True) as conn:
            attributes = conn.execute(
                "SELECT rolsuper, rolcreaterole, rolreplication, rolbypassrls, rolcreatedb "
                "FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
            predefined = conn.execute(
                "SELECT array_agg(rolname ORDER BY rolname) FROM pg_roles WHERE "
                "starts_with(rolname, 'pg_') AND pg_has_role(current_user, oid, 'MEMBER')"
            ).fetchone()[0]
            own = env["LABKIT_DB_PREFIX"] + "mine"
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(own)))
            elsewhere = "gs_not_my_prefix_" + uuid.uuid4().hex[:6]
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(elsewhere)))
            refusals = {}
            for label, statement in {
                "program": "COPY (SELECT 1) TO PROGRAM 'true'",
                "read_file": "SELECT pg_read_file('/etc/hostname')",
                "create_role": "CREATE ROLE lks_extra",
                "superuser": "ALTER ROLE CURRENT_USER SUPERUSER",
                "grant": "GRANT pg_execute_server_program TO CURRENT_USER",
                "drop": sql.SQL("DROP DATABASE {}").format(sql.Identifier(bystander)),
                "signal": sql.SQL("SELECT pg_terminate_backend({})").format(admin_pid),
            }.items():
                try:
                    conn.execute(statement)
                except psycopg.Error as exc:
                    refusals[label] = type(exc).__name__
        base = url.rsplit("/", 1)[0]
        connects = {}
        for name in (own, elsewhere, bystander, "template1"):
            try:
                psycopg.connect(f"{base}/{name}", connect_timeout=5).close()
                connects[name] = "connected"
            except psycopg.OperationalError as exc:
                connects[name] = "rejected" if "pg_hba.conf rejects" in str(exc) else str(exc)
        client = redis.Redis.from_url(env["REDIS_URL"])
        redis_pid = client.info("server")["process_id"]
        redis_uid = os.stat(f"/proc/{redis_pid}").st_uid
        try:
            client.config_set("dir", "/root")
            redis_dir = "changed"
        except redis.ResponseError as exc:
            redis_dir = str(exc)
        admin_alive = admin.execute("SELECT 1").fetchone() == (1,)
        admin.close()
    finally:
        sandbox.stop()
        with db.connect(autocommit=True) as conn:
            db.drop_database(bystander, qualified=True, conn=conn)
            gone = conn.execute(
                "SELECT count(*) FROM pg_database WHERE datname = ANY(%s)", ([own, elsewhere],)
            ).fetchone()[0]
            role_left = conn.execute(
                "SELECT count(*) FROM pg_roles WHERE rolname = %s", (sandbox.role,)
            ).fetchone()[0]
    assert attributes == (False, False, False, False, True)
    assert predefined is None, f"member of predefined roles {predefined}"
    assert set(refusals) == {"program", "read_file", "create_role", "superuser", "grant",
                             "drop", "signal"}, refusals  # fmt: skip
    assert connects == {own: "connected", elsewhere: "rejected", bystander: "rejected",
                        "template1": "rejected"}, connects  # fmt: skip
    assert admin_alive
    assert redis_uid == slot.uid != 0 and "Permission denied" in redis_dir
    assert gone == 0 and role_left == 0
    assert not gradeuser.processes_of(slot.uid)


KERNEL_PROBE = """import os, resource
print("UID", os.getuid(), os.getgid(), os.getgroups(), os.getcwd())
print("NPROC", resource.getrlimit(resource.RLIMIT_NPROC)[0], "AS",
      resource.getrlimit(resource.RLIMIT_AS)[0])
template = {line.split()[6] for line in open("/proc/net/unix") if "labkit-kernels-" in line}
links = set()
for fd in os.listdir("/proc/self/fd"):
    try:
        links.add(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:  # listdir's own, closed since
        pass
print("FDS", sorted(link for link in links if link.strip("socket:[]") in template) or "none")
print("ENVIRON", open("/proc/self/environ", "rb").read().decode(errors="replace"))"""
# Modules the template did not import: loaded after the drop, from the shared interpreter.
LAZY = """import csv, decimal, fractions, sqlite3, xml.dom.minidom, zoneinfo, duckdb
print("LAZY", duckdb.connect().execute("SELECT 41 + 1").fetchone()[0], csv.__file__)"""


@pytest.mark.parametrize("forked", [True, False], ids=["forked", "plain-launcher"])
def test_a_graded_kernel_drops_privileges_and_still_imports(pool, tmp_path, forked):
    """Forked from the shared interpreter's template (or, with no template, exec'd by the
    launcher): the kernel runs as the slot's user, in its folder, with its rlimits and no
    supplementary groups, inherits no stray file descriptor nor the grader's environment,
    and imports modules the template never imported."""
    from nbclient import NotebookClient

    from labkit.course import forkkernel

    slot = gradeuser.Slot.acquire()
    sandbox = gradeuser.UserSandbox(slot)
    saved = dict(os.environ)
    try:
        env = sandbox.start()
        os.environ["GRADER_PROBE_SECRET"] = "grader-only"  # in the grader's environment only
        if forked:
            os.environ.update(forkkernel.server(sandboxed=True).env)
        else:
            os.environ[forkkernel.SWITCH_ENV] = "0"
        forkkernel.set_sandbox(env, slot.folder / "work", (slot.uid, slot.gid))
        (tmp_path / "data.csv").write_text("a,b\n1,2\n")  # the notebook folder's other files
        notebook = nbformat.v4.new_notebook()
        notebook.cells = [
            nbformat.v4.new_code_cell(KERNEL_PROBE),
            nbformat.v4.new_code_cell(LAZY),
            nbformat.v4.new_code_cell("print('DATA', open('data.csv').read().split())"),
        ]
        NotebookClient(
            notebook,
            kernel_name="python3",
            kernel_manager_class=forkkernel.ForkingKernelManager,
            resources={"metadata": {"path": str(tmp_path)}},
            timeout=120,
        ).execute()
    finally:
        forkkernel.set_sandbox(None)
        os.environ.clear()
        os.environ.update(saved)
        sandbox.stop()
    out = {
        line.split(" ", 1)[0]: line.split(" ", 1)[1]
        for cell in notebook.cells
        for output in cell.outputs
        for line in output.get("text", "").splitlines()
        if " " in line
    }
    limits = sandbox.limits
    assert out["UID"] == f"{slot.uid} {slot.gid} [] {slot.folder / 'work'}"
    assert out["NPROC"] == f"{limits.processes} AS {limits.address_space}"
    assert out["FDS"] == "none", "the kernel holds a socket of the fork template"
    # Forked: the template's clean environment (the kernel's own is in os.environ); plain:
    # what the exec gave it, the sandbox's role.
    assert "grader-only" not in out["ENVIRON"]
    assert ("DATABASE_URL=postgresql://lks" in out["ENVIRON"]) is not forked
    assert out["LAZY"].startswith("42 ")
    assert out["DATA"] == "['a,b', '1,2']"
    assert not gradeuser.processes_of(slot.uid)


def test_a_notebook_past_its_wall_limit_is_stopped_and_the_class_graded(pool, monkeypatch):
    """A cell that never returns, with cell timeouts longer than the notebook's wall limit:
    the watchdog kills the kernel at the limit, the notebook records why (every cell that
    did not run fails), the command succeeds and the next student is graded as usual."""
    monkeypatch.setenv(gradeuser.WALL_ENV, "8")
    monkeypatch.setenv("LABKIT_GRADING_CELL_TIMEOUT", "120")
    with grading.scratch_course(released=ASSIGNMENT) as course:
        release = course.release_dir(ASSIGNMENT) / "warmup.ipynb"
        solutions = grading.solution_cells(course.source_dir(ASSIGNMENT) / "warmup.ipynb")
        endless = "import time\nwhile True:\n    time.sleep(0.1)"
        received = course.root / "received"
        grading.apply_answers(
            release, {**solutions, "top_authors": endless}, received / "mallory" / "warmup.ipynb"
        )
        grading.apply_answers(release, solutions, received / "zoe" / "warmup.ipynb")
        course.collect_folder(ASSIGNMENT, received)
        run = course.autograde(ASSIGNMENT)
        scores = course.scores(ASSIGNMENT)
        graded = nbformat.read(
            course.autograded_dir(ASSIGNMENT, "mallory") / "warmup.ipynb", as_version=4
        )
    errors = [
        output["evalue"]
        for cell in graded.cells
        for output in cell.get("outputs", [])
        if output.get("ename") == "ResourceLimitError"
    ]
    assert errors and "ran past the limit of 8 s per notebook" in errors[0]
    assert {s: scores[s].score for s in scores} == {"mallory": 0.0, "zoe": 6.0}
    assert run.seconds < 120, "the endless cell ran past the wall limit"
