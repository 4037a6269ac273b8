"""A load test in two parts: a bulk load with ``COPY`` (reported as rows per second), then a
concurrent read/write workload of threads (throughput, and p50/p95/p99 latency, nearest
rank).

:func:`copy_rows` streams generated rows into a table with psycopg's ``COPY ... FROM
STDIN`` (text format, sent in chunks): one statement, no per-row round trip.

:func:`run_workload` runs a ``request(rng, state)`` function — one application request,
written by the caller — from ``threads`` threads, ``requests_per_thread`` times each. Every
thread has its own random generator (seeded, so the mix of requests is the same at every
run) and its own ``state`` dict (a place for per-thread counters); the request uses its own
connections (a session per request, from a pool at least as large as ``threads``). The
result holds each request's kind (what ``request`` returned) and latency.

The workload is *closed-loop*: a thread sends its next request only when the previous one
has returned. When the server slows down, the clients slow down with it and send fewer
requests, so the slow period holds fewer samples than an open stream of users would have
met there (*coordinated omission*): the tail percentiles are understated, and the
throughput measured is what ``threads`` clients obtained, not the rate the server could
sustain. Read the percentiles together with the throughput.

>>> import random
>>> result = run_workload(lambda rng, state: "read" if rng.random() < 0.8 else "write",
...                       threads=2, requests_per_thread=100, progress=False)
>>> result.count, sum(result.kinds.count(k) for k in ("read", "write"))
(200, 200)
>>> table = result.percentiles()
>>> list(table.index), list(table.columns)
(['read', 'write', 'all'], ['requests', 'per_s', 'p50_ms', 'p95_ms', 'p99_ms', 'max_ms'])
>>> percentile([4.0, 1.0, 3.0, 2.0], 50), percentile([4.0, 1.0, 3.0, 2.0], 95)
(2.0, 4.0)
"""

from __future__ import annotations

import math
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "CopyReport",
    "LocustPoint",
    "WorkloadResult",
    "copy_rows",
    "generate_rows",
    "knee",
    "percentile",
    "plot_knee",
    "plot_latency",
    "run_locust",
    "run_workload",
]


@dataclass(frozen=True)
class CopyReport:
    """What one :func:`copy_rows` call loaded, and how fast."""

    table: str
    rows: int
    seconds: float
    megabytes: float
    build_seconds: float = 0.0

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds else float("inf")

    def __str__(self) -> str:
        return (f"{self.rows:,} rows into {self.table} in {self.seconds:.2f} s: "
                f"{self.rows_per_s:,.0f} rows/s ({self.megabytes:.0f} MB of COPY text, built "
                f"beforehand in {self.build_seconds:.2f} s, not counted)")  # fmt: skip


def generate_rows(first_id: int, count: int, accounts: int) -> Iterator[tuple[int, int, int, str]]:
    """Ledger entries ``(id, account_id, amount, memo)`` with ids ``first_id ...``: the same
    rows at every run (a function of the id), spread over ``accounts`` accounts."""
    for i in range(first_id, first_id + count):
        yield i, i % accounts + 1, (i * 7919) % 10_000 - 5_000, f"entry {i}"


def _chunks(rows: int, chunk_rows: int, accounts: int, first_id: int) -> Iterator[bytes]:
    for start in range(0, rows, chunk_rows):
        n = min(chunk_rows, rows - start)
        lines = [f"{i}\t{a}\t{m}\t{memo}\n" for i, a, m, memo in generate_rows(first_id + start, n, accounts)]  # fmt: skip
        yield "".join(lines).encode()


def copy_rows(
    url: str,
    *,
    table: str = "entries",
    rows: int = 1_000_000,
    accounts: int = 10_000,
    first_id: int = 1,
    chunk_rows: int = 50_000,
    progress: bool = True,
) -> CopyReport:
    """Load ``rows`` generated ledger entries (:func:`generate_rows`) into ``table``'s
    columns ``(id, account_id, amount, memo)`` with one ``COPY ... FROM STDIN`` in one
    transaction, chunk by chunk (a tqdm bar counts the rows). The table must exist.

    The COPY text is built in Python first (``build_seconds``), so that ``seconds`` and
    ``rows_per_s`` time the COPY alone: sending, parsing, inserting, committing."""
    import psycopg
    from psycopg import sql
    from tqdm import tqdm  # plain text: a saved notebook shows the finished bar

    if rows < 1 or chunk_rows < 1 or accounts < 1:
        raise ValueError("rows, chunk_rows and accounts must be at least 1")
    copy = sql.SQL("COPY {} (id, account_id, amount, memo) FROM STDIN").format(
        sql.Identifier(table)
    )
    built = time.perf_counter()
    chunks = list(_chunks(rows, chunk_rows, accounts, first_id))
    build_seconds = time.perf_counter() - built
    sent = 0
    bar = tqdm(total=rows, desc=f"COPY {table}", unit="rows", unit_scale=True, file=sys.stdout,
               disable=not progress)  # fmt: skip
    with psycopg.connect(url) as conn:
        started = time.perf_counter()
        with conn.cursor() as cur, cur.copy(copy) as stream:
            for chunk in chunks:
                stream.write(chunk)
                sent += len(chunk)
                bar.update(chunk.count(b"\n"))
        conn.commit()
        seconds = time.perf_counter() - started
    bar.close()
    return CopyReport(table, rows, seconds, sent / 1e6, build_seconds)


