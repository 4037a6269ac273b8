"""Why a B-tree index does not serve ``LIKE 'prefix%'``: the collation decides.

A B-tree turns ``LIKE 'ab%'`` into the range ``>= 'ab' AND < 'ac'`` only if it is sorted in
byte order (the ``C`` collation, or one of PostgreSQL's builtin ones). Under a linguistic
collation (``en_US.UTF-8``, even libc's ``C.UTF-8``) it cannot, and the index needs the
``text_pattern_ops`` operator class. The course's server is initialised without a locale
(collation ``C``); ``collated_copy`` copies a column under another collation to show the
other case:

>>> from labkit import data, db, index_misses
>>> demo = data.blog_database("doctest_index_misses", scale="tiny")
>>> conn = demo.connect(autocommit=True)
>>> index_misses.database_collation(conn)  # doctest: +SKIP
Collation(name='C', provider='libc', byte_order=True)
>>> linguistic = index_misses.linguistic_collation(conn)
>>> linguistic not in ("C", "POSIX")
True
>>> print(index_misses.collated_copy(conn, "titles", "posts", "title", linguistic))  # doctest: +ELLIPSIS
CREATE TABLE "titles" AS SELECT "title"::text COLLATE "..." AS "title" FROM "posts"
>>> _ = conn.execute("CREATE INDEX ix_plain ON titles (title)")
>>> _ = conn.execute("ANALYZE titles")
>>> like = "SELECT title FROM titles WHERE title LIKE 'Loop Red%'"
>>> db.explain(conn, like).uses_index("ix_plain")
False
>>> _ = conn.execute("CREATE INDEX ix_pattern ON titles (title text_pattern_ops)")
>>> db.explain(conn, like).uses_index("ix_pattern")
True
>>> conn.close(); db.drop_database("doctest_index_misses")
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Collation", "collated_copy", "database_collation", "linguistic_collation"]

_PROVIDERS = {"b": "builtin", "c": "libc", "i": "icu"}


@dataclass(frozen=True)
class Collation:
    """A database's default collation: its ``name``, its ``provider`` (libc, icu or
    builtin) and whether it sorts text in ``byte_order`` (code point order), the order in
    which a plain B-tree index can serve ``LIKE 'prefix%'``."""

    name: str
    provider: str
    byte_order: bool


def database_collation(conn: Any) -> Collation:
    """The collation of the database ``conn`` is connected to (``pg_database``).

    libc's ``C`` and ``POSIX`` sort in byte order, and so do all of PostgreSQL's builtin
    collations (``C``, ``C.UTF-8``, ``PG_UNICODE_FAST``); ICU and the other libc ones do not."""
    name, provider = conn.execute(
        "SELECT CASE WHEN datlocprovider = 'c' THEN datcollate ELSE datlocale END, "
        "datlocprovider FROM pg_database WHERE datname = current_database()"
    ).fetchone()
    byte_order = provider == "b" or (provider == "c" and name in ("C", "POSIX"))
    return Collation(name=name, provider=_PROVIDERS.get(provider, provider), byte_order=byte_order)


def linguistic_collation(conn: Any) -> str:
    """The name of a libc collation of this server that does not sort in byte order (so a
    plain B-tree cannot serve ``LIKE 'prefix%'`` under it): the database's own if it is
    one, else ``C.utf8`` or ``en_US.utf8`` if installed, else the first in the catalog."""
    row = conn.execute(
        """
        SELECT collname FROM pg_collation
        WHERE collprovider = 'c' AND collname NOT IN ('C', 'POSIX')
          AND collencoding IN (-1, (SELECT encoding FROM pg_database
                                    WHERE datname = current_database()))
        ORDER BY collcollate = (SELECT datcollate FROM pg_database
                                WHERE datname = current_database()) DESC,
                 lower(collname) IN ('c.utf8', 'c.utf-8') DESC,
                 lower(collname) IN ('en_us.utf8', 'en_us.utf-8') DESC,
                 collname
        LIMIT 1
        """
    ).fetchone()
    if row is None:
        raise LookupError(
            "this server has no libc collation but C and POSIX: its operating system had no "
            "other locale installed when the cluster was created (initdb)"
        )
    return row[0]


def collated_copy(conn: Any, new_table: str, source_table: str, column: str, collation: str) -> str:
    """Create ``new_table`` holding ``source_table``'s ``column`` as ``text`` under
    ``collation`` (dropping an older ``new_table``); return the ``CREATE TABLE`` statement."""
    from psycopg import sql

    create = sql.SQL(
        "CREATE TABLE {new} AS SELECT {column}::text COLLATE {collation} AS {column} FROM {source}"
    ).format(
        new=sql.Identifier(new_table),
        column=sql.Identifier(column),
        collation=sql.Identifier(collation),
        source=sql.Identifier(source_table),
    )
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(new_table)))
    conn.execute(create)
    return create.as_string(conn)
