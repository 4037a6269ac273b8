"""Capstone: the real-time collaboration platform, YOUR project (the starter).

The brief is notebooks/05-capstone-collab.ipynb. Check your work with
``python -m labkit check capstone-collab --size ci``.

The public interface the acceptance suite drives (keep these names and signatures):

- :func:`setup` ``(database_url) -> app_url``: the schema, its row-level security, and the
  URL of the role the servers connect as.
- :func:`token_for` ``(tenant_id, secret) -> str``: a client's token.
- :func:`tenant_connection` ``(app_url, tenant_id)``: a psycopg connection scoped to one tenant.
- :class:`Store` ``(app_url)``: ``.append(tenant_id, doc, update)``, ``.load(tenant_id, doc)``,
  ``.text(tenant_id, doc)``.
- :func:`create_app` ``(app_url, secret)``: the ASGI app (WebSocket ``/docs/{name}?token=...``).

The starter runs: one server, one tenant at a time, a few clients. Every ``TODO`` below is
work the acceptance suite checks.
"""

from .auth import token_for, verify_token
from .schema import setup, tenant_connection
from .server import create_app
from .store import Store

__all__ = ["Store", "create_app", "setup", "tenant_connection", "token_for", "verify_token"]
