"""Who a client is: a token signed by the server's secret that names its tenant.

The tenant comes from the token and nowhere else: a client cannot pick its tenant by
naming it in the URL, and a token signed with any other secret is refused."""

from __future__ import annotations

import time

ALGORITHM = "HS256"
LIFETIME_S = 3600


def token_for(tenant_id: int, secret: str) -> str:
    """A token for one client of ``tenant_id`` (a JWT signed with ``secret``, valid 1 h)."""
    import jwt

    claims = {"tenant": int(tenant_id), "exp": int(time.time()) + LIFETIME_S}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_token(token: str | None, secret: str) -> int:
    """The tenant id a token was signed for; ValueError if it is missing, forged or expired."""
    import jwt

    if not token:
        raise ValueError("no token: connect with ?token=...")
    try:
        claims = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": ["exp", "tenant"]}
        )
        return int(claims["tenant"])
    except (jwt.PyJWTError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"token refused ({type(exc).__name__})") from None
