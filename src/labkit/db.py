"""PostgreSQL connections, isolated databases, a query recorder and EXPLAIN as data.

>>> from labkit import data, db
>>> demo = db.fresh_database("doctest_db")          # dropped and re-created: ~0.1 s
>>> demo
Database(name='...doctest_db', url='postgresql://postgres:***@127.0.0.1:.../...doctest_db')
>>> report = data.load_blog(demo, users=100, posts=1_000, progress=False)
>>> engine = demo.engine()
>>> with db.record_queries(engine) as rec, engine.connect() as conn:
...     rows = conn.exec_driver_sql("SELECT * FROM posts WHERE author_id = 7").fetchall()
...     one = conn.exec_driver_sql("SELECT title FROM posts WHERE id = 1").scalar_one()
>>> rec.count, [s.rowcount for s in rec.statements] == [len(rows), 1]
(2, True)
>>> plan = db.explain(engine, "SELECT * FROM posts WHERE author_id = %(a)s", {"a": 7})
>>> plan.node_types, plan.uses_index()             # no index on author_id yet
(['Seq Scan'], False)
>>> db.explain(engine, "SELECT * FROM posts WHERE id = %(id)s", {"id": 5}).index_names
['posts_pkey']
>>> engine.dispose(); db.drop_database("doctest_db")
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from labkit import config

__all__ = [
    "Database",
    "Plan",
    "QueryRecorder",
    "Statement",
    "admin_url",
    "connect",
    "database",
    "database_exists",
    "drop_database",
    "drop_databases",
    "engine",
    "explain",
    "fresh_database",
    "login_role",
    "qualified_name",
    "record_queries",
    "sqlalchemy_url",
    "template_lock",
    "ROLE_FUNCTION",
    "Role",
]

_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# Statements that EXPLAIN ANALYZE can run without changing data.
_READ_ONLY = re.compile(r"\s*(SELECT|VALUES|TABLE)\b", re.IGNORECASE)


# --------------------------------------------------------------------------- URLs


def _with_database(url: str, database: str | None) -> str:
    if not database:
        return url
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


def admin_url() -> str:
    """The plain ``postgresql://`` URL of the server's maintenance database."""
    url = config.database_url()
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def sqlalchemy_url(url: str) -> str:
    """Turn a ``postgresql://`` URL into SQLAlchemy's ``postgresql+psycopg://`` (psycopg 3)."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    raise ValueError(f"not a PostgreSQL URL: {url.split('@')[-1]}")


def engine(database: str | None = None, **kwargs: Any):
    """A SQLAlchemy engine on ``database`` (default: the maintenance database)."""
    from sqlalchemy import create_engine

    return create_engine(sqlalchemy_url(_with_database(admin_url(), database)), **kwargs)


def connect(database: str | None = None, **kwargs: Any):
    """A psycopg 3 connection on ``database`` (default: the maintenance database)."""
    import psycopg

    from labkit.errors import ServiceError
    from labkit.supervisor import mask_url

    url = _with_database(admin_url(), database)
    try:
        return psycopg.connect(url, connect_timeout=10, **kwargs)
    except psycopg.OperationalError as exc:
        raise ServiceError(
            f"cannot connect to PostgreSQL at {mask_url(url)}: {exc}. Is it running? "
            "Run `python -m labkit services up` (or `make lab`), or check DATABASE_URL."
        ) from exc


# --------------------------------------------------------------------------- databases


@dataclass(frozen=True)
class Database:
    """One isolated database: its name and URL, and ways to connect to it."""

    name: str
    url: str

    @property
    def sqlalchemy_url(self) -> str:
        return sqlalchemy_url(self.url)

    def engine(self, **kwargs: Any):
        """A SQLAlchemy engine on this database (``create_engine`` keyword arguments pass through)."""
        from sqlalchemy import create_engine

        return create_engine(self.sqlalchemy_url, **kwargs)

    def connect(self, **kwargs: Any):
        """A psycopg 3 connection to this database."""
        return connect(self.name, **kwargs)

    def __repr__(self) -> str:
        from labkit.supervisor import mask_url

        return f"Database(name={self.name!r}, url={mask_url(self.url)!r})"


def qualified_name(name: str, kind: str = "database name") -> str:
    """``name`` with ``LABKIT_DB_PREFIX`` (set per test worker or grading run) applied,
    validated: lower-case letters, digits and underscores, at most 63 characters.

    >>> import os
    >>> os.environ.get("LABKIT_DB_PREFIX", "") + "lesson_01" == qualified_name("lesson_01")
    True
    >>> qualified_name("Lesson-01")
    Traceback (most recent call last):
    ...
    ValueError: database name '...Lesson-01' must be lower-case letters, digits and underscores (at most 63 characters, not starting with a digit)
    """
    full = os.environ.get("LABKIT_DB_PREFIX", "") + name
    if not _NAME.match(full):
        raise ValueError(
            f"{kind} {full!r} must be lower-case letters, digits and underscores "
            "(at most 63 characters, not starting with a digit)"
        )
    return full


def _lock_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def database(name: str, *, qualified: bool = False) -> Database:
    """The :class:`Database` called ``name`` (it is not created; see :func:`fresh_database`)."""
    full = name if qualified else qualified_name(name)
    return Database(full, _with_database(admin_url(), full))


def drop_database(name: str, *, qualified: bool = False, conn: Any = None) -> None:
    """Drop a database (and disconnect its sessions) if it exists.

    ``name`` gets ``LABKIT_DB_PREFIX`` unless ``qualified``; ``conn`` is an autocommit
    psycopg connection to use (default: a new one to the maintenance database)."""
    from psycopg import sql

    full = name if qualified else qualified_name(name)
    statement = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(full))
    if conn is not None:
        conn.execute(statement)
        return
    with connect(autocommit=True) as own:
        own.execute(statement)


def drop_databases(names: Any, *, qualified: bool = False) -> None:
    """Drop several databases at once (:func:`drop_database` on a thread each): every
    ``DROP DATABASE`` waits for a checkpoint, and drops issued together share one."""
    from concurrent.futures import ThreadPoolExecutor

    names = list(names)
    if not names:
        return
    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        list(pool.map(lambda name: drop_database(name, qualified=qualified), names))


def database_exists(name: str, *, qualified: bool = False) -> bool:
    """True if the database ``name`` (with ``LABKIT_DB_PREFIX`` unless ``qualified``) exists."""
    full = name if qualified else qualified_name(name)
    with connect(autocommit=True) as conn:
        row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (full,)).fetchone()
    return row is not None


def fresh_database(name: str, *, template: str | None = None) -> Database:
    """Drop ``name`` if it exists and create it empty (or as a copy of ``template``).

    Running a notebook twice gives the same starting point; copying a template database
    costs ~0.1 s however much data it holds."""
    from psycopg import sql

    full = qualified_name(name)
    with connect(autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_lock_key(full),))
        try:
            drop_database(full, qualified=True, conn=conn)
            create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(full))
            if template:
                conn.execute("SELECT pg_advisory_lock(%s)", (_lock_key(template),))
                try:
                    create += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
                    conn.execute(create)
                finally:
                    conn.execute("SELECT pg_advisory_unlock(%s)", (_lock_key(template),))
            else:
                conn.execute(create)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_lock_key(full),))
    return Database(full, _with_database(admin_url(), full))


@contextlib.contextmanager
def template_lock(template: str) -> Iterator[Any]:
    """Hold the advisory lock for building ``template`` (yields an autocommit connection)."""
    with connect(autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_lock_key(template),))
        try:
            yield conn
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_lock_key(template),))


# --------------------------------------------------------------------------- roles


@dataclass(frozen=True)
class Role:
    """An ordinary LOGIN role made by :func:`login_role`: its name and password, and URLs."""

    name: str
    password: str = field(repr=False)

    def url(self, database: str) -> str:
        """The ``postgresql://`` URL of ``database`` (a full name) as this role."""
        from urllib.parse import quote

        parts = urlsplit(_with_database(admin_url(), database))
        host = parts.hostname or "127.0.0.1"
        netloc = f"{quote(self.name, safe='')}:{quote(self.password, safe='')}@{host}"
        if parts.port:
            netloc += f":{parts.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    def engine(self, database: str, **kwargs: Any):
        """A SQLAlchemy engine on ``database`` (a full name) as this role."""
        from sqlalchemy import create_engine

        return create_engine(sqlalchemy_url(self.url(database)), **kwargs)

    def __repr__(self) -> str:
        return f"Role(name={self.name!r})"


