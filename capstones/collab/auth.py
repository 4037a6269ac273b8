"""Who a client is: a token that names its tenant."""

from __future__ import annotations


def token_for(tenant_id: int, secret: str) -> str:
    """A token for one client of ``tenant_id``.

    TODO (R2): anyone can write "2" and become tenant 2. Sign the token with ``secret``
    (a JWT with pyjwt, ``jwt.encode({"tenant": ..., "exp": ...}, secret, "HS256")``) so
    that only the server can mint one."""
    return str(int(tenant_id))


def verify_token(token: str | None, secret: str) -> int:
    """The tenant id of a token; ValueError if it is missing or not valid.

    TODO (R2): verify the signature with ``secret`` (``jwt.decode(..., algorithms=["HS256"],
    options={"require": ["exp", "tenant"]})``: an expired token, or one with no ``exp``, is
    refused too) and refuse anything else."""
    if not token:
        raise ValueError("no token: connect with ?token=...")
    try:
        return int(token)
    except ValueError:
        raise ValueError("not a token") from None
