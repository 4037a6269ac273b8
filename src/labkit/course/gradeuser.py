"""Grading that contains the code it runs: each graded notebook's kernel runs as an
unprivileged Unix user, with an ordinary PostgreSQL role, a Redis of its own and limits.

Autograding executes students' code. Run as root (a grading server, CI), the grader could
run it as anyone; so it does, when :func:`wanted` says so (``LABKIT_GRADING_SANDBOX``:
``auto``, the default, means "when root"; ``on`` requires it; ``off`` grades with the
grader's own privileges, as a non-root instructor always does, since switching users needs
root). One graded notebook holds one :class:`Slot` of a small pool, exclusively across
every grading process of the machine (a lock file each):

- a Unix user (``labkit-g1`` ... ``labkit-gN``; ``LABKIT_GRADING_USERS`` is the prefix),
  created once and reused one notebook at a time. Before the slot is handed to the next
  notebook, every process of that uid is killed (``kill(-1)`` from that uid, which reaches
  them all however fast they fork) and its files are wiped: its private folder (the
  kernel's home and working folder) and what it left in ``/tmp``, ``/var/tmp`` and
  ``/dev/shm``. A pool costs ~0.1 s less per notebook than ``useradd``/``userdel`` each time
  and is as safe: nothing of the uid survives the reset;
- a PostgreSQL role made for this notebook (``lks<N>_<random>``): LOGIN, CREATEDB, and
  nothing else (no SUPERUSER, CREATEROLE, REPLICATION, BYPASSRLS, no membership in
  ``pg_execute_server_program`` or the other predefined roles), dropped afterwards with every
  database it owns. ``pg_hba.conf`` holds one static block (:func:`ensure_hba`): the roles
  of slot N may connect only to the databases named ``lks<N>_...`` and to the maintenance
  database ``postgres``, and no other role (but the grader's superuser) may connect to a
  slot's databases. Notebooks that create roles (``db.login_role``: row-level security is
  taught with an owner role and an application role) call a ``SECURITY DEFINER`` function
  instead (:func:`ensure_role_function`), which makes LOGIN roles, and nothing more, only
  under the caller's own prefix (``lks<N>_<random>_``); they are dropped with the sandbox;
- a private Redis server running as the slot's user (never as root: ``CONFIG SET dir`` and
  ``SAVE`` then write only where that user may), with a random password;
- limits (:class:`Limits`): the kernel's rlimits (address space, processes, file size), a
  wall-clock limit per notebook and a memory limit on all the uid's processes together,
  enforced by a watchdog that kills them.

The kernel itself is forked from a template that runs :func:`labkit.course.sharedenv.shared_python`
(an interpreter every user can run) and drops privileges in the child
(:mod:`labkit.course.forkkernel`). What a sandbox is given, and what it needs::

    >>> from labkit.course import gradeuser
    >>> limits = gradeuser.Limits()
    >>> limits.processes, limits.address_space >> 30, limits.memory >> 30, limits.wall
    (256, 6, 4, 900)
    >>> gradeuser.templates_for('demo = data.blog_database("ex_00", scale="tiny")')
    ['tiny']
    >>> gradeuser.role_prefix("lks3_0a1b2c3d"), gradeuser.ROLE_MAKER, gradeuser.ROLE_LIMIT
    ('lks3_0a1b2c3d_', 'labkit_rolemaker', 8)
    >>> print(gradeuser.hba_block("postgres").splitlines()[1])
    host postgres,/^lks1_ /^lks1_ all scram-sha-256

What :class:`labkit.course.nbgrader_ext.EnterSandbox` does with it, as root::

    slot = Slot.acquire()            # blocks while every slot is in use
    sandbox = UserSandbox(slot)      # a role, a Redis, a private folder
    env = sandbox.start()            # what the kernel gets: DATABASE_URL, REDIS_URL, ...
    ...
    sandbox.stop()                   # kill, wipe, drop; the slot is free again
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = [
    "KERNEL_SANDBOX_ENV",
    "Limits",
    "Slot",
    "UserSandbox",
    "ensure_hba",
    "ensure_role_function",
    "kill_all",
    "role_prefix",
    "wanted",
]

MODE_ENV = "LABKIT_GRADING_SANDBOX"
USERS_ENV = "LABKIT_GRADING_USERS"
SLOTS_ENV = "LABKIT_GRADING_SLOTS"
WALL_ENV = "LABKIT_GRADING_WALL_LIMIT"
MEMORY_ENV = "LABKIT_GRADING_MEMORY_LIMIT"
#: What the kernel launcher reads (JSON: uid, gid, folder, python, rlimits); never reaches
#: the kernel's own environment.
KERNEL_SANDBOX_ENV = "LABKIT_KERNEL_SANDBOX"

DEFAULT_USERS = "labkit-g"
#: Slots in pg_hba.conf's block; at most this many notebooks are graded at once.
MAX_SLOTS = 16
DEFAULT_SLOTS = 8
#: The role and database names of slot N start with ``lks<N>_``.
SLOT_PREFIX = "lks"
ROLE_GROUP = "labkit_sandboxed"
CONNECTION_LIMIT = 60
#: The role that owns the function making the sandboxes' roles: NOLOGIN, CREATEROLE only.
ROLE_MAKER = "labkit_rolemaker"
#: Roles one sandbox may make through it, and the connections each may hold.
ROLE_LIMIT = 8
MADE_ROLE_CONNECTION_LIMIT = 20
#: The database a sandbox's role connects to by default (its ``DATABASE_URL``), where
#: ``db.login_role`` finds the function.
SANDBOX_DATABASE = "postgres"
ROOT = Path("/var/lib/labkit/grading")
SHARED_TMP = (Path("/tmp"), Path("/var/tmp"), Path("/dev/shm"), Path("/run/lock"))
HBA_BEGIN = "# --- labkit grading sandboxes: begin (labkit.course.gradeuser) ---"
HBA_END = "# --- labkit grading sandboxes: end ---"


def _int_env(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        raise ValueError(f"{name}={value!r}: give a whole number") from None


def wanted() -> bool:
    """Whether graded kernels run as the pool's users (see the module's doc)."""
    mode = os.environ.get(MODE_ENV, "auto").strip().lower() or "auto"
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"{MODE_ENV}={mode!r}: use auto (the default), on or off")
    root = hasattr(os, "geteuid") and os.geteuid() == 0
    if mode == "on" and not root:
        raise PermissionError(
            f"{MODE_ENV}=on: running each submission as another Unix user needs root (it "
            "switches users, creates them and edits pg_hba.conf). Grade as root, or set "
            f"{MODE_ENV}=off to grade with your own privileges (see grading/INSTRUCTORS.md)."
        )
    return root and mode != "off"


@dataclass(frozen=True)
class Limits:
    """Per graded notebook. ``address_space``: bytes of virtual memory per process
    (RLIMIT_AS); ``memory``: bytes resident for all of the uid's processes together (the
    watchdog); ``processes``: tasks (processes and threads) of the uid (RLIMIT_NPROC);
    ``file_size``: the largest file it may write (RLIMIT_FSIZE); ``wall``: seconds."""

    wall: int = 900
    address_space: int = 6 << 30
    memory: int = 4 << 30
    processes: int = 256
    file_size: int = 1 << 30

    @classmethod
    def from_env(cls) -> Limits:
        memory_mib = _int_env(MEMORY_ENV, cls.memory >> 20)
        return cls(
            wall=_int_env(WALL_ENV, cls.wall),
            memory=memory_mib << 20,
            # Virtual size runs far above resident size (thread stacks, arenas, DuckDB's and
            # Arrow's reservations): the per-process cap is the resident cap plus 2 GiB.
            address_space=(memory_mib + 2048) << 20,
        )

    def rlimits(self) -> dict[str, int]:
        return {
            "RLIMIT_AS": self.address_space,
            "RLIMIT_NPROC": self.processes,
            "RLIMIT_FSIZE": self.file_size,
            "RLIMIT_CORE": 0,
        }


# --------------------------------------------------------------------------- Unix users


def _run(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv)}` failed: {proc.stderr.strip()}")


def kill_all(uid: int, *, attempts: int = 20) -> None:
    """SIGKILL every process of ``uid`` (a fork bomb's too): a child switches to ``uid`` and
    calls ``kill(-1)``, which signals every process that uid owns, atomically; repeated
    until none is left (zombies excepted: their parents reap them)."""
    if uid == 0:
        raise ValueError("refusing to kill every process of root")
    for _ in range(attempts):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                os.setgroups([])
                os.setgid(pwd.getpwuid(uid).pw_gid)
                os.setuid(uid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(-1, signal.SIGKILL)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        if not processes_of(uid):
            return
        time.sleep(0.01)
    raise RuntimeError(f"processes of uid {uid} survived {attempts} rounds of SIGKILL")


def processes_of(uid: int) -> list[int]:
    """Live (not zombie) processes whose real uid is ``uid``."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status") as handle:
                status = handle.read()
        except OSError:
            continue
        uids = re.search(r"^Uid:\s+(\d+)", status, re.M)
        state = re.search(r"^State:\s+(\w)", status, re.M)
        if uids and int(uids.group(1)) == uid and not (state and state.group(1) in "ZX"):
            found.append(int(entry.name))
    return found


