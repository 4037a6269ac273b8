"""A load test of WebSocket fan-out: N clients connected to one change-feed server
(:mod:`labkit.changefeed`), a writer committing changes, and every client's latency
from the writer's ``COMMIT`` to the change arriving.

:func:`fan_out` connects ``clients`` WebSocket clients (asyncio, in a thread of their own,
so it also runs from a notebook's cell), waits until every one is connected, then commits
``messages`` rows one transaction each and records the moment each ``COMMIT`` was sent.
Each client records when each change reached it. A change sent to N clients is N
deliveries: the result holds them all, their latencies (nearest-rank percentiles), the
deliveries per second, and how many clients failed to connect or missed a change.

What it measures is one server process on this machine, with the clients on the same
machine (they share its cores: the server gets less than a machine of its own would give
it). Grow ``clients`` until the p95 or the failures say the process is full: that is the
figure to scale from.

>>> from labkit import changefeed, db
>>> from labkit.supervisor import Supervisor
>>> demo = db.fresh_database("s14_doctest_wsload")
>>> with demo.connect(autocommit=True) as conn:
...     _ = conn.execute("CREATE TABLE ticks (id int PRIMARY KEY, label text)")
...     changefeed.install(conn, "ticks")
>>> with Supervisor(say=lambda message: None) as supervisor:
...     feed = changefeed.start(supervisor, demo.url)
...     result = fan_out(feed.url, demo, "ticks", clients=5, messages=4, progress=False)
...     _ = changefeed.stop(supervisor, feed)
>>> result.deliveries, result.missed, result.failed, len(result.commit_ms)
(20, 0, 0, 4)
>>> sorted(result.percentiles())
['max_ms', 'p50_ms', 'p95_ms', 'p99_ms']
>>> db.drop_database("s14_doctest_wsload")
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from labkit.loadtest import percentile

CONNECT_AT_ONCE = 20  # clients connecting at the same time (each catch-up uses a connection)


@dataclass
class FanOutResult:
    """What :func:`fan_out` measured."""

    clients: int
    messages: int
    connected: int
    failed: int  # clients that could not connect (or were closed before the end)
    missed: int  # deliveries that never arrived
    seconds: float  # from the first COMMIT to the last delivery
    latencies_ms: list[float] = field(repr=False)
    commit_ms: list[float] = field(repr=False, default_factory=list)  # each COMMIT alone
    rss_before_kb: int | None = None  # the server's resident memory before the clients
    rss_connected_kb: int | None = None  # ... and with all of them connected

    @property
    def kb_per_client(self) -> float | None:
        """The server's extra resident memory per connected client (kB), if measured."""
        if self.rss_before_kb is None or self.rss_connected_kb is None or not self.connected:
            return None
        return (self.rss_connected_kb - self.rss_before_kb) / self.connected

    @property
    def deliveries(self) -> int:
        return len(self.latencies_ms)

    @property
    def per_s(self) -> float:
        """Deliveries per second (one change to N clients is N deliveries)."""
        return self.deliveries / self.seconds if self.seconds > 0 else 0.0

    def percentiles(self) -> dict[str, float]:
        values = self.latencies_ms or [float("nan")]
        return {
            "p50_ms": percentile(values, 50),
            "p95_ms": percentile(values, 95),
            "p99_ms": percentile(values, 99),
            "max_ms": max(values),
        }

    def row(self) -> dict[str, Any]:
        per_client = self.kb_per_client
        commit = round(percentile(self.commit_ms, 50), 1) if self.commit_ms else None
        return {"clients": self.clients, "connected": self.connected, "failed": self.failed,
                "messages": self.messages, "deliveries": self.deliveries,
                "missed": self.missed, "per_s": round(self.per_s),
                **{k: round(v, 1) for k, v in self.percentiles().items()},
                "commit_p50_ms": commit,
                "server_kb_per_client": None if per_client is None else round(per_client, 1)}  # fmt: skip


def open_files_limit(want: int = 65_536) -> int:
    """Raise this process's limit of open files (sockets included) towards ``want``, as far
    as the hard limit allows (no privilege needed), and return the limit now in force.
    Each WebSocket client is one open file here, and one in the server (a process started
    afterwards inherits the raised limit); macOS starts shells at 256."""
    try:
        import resource
    except ImportError:  # Windows: no such limit
        return want
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return want if soft == resource.RLIM_INFINITY else soft