#: The function through which a role without CREATEROLE makes its roles, when the server has
#: it (a grading sandbox's role: :mod:`labkit.course.gradeuser` creates it in the
#: maintenance database). It makes only roles named with the caller's own prefix.
ROLE_FUNCTION = ("labkit_grading", "login_role")


def login_role(name: str) -> Role:
    """Create (once) the ordinary role ``labkit_<name>`` (with ``LABKIT_DB_PREFIX``): LOGIN,
    NOSUPERUSER, NOCREATEDB, NOCREATEROLE, NOBYPASSRLS, owning nothing.

    Its password is derived from the server's admin password and the role's name (HMAC), so
    it is the same for every notebook and process that asks, and is never written down. Two
    callers at once are serialized by an advisory lock. Grant it privileges yourself.

    A role that may not create roles (neither superuser nor CREATEROLE: a grading sandbox's)
    asks :data:`ROLE_FUNCTION` instead, if the server has it: the function makes the role
    only under the caller's own prefix and grants it to the caller, who may then hand it
    tables (``ALTER TABLE ... OWNER TO``) as a superuser would."""
    import hmac

    from psycopg import sql

    full = qualified_name(f"labkit_{name}", "role name")
    secret = (urlsplit(admin_url()).password or "labkit").encode()
    password = hmac.new(secret, full.encode(), hashlib.sha256).hexdigest()[:32]
    with connect(autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_lock_key("role:" + full),))
        try:
            if _through_function(conn):
                conn.execute(
                    sql.SQL("SELECT {}(%s, %s)").format(sql.Identifier(*ROLE_FUNCTION)),
                    (full, password),
                )
                return Role(full, password)
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (full,)).fetchone()
            verb = sql.SQL("ALTER ROLE" if exists else "CREATE ROLE")
            conn.execute(
                sql.SQL(
                    "{} {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS PASSWORD {}"
                ).format(verb, sql.Identifier(full), sql.Literal(password))
            )
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_lock_key("role:" + full),))
    return Role(full, password)