def resident_bytes(uid: int) -> int:
    """Memory of all of ``uid``'s processes together: the sum of their proportional set
    sizes (a page shared by n processes, as after a fork, counts 1/n in each)."""
    total = 0
    for pid in processes_of(uid):
        with contextlib.suppress(OSError, ValueError):
            with open(f"/proc/{pid}/smaps_rollup") as handle:
                found = re.search(r"^Pss:\s+(\d+) kB", handle.read(), re.M)
            total += int(found.group(1)) * 1024 if found else 0
    return total


def _wipe_shared_tmp(uid: int) -> None:
    """What ``uid`` left in the world-writable folders."""
    for folder in SHARED_TMP:
        with contextlib.suppress(OSError):
            for entry in os.scandir(folder):
                with contextlib.suppress(OSError):
                    if entry.stat(follow_symlinks=False).st_uid != uid:
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path, ignore_errors=True)
                    else:
                        os.unlink(entry.path)


@dataclass
class Slot:
    """One of the pool's places: number, Unix user, its private folder; held (a lock file)
    by one grading process at a time."""

    number: int
    user: str
    uid: int
    gid: int
    _lock: object = None

    @property
    def folder(self) -> Path:
        """The user's private folder (mode 700): home and working folder of the kernel."""
        return ROOT / self.user

    @property
    def prefix(self) -> str:
        return f"{SLOT_PREFIX}{self.number}_"

    @classmethod
    def acquire(cls, *, timeout: float = 1800) -> Slot:
        """A free slot, locked for this process (waits while all are taken)."""
        count = min(_int_env(SLOTS_ENV, DEFAULT_SLOTS), MAX_SLOTS)
        users = os.environ.get(USERS_ENV, DEFAULT_USERS)
        ROOT.mkdir(parents=True, exist_ok=True)
        os.chmod(ROOT.parent, 0o755)
        os.chmod(ROOT, 0o711)  # users reach their own folder, and cannot list the others
        deadline = time.monotonic() + timeout
        start = os.getpid() % count  # concurrent graders start at different slots
        while True:
            for offset in range(count):
                number = (start + offset) % count + 1
                handle = open(ROOT / f"slot-{number}.lock", "a")  # noqa: SIM115 - held
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    handle.close()
                    continue
                try:
                    slot = cls._make(number, f"{users}{number}")
                    slot._lock = handle
                    slot.reset()  # whatever an interrupted earlier holder left
                except BaseException:
                    handle.close()
                    raise
                return slot
            if time.monotonic() > deadline:
                raise TimeoutError(f"all {count} grading slots stayed busy for {timeout:.0f} s")
            time.sleep(0.2)

    @classmethod
    def _make(cls, number: int, user: str) -> Slot:
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            useradd = shutil.which("useradd")
            if not useradd:
                raise RuntimeError(
                    f"grading needs the Unix user {user!r} and `useradd` is missing: create it "
                    f"(no login shell, no password), or set {MODE_ENV}=off"
                ) from None
            with contextlib.suppress(RuntimeError):  # another grader made it meanwhile
                _run([useradd, "--system", "--user-group", "--no-create-home",
                      "--home-dir", str(ROOT / user), "--shell", "/usr/sbin/nologin", user])  # fmt: skip
            entry = pwd.getpwnam(user)
        if entry.pw_uid == 0 or entry.pw_gid == 0:
            raise RuntimeError(f"the grading user {user!r} is root: pick another {USERS_ENV}")
        return cls(number, user, entry.pw_uid, entry.pw_gid)

    def reset(self) -> None:
        """Kill every process of the user; wipe its files; an empty private folder."""
        kill_all(self.uid)
        shutil.rmtree(self.folder, ignore_errors=True)
        _wipe_shared_tmp(self.uid)
        for sub in ("", "work", "tmp", "ipc"):  # ipc: the kernel's sockets (forkkernel)
            path = self.folder / sub
            path.mkdir(mode=0o700, exist_ok=True)
            os.chown(path, self.uid, self.gid)
            os.chmod(path, 0o700)

    def release(self) -> None:
        """Reset, then free the slot."""
        try:
            self.reset()
        finally:
            if self._lock is not None:
                self._lock.close()
                self._lock = None


