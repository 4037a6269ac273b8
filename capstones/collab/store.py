"""CRDT documents in PostgreSQL."""

from __future__ import annotations

from labkit.collab import check_name, check_update, new_doc, text

from .schema import scope


class Store:
    """The documents of every tenant, read and written as the app's role (``app_url``)."""

    def __init__(self, app_url: str) -> None:
        self.app_url = app_url

    def append(self, tenant_id: int, doc: str, update: bytes) -> None:
        """Store one update of ``tenant_id``'s document ``doc``.

        TODO (R1): this keeps only the LAST update (last-write-wins): every earlier edit
        is lost for the next reader. Insert one row per update and return its id."""
        import psycopg

        update = check_update(update)
        check_name(doc)
        with psycopg.connect(self.app_url) as conn:
            scope(conn, tenant_id)
            conn.execute(
                "INSERT INTO documents (tenant_id, name, state) VALUES (%s, %s, %s)"
                " ON CONFLICT (tenant_id, name) DO UPDATE SET state = excluded.state",
                (tenant_id, doc, update),
            )

    def load(self, tenant_id: int, doc: str):
        """The document as a pycrdt ``Doc``.

        TODO (R1): merge EVERY stored update of the document (``apply_update`` each, in
        any order: a CRDT does not mind)."""
        import psycopg

        restored = new_doc()
        text(restored)
        with psycopg.connect(self.app_url) as conn:
            scope(conn, tenant_id)
            row = conn.execute(
                "SELECT state FROM documents WHERE tenant_id = %s AND name = %s", (tenant_id, doc)
            ).fetchone()
        if row is not None:
            restored.apply_update(bytes(row[0]))
        return restored

    def text(self, tenant_id: int, doc: str) -> str:
        return str(text(self.load(tenant_id, doc)))
