"""Multi-tenant data layers: row-based tenancy (a ``tenant_id`` on every row, filtered and
stamped by session events, proved by the statement log) and schema per tenant (one
PostgreSQL schema each, reached through ``schema_translate_map``, provisioned by Alembic),
and moving one tenant from the first to the second.

>>> from labkit import db, tenancy
>>> demo = db.fresh_database("doctest_tenancy")
>>> engine = demo.engine()
>>> tenancy.create_shared(engine); tenancy.load_shared(engine, tenants=3, projects=2, tasks=4)
24
>>> with tenancy.session_for(engine, 2) as session:       # reads see tenant 2 only
...     sorted({task.tenant_id for task in session.scalars(select(tenancy.Task))})
[2]
>>> tenancy.check_schema_name('acme"; DROP SCHEMA public CASCADE; --')
Traceback (most recent call last):
...
labkit.tenancy.TenantNameError: tenant schema name 'acme"; DROP SCHEMA public CASCADE; --' ...
>>> tenancy.move_tenant_to_schema(engine, 2, "tenant_2")  # rows copied, counted, removed
{'projects': 2, 'tasks': 8}
>>> with tenancy.tenant_engine(engine, "tenant_2").connect() as conn:
...     conn.execute(select(func.count()).select_from(tenancy.schema_tasks)).scalar_one()
8
>>> with tenancy.session_for(engine, 2) as session:  # its writes to the shared tables: refused
...     session.add(tenancy.Project(name="late")); session.flush()
Traceback (most recent call last):
...
labkit.tenancy.TenantError: tenant 2 has moved to schema 'tenant_2': ...
>>> engine.dispose(); db.drop_database("doctest_tenancy")
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    ForeignKey,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    event,
    func,
    select,
    text,
)
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    with_loader_criteria,
)

from labkit.errors import LabkitError

__all__ = [
    "Base",
    "MIGRATIONS",
    "PLACEHOLDER",
    "Project",
    "SCHEMA_METADATA",
    "SHARED_TABLES",
    "Task",
    "Tenant",
    "TenantError",
    "TenantNameError",
    "TenantScoped",
    "TenantSession",
    "catalog_comparison",
    "catalog_cost",
    "catalog_table",
    "check_schema_name",
    "current_tenant",
    "create_shared",
    "load_shared",
    "load_schema_data",
    "migrate_schema",
    "move_tenant_to_schema",
    "plot_catalog",
    "pg_dump_schema_seconds",
    "provision_schema",
    "relcache_bytes",
    "schema_fingerprint",
    "schema_projects",
    "schema_tasks",
    "session_for",
    "tenant_engine",
    "tenant_schemas",
    "unfiltered_statements",
]

MIGRATIONS = Path(__file__).resolve().parent / "migrations" / "tenant"


class TenantError(LabkitError):
    """A tenant rule was broken: no tenant set, a write for another tenant, a move that
    does not add up."""


class TenantNameError(TenantError, ValueError):
    """A tenant schema name that must not reach the server."""


# --------------------------------------------------------------------------- row-based


class Base(DeclarativeBase):
    """The shared tables of row-based tenancy (schema ``public``)."""


class Tenant(Base):
    """The tenant directory: who the tenants are and where their rows live."""

    __tablename__ = "tenants"
    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    slug: Mapped[str] = mapped_column(Text, unique=True)
    # NULL: the tenant's rows are in the shared tables; else the schema that holds them.
    schema_name: Mapped[str | None] = mapped_column(Text)


class TenantScoped:
    """Mixin of every tenant-owned table: ``tenant_id`` first in the primary key, so that
    every lookup by key, every UPDATE and every DELETE of a loaded row names the tenant."""

    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))


class Project(TenantScoped, Base):
    __tablename__ = "projects"
    id: Mapped[int] = mapped_column(Identity())
    name: Mapped[str] = mapped_column(Text)
    __table_args__ = (
        PrimaryKeyConstraint("tenant_id", "id", name="projects_pkey"),
        # Unique per tenant: two tenants may both have a project "Website".
        UniqueConstraint("tenant_id", "name", name="projects_tenant_name_key"),
    )


class Task(TenantScoped, Base):
    __tablename__ = "tasks"
    id: Mapped[int] = mapped_column(Identity())
    project_id: Mapped[int]
    title: Mapped[str] = mapped_column(Text)
    done: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    __table_args__ = (
        PrimaryKeyConstraint("tenant_id", "id", name="tasks_pkey"),
        # A task may only point at a project of its own tenant.
        ForeignKeyConstraint(
            ["tenant_id", "project_id"],
            ["projects.tenant_id", "projects.id"],
            name="tasks_project_fkey",
        ),
        Index("tasks_tenant_project_idx", "tenant_id", "project_id"),
    )


#: The tenant-owned tables of row-based tenancy, parents first.
SHARED_TABLES = ("projects", "tasks")


def create_shared(engine) -> None:
    """Create the shared tables (``tenants``, ``projects``, ``tasks``) if missing."""
    Base.metadata.create_all(engine)


def load_shared(engine, *, tenants: int, projects: int, tasks: int, first: int = 1) -> int:
    """Add tenants ``first .. first+tenants-1`` (slug ``tenant_<n>``), each with ``projects``
    projects and ``tasks`` tasks per project, generated by the server; returns the tasks
    added. Identity sequences are moved past the ids written."""
    last = first + tenants - 1
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO tenants (id, slug) SELECT g, 'tenant_' || g "
                "FROM generate_series(CAST(:first AS int), CAST(:last AS int)) AS g"
            ),
            {"first": first, "last": last},
        )
        conn.execute(
            text(
                "INSERT INTO projects (tenant_id, id, name) "
                "SELECT t, (t - 1) * CAST(:p AS int) + p, 'project ' || p "
                "FROM generate_series(CAST(:first AS int), CAST(:last AS int)) AS t, generate_series(1, CAST(:p AS int)) AS p"
            ),
            {"first": first, "last": last, "p": projects},
        )
        added = conn.execute(
            text(
                "INSERT INTO tasks (tenant_id, id, project_id, title, done) "
                "SELECT t, ((t - 1) * CAST(:p AS int) + p - 1) * CAST(:k AS int) + k, (t - 1) * CAST(:p AS int) + p, "
                "'task ' || k, k % 3 = 0 "
                "FROM generate_series(CAST(:first AS int), CAST(:last AS int)) AS t, generate_series(1, CAST(:p AS int)) AS p, "
                "generate_series(1, CAST(:k AS int)) AS k"
            ),
            {"first": first, "last": last, "p": projects, "k": tasks},
        ).rowcount
        for table in ("tenants", "projects", "tasks"):
            conn.execute(
                text(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT max(id) FROM {table}))"
                )
            )
        conn.execute(text("ANALYZE tenants, projects, tasks"))
    return added


class TenantSession(Session):
    """A Session bound to one tenant (``session.info["tenant_id"]``): every ORM SELECT,
    UPDATE and DELETE of a tenant-owned entity is filtered by it; every new row (flushed, or
    a bulk ORM ``insert(Task)``) is stamped with it, and a row of another tenant is refused.
    Every write first checks, in its own transaction, that the tenant still lives in the
    shared tables (``tenants.schema_name`` is NULL, read ``FOR KEY SHARE``, so a move waits
    for the writer or the writer for the move); a moved tenant's writes are refused. Make
    one with :func:`session_for`.

    What it does NOT see: raw SQL (``text()``), statements on the Core tables
    (``Task.__table__``), and anything run on ``session.connection()``: those go to the
    server as written, which is why a statement-log check (:func:`unfiltered_statements`)
    and row-level security (Step 11) back it up."""


def current_tenant(session: Session) -> int:
    """The session's tenant (``session.info["tenant_id"]``), or :class:`TenantError`."""
    tenant_id = session.info.get("tenant_id")
    if tenant_id is None:
        raise TenantError(
            "this session has no tenant: open it with tenancy.session_for(engine, tenant_id)"
        )
    return tenant_id


