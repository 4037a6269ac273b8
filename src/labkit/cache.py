"""Redis connections for the course.

Usage::

    from labkit import cache
    r = cache.redis_client()            # decode_responses=True by default
    r.set("greeting", "hello", ex=60)
"""

from __future__ import annotations

from typing import Any

from labkit import config

__all__ = ["redis_client"]


def redis_client(db: int | None = None, *, decode_responses: bool = True, **kwargs: Any):
    """A ``redis.Redis`` on the course's server (``db`` overrides the URL's database number)."""
    import redis

    from labkit.services import ServiceError, mask_url

    url = config.redis_url()
    options: dict[str, Any] = {
        "decode_responses": decode_responses,
        "socket_timeout": 5,
        "socket_connect_timeout": 5,
        **kwargs,
    }
    if db is not None:
        options["db"] = db
    client = redis.Redis.from_url(url, **options)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        raise ServiceError(
            f"cannot reach Redis at {mask_url(url)}: {exc}. Is it running? Run "
            "`python -m labkit services up` (or `make lab`), or check REDIS_URL."
        ) from exc
    return client