def resident_kb(pid: int) -> int | None:
    """A process's resident memory in kB (``ps -o rss=``, on Linux and macOS), or None."""
    import subprocess

    try:
        out = subprocess.run(["ps", "-o", "rss=", "-p", str(int(pid))], capture_output=True,
                             text=True, timeout=10).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return int(out) if out.isdigit() else None


def _last_id(database: Any) -> int:
    with database.connect() as conn:
        return conn.execute("SELECT coalesce(max(id), 0) FROM public.change_log").fetchone()[0]


def fan_out(
    url: Callable[[int], str],
    database: Any,
    table: str,
    *,
    clients: int,
    messages: int,
    timeout: float = 30,
    progress: bool = True,
    server_pid: int | None = None,
) -> FanOutResult:
    """Connect ``clients`` clients to ``url(after)`` (a feed server's :meth:`url`), commit
    ``messages`` rows into ``table`` (columns ``id``, ``label``; watched by the feed) one
    transaction each, and measure each delivery. Row ids continue after the table's
    largest id, so the function can run again on the same table. With ``server_pid``, the
    server's resident memory is read before the clients connect and once all have.

    The one writer commits back to back, so deliveries per second are bounded by its
    commit rate too; and the clients share one event loop (and the GIL) with the writer's
    thread, so part of the latency at large N is the clients' own."""
    from psycopg import sql
    from websockets.asyncio.client import connect

    if clients < 1 or messages < 1:
        raise ValueError("fan_out needs at least one client and one message")
    limit = open_files_limit()
    if clients > limit - 100:
        raise ValueError(
            f"{clients} clients need as many open files, and this process may open {limit} "
            f"(the hard limit): raise it (ulimit -Hn, as root) or use fewer clients"
        )
    after = _last_id(database)
    with database.connect() as conn:
        first = conn.execute(
            sql.SQL("SELECT coalesce(max(id), 0) + 1 FROM {}").format(sql.Identifier(table))
        ).fetchone()[0]
    ids = list(range(first, first + messages))
    sent_at: dict[int, float] = {}
    commit_ms: list[float] = []
    rss_before = resident_kb(server_pid) if server_pid else None
    received: list[dict[int, float]] = [{} for _ in range(clients)]
    failed = [0]
    all_connected = threading.Event()

    async def client(index: int, gate: asyncio.Semaphore, ready: list[int]) -> None:
        mine = received[index]
        try:
            async with gate:
                ws = await connect(url(after), open_timeout=timeout, max_size=None)
            ready[0] += 1
            if ready[0] + failed[0] == clients:
                all_connected.set()
            async with ws:
                while len(mine) < messages:
                    change = json.loads(await asyncio.wait_for(ws.recv(), timeout))
                    mine.setdefault(change["row"]["id"], time.perf_counter())
        except Exception:  # refused, timed out, closed: counted, never raised
            failed[0] += 1
            if ready[0] + failed[0] == clients:
                all_connected.set()

    async def main() -> None:
        gate, ready = asyncio.Semaphore(CONNECT_AT_ONCE), [0]
        await asyncio.gather(*(client(i, gate, ready) for i in range(clients)))

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    if not all_connected.wait(timeout + clients * 0.1):
        raise TimeoutError(f"{clients} clients did not all connect within the time allowed")
    rss_connected = resident_kb(server_pid) if server_pid else None
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=messages, desc=f"{clients} clients: commits", unit="commit")
    with database.connect() as conn:
        insert = sql.SQL("INSERT INTO {} (id, label) VALUES (%s, %s)").format(sql.Identifier(table))
        for row_id in ids:
            conn.execute(insert, (row_id, f"load {row_id}"))
            sent_at[row_id] = time.perf_counter()
            conn.commit()
            commit_ms.append((time.perf_counter() - sent_at[row_id]) * 1000)
            if bar is not None:
                bar.update()
    if bar is not None:
        bar.close()
    thread.join(timeout)
    connected = clients - failed[0]
    latencies = [
        (at - sent_at[row_id]) * 1000
        for mine in received
        for row_id, at in mine.items()
        if row_id in sent_at
    ]
    last = max((at for mine in received for at in mine.values()), default=sent_at[ids[0]])
    return FanOutResult(
        clients=clients,
        messages=messages,
        connected=connected,
        failed=failed[0],
        missed=connected * messages - len(latencies),
        seconds=last - sent_at[ids[0]],
        latencies_ms=latencies,
        commit_ms=commit_ms,
        rss_before_kb=rss_before,
        rss_connected_kb=rss_connected,
    )