def _check_still_shared(session, tenant_id: int) -> None:
    """Refuse a write of a tenant that has moved to a schema of its own. Reads the directory
    row ``FOR KEY SHARE`` (once per transaction): a move, which locks that row ``FOR
    UPDATE``, waits for this transaction, or this read waits for the move and then sees
    ``schema_name`` set."""
    transaction = session.get_transaction()
    if session.info.get("_checked_in") is transaction and transaction is not None:
        return
    home = (
        session.connection()
        .execute(
            select(Tenant.schema_name)
            .where(Tenant.id == tenant_id)
            .with_for_update(read=True, key_share=True)
        )
        .first()
    )
    if home is not None and home.schema_name is not None:
        raise TenantError(
            f"tenant {tenant_id} has moved to schema {home.schema_name!r}: its writes to the "
            f"shared tables are refused; write through tenancy.tenant_engine(engine, "
            f"{home.schema_name!r})"
        )
    session.info["_checked_in"] = session.get_transaction()


def _scoped_table(statement) -> bool:
    table = getattr(statement, "table", None)
    return table is not None and table.name in SHARED_TABLES and table.metadata is Base.metadata


def _stamp_insert(state, tenant_id: int) -> None:
    """A bulk ORM ``insert(Task)``: a ``tenant_id`` given must be this tenant's, a missing
    one is stamped. ``INSERT ... FROM SELECT`` is refused (its rows cannot be checked)."""
    statement = state.statement
    if getattr(statement, "select", None) is not None:
        raise TenantError(
            "INSERT ... SELECT into a tenant table cannot be checked row by row: "
            "add ORM objects, or insert(Model) with values"
        )
    given = []
    for key, value in (getattr(statement, "_values", None) or {}).items():
        if getattr(key, "key", key) == "tenant_id":
            given.append(getattr(value, "value", value))
    for row in getattr(statement, "_multi_values", None) or ():
        for values in row:
            if isinstance(values, dict):
                given += [
                    getattr(v, "value", v)
                    for k, v in values.items()
                    if getattr(k, "key", k) == "tenant_id"
                ]
    rows = state.parameters if isinstance(state.parameters, list | tuple) else [state.parameters]
    given += [row["tenant_id"] for row in rows if isinstance(row, dict) and "tenant_id" in row]
    if any(value != tenant_id for value in given):
        raise TenantError(
            f"an INSERT of tenant {sorted(set(given) - {tenant_id})} rows ran in tenant "
            f"{tenant_id}'s session: leave tenant_id out, the session stamps it"
        )
    if given:
        return
    if getattr(statement, "_multi_values", None):
        raise TenantError("a multi-row values() INSERT needs tenant_id in every row")
    if isinstance(state.parameters, list | tuple) and state.parameters:
        state.parameters = [dict(row, tenant_id=tenant_id) for row in state.parameters]
    else:
        state.statement = statement.values(tenant_id=tenant_id)


