"""Prepared statements and the plans PostgreSQL keeps for them: what one connection has
prepared (``pg_prepared_statements``), the generic plan of a statement, the plan that an
``EXECUTE`` of a prepared statement really runs, and the PgBouncer version installed.

psycopg 3 prepares a statement the sixth time one connection runs it (``prepare_threshold``
is 5). PostgreSQL plans the first five executions of a prepared statement with the
parameters' values (custom plans); from the sixth on, it may keep one generic plan, made
for any value. Here on the tiny dataset, twelve runs on one connection::

    >>> from labkit import data, db, plancache
    >>> demo = data.blog_database("doctest_plancache", scale="tiny")
    >>> QUERY = "SELECT count(*) FROM posts WHERE author_id = %(author)s"
    >>> with demo.connect(autocommit=True) as conn:
    ...     for _ in range(12):
    ...         _ = conn.execute(QUERY, {"author": 1}).fetchone()
    ...     [(s.name, s.custom_plans, s.generic_plans) for s in plancache.prepared_statements(conn)]
    [('_pg3_0', 5, 2)]

The generic plan, without running anything, and the plan an ``EXECUTE`` runs (it counts
as one more execution)::

    >>> with demo.connect(autocommit=True) as conn:
    ...     plancache.generic_plan(conn, QUERY).node_types[-1]
    ...     _ = conn.execute(QUERY, {"author": 1}, prepare=True).fetchone()
    ...     plancache.explain_prepared(conn, "_pg3_0", 1).actual_rows
    'Seq Scan'
    1
    >>> db.drop_database("doctest_plancache")

The questions these functions send are never prepared themselves (``prepare=False``).
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from typing import Any

from labkit import db

__all__ = [
    "PreparedStatement",
    "dollar_parameters",
    "explain_prepared",
    "generic_plan",
    "pgbouncer_version",
    "prepared_statements",
]


@dataclass(frozen=True)
class PreparedStatement:
    """One row of ``pg_prepared_statements``: the statement's name and text, and how many
    times the server ran it with a custom plan and with the generic plan."""

    name: str
    statement: str
    custom_plans: int
    generic_plans: int


def _driver(conn: Any):
    """The psycopg connection behind ``conn`` (a SQLAlchemy Connection, or psycopg's own)."""
    driver = getattr(getattr(conn, "connection", None), "driver_connection", None)
    return driver if driver is not None else conn


def prepared_statements(conn: Any) -> list[PreparedStatement]:
    """The statements prepared on ``conn``'s server session (its ``pg_prepared_statements``),
    oldest first. ``conn`` is a psycopg connection or a SQLAlchemy Connection."""
    rows = _driver(conn).execute(
        "SELECT name, regexp_replace(statement, '\\s+', ' ', 'g'), custom_plans, "
        "generic_plans FROM pg_prepared_statements ORDER BY prepare_time, name",
        prepare=False,
    )
    return [PreparedStatement(*row) for row in rows.fetchall()]


_PLACEHOLDER = re.compile(r"%%|%\((\w+)\)s|%s")


def dollar_parameters(sql: str) -> str:
    """``sql`` with psycopg's placeholders (``%s``, ``%(name)s``) written as PostgreSQL's
    ``$1``, ``$2``… — the same name gets the same number.

    >>> dollar_parameters("SELECT %(a)s, %(b)s, %(a)s, '100%%'")
    "SELECT $1, $2, $1, '100%'"
    """
    numbers: dict[str, int] = {}

    def number(match: re.Match) -> str:
        if match.group(0) == "%%":
            return "%"
        key = match.group(1) or f"#{len(numbers)}"
        numbers.setdefault(key, len(numbers) + 1)
        return f"${numbers[key]}"

    return _PLACEHOLDER.sub(number, sql)


def generic_plan(conn: Any, sql: str) -> db.Plan:
    """The generic plan of ``sql`` (psycopg placeholders), from ``EXPLAIN (GENERIC_PLAN)``
    (PostgreSQL 16+): planned for any parameter value, and not run."""
    query = "EXPLAIN (GENERIC_PLAN, FORMAT JSON) " + dollar_parameters(sql)
    row = _driver(conn).execute(query, prepare=False).fetchone()
    return db.Plan(db._first(row[0]))


def explain_prepared(conn: Any, name: str, *params: Any, analyze: bool = True) -> db.Plan:
    """``EXPLAIN (ANALYZE, BUFFERS) EXECUTE name(params)`` on ``conn``, where the statement
    ``name`` is prepared: the plan the server's plan cache picks for these values (custom
    or generic, as ``plan_cache_mode`` and its counts decide). With ``analyze`` it runs, and
    counts as one more execution of the statement."""
    from psycopg import sql

    options = sql.SQL("ANALYZE, BUFFERS, FORMAT JSON" if analyze else "FORMAT JSON")
    arguments = sql.SQL("({})").format(sql.SQL(", ").join(map(sql.Literal, params)))
    query = sql.SQL("EXPLAIN ({}) EXECUTE {}{}").format(
        options, sql.Identifier(name), arguments if params else sql.SQL("")
    )
    row = _driver(conn).execute(query, prepare=False).fetchone()
    return db.Plan(db._first(row[0]))


def pgbouncer_version() -> tuple[int, ...] | None:
    """The installed PgBouncer's version from ``pgbouncer --version`` (e.g. ``(1, 18, 0)``),
    or None if it is not installed."""
    from labkit.errors import ServiceError
    from labkit.serverless import pgbouncer_binary

    try:
        binary = pgbouncer_binary()
    except ServiceError:
        return None
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    found = re.search(r"PgBouncer (\d+)\.(\d+)(?:\.(\d+))?", out.stdout + out.stderr)
    if not found:
        return None
    return tuple(int(part) for part in found.groups(default="0"))
