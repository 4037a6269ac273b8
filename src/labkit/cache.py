"""Redis connections for the course.

>>> from labkit import cache
>>> r = cache.redis_client()            # decode_responses=True by default
>>> r.set("doctest:cache:greeting", "hello", ex=60)
True
>>> r.get("doctest:cache:greeting")
'hello'
"""

from __future__ import annotations

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

    It is never the course's shared server, so killing it breaks nothing else."""

    def __init__(self) -> None:
        self.process = None
        self.port: int | None = None
        self._folder = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> ThrowawayRedis:
        """Start the server (a few tries if another program takes the chosen port first)."""
        import socket
        import subprocess
        import tempfile
        import time

        import redis

        from labkit.errors import ServiceError
        from labkit.supervisor import redis_server_binary

        self._folder = tempfile.TemporaryDirectory(prefix="labkit-redis-")
        for _attempt in range(3):
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                self.port = sock.getsockname()[1]
            self.process = subprocess.Popen(
                [str(redis_server_binary()), "--bind", "127.0.0.1", "--port", str(self.port),
                 "--save", "", "--appendonly", "no", "--dir", self._folder.name],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
            )  # fmt: skip
            probe = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
            try:
                deadline = time.monotonic() + 10
                # Until *this* process answers: if the port was taken in the meantime, our
                # server exits, and whatever listens there is someone else's.
                while time.monotonic() < deadline and self.process.poll() is None:
                    try:
                        if int(probe.info("server")["process_id"]) == self.process.pid:
                            return self
                    except redis.RedisError:
                        pass
                    time.sleep(0.02)
            finally:
                probe.close()
            self.kill()
        self._folder.cleanup()
        raise ServiceError(
            f"a throwaway redis-server ({redis_server_binary()}) did not start on a free "
            "loopback port in 3 tries: is the machine out of ports or memory?"
        )

    def client(self, **kwargs: Any):
        """A client with short timeouts, so that a dead server fails fast."""
        import redis

        options = {"decode_responses": True, "socket_timeout": 0.5,
                   "socket_connect_timeout": 0.5, **kwargs}  # fmt: skip
        return redis.Redis.from_url(self.url, **options)

    def freeze(self) -> None:
        """Stop the server answering (SIGSTOP), as an overloaded or cut-off server would:
        connections still open, and every command times out (``redis.TimeoutError``, which
        is not a ``ConnectionError``). :meth:`kill` still ends it."""
        import signal

        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGSTOP)

    def kill(self) -> None:
        """Stop the server at once (SIGKILL), as a crash would."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def __enter__(self) -> ThrowawayRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()
        if self._folder:
            self._folder.cleanup()