@event.listens_for(TenantSession, "do_orm_execute")
def _filter_by_tenant(state) -> None:
    """Reads AND bulk writes: the criteria go on SELECT, UPDATE and DELETE alike; a bulk
    INSERT is checked or stamped; every write checks that the tenant has not moved."""
    if state.is_column_load or state.is_relationship_load:
        return  # loads of rows already filtered (the key holds tenant_id)
    if state.is_insert and _scoped_table(state.statement):
        tenant_id = current_tenant(state.session)
        _stamp_insert(state, tenant_id)
        _check_still_shared(state.session, tenant_id)
    if state.is_select or state.is_update or state.is_delete:
        tenant_id = current_tenant(state.session)
        if state.is_update or state.is_delete:
            _check_still_shared(state.session, tenant_id)
        state.statement = state.statement.options(
            with_loader_criteria(
                TenantScoped, lambda cls: cls.tenant_id == tenant_id, include_aliases=True
            )
        )


@event.listens_for(TenantSession, "before_flush")
def _stamp_tenant(session, flush_context, instances) -> None:
    """New rows get the session's tenant; a new or changed row of another tenant is refused;
    a tenant that has moved to its own schema writes nothing here."""
    tenant_id = current_tenant(session)
    if any(
        isinstance(obj, TenantScoped) for obj in (*session.new, *session.dirty, *session.deleted)
    ):
        _check_still_shared(session, tenant_id)
    for obj in list(session.new) + list(session.dirty):
        if not isinstance(obj, TenantScoped):
            continue
        if obj.tenant_id is None and obj in session.new:
            obj.tenant_id = tenant_id
        elif obj.tenant_id != tenant_id:
            raise TenantError(
                f"a {type(obj).__name__} of tenant {obj.tenant_id} was written in tenant "
                f"{tenant_id}'s session: leave tenant_id unset, the session stamps it"
            )


def session_for(engine, tenant_id: int, **kwargs: Any) -> TenantSession:
    """A :class:`TenantSession` on ``engine`` for ``tenant_id``."""
    if not isinstance(tenant_id, int) or isinstance(tenant_id, bool):
        raise TenantError(f"tenant_id must be an int, not {tenant_id!r}")
    return TenantSession(engine, info={"tenant_id": tenant_id}, **kwargs)


