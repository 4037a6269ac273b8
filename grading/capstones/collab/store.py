"""CRDT documents in PostgreSQL: every update a client sends is one row; a document is all of
its rows merged, in any order (a CRDT merge does not care)."""

from __future__ import annotations

import json

from labkit.collab import check_name, check_update, new_doc, text

from .schema import scope

CHANNEL = "collab_updates"

INSERT = "INSERT INTO doc_updates (tenant_id, doc, update) VALUES (%s, %s, %s) RETURNING id"
SELECT_DOC = "SELECT update FROM doc_updates WHERE tenant_id = %s AND doc = %s ORDER BY id"


def notice(tenant_id: int, doc: str, row_id: int) -> str:
    """The NOTIFY payload that tells every server instance a row was committed."""
    return json.dumps({"tenant": int(tenant_id), "doc": doc, "id": int(row_id)})


class Store:
    """The documents of every tenant, read and written as the app's role (``app_url``)."""

    def __init__(self, app_url: str) -> None:
        self.app_url = app_url

    def append(self, tenant_id: int, doc: str, update: bytes) -> int:
        """Store one update (checked first) and notify the servers, in one transaction."""
        import psycopg

        update = check_update(update)
        check_name(doc)
        with psycopg.connect(self.app_url) as conn:
            scope(conn, tenant_id)
            row_id = conn.execute(INSERT, (tenant_id, doc, update)).fetchone()[0]
            conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, notice(tenant_id, doc, row_id)))
        return row_id

    def load(self, tenant_id: int, doc: str):
        """The document merged from every stored update (a pycrdt ``Doc``)."""
        import psycopg

        restored = new_doc()
        text(restored)
        with psycopg.connect(self.app_url) as conn:
            scope(conn, tenant_id)
            rows = conn.execute(SELECT_DOC, (tenant_id, doc)).fetchall()
        for (update,) in rows:
            restored.apply_update(bytes(update))
        return restored

    def text(self, tenant_id: int, doc: str) -> str:
        return str(text(self.load(tenant_id, doc)))