def remove_users(prefix: str, numbers: range | None = None) -> list[str]:
    """Delete the pool's users named ``prefix<N>`` (after killing their processes) and their
    folders; for tests and for uninstalling."""
    removed = []
    for number in numbers or range(1, MAX_SLOTS + 1):
        name = f"{prefix}{number}"
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        kill_all(entry.pw_uid)
        _wipe_shared_tmp(entry.pw_uid)
        _run(["userdel", name])
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            subprocess.run(["groupdel", name], capture_output=True)
        shutil.rmtree(ROOT / name, ignore_errors=True)
        removed.append(name)
    return removed


# --------------------------------------------------------------------------- PostgreSQL


def hba_block(superuser: str) -> str:
    """The lines :func:`ensure_hba` puts first in pg_hba.conf (first match wins)."""
    lines = [HBA_BEGIN]
    for number in range(1, MAX_SLOTS + 1):
        prefix = f"{SLOT_PREFIX}{number}_"
        lines.append(f"host postgres,/^{prefix} /^{prefix} all scram-sha-256")
    every = f"/^{SLOT_PREFIX}[0-9]+_"
    lines += [
        f"host all {every} all reject",  # a slot's roles: nowhere else
        f'host {every} "{superuser}" all scram-sha-256',  # the grader drops them
        f"host {every} all all reject",  # nobody else reaches a slot's databases
        HBA_END,
    ]
    return "\n".join(lines) + "\n"