# --------------------------------------------------------------------------- the workload


MIN_REQUESTS = {50: 1, 95: 20, 99: 100}  # fewer requests than this: the percentile is NaN


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile of ``values`` by nearest rank: the smallest value with at
    least ``q`` % of the values at or below it — always one of the measured values."""
    if not values:
        raise ValueError("no values: a percentile needs at least one")
    if not 0 < q <= 100:
        raise ValueError(f"q must be in (0, 100] (got {q})")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(len(ordered) * q / 100) - 1)]


@dataclass
class WorkloadResult:
    """Each request's kind and latency (ms), the wall-clock time of the whole run, the
    errors raised, and each thread's ``state`` dict."""

    kinds: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0
    threads: int = 0
    errors: list[BaseException] = field(default_factory=list)
    states: list[dict[str, Any]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.kinds)

    @property
    def throughput(self) -> float:
        """Requests per second over the whole run."""
        return self.count / self.seconds if self.seconds else 0.0

    def latencies(self, kind: str | None = None) -> list[float]:
        return [ms for k, ms in zip(self.kinds, self.latencies_ms, strict=True) if kind in (None, k)]  # fmt: skip

    def percentiles(self):
        """A pandas DataFrame per kind, and "all": requests, requests per second over the
        run, p50/p95/p99 latency (ms, nearest rank) and max. A percentile is NaN when the
        kind has too few requests to measure it (p95 under 20, p99 under 100: the "p99"
        of 26 requests would be the maximum by another name)."""
        import pandas as pd

        rows = {}
        for kind in [*sorted(set(self.kinds)), None]:
            values = self.latencies(kind)
            if values:
                n = len(values)
                rows[kind or "all"] = {
                    "requests": n,
                    "per_s": n / self.seconds if self.seconds else float("nan"),
                    **{f"p{q}_ms": percentile(values, q) if n >= least else float("nan")
                       for q, least in MIN_REQUESTS.items()},
                    "max_ms": max(values),
                }  # fmt: skip
        return pd.DataFrame.from_dict(rows, orient="index").round(2)


def run_workload(
    request: Callable[[random.Random, dict[str, Any]], str],
    *,
    threads: int = 8,
    requests_per_thread: int = 500,
    seed: int = 13,
    progress: bool = True,
) -> WorkloadResult:
    """Call ``request(rng, state)`` ``requests_per_thread`` times from each of ``threads``
    threads started together; each call's return value is its kind ("read", "write", ...).
    A request that raises is counted in ``errors`` (the thread goes on); the run's time is
    from the common start to the last thread's end."""
    from tqdm import tqdm  # plain text: a saved notebook shows the finished bar

    if threads < 1 or requests_per_thread < 1:
        raise ValueError("threads and requests_per_thread must be at least 1")
    result = WorkloadResult(threads=threads)
    result.states = [{} for _ in range(threads)]
    lock = threading.Lock()
    start = threading.Barrier(threads + 1)
    bar = tqdm(total=threads * requests_per_thread, desc="requests", unit="req", file=sys.stdout,
               disable=not progress)  # fmt: skip

    def worker(index: int) -> None:
        rng = random.Random(seed * 1_000 + index)
        state = result.states[index]
        kinds, latencies, errors = [], [], []
        start.wait()
        for n in range(1, requests_per_thread + 1):
            began = time.perf_counter()
            try:
                kind = request(rng, state)
            except Exception as exc:  # counted, not lost: the caller asserts there are none
                errors.append(exc)
                kind = "error"
            latencies.append((time.perf_counter() - began) * 1000)
            kinds.append(str(kind))
            if n % 50 == 0 or n == requests_per_thread:
                with lock:
                    bar.update(50 if n % 50 == 0 else n % 50)
        with lock:
            result.kinds += kinds
            result.latencies_ms += latencies
            result.errors += errors

    pool = [threading.Thread(target=worker, args=(i,), name=f"load-{i}") for i in range(threads)]
    for thread in pool:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in pool:
        thread.join()
    result.seconds = time.perf_counter() - began
    bar.close()
    return result


def plot_latency(result: WorkloadResult, title: str = "Latency under load"):
    """Left: a histogram of latencies per kind (log scale). Right: p50/p95/p99 per kind."""
    import matplotlib.pyplot as plt
    import numpy as np

    if not result.count:
        raise ValueError("no requests to plot: run run_workload(...) first")
    table = result.percentiles()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    values = np.array(result.latencies_ms)
    bins = np.logspace(np.log10(max(values.min(), 0.01)), np.log10(values.max()), 40)
    for kind in sorted(set(result.kinds)):
        left.hist(result.latencies(kind), bins=bins, alpha=0.6, label=kind)
    left.set_xscale("log")
    left.set_xlabel("latency (ms, log scale)")
    left.set_ylabel("requests")
    left.legend()
    left.set_title(title)
    names = ["p50_ms", "p95_ms", "p99_ms"]  # a NaN (too few requests) draws no bar
    x = np.arange(len(table.index))
    for i, name in enumerate(names):
        right.bar(x + (i - 1) * 0.27, table[name], width=0.27, label=name[:3])
    right.set_xticks(x, table.index)
    right.set_ylabel("ms")
    right.set_title(
        f"{result.count:,} requests, {result.threads} threads: {result.throughput:,.0f}/s"
    )
    right.legend()
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- locust