# --------------------------------------------------------------------------- statement log

_SQL_WORDS = {
    "where", "join", "inner", "left", "right", "full", "cross", "on", "set", "order",
    "group", "limit", "offset", "returning", "values", "for", "using", "as", "union",
    "having", "window", "fetch",
}  # fmt: skip
_PREDICATE = r"tenant_id\s*=\s*(?:%\((\w+)\)s|(\d+))"


def _values(params: Any, name: str | None, literal: str | None) -> list[Any]:
    if literal is not None:
        return [int(literal)]
    rows = params if isinstance(params, list | tuple) else [params]
    return [row.get(name) for row in rows if isinstance(row, dict)]


def _is_filtered(sql: str, params: Any, tenant_id: int, tables: Iterable[str]) -> bool:
    names = "|".join(re.escape(t) for t in tables)
    refs = re.findall(
        rf"\b(FROM|JOIN|UPDATE|INTO)\s+(?:public\.)?\"?({names})\"?\b(?=(?:\s+(?:AS\s+)?(\w+))?)",
        sql,
        re.IGNORECASE,
    )
    if not refs:
        return True
    if refs[0][0].upper() == "INTO":  # an INSERT: tenant_id written, with this tenant's id
        if not re.search(r"\(\s*[^)]*\btenant_id\b", sql):
            return False
        rows = params if isinstance(params, list | tuple) else [params]
        found = [
            value
            for row in rows
            if isinstance(row, dict)
            for key, value in row.items()
            if re.fullmatch(r"tenant_id(__\d+)?", key)
        ]
        return bool(found) and all(value == tenant_id for value in found)
    for _, table, alias in refs:
        name = alias if alias and alias.lower() not in _SQL_WORDS else table
        qualified = rf"\b{re.escape(name)}\.{_PREDICATE}"
        found = re.findall(qualified, sql, re.IGNORECASE)
        if not found and len(refs) == 1:
            found = re.findall(rf"(?<![\w.]){_PREDICATE}", sql, re.IGNORECASE)
        values = [v for param, lit in found for v in _values(params, param or None, lit or None)]
        if not values or any(value != tenant_id for value in values):
            return False
    return True


def unfiltered_statements(statements, tenant_id: int, tables: Iterable[str] = SHARED_TABLES):
    """The statements (``labkit.db.Statement``: ``.sql``, ``.params``) that touch a
    tenant-owned table without naming ``tenant_id``: every table they read, update or delete
    from needs a ``<table>.tenant_id = <this tenant>`` predicate (bound or literal), every
    INSERT a ``tenant_id`` column whose values are this tenant's.

    A textual check of the SQL that the driver received: a predicate under ``OR`` would
    fool it. It proves that a workload *names* the tenant everywhere; PostgreSQL's row-level
    security is the backstop that does not depend on the application (Step 11)."""
    tables = tuple(tables)
    return [s for s in statements if not _is_filtered(s.sql, s.params, tenant_id, tables)]


# --------------------------------------------------------------------------- schema per tenant

#: The placeholder schema of the tenant tables: ``schema_translate_map={PLACEHOLDER: name}``
#: sends them to one tenant's schema; without a map, a statement fails (no schema called
#: ``tenant``) instead of reading someone else's rows.
PLACEHOLDER = "tenant"

SCHEMA_METADATA = MetaData(schema=PLACEHOLDER)
schema_projects = Table(
    "projects",
    SCHEMA_METADATA,
    Column("id", Integer, Identity(), primary_key=True),
    Column("name", Text, nullable=False, unique=True),
)
schema_tasks = Table(
    "tasks",
    SCHEMA_METADATA,
    Column("id", Integer, Identity(), primary_key=True),
    Column("project_id", Integer, ForeignKey("projects.id"), nullable=False),
    Column("title", Text, nullable=False),
    Column("done", Boolean, nullable=False, server_default="false"),
    Index("tasks_open_idx", "project_id", postgresql_where=text("NOT done")),
)

_SCHEMA_NAME = re.compile(r"[a-z][a-z0-9_]*")
RESERVED = frozenset({"public", "information_schema", PLACEHOLDER})