_hba_checked: set[str] = set()


def ensure_hba(conn) -> None:
    """Make the server's pg_hba.conf start with :func:`hba_block` (once per server and
    process); reload the server if it changed. ``conn``: a superuser's connection."""
    key = conn.info.dsn
    if key in _hba_checked:
        return
    superuser = conn.execute("SELECT current_user").fetchone()[0]
    path = Path(conn.execute("SHOW hba_file").fetchone()[0])
    block = hba_block(superuser)
    try:
        text = path.read_text()
    except OSError as exc:
        raise RuntimeError(
            f"cannot read the server's {path} ({exc}): the grading sandboxes need these lines "
            f"at its top; add them, reload PostgreSQL, or set {MODE_ENV}=off:\n{block}"
        ) from exc
    if not text.startswith(block):
        from labkit.supervisor import locked

        ROOT.mkdir(parents=True, exist_ok=True)
        with locked(ROOT / "hba.lock"):  # two graders starting at once write it once
            _write_hba(conn, path, block)
    _hba_checked.add(key)


def _write_hba(conn, path: Path, block: str) -> None:
    text = path.read_text()
    if text.startswith(block):  # another grader wrote it meanwhile
        return
    start, end = text.find(HBA_BEGIN), text.find(HBA_END)
    if start >= 0 and end > start:  # an older block: replace it
        text = text[:start] + text[end + len(HBA_END) :].lstrip("\n")
    try:
        with open(path, "r+") as handle:  # in place: the file keeps its owner and mode
            handle.write(block + text)
            handle.truncate()
    except OSError as exc:
        raise RuntimeError(
            f"cannot write the server's {path} ({exc}): the grading sandboxes need these "
            f"lines at its top; add them, reload PostgreSQL, or set {MODE_ENV}=off:\n{block}"
        ) from exc
    conn.execute("SELECT pg_reload_conf()")
    _wait_for_reload(conn)