def _through_function(conn: Any) -> bool:
    """Whether :func:`login_role` must ask :data:`ROLE_FUNCTION`: the current role may not
    create roles, and the function exists and may be executed."""
    from psycopg import sql

    signature = sql.SQL("{}(text, text)").format(sql.Identifier(*ROLE_FUNCTION)).as_string(conn)
    row = conn.execute(
        "SELECT r.rolsuper OR r.rolcreaterole, "
        "coalesce(has_function_privilege(to_regprocedure(%s), 'EXECUTE'), false) "
        "FROM pg_roles r WHERE r.rolname = current_user",
        (signature,),
    ).fetchone()
    return bool(row) and not row[0] and row[1]


# --------------------------------------------------------------------------- query recorder


@dataclass
class Statement:
    """One statement the driver executed: SQL, parameters, duration and row count."""

    sql: str
    params: Any
    duration_ms: float
    rowcount: int
    executemany: bool = False


@dataclass
class QueryRecorder:
    """Statements recorded from SQLAlchemy engine events (see :func:`record_queries`)."""

    statements: list[Statement] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.statements)

    @property
    def total_ms(self) -> float:
        return sum(s.duration_ms for s in self.statements)

    def matching(self, pattern: str) -> list[Statement]:
        """Statements whose SQL contains ``pattern`` (case-insensitive)."""
        pattern = pattern.lower()
        return [s for s in self.statements if pattern in s.sql.lower()]

    def frame(self):
        """The statements as a pandas DataFrame (sql, duration_ms, rowcount)."""
        import pandas as pd

        return pd.DataFrame(
            [
                {
                    "sql": " ".join(s.sql.split())[:120],
                    "duration_ms": round(s.duration_ms, 3),
                    "rowcount": s.rowcount,
                }
                for s in self.statements
            ],
            columns=["sql", "duration_ms", "rowcount"],
        )

    def clear(self) -> None:
        self.statements.clear()

    def __repr__(self) -> str:
        return f"QueryRecorder(count={self.count}, total_ms={self.total_ms:.2f})"