def check_schema_name(name: Any) -> str:
    """``name`` if it may be a tenant's schema, else :class:`TenantNameError`.

    Allowed: a lower-case ASCII letter, then lower-case letters, digits and underscores, at
    most 63 bytes (PostgreSQL silently cuts longer identifiers, so two long names would
    become one schema), not ``pg_*`` (reserved by PostgreSQL), not ``public``,
    ``information_schema`` or the placeholder ``tenant``. Upper case and other alphabets are
    refused rather than quoted: ``"Acme"`` and ``acme`` would be two schemas, and look-alike
    letters make look-alike tenants."""
    fix = "use lower-case letters, digits and underscores, starting with a letter, ≤ 63 bytes"
    if not isinstance(name, str):
        raise TenantNameError(f"tenant schema name {name!r} is not a string: {fix}")
    if len(name.encode()) > 63:
        raise TenantNameError(
            f"tenant schema name {name[:20]!r}... is {len(name.encode())} bytes: PostgreSQL "
            f"would cut it to 63 (two tenants could share a schema); {fix}"
        )
    if not _SCHEMA_NAME.fullmatch(name):
        raise TenantNameError(f"tenant schema name {name!r} is refused: {fix}")
    if name.startswith("pg_") or name in RESERVED:
        raise TenantNameError(
            f"tenant schema name {name!r} is reserved (pg_*, public, information_schema, "
            f"{PLACEHOLDER}): choose another name"
        )
    return name


def tenant_engine(engine, schema: str):
    """``engine`` with the tenant tables sent to ``schema`` (a validated name): the schema
    is written into each statement's SQL, so no session state (search_path) can leak."""
    return engine.execution_options(schema_translate_map={PLACEHOLDER: check_schema_name(schema)})


def tenant_schemas(bind) -> list[str]:
    """Schemas that are neither PostgreSQL's nor ``public``, sorted."""
    with _connection(bind) as conn:
        return list(
            conn.execute(
                text(
                    "SELECT nspname FROM pg_namespace WHERE nspname !~ '^pg_' "
                    "AND nspname NOT IN ('public', 'information_schema') ORDER BY 1"
                )
            ).scalars()
        )


class _connection:
    """Use a Connection as it is, or open one on an Engine."""

    def __init__(self, bind) -> None:
        self.bind, self.own = bind, None

    def __enter__(self):
        if hasattr(self.bind, "connect") and not hasattr(self.bind, "in_transaction"):
            self.own = self.bind.connect()
            return self.own
        return self.bind

    def __exit__(self, *exc) -> None:
        if self.own is not None:
            self.own.close()


def alembic_config(connection, schema: str):
    """The Alembic ``Config`` of the tenant migrations, handing over ``connection`` and
    ``schema`` to ``migrations/tenant/env.py``."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    config.attributes["schema"] = check_schema_name(schema)
    return config


def migrate_schema(connection, schema: str, revision: str = "head") -> None:
    """Run the tenant migrations in ``schema`` on ``connection`` (inside its transaction):
    tables go through ``schema_translate_map``, the ``alembic_version`` table lives in the
    tenant's schema, so each tenant is at a revision of its own."""
    from alembic import command

    previous = connection.get_execution_options().get("schema_translate_map")
    try:
        command.upgrade(alembic_config(connection, schema), revision)
    finally:
        connection.execution_options(schema_translate_map=previous)


def provision_schema(connection, name: str, *, migrate: bool = True) -> float:
    """Create tenant ``name``'s schema and its tables on ``connection`` (in the caller's
    transaction); returns the seconds taken.

    The name is checked first (:func:`check_schema_name`) and quoted by SQLAlchemy's
    ``CreateSchema``; an existing schema is an error, never reused. ``migrate=True`` runs
    the Alembic migrations; ``migrate=False`` creates the same tables from
    ``SCHEMA_METADATA`` and stamps ``alembic_version`` at head (bulk provisioning: the
    tables are the same, see :func:`schema_fingerprint`)."""
    from sqlalchemy.schema import CreateSchema

    schema = check_schema_name(name)
    started = time.perf_counter()
    exists = connection.execute(
        text("SELECT 1 FROM pg_namespace WHERE nspname = :n"), {"n": schema}
    ).first()
    if exists:
        raise TenantError(f"schema {schema!r} exists already: choose another tenant name")
    connection.execute(CreateSchema(schema))
    if migrate:
        migrate_schema(connection, schema)
    else:
        translated = connection.execution_options(schema_translate_map={PLACEHOLDER: schema})
        try:
            SCHEMA_METADATA.create_all(translated, checkfirst=False)
            _stamp_head(connection, schema)
        finally:
            connection.execution_options(schema_translate_map=None)
    return time.perf_counter() - started