def _wait_for_reload(conn, timeout: float = 10) -> None:
    """pg_reload_conf() only signals the postmaster: wait until a slot role is refused."""
    import psycopg

    from labkit import db

    name = f"{SLOT_PREFIX}0_probe_{secrets.token_hex(4)}"
    password = secrets.token_hex(16)
    _create_role(conn, name, password)
    try:
        from urllib.parse import quote, urlsplit, urlunsplit

        parts = urlsplit(db.admin_url())
        netloc = f"{name}:{quote(password)}@{parts.hostname}:{parts.port}"
        url = urlunsplit(parts._replace(netloc=netloc, path="/template1"))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                psycopg.connect(url, connect_timeout=5).close()
            except psycopg.OperationalError as exc:
                if "pg_hba.conf rejects" in str(exc):
                    return
            time.sleep(0.05)
        raise RuntimeError("PostgreSQL did not apply the grading sandboxes' pg_hba.conf lines")
    finally:
        from psycopg import sql

        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def _create_role(conn, name: str, password: str) -> None:
    from psycopg import sql

    conn.execute(
        sql.SQL(
            "CREATE ROLE {} LOGIN NOSUPERUSER CREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS "
            "INHERIT CONNECTION LIMIT {} PASSWORD {}"
        ).format(sql.Identifier(name), sql.Literal(CONNECTION_LIMIT), sql.Literal(password))
    )


def _ensure_group(conn) -> None:
    from psycopg import sql

    if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ROLE_GROUP,)).fetchone():
        return
    with contextlib.suppress(Exception):
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(ROLE_GROUP)))


#: ``blog_database(..., scale="tiny")`` in a notebook: the template databases it clones.
_SCALE = re.compile(r"blog_database\(\s*[\"'][^\"']+[\"']\s*,\s*scale\s*=\s*[\"'](\w+)[\"']")


def templates_for(text: str) -> list[str]:
    """The blog scales a notebook's text clones (``data.blog_database(..., scale=...)``)."""
    return sorted(set(_SCALE.findall(text)))


def role_prefix(role: str) -> str:
    """What the names of the roles (and databases) a sandbox's role makes start with: its
    own name and ``_`` (its ``LABKIT_DB_PREFIX``), within its slot's ``lks<N>_``."""
    return f"{role}_"


#: The body of :data:`labkit.db.ROLE_FUNCTION`. It runs as :data:`ROLE_MAKER` (SECURITY
#: DEFINER, its own search_path) and trusts only ``session_user``, which a sandbox cannot
#: change (SET ROLE changes ``current_user``; SET SESSION AUTHORIZATION needs a superuser).
_ROLE_FUNCTION_BODY = r"""
DECLARE
    caller text := session_user;
    prefix text := session_user || '_';
    made int;
BEGIN
    IF caller !~ '^__SLOT_PREFIX__[0-9]+_[0-9a-f]+$' THEN
        RAISE EXCEPTION 'only a grading sandbox''s role may make roles here, not %', caller
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF role_name IS NULL OR role_name !~ '^[a-z_][a-z0-9_]{0,62}$'
            OR NOT starts_with(role_name, prefix) OR length(role_name) = length(prefix) THEN
        RAISE EXCEPTION 'role name % refused: a sandbox may make only roles named %...',
            role_name, prefix USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF role_password IS NULL OR length(role_password) < 16 THEN
        RAISE EXCEPTION 'a role needs a password of at least 16 characters'
            USING ERRCODE = 'invalid_password';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('labkit_rolemaker:' || caller));
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = role_name) THEN
        IF EXISTS (SELECT FROM pg_roles WHERE rolname = role_name AND (rolsuper
                OR rolcreatedb OR rolcreaterole OR rolreplication OR rolbypassrls)) THEN
            RAISE EXCEPTION 'role % has attributes this function does not give', role_name
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        -- Only a role this function made (its owner administers it) may be altered.
        EXECUTE format('ALTER ROLE %I LOGIN CONNECTION LIMIT __CONNECTIONS__ PASSWORD %L',
            role_name, role_password);
    ELSE
        SELECT count(*) INTO made FROM pg_roles WHERE starts_with(rolname, prefix);
        IF made >= __ROLE_LIMIT__ THEN
            RAISE EXCEPTION 'a sandbox may make at most __ROLE_LIMIT__ roles'
                USING ERRCODE = 'program_limit_exceeded';
        END IF;
        EXECUTE format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE '
            'NOREPLICATION NOBYPASSRLS INHERIT CONNECTION LIMIT __CONNECTIONS__ PASSWORD %L',
            role_name, role_password);
    END IF;
    -- The caller may hand it tables (ALTER ... OWNER TO needs SET) and use its privileges;
    -- without ADMIN it can neither alter it nor grant it on.
    EXECUTE format('GRANT %I TO %I WITH INHERIT TRUE, SET TRUE', role_name, caller);
END
"""


