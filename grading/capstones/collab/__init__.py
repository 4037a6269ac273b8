"""Capstone: the real-time collaboration platform, the instructors' reference solution.

The public interface the acceptance suite drives (``python -m labkit check capstone-collab``):

- :func:`setup` ``(database_url) -> app_url``: the schema, its row-level security, and the
  URL of the ordinary role the servers connect as.
- :func:`token_for` ``(tenant_id, secret) -> str``: a client's signed token.
- :func:`tenant_connection` ``(app_url, tenant_id)``: a psycopg connection scoped to one tenant.
- :class:`Store` ``(app_url)``: ``.append(tenant_id, doc, update)``, ``.load(tenant_id, doc)``,
  ``.text(tenant_id, doc)``.
- :func:`create_app` ``(app_url, secret)``: the ASGI app (WebSocket ``/docs/{name}?token=...``).
"""

from .auth import token_for, verify_token
from .schema import setup, tenant_connection
from .server import create_app
from .store import Store

__all__ = ["Store", "create_app", "setup", "tenant_connection", "token_for", "verify_token"]