def _stamp_head(connection, schema: str) -> None:
    from psycopg import sql

    head = _head_revision()
    raw = connection.connection.driver_connection
    table = sql.Identifier(schema, "alembic_version")
    raw.execute(
        sql.SQL(
            "CREATE TABLE {} (version_num varchar(32) NOT NULL, "
            "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
        ).format(table)
    )
    raw.execute(sql.SQL("INSERT INTO {} VALUES (%s)").format(table), (head,))


def _head_revision() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(config).get_current_head()


def schema_fingerprint(bind, schema: str) -> dict[str, Any]:
    """What a tenant schema holds, by name: columns (name, type, nullable), indexes
    (definitions with the schema name taken out) and the Alembic revision."""
    with _connection(bind) as conn:
        columns = conn.execute(
            text(
                "SELECT table_name, column_name, data_type, is_nullable "
                "FROM information_schema.columns WHERE table_schema = :s ORDER BY 1, 2"
            ),
            {"s": schema},
        ).all()
        indexes = conn.execute(
            text("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = :s ORDER BY 1"),
            {"s": schema},
        ).all()
        version = conn.execute(
            text("SELECT version_num FROM " + _quoted(conn, schema) + ".alembic_version")
        ).scalar()
    return {
        "columns": [tuple(row) for row in columns],
        "indexes": [(n, d.replace(_quoted(None, schema) + ".", "")) for n, d in indexes],
        "version": version,
    }


def _quoted(conn, name: str) -> str:
    from sqlalchemy.dialects import postgresql

    return postgresql.dialect().identifier_preparer.quote(check_schema_name(name))


def load_schema_data(connection, schema: str, *, projects: int, tasks: int) -> int:
    """Fill one tenant schema with ``projects`` × ``tasks`` rows (as :func:`load_shared`
    gives each tenant); returns the tasks added."""
    quoted = _quoted(None, schema)
    connection.execute(
        text(
            f"INSERT INTO {quoted}.projects (name) "
            "SELECT 'project ' || g FROM generate_series(1, CAST(:p AS int)) AS g"
        ),
        {"p": projects},
    )
    added = connection.execute(
        text(
            f"INSERT INTO {quoted}.tasks (project_id, title, done) "
            f"SELECT p.id, 'task ' || k, k % 3 = 0 FROM {quoted}.projects AS p, "
            "generate_series(1, CAST(:k AS int)) AS k"
        ),
        {"k": tasks},
    ).rowcount
    return added


# --------------------------------------------------------------------------- measures


def catalog_cost(bind) -> dict[str, int]:
    """The catalog's size in this database: rows of ``pg_class`` (tables, indexes,
    sequences, TOAST) and ``pg_attribute`` (their columns), the bytes of both catalogs
    (with their indexes), and the whole database's bytes."""
    with _connection(bind) as conn:
        row = conn.execute(
            text(
                "SELECT (SELECT count(*) FROM pg_class) AS pg_class_rows, "
                "(SELECT count(*) FROM pg_attribute) AS pg_attribute_rows, "
                "pg_total_relation_size('pg_catalog.pg_class') AS pg_class_bytes, "
                "pg_total_relation_size('pg_catalog.pg_attribute') AS pg_attribute_bytes, "
                "pg_database_size(current_database()) AS database_bytes"
            )
        ).one()
    return dict(row._mapping)


