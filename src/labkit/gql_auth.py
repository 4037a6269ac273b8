"""Passwords and tokens for the GraphQL API: argon2 hashes and short-lived HS256 JWTs.

>>> from labkit import gql_auth
>>> hashed = gql_auth.hash_password("correct horse battery staple")
>>> hashed.startswith("$argon2id$"), gql_auth.verify_password(hashed, "correct horse battery staple")
(True, True)
>>> gql_auth.verify_password(hashed, "wrong")
False
>>> key = gql_auth.signing_key({"LABKIT_JWT_KEY": "k" * 32})
>>> token = gql_auth.issue_token(7, key, minutes=5)
>>> gql_auth.read_token(token, key)
7
>>> gql_auth.read_token(token + "x", key)
Traceback (most recent call last):
...
labkit.gql_auth.TokenError: invalid token: the signature does not match (was it changed?); log in again
>>> gql_auth.signing_key({"LABKIT_JWT_KEY": "short"})
Traceback (most recent call last):
...
ValueError: LABKIT_JWT_KEY is 5 bytes long: HS256 needs a key of at least 32 bytes ...

The key comes from the environment (``LABKIT_JWT_KEY``); when it is unset, one is made at
run time with :func:`secrets.token_urlsafe` (tokens then hold only for this process). It is
never written to the repository or to a notebook's output.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Mapping

from labkit.errors import LabkitError

__all__ = [
    "ALGORITHM",
    "KEY_ENV",
    "MIN_KEY_BYTES",
    "TokenError",
    "hash_password",
    "issue_token",
    "read_token",
    "signing_key",
    "tampered",
    "verify_password",
]

ALGORITHM = "HS256"
KEY_ENV = "LABKIT_JWT_KEY"
MIN_KEY_BYTES = 32  # RFC 7518 §3.2: an HS256 key at least as long as the hash (256 bits)


class TokenError(LabkitError):
    """A token that must not be trusted: the message says why and what to do."""


def _hasher():
    from argon2 import PasswordHasher

    return PasswordHasher()  # argon2id, RFC 9106's defaults


def hash_password(password: str) -> str:
    """An argon2id hash of ``password`` (salted; the parameters are stored in the hash)."""
    if not password:
        raise ValueError("a password must not be empty")
    return _hasher().hash(password)


def verify_password(hashed: str, password: str) -> bool:
    """Whether ``password`` matches ``hashed`` (False, never an exception, on a mismatch)."""
    from argon2.exceptions import InvalidHashError, VerificationError

    try:
        return _hasher().verify(hashed, password)
    except (VerificationError, InvalidHashError):
        return False


#: A hash to verify against when the e-mail is unknown, so that a wrong e-mail costs the same
#: time as a wrong password (no user enumeration by timing). Made on first use.
_DUMMY: dict[str, str] = {}


def dummy_verify(password: str) -> bool:
    """Spend the time of one verification, for an unknown user; always False."""
    if "hash" not in _DUMMY:
        _DUMMY["hash"] = hash_password(secrets.token_urlsafe(16))
    verify_password(_DUMMY["hash"], password)
    return False


def signing_key(environ: Mapping[str, str] | None = None) -> bytes:
    """The HS256 key from ``LABKIT_JWT_KEY``, or a fresh random one when it is unset.

    Raises ValueError, saying what to do, when the key is shorter than 32 bytes."""
    environ = os.environ if environ is None else environ
    value = environ.get(KEY_ENV)
    if not value:
        return secrets.token_bytes(MIN_KEY_BYTES)
    key = value.encode()
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(
            f"{KEY_ENV} is {len(key)} bytes long: HS256 needs a key of at least "
            f"{MIN_KEY_BYTES} bytes (make one with `python -c 'import secrets; "
            "print(secrets.token_urlsafe(48))'`)"
        )
    return key


def issue_token(user_id: int, key: bytes, *, minutes: float = 15, now: float | None = None) -> str:
    """A JWT for ``user_id`` signed with ``key`` (HS256), expiring after ``minutes``."""
    import jwt

    issued = int(time.time() if now is None else now)
    claims = {"sub": str(user_id), "iat": issued, "exp": issued + int(minutes * 60)}
    return jwt.encode(claims, key, algorithm=ALGORITHM)


def read_token(token: str, key: bytes) -> int:
    """The user id in ``token`` once its signature, algorithm and expiry are checked.

    Only HS256 is accepted (``alg: none`` and every other algorithm are refused: the
    algorithm is the server's choice, never the token's); ``exp`` and ``sub`` are
    required. Raises :class:`TokenError` with a clear message otherwise."""
    import jwt

    try:
        claims = jwt.decode(
            token, key, algorithms=[ALGORITHM], options={"require": ["exp", "sub", "iat"]}
        )
    except jwt.ExpiredSignatureError:
        raise TokenError("token expired: log in again to get a new one") from None
    except jwt.InvalidAlgorithmError:
        raise TokenError(
            f"invalid token: its algorithm is not allowed (only {ALGORITHM} is accepted)"
        ) from None
    except jwt.InvalidSignatureError:
        raise TokenError(
            "invalid token: the signature does not match (was it changed?); log in again"
        ) from None
    except jwt.MissingRequiredClaimError as exc:
        raise TokenError(f"invalid token: {exc}; log in again") from None
    except jwt.InvalidTokenError as exc:
        raise TokenError(f"invalid token: {exc}; log in again") from None
    try:
        return int(claims["sub"])
    except ValueError:
        raise TokenError("invalid token: its subject is not a user id; log in again") from None


def tampered(token: str, **claims) -> str:
    """``token`` with its claims changed and its signature kept (what an attacker who edits
    a token's payload sends): the signature no longer matches."""
    import base64
    import json

    header, payload, signature = token.split(".")
    decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    changed = json.dumps({**decoded, **claims}, separators=(",", ":")).encode()
    return ".".join([header, base64.urlsafe_b64encode(changed).rstrip(b"=").decode(), signature])