def role_function_body() -> str:
    """The PL/pgSQL body of the function (its limits filled in)."""
    return (
        _ROLE_FUNCTION_BODY.replace("__SLOT_PREFIX__", SLOT_PREFIX)
        .replace("__ROLE_LIMIT__", str(ROLE_LIMIT))
        .replace("__CONNECTIONS__", str(MADE_ROLE_CONNECTION_LIMIT))
    )


_role_function_ready: set[str] = set()


def ensure_role_function(conn) -> None:
    """Create (idempotently, once per server and process) the role manager
    :data:`ROLE_MAKER` (NOLOGIN, CREATEROLE and nothing else) and, in the sandboxes'
    default database, the function :data:`labkit.db.ROLE_FUNCTION` it owns:
    ``login_role(role_name, role_password)`` creates (or re-passwords) a LOGIN role with no
    other attribute, only if its name starts with the calling sandbox role's own prefix
    (:func:`role_prefix`), and grants it to the caller (INHERIT, SET; no ADMIN). EXECUTE is
    granted to the sandboxes' group only, in a schema where they cannot create.

    Since PostgreSQL 16 a CREATEROLE role can give no attribute it lacks (SUPERUSER,
    CREATEDB, REPLICATION, BYPASSRLS), no membership in a role it does not administer, and
    can alter or drop only the roles it created: even a flaw in the function could not
    reach the superuser or another slot's roles. ``conn``: a superuser's connection."""
    from psycopg import sql

    from labkit import db

    key = conn.info.dsn
    if key in _role_function_ready:
        return
    _ensure_group(conn)
    schema, function = db.ROLE_FUNCTION
    maker, group = sql.Identifier(ROLE_MAKER), sql.Identifier(ROLE_GROUP)
    target = sql.Identifier(schema, function)
    signature = sql.SQL("{}(role_name text, role_password text)").format(target)
    here = conn.execute("SELECT current_database()").fetchone()[0]
    with contextlib.ExitStack() as stack:
        if here != SANDBOX_DATABASE:
            conn = stack.enter_context(db.connect(SANDBOX_DATABASE, autocommit=True))
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('labkit_rolemaker:install'))")
            if not conn.execute(
                "SELECT 1 FROM pg_roles WHERE rolname = %s", (ROLE_MAKER,)
            ).fetchone():
                conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(maker))
            conn.execute(
                sql.SQL(
                    "ALTER ROLE {} NOLOGIN NOSUPERUSER NOCREATEDB CREATEROLE NOREPLICATION "
                    "NOBYPASSRLS NOINHERIT PASSWORD NULL"
                ).format(maker)
            )
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            conn.execute(
                sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC").format(sql.Identifier(schema))
            )
            conn.execute(
                sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), group)
            )
            conn.execute(
                sql.SQL(
                    "CREATE OR REPLACE FUNCTION {} RETURNS void LANGUAGE plpgsql "
                    "SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS {}"
                ).format(signature, sql.Literal(role_function_body()))
            )
            conn.execute(sql.SQL("ALTER FUNCTION {} OWNER TO {}").format(signature, maker))
            conn.execute(sql.SQL("REVOKE ALL ON FUNCTION {} FROM PUBLIC").format(signature))
            conn.execute(sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(signature, group))
    _role_function_ready.add(key)


_templates_ready: set[tuple[str, str]] = set()