def catalog_comparison(
    sizes: Iterable[int],
    *,
    prefix: str = "s12a_catalog",
    projects: int = 3,
    tasks: int = 5,
    alembic_sample: int = 10,
    batch: int = 100,
    progress: bool = True,
):
    """Hold the same tenants both ways and measure the catalog at each size in ``sizes``
    (increasing): a database ``<prefix>_rows`` with shared tables (``tenants`` rows), and a
    database ``<prefix>_schemas`` with one schema per tenant, each with ``projects`` ×
    ``tasks`` rows. The first ``alembic_sample`` schemas are provisioned through Alembic
    (timed one by one); the rest through the same tables from ``SCHEMA_METADATA`` with the
    version stamped, ``batch`` tenants per transaction (timed per batch).

    Returns ``(frame, timings)``: one row per (layout, tenants) with :func:`catalog_cost`'s
    columns, starting with ``tenants=0`` (the empty database: the shared tables, or no
    schema), and the seconds per tenant of each provisioning path."""
    import sys

    import pandas as pd
    from tqdm import tqdm  # plain text on stdout: a saved notebook shows the final count

    from labkit import db

    sizes = sorted(sizes)
    rows_engine = db.fresh_database(f"{prefix}_rows").engine()
    schemas_engine = db.fresh_database(f"{prefix}_schemas").engine()
    create_shared(rows_engine)
    records, alembic_s, bulk_s = [], [], []
    for layout, engine in (("row-based", rows_engine), ("schema per tenant", schemas_engine)):
        records.append({"layout": layout, "tenants": 0, **catalog_cost(engine)})
    done = 0
    bar = tqdm(total=sizes[-1], desc="tenants", file=sys.stdout, disable=not progress)
    try:
        for size in sizes:
            load_shared(
                rows_engine, tenants=size - done, projects=projects, tasks=tasks, first=done + 1
            )
            while done < size:
                if done < alembic_sample:
                    with schemas_engine.begin() as conn:
                        name = f"tenant_{done + 1}"
                        alembic_s.append(provision_schema(conn, name))
                        load_schema_data(conn, name, projects=projects, tasks=tasks)
                    done += 1
                    bar.update(1)
                    continue
                count = min(batch, size - done)
                started = time.perf_counter()
                with schemas_engine.begin() as conn:
                    for number in range(done + 1, done + count + 1):
                        provision_schema(conn, f"tenant_{number}", migrate=False)
                        load_schema_data(conn, f"tenant_{number}", projects=projects, tasks=tasks)
                bulk_s.append((time.perf_counter() - started) / count)
                done += count
                bar.update(count)
            for layout, engine in (
                ("row-based", rows_engine),
                ("schema per tenant", schemas_engine),
            ):
                records.append({"layout": layout, "tenants": size, **catalog_cost(engine)})
    finally:
        bar.close()
        rows_engine.dispose()
        schemas_engine.dispose()
    timings = {
        "alembic_ms_per_tenant": 1000 * sum(alembic_s) / len(alembic_s) if alembic_s else None,
        "alembic_tenants": len(alembic_s),
        "bulk_ms_per_tenant": 1000 * sum(bulk_s) / len(bulk_s) if bulk_s else None,
        "bulk_tenants": done - len(alembic_s),
    }
    return pd.DataFrame(records), timings


def catalog_table(frame):
    """:func:`catalog_comparison`'s frame for reading: relations, MB, growth over the empty
    database (``tenants=0``) in MB and in kB per tenant."""
    empty = frame[frame["tenants"] == 0].set_index("layout")["database_bytes"]
    table = frame[frame["tenants"] > 0].copy()
    grown = table["database_bytes"] - table["layout"].map(empty)
    return table.assign(
        relations=table["pg_class_rows"],
        database_MB=(table["database_bytes"] / 1e6).round(1),
        grown_MB=(grown / 1e6).round(2),
        kB_per_tenant=(grown / 1e3 / table["tenants"]).round(1),
    )[["layout", "tenants", "relations", "database_MB", "grown_MB", "kB_per_tenant"]].reset_index(
        drop=True
    )


def relcache_bytes(engine, statements) -> int:
    """Bytes the backend's catalog cache (``CacheMemoryContext`` and its children) grows by
    while one fresh connection runs ``statements`` (SQL text) once each."""
    query = text(
        "WITH ctx AS (SELECT * FROM pg_backend_memory_contexts), "
        "cache AS (SELECT level, path[level] AS id FROM ctx WHERE name = 'CacheMemoryContext') "
        "SELECT sum(total_bytes) FROM ctx, cache WHERE ctx.path[cache.level] = cache.id"
    )
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
        before = conn.execute(query).scalar_one()
        for statement in statements:
            conn.execute(text(statement))
        after = conn.execute(query).scalar_one()
    return int(after - before)


def pg_dump_schema_seconds(database) -> float:
    """Seconds ``pg_dump --schema-only`` takes on ``database`` (a ``labkit.db.Database``),
    output discarded. The password goes through the environment, never the command line."""
    import os
    import subprocess

    from sqlalchemy.engine import make_url

    from labkit.supervisor import postgres_bin_dir

    url = make_url(database.sqlalchemy_url)
    env = dict(os.environ, PGPASSWORD=url.password or "")
    command = [
        str(postgres_bin_dir() / "pg_dump"), "--schema-only", "--no-password",
        "-h", url.host or "127.0.0.1", "-p", str(url.port or 5432),
        "-U", url.username or "postgres", "-d", url.database, "-f", os.devnull,
    ]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True, timeout=300)
    return time.perf_counter() - started