@dataclass(frozen=True)
class LocustPoint:
    """One headless locust run at ``users`` concurrent users: its "Aggregated" row."""

    users: int
    requests: int
    failures: int
    per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    seconds: float  # the run's wall-clock time, start-up included


def _number(text: str) -> float:
    """A number of locust's CSV; "N/A" (nothing measured) is NaN."""
    return float("nan") if text.strip() in ("", "N/A") else float(text)


def run_locust(
    locustfile: str | Path,
    host: str,
    users: int,
    *,
    seconds: float = 5,
    folder: str | Path | None = None,
) -> LocustPoint:
    """Run `locust <https://locust.io>`_ headless in a subprocess: ``users`` users, all
    started at once, for ``seconds``; read the result from its CSV (the ``Aggregated`` row;
    its percentiles include failed requests; as in :meth:`WorkloadResult.percentiles`, a
    percentile is NaN when too few requests measure it). Locust's percentiles are rounded (to 2 significant digits above 100 ms). Raises with
    locust's own message when it fails to start, and when no request was sent."""
    import csv
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory(prefix="labkit-locust-") as scratch:
        prefix = Path(folder or scratch) / f"users{users}"
        command = [sys.executable, "-m", "locust", "-f", str(locustfile), "--headless",
                   "-u", str(users), "-r", str(users), "-t", f"{max(1, round(seconds))}s",
                   "--host", host, "--csv", str(prefix), "--only-summary",
                   "--loglevel", "WARNING", "--exit-code-on-error", "0"]  # fmt: skip
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
        elapsed = time.perf_counter() - started
        stats = prefix.with_name(prefix.name + "_stats.csv")
        if done.returncode != 0 or not stats.exists():
            raise RuntimeError(f"locust failed (exit {done.returncode}): {done.stderr[-800:]}")
        with stats.open() as handle:
            row = [r for r in csv.DictReader(handle) if r["Name"] == "Aggregated"][0]
    if int(row["Request Count"]) == 0:
        raise RuntimeError(
            f"locust sent no request in {seconds} s with {users} users (start-up took the "
            f"time, or the users never ran a task): give it more seconds"
        )
    return LocustPoint(
        users=users,
        requests=int(row["Request Count"]),
        failures=int(row["Failure Count"]),
        per_s=float(row["Requests/s"]),
        **{
            f"p{q}_ms": _number(row[f"{q}%"])
            if int(row["Request Count"]) >= least
            else float("nan")
            for q, least in MIN_REQUESTS.items()
        },  # fmt: skip
        seconds=elapsed,
    )


def knee(points: list[LocustPoint], *, factor: float = 2.0) -> LocustPoint | None:
    """The first point, by users, whose p95 is at least ``factor`` times the p95 of the
    run with the fewest users: where adding users starts to cost latency instead of adding
    throughput. None if no point reaches it.

    >>> runs = [LocustPoint(u, 100, 0, 10.0 * min(u, 4), 5, p95, 9, 1) for u, p95 in
    ...         [(1, 6.0), (2, 7.0), (4, 9.0), (8, 13.0), (16, 30.0)]]
    >>> knee(runs).users
    8
    >>> knee(runs, factor=10) is None
    True
    """
    if not points:
        raise ValueError("no load-test points: run run_locust at a few user counts first")
    ordered = sorted(points, key=lambda p: p.users)
    base = ordered[0].p95_ms
    return next((p for p in ordered[1:] if p.p95_ms >= factor * base), None)


def plot_knee(points: list[LocustPoint], *, factor: float = 2.0, title: str = "Load test"):
    """Throughput and p50/p95/p99 against users, with the knee marked."""
    import matplotlib.pyplot as plt

    ordered = sorted(points, key=lambda p: p.users)
    users = [p.users for p in ordered]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(users, [p.per_s for p in ordered], marker="o")
    left.set_xscale("log", base=2)
    left.set_xlabel("concurrent users")
    left.set_ylabel("requests per second")
    left.set_title(f"{title}: throughput")
    for name in ("p50_ms", "p95_ms", "p99_ms"):
        right.plot(users, [getattr(p, name) for p in ordered], marker="o", label=name[:3])
    found = knee(ordered, factor=factor)
    if found is not None:
        right.axvline(found.users, color="grey", linestyle="--",
                      label=f"knee: {found.users} users (p95 ×{factor:g})")  # fmt: skip
    right.set_xscale("log", base=2)
    right.set_xlabel("concurrent users")
    right.set_ylabel("ms")
    right.set_title(f"{title}: latency")
    right.legend()
    fig.tight_layout()
    return fig