def prepare_templates(conn, scales: list[str]) -> None:
    """Build the blog template databases the notebook clones, as the grader (a sandbox's
    role can neither build them, since it may not connect to them, nor clone a database it
    does not own unless it is marked IS_TEMPLATE), and let the sandboxes' roles reset
    pg_stat_statements in their copies (by default only a superuser may)."""
    from psycopg import sql

    from labkit import data, db

    for scale in scales:
        if scale not in data.SCALES or (conn.info.dsn, scale) in _templates_ready:
            continue
        size = data.SCALES[scale]
        name = data._template_name(size.users, size.posts, size.comments, 42)
        row = conn.execute(
            "SELECT datistemplate, shobj_description(oid, 'pg_database') FROM pg_database "
            "WHERE datname = %s",
            (name,),
        ).fetchone()
        if not row or row[1] != "labkit: complete":  # build it (and a copy, dropped at once)
            probe = data.blog_database("grading_template_probe", scale=scale)
            db.drop_database(probe.name, qualified=True)
        # Under the template's lock: a connection to a template makes copying it fail.
        with db.template_lock(name), db.connect(name, autocommit=True) as tpl:
            # A copy belongs to the sandbox's role, but its tables to whoever built the
            # template: they go to the sandboxes' group, whose members (every sandbox's role)
            # may then index and alter them in their own copy (and reach no other copy).
            relations = tpl.execute(
                "SELECT n.nspname, c.relname FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S') "
                "AND pg_get_userbyid(c.relowner) <> %s AND NOT EXISTS (SELECT 1 FROM pg_depend d "
                "WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid "
                "AND d.deptype IN ('e', 'a', 'i'))",
                (ROLE_GROUP,),
            ).fetchall()
            for schema, relation in relations:
                tpl.execute(
                    sql.SQL("ALTER TABLE {} OWNER TO {}").format(
                        sql.Identifier(schema, relation), sql.Identifier(ROLE_GROUP)
                    )
                )
            tpl.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            tpl.execute(
                sql.SQL(
                    "GRANT EXECUTE ON FUNCTION pg_stat_statements_reset(oid, oid, bigint, "
                    "boolean) TO {}"
                ).format(sql.Identifier(ROLE_GROUP))
            )
        if not (row and row[0]):
            conn.execute(
                sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE true").format(sql.Identifier(name))
            )
            conn.execute(
                sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC").format(sql.Identifier(name))
            )
        _templates_ready.add((conn.info.dsn, scale))


def drop_owned(conn, role: str) -> list[str]:
    """Drop every database ``role`` owns (or a role it made owns), then the roles it made
    (those named with its prefix, :func:`role_prefix`, which the role function made for it,
    and any it administers), then ``role``; returns the databases' names."""
    from psycopg import sql

    created = [
        row[0]
        for row in conn.execute(
            "SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s) UNION "
            "SELECT r.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid "
            "WHERE m.member = (SELECT oid FROM pg_roles WHERE rolname = %s) AND m.admin_option "
            "ORDER BY 1",
            (role_prefix(role), role),
        )
    ]
    owners = [role, *created]
    databases = [
        row[0]
        for row in conn.execute(
            "SELECT datname FROM pg_database WHERE datdba IN "
            "(SELECT oid FROM pg_roles WHERE rolname = ANY(%s))",
            (owners,),
        )
    ]
    drop_databases_at_once(databases)
    for name in [*created, role]:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone():
            continue
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))
    return databases


def drop_databases_at_once(names: list[str]) -> None:
    """Drop ``names`` together (each DROP DATABASE waits for a checkpoint; drops issued at
    once share one), on plain threads rather than a pool: the last notebook's drop runs
    while nbgrader exits, when a pool takes no new work. Raises the first failure."""
    from labkit import db

    failures: list[BaseException] = []

    def drop(name: str) -> None:
        try:
            db.drop_database(name, qualified=True)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=drop, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]


# --------------------------------------------------------------------------- a sandbox


@dataclass
class KernelSpec:
    """What the kernel launcher needs to start a kernel as the slot's user."""

    uid: int
    gid: int
    folder: str
    python: str
    rlimits: dict[str, int]

    def encode(self) -> str:
        return json.dumps(asdict(self))