def plot_catalog(frame):
    """Bars of pg_class rows and database size per layout and number of tenants."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    frame = frame[frame["tenants"] > 0]
    pivot = frame.pivot(index="tenants", columns="layout", values="pg_class_rows")
    pivot.plot.bar(ax=axes[0], rot=0)
    axes[0].set(title="pg_class rows (tables, indexes, sequences)", ylabel="rows")
    size = frame.pivot(index="tenants", columns="layout", values="database_bytes") / 1e6
    size.plot.bar(ax=axes[1], rot=0)
    axes[1].set(title="database size", ylabel="MB")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- moving a tenant


def move_tenant_to_schema(engine, tenant_id: int, schema: str) -> dict[str, int]:
    """Move tenant ``tenant_id`` out of the shared tables into a schema of its own, in ONE
    transaction: lock the tenant (its directory row, so no new rows can reference it, and
    its rows), provision ``schema`` with the migrations, copy each table keeping the ids,
    check that every table's count in the schema equals the shared count (else roll back),
    delete the tenant's shared rows, record ``schema_name`` in the directory. Returns the
    rows moved per table. Readers see the tenant in the shared tables until the commit,
    and in its schema from the commit on: nothing in between.

    The tenant's writers wait for the whole copy (they need the locks the move holds), and
    after the commit a :class:`TenantSession` refuses the tenant's writes to the shared
    tables (``schema_name`` is set). Raw SQL is not stopped: it must read the directory
    too. Fine for a small tenant; a large one is copied while it keeps writing, caught up
    (logical replication of its rows) and switched over in a short locked step."""
    check_schema_name(schema)
    moved: dict[str, int] = {}
    with engine.begin() as conn:
        directory = conn.execute(
            select(Tenant.schema_name).where(Tenant.id == tenant_id).with_for_update()
        ).first()
        if directory is None:
            raise TenantError(f"no tenant {tenant_id} in the tenants table")
        if directory.schema_name is not None:
            raise TenantError(f"tenant {tenant_id} lives in schema {directory.schema_name!r}")
        for table in SHARED_TABLES:
            conn.execute(
                text(f"SELECT 1 FROM {table} WHERE tenant_id = :t FOR UPDATE"), {"t": tenant_id}
            )
        provision_schema(conn, schema)
        translated = conn.execution_options(schema_translate_map={PLACEHOLDER: schema})
        try:
            for table in SHARED_TABLES:
                target = SCHEMA_METADATA.tables[f"{PLACEHOLDER}.{table}"]
                source = Base.metadata.tables[table]
                names = [c.name for c in target.columns]
                copied = translated.execute(
                    target.insert()
                    .from_select(
                        names,
                        select(*(source.c[n] for n in names)).where(
                            source.c.tenant_id == tenant_id
                        ),
                    )
                    .execution_options(preserve_rowcount=True)
                ).rowcount
                shared = translated.execute(
                    select(func.count()).select_from(source).where(source.c.tenant_id == tenant_id)
                ).scalar_one()
                landed = translated.execute(select(func.count()).select_from(target)).scalar_one()
                if not copied == shared == landed:
                    raise TenantError(
                        f"{table}: {shared} shared rows, {copied} copied, {landed} in "
                        f"{schema}: the move is rolled back"
                    )
                translated.execute(
                    text(
                        "SELECT setval(pg_get_serial_sequence(format('%I.%I', CAST(:s AS text), CAST(:t AS text)), 'id'), "
                        f"coalesce(max(id), 0) + 1, false) FROM {_quoted(None, schema)}.{table}"
                    ),
                    {"s": schema, "t": table},
                )
                moved[table] = landed
            for table in reversed(SHARED_TABLES):
                source = Base.metadata.tables[table]
                translated.execute(source.delete().where(source.c.tenant_id == tenant_id))
            translated.execute(
                Tenant.__table__.update()
                .where(Tenant.__table__.c.id == tenant_id)
                .values(schema_name=schema)
            )
        finally:
            conn.execution_options(schema_translate_map=None)
    return moved
