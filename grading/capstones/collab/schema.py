"""The database: one append-only table of CRDT updates, isolated per tenant by PostgreSQL's
row-level security, and the ordinary role the servers connect as.

The policy compares each row's ``tenant_id`` with the setting ``app.tenant_id``, which the
server sets inside every transaction (``set_config(..., true)``: it ends with the
transaction, so a pooled connection never carries a tenant over). A connection that
forgot to set it sees no row at all. ``FORCE`` makes the policy apply to the table's owner
too, and the servers do not connect as the owner anyway."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from urllib.parse import urlsplit

ROLE = "collab_app"
TENANT_SETTING = "app.tenant_id"
CURRENT_TENANT = "nullif(current_setting('app.tenant_id', true), '')::int"


def setup(database_url: str) -> str:
    """Create the schema in the database at ``database_url`` (as its owner), turn row-level
    security on, and return the URL of the ordinary role the app connects as."""
    import psycopg
    from psycopg import sql

    from labkit import db

    role = db.login_role(ROLE)
    policy_check = sql.SQL(CURRENT_TENANT)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS doc_updates ("
            " id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
            " tenant_id int NOT NULL,"
            " doc text NOT NULL,"
            " update bytea NOT NULL,"
            " added_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.execute(
            "CREATE INDEX IF NOT EXISTS doc_updates_tenant_doc ON doc_updates (tenant_id, doc, id)"
        )
        conn.execute("ALTER TABLE doc_updates ENABLE ROW LEVEL SECURITY")
        conn.execute("ALTER TABLE doc_updates FORCE ROW LEVEL SECURITY")
        conn.execute("DROP POLICY IF EXISTS tenant_isolation ON doc_updates")
        conn.execute(
            sql.SQL(
                "CREATE POLICY tenant_isolation ON doc_updates"
                " USING (tenant_id = {check}) WITH CHECK (tenant_id = {check})"
            ).format(check=policy_check)
        )
        conn.execute(
            sql.SQL("GRANT SELECT, INSERT ON doc_updates TO {}").format(sql.Identifier(role.name))
        )
    return role.url(urlsplit(database_url).path.lstrip("/"))


def scope(conn, tenant_id: int) -> None:
    """Scope the current transaction of ``conn`` to ``tenant_id``."""
    conn.execute("SELECT set_config(%s, %s, true)", (TENANT_SETTING, str(int(tenant_id))))


@contextlib.contextmanager
def tenant_connection(app_url: str, tenant_id: int) -> Iterator:
    """A psycopg connection (as the app's role) that sees only ``tenant_id``'s rows."""
    import psycopg

    with psycopg.connect(app_url, autocommit=True) as conn:
        conn.execute("SELECT set_config(%s, %s, false)", (TENANT_SETTING, str(int(tenant_id))))
        yield conn