class UserSandbox:
    """One graded notebook's sandbox in a :class:`Slot`: a PostgreSQL role, a private Redis
    running as the slot's user, the kernel's environment and a watchdog. ``text`` is the
    notebook's source (what it needs: templates)."""

    def __init__(self, slot: Slot, *, text: str = "", limits: Limits | None = None) -> None:
        self.slot = slot
        self.text = text
        self.limits = limits or Limits.from_env()
        self.role = f"{slot.prefix}{secrets.token_hex(4)}"
        self.prefix = role_prefix(self.role)
        self.password = secrets.token_hex(16)
        self.redis = None
        self.redis_supervisor = None
        self._watchdog: threading.Thread | None = None
        self._stop = threading.Event()
        self.killed: str | None = None

    def database_url(self) -> str:
        from urllib.parse import quote, urlsplit, urlunsplit

        from labkit import db

        parts = urlsplit(db.admin_url())
        netloc = f"{self.role}:{quote(self.password)}@{parts.hostname}:{parts.port}"
        return urlunsplit(parts._replace(netloc=netloc, path="/" + SANDBOX_DATABASE))

    def start(self) -> dict[str, str]:
        """Create the role and the Redis; return the kernel's environment additions."""
        from psycopg import sql

        from labkit import db

        with db.connect(autocommit=True) as conn:
            ensure_hba(conn)
            _ensure_group(conn)
            ensure_role_function(conn)
            leftovers = conn.execute(  # of a grader of this slot that was killed: a sandbox's
                # role before the roles it made (their names extend its name)
                "SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s) "
                "ORDER BY length(rolname), rolname",
                (self.slot.prefix,),
            ).fetchall()
            for (name,) in leftovers:
                drop_owned(conn, name)
            prepare_templates(conn, templates_for(self.text))
            _create_role(conn, self.role, self.password)
            conn.execute(
                sql.SQL("GRANT {} TO {}").format(
                    sql.Identifier(ROLE_GROUP), sql.Identifier(self.role)
                )
            )
        redis_url = self._start_redis()
        folder = self.slot.folder
        spec = KernelSpec(
            uid=self.slot.uid,
            gid=self.slot.gid,
            folder=str(folder / "work"),
            python=str(_shared_python()),
            rlimits=self.limits.rlimits(),
        )
        self._watchdog = threading.Thread(target=self._watch, daemon=True, name="grading limits")
        self._watchdog.start()
        return {
            "DATABASE_URL": self.database_url(),
            "REDIS_URL": redis_url,
            "LABKIT_DB_PREFIX": self.prefix,
            "HOME": str(folder),
            "USER": self.slot.user,
            "LOGNAME": self.slot.user,
            "TMPDIR": str(folder / "tmp"),
            "MPLCONFIGDIR": str(folder / "tmp"),
            "LABKIT_STATE_DIR": str(folder / "state"),
            KERNEL_SANDBOX_ENV: spec.encode(),
        }

    def _start_redis(self) -> str:
        from labkit.supervisor import RedisServer, Runner, Supervisor

        runner = Runner()
        runner.as_user = self.slot.user  # never root: CONFIG SET dir + SAVE write as this user
        redis_password = secrets.token_hex(16)
        self.redis = RedisServer(self.slot.folder / "redis", password=redis_password, runner=runner)
        self.redis_supervisor = Supervisor(say=lambda message: None, stop_on_exit=False)
        port = self.redis_supervisor.up(self.redis)
        return f"redis://:{redis_password}@127.0.0.1:{port}/0"

    def _watch(self) -> None:
        """Kill the uid's processes past the wall limit or the memory limit."""
        started = time.monotonic()
        while not self._stop.wait(0.5):
            if time.monotonic() - started > self.limits.wall:
                self.killed = f"ran past the limit of {self.limits.wall} s per notebook"
            elif resident_bytes(self.slot.uid) > self.limits.memory:
                self.killed = f"used more than {self.limits.memory >> 20} MiB of memory"
            if self.killed:
                with contextlib.suppress(Exception):
                    kill_all(self.slot.uid)
                return

    def stop_processes(self) -> None:
        """Stop the watchdog, Redis and every process of the slot's user."""
        self._stop.set()
        # Redis goes with the rest (SIGKILL): it saves nothing, and a graceful SHUTDOWN
        # costs ~80 ms per notebook.
        kill_all(self.slot.uid)

    def drop(self) -> None:
        """Drop the role's databases and roles (the slot's processes are gone)."""
        from labkit import db

        with db.connect(autocommit=True) as conn:
            drop_owned(conn, self.role)

    def stop(self) -> None:
        try:
            self.stop_processes()
            self.drop()
        finally:
            self.slot.release()


_shared: list[Path] = []


def _shared_python() -> Path:
    """The shared interpreter (looked up once per process: it probes with a subprocess)."""
    if not _shared:
        from labkit.course.sharedenv import shared_python

        _shared.append(shared_python().python)
    return _shared[0]
