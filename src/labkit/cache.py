"""Redis connections for the course.

>>> from labkit import cache
>>> r = cache.redis_client()            # decode_responses=True by default
>>> r.set("doctest:cache:greeting", "hello", ex=60)
True
>>> r.get("doctest:cache:greeting")
'hello'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from labkit import config

__all__ = ["ThrowawayRedis", "redis_client"]


def redis_client(db: int | None = None, *, decode_responses: bool = True, **kwargs: Any):
    """A ``redis.Redis`` on the course's server (``db`` overrides the URL's database number)."""
    import redis

    from labkit.errors import ServiceError
    from labkit.supervisor import mask_url

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


class ThrowawayRedis:
    """A private redis-server on a free loopback port, for demonstrating failures.

    >>> import redis
    >>> with ThrowawayRedis() as spare:
    ...     client = spare.client()
    ...     client.set("k", "v")
    ...     spare.freeze()          # the server hangs: every command raises TimeoutError
    ...     try:
    ...         client.get("k")
    ...     except redis.TimeoutError:
    ...         print("timed out")
    ...     spare.kill()            # the server is gone: every command raises ConnectionError
    ...     try:
    ...         client.get("k")
    ...     except redis.ConnectionError:
    ...         print("connection refused")
    True
    timed out
    connection refused

    It is never the course's shared server, so killing it breaks nothing else. Each one has
    a random password of its own: when one is killed and another program's throwaway
    server starts on the freed port (test workers and graded notebooks start them all the
    time), the old clients are refused (``AuthenticationError``, a ``ConnectionError``)
    instead of quietly reading and writing someone else's keys."""

    def __init__(self) -> None:
        import secrets

        self.port: int | None = None
        self._folder = None
        self._supervisor = None
        self._server = None
        self._password = secrets.token_hex(16)

    @property
    def url(self) -> str:
        """``redis://:<password>@127.0.0.1:<port>/0`` (mask it before printing it)."""
        return f"redis://:{self._password}@127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs (or is frozen)."""
        return self._server.pid() if self._server is not None else None

    def start(self) -> ThrowawayRedis:
        """Start the server through :class:`labkit.supervisor.Supervisor`: a free loopback
        port (another one if a program takes it first), ready when it answers, stopped at
        the end of the ``with`` block or of the process."""
        import tempfile

        from labkit.supervisor import RedisServer, Runner, Supervisor

        self._folder = tempfile.TemporaryDirectory(prefix="labkit-redis-")
        runner = Runner()
        runner.as_user = None  # Redis runs as the caller, who must be able to freeze and kill it
        self._server = RedisServer(
            Path(self._folder.name) / "redis", password=self._password, runner=runner
        )
        self._supervisor = Supervisor(say=lambda message: None)
        try:
            self.port = self._supervisor.up(self._server)
        except BaseException:
            self._folder.cleanup()
            raise
        return self

    def client(self, **kwargs: Any):
        """A client whose reads time out after 0.5 s, so that a frozen server fails fast (a
        killed one refuses connections at once); connecting may take 5 s on a busy machine."""
        import redis

        options = {"decode_responses": True, "socket_timeout": 0.5,
                   "socket_connect_timeout": 5, **kwargs}  # fmt: skip
        return redis.Redis.from_url(self.url, **options)

    def freeze(self) -> None:
        """Stop the server answering (SIGSTOP), as an overloaded or cut-off server would:
        connections still open, and every command times out (``redis.TimeoutError``, which
        is not a ``ConnectionError``). :meth:`kill` still ends it."""
        import os
        import signal

        if (pid := self.pid) is not None:
            os.kill(pid, signal.SIGSTOP)

    def kill(self) -> None:
        """Stop the server at once (SIGKILL), as a crash would; returns once it is gone."""
        import os
        import signal
        import time

        from labkit.supervisor import process_name

        if (pid := self.pid) is None:
            return
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while process_name(pid) and time.monotonic() < deadline:
            time.sleep(0.01)

    def __enter__(self) -> ThrowawayRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()  # a frozen server would not answer a polite stop
        if self._supervisor is not None:
            self._supervisor.close()
        if self._folder:
            self._folder.cleanup()
