"""The database: the documents' table, and the role the servers connect as."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

TENANT_SETTING = "app.tenant_id"


def setup(database_url: str) -> str:
    """Create the schema in the database at ``database_url`` (you are its owner here) and
    return the URL the app connects with.

    TODO (R1): one row per document, overwritten by each update, is last-write-wins.
    Store every update as a row of its own (append-only) instead.

    TODO (R2): every table with tenant rows needs a ``tenant_id`` column and row-level
    security: ENABLE and FORCE it, and a policy comparing ``tenant_id`` with the setting
    ``app.tenant_id``. Then create an ordinary role (``labkit.db.login_role``), grant it only
    what the app needs, and return ITS URL (``role.url(database_name)``): the owner's URL,
    returned now, skips every policy."""
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS documents ("
            " tenant_id int NOT NULL,"
            " name text NOT NULL,"
            " state bytea NOT NULL,"
            " PRIMARY KEY (tenant_id, name))"
        )
    return database_url


def scope(conn, tenant_id: int) -> None:
    """Scope the current transaction of ``conn`` to ``tenant_id`` (what your policy reads)."""
    conn.execute("SELECT set_config(%s, %s, true)", (TENANT_SETTING, str(int(tenant_id))))


@contextlib.contextmanager
def tenant_connection(app_url: str, tenant_id: int) -> Iterator:
    """A psycopg connection (as the app's role) for ``tenant_id``. With row-level security
    it sees only that tenant's rows, whatever the query forgets to filter."""
    import psycopg

    with psycopg.connect(app_url, autocommit=True) as conn:
        conn.execute("SELECT set_config(%s, %s, false)", (TENANT_SETTING, str(int(tenant_id))))
        yield conn