@contextlib.contextmanager
def record_queries(target: Any = None, *, echo: bool = False) -> Iterator[QueryRecorder]:
    """Record every statement executed through ``target`` (an Engine; default: all engines).

    Uses ``before_cursor_execute`` / ``after_cursor_execute``, so the duration is the
    driver's round trip, and listeners are removed on exit even if the block raises."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    target = target if target is not None else Engine
    if hasattr(target, "sync_engine"):  # AsyncEngine
        target = target.sync_engine
    recorder = QueryRecorder()

    def before(conn, cursor, statement, parameters, context, executemany):
        conn.info.setdefault("_labkit_t0", []).append(time.perf_counter())

    def after(conn, cursor, statement, parameters, context, executemany):
        started = conn.info["_labkit_t0"].pop()
        item = Statement(
            statement,
            parameters,
            (time.perf_counter() - started) * 1000,
            cursor.rowcount,
            executemany,
        )
        recorder.statements.append(item)
        if echo:
            print(f"[{item.duration_ms:7.2f} ms] {' '.join(statement.split())[:160]}")

    event.listen(target, "before_cursor_execute", before)
    event.listen(target, "after_cursor_execute", after)
    try:
        yield recorder
    finally:
        event.remove(target, "before_cursor_execute", before)
        event.remove(target, "after_cursor_execute", after)


# --------------------------------------------------------------------------- EXPLAIN


class Plan:
    """An ``EXPLAIN (FORMAT JSON)`` result as data: node types, indexes, buffers, timings."""

    SCAN_USING_INDEX = ("Index Scan", "Index Only Scan", "Bitmap Index Scan")

    def __init__(self, raw: dict) -> None:
        self.raw = raw
        self.root: dict = raw["Plan"]
        self.nodes: list[dict] = []

        def walk(node: dict) -> None:
            self.nodes.append(node)
            for child in node.get("Plans", []):
                walk(child)

        walk(self.root)

    @property
    def node_types(self) -> list[str]:
        return [n["Node Type"] for n in self.nodes]

    @property
    def index_names(self) -> list[str]:
        return [n["Index Name"] for n in self.nodes if "Index Name" in n]

    def uses_index(self, name: str | None = None) -> bool:
        """True if some node scans an index (``name``: that index)."""
        return any(
            n["Node Type"] in self.SCAN_USING_INDEX
            and (name is None or n.get("Index Name") == name)
            for n in self.nodes
        )

    def has_seq_scan(self, table: str | None = None) -> bool:
        """True if some node reads a whole table (``table``: that table) sequentially."""
        return any(
            n["Node Type"] == "Seq Scan" and (table is None or n.get("Relation Name") == table)
            for n in self.nodes
        )

    @property
    def shared_hit(self) -> int:
        return int(self.root.get("Shared Hit Blocks", 0))

    @property
    def shared_read(self) -> int:
        return int(self.root.get("Shared Read Blocks", 0))

    @property
    def buffers(self) -> int:
        """Shared buffers touched by the whole plan (hit + read): the deterministic cost."""
        return self.shared_hit + self.shared_read

    @property
    def execution_ms(self) -> float | None:
        return self.raw.get("Execution Time")

    @property
    def planning_ms(self) -> float | None:
        return self.raw.get("Planning Time")

    @property
    def estimated_rows(self) -> int:
        return int(self.root.get("Plan Rows", 0))

    @property
    def actual_rows(self) -> int | None:
        rows = self.root.get("Actual Rows")
        return None if rows is None else int(rows)

    def tree(self) -> str:
        """A compact, readable outline of the plan."""
        lines: list[str] = []

        def walk(node: dict, depth: int) -> None:
            label = node["Node Type"]
            if "Index Name" in node:
                label += f" using {node['Index Name']}"
            if "Relation Name" in node:
                label += f" on {node['Relation Name']}"
            facts = [f"est {node.get('Plan Rows')} rows"]
            if "Actual Rows" in node:
                facts.append(f"actual {node['Actual Rows']:g} rows")
            if "Shared Hit Blocks" in node:
                facts.append(
                    f"buffers {node.get('Shared Hit Blocks', 0) + node.get('Shared Read Blocks', 0)}"
                )
            lines.append("  " * depth + "-> " + label + "  (" + ", ".join(facts) + ")")
            for child in node.get("Plans", []):
                walk(child, depth + 1)

        walk(self.root, 0)
        if self.execution_ms is not None:
            lines.append(f"Execution time: {self.execution_ms:.3f} ms")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Plan({' > '.join(self.node_types)}, buffers={self.buffers})"

    def _repr_pretty_(self, printer, cycle) -> None:  # IPython
        printer.text(self.tree())


def _compile(bind: Any, statement: Any, params: Any) -> tuple[str, Any]:
    if isinstance(statement, str):
        return statement, params
    if hasattr(statement, "compile"):
        dialect = getattr(bind, "dialect", None)
        if dialect is None:
            from sqlalchemy.dialects import postgresql

            dialect = postgresql.dialect(paramstyle="pyformat")
        compiled = statement.compile(dialect=dialect)
        return str(compiled), dict(compiled.params) | dict(params or {})
    raise TypeError("statement must be SQL text or a SQLAlchemy statement")


def explain(
    bind: Any, statement: Any, params: Any = None, *, analyze: bool = True, buffers: bool = True
) -> Plan:
    """EXPLAIN a statement and return the :class:`Plan`.

    ``bind`` is a SQLAlchemy Engine, Connection or Session, or a psycopg connection;
    ``statement`` is SQL text (``%(name)s`` parameters) or a SQLAlchemy statement.
    With ``analyze=True`` the statement really runs, so anything but a plain read (an
    INSERT/UPDATE/DELETE, a ``WITH`` that may hold one) runs inside a transaction or, on a
    Connection or Session you pass, a savepoint that is rolled back: its changes never
    reach a later commit."""
    options = ["FORMAT JSON"]
    if analyze:
        options.append("ANALYZE")
    if buffers:
        options.append("BUFFERS")
    sql_text, sql_params = _compile(bind, statement, params)
    query = f"EXPLAIN ({', '.join(options)}) {sql_text}"
    may_write = analyze and not _READ_ONLY.match(sql_text)

    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.orm import Session

    if isinstance(bind, Engine):
        with bind.connect() as conn:
            row = conn.exec_driver_sql(query, sql_params or {}).fetchone()
            conn.rollback()
        return Plan(_first(row[0]))
    if isinstance(bind, Connection | Session):
        # A read needs no savepoint (and adds no statements to a query recorder).
        savepoint = bind.begin_nested() if may_write else None
        # A Session's connection is taken after begin_nested, so that it is inside it.
        connection = bind.connection() if isinstance(bind, Session) else bind
        try:
            row = connection.exec_driver_sql(query, sql_params or {}).fetchone()
        finally:
            if savepoint is not None:
                savepoint.rollback()
        return Plan(_first(row[0]))
    if hasattr(bind, "transaction") and hasattr(bind, "execute"):  # psycopg connection
        with bind.transaction(force_rollback=True):
            row = bind.execute(query, sql_params).fetchone()
        return Plan(_first(row[0]))
    raise TypeError("bind must be an Engine, Connection, Session or psycopg connection")


def _first(value: Any) -> dict:
    import json

    if isinstance(value, str):
        value = json.loads(value)
    return value[0]
