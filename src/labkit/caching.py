"""Caching building blocks: a JSON codec that keeps types, hit counters, a skewed read
workload and a model that predicts its hit rate, key clean-up, TTL jitter and expiry
seconds, eviction under ``maxmemory`` (on a private server), stampede protection, a
concurrent runner, waiting for pub/sub subscribers, and the workload's table and plot.

>>> from datetime import UTC, datetime
>>> from decimal import Decimal
>>> from labkit import cache, caching
>>> r, prefix = cache.redis_client(), "doctest:caching:"
>>> profile = {"id": 7, "joined": datetime(2024, 5, 1, tzinfo=UTC), "balance": Decimal("9.50")}
>>> r.set(prefix + "user:7", caching.dumps(profile), ex=300)
True
>>> caching.loads(r.get(prefix + "user:7")) == profile     # datetimes and Decimals survive
True
>>> user_ids = list(range(1, 1001))
>>> caching.zipf_workload(user_ids, reads=20_000, s=1.2, seed=7)[:8]
[11, 6, 7, 2, 35, 3, 3, 54]
>>> caching.get_or_compute(r, prefix + "dashboard", lambda: {"users": 1000}, ttl=60)
{'users': 1000}
>>> caching.predict(user_ids, reads=20_000, s=1.2, warm=50, seed=7)  # no Redis: a model
Prediction(reads=20000, hits=19152, misses=848, warmed=50)
>>> caching.delete_prefix(r, prefix)
2

The lessons show each pattern in a few lines first; this module is the tested version
that later cells and exercises reuse.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

__all__ = [
    "EvictionRun",
    "HitCounter",
    "Prediction",
    "delete_prefix",
    "dumps",
    "expiry_seconds",
    "fill_past_maxmemory",
    "get_or_compute",
    "jittered_ttl",
    "loads",
    "plot_expiries",
    "plot_hit_rate",
    "predict",
    "run_concurrently",
    "scan_prefix",
    "simulate",
    "wait_for_subscribers",
    "workload_table",
    "zipf_workload",
]

# --------------------------------------------------------------------------- codec

_TAGS = ("$datetime", "$date", "$decimal")


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):  # before date: a datetime is also a date
        return {"$datetime": value.isoformat()}
    if isinstance(value, date):
        return {"$date": value.isoformat()}
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    raise TypeError(
        f"cannot cache a {type(value).__name__} as JSON: convert it to str, int, float, "
        "bool, None, list, dict, datetime, date or Decimal first"
    )


def _decode(obj: dict) -> Any:
    if len(obj) == 1:
        ((tag, text),) = obj.items()
        if tag == "$datetime":
            return datetime.fromisoformat(text)
        if tag == "$date":
            return date.fromisoformat(text)
        if tag == "$decimal":
            return Decimal(text)
    return obj


def dumps(value: Any) -> str:
    """JSON text for ``value``; datetimes, dates and Decimals are tagged so they come back
    as the same type (plain ``json.dumps`` raises on them, and ``str()`` loses the type)."""
    return json.dumps(value, default=_encode, separators=(",", ":"), ensure_ascii=False)


def loads(text: str | bytes) -> Any:
    """The value :func:`dumps` encoded (tuples come back as lists, as with any JSON)."""
    return json.loads(text, object_hook=_decode)


# --------------------------------------------------------------------------- hit counting


@dataclass
class HitCounter:
    """Cache hits and misses, in order, so that the hit rate can be plotted over time.

    Thread-safe: readers in several threads may share one counter."""

    hits: int = 0
    misses: int = 0
    events: list[bool] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def hit(self) -> None:
        with self._lock:
            self.hits += 1
            self.events.append(True)

    def miss(self) -> None:
        with self._lock:
            self.misses += 1
            self.events.append(False)

    @property
    def total(self) -> int:
        return self.hits + self.misses

    @property
    def hit_rate(self) -> float:
        """Hits / lookups (0.0 before the first lookup)."""
        return self.hits / self.total if self.total else 0.0

    def rolling(self, window: int = 500) -> list[float]:
        """Hit rate over the last ``window`` lookups, after each lookup."""
        if window < 1:
            raise ValueError("window must be at least 1")
        rates, in_window = [], 0
        for index, hit in enumerate(self.events):
            in_window += hit
            if index >= window:
                in_window -= self.events[index - window]
            rates.append(in_window / min(index + 1, window))
        return rates

    def reset(self) -> None:
        with self._lock:
            self.hits = self.misses = 0
            self.events.clear()


# --------------------------------------------------------------------------- workload


def zipf_workload(keys: Sequence[Any], reads: int, *, s: float = 1.1, seed: int = 0) -> list:
    """``reads`` keys drawn with Zipf-like popularity: ``keys[0]`` is the most popular.

    The probability of the key at rank r (1-based) is proportional to 1/r**s, so a small
    head of keys takes most reads and a long tail is read once or never. Same arguments,
    same list."""
    if not keys:
        raise ValueError("keys must not be empty")
    if reads < 0 or s <= 0:
        raise ValueError("reads must be >= 0 and s > 0")
    from labkit.data import zipf_sampler

    draw = zipf_sampler(len(keys), s, random.Random(f"zipf-{seed}"))
    return [keys[draw()] for _ in range(reads)]


def simulate(
    reads: Sequence[Any],
    *,
    warmed: Sequence[Any] = (),
    ttl: float | None = None,
    rate: float | None = None,
) -> HitCounter:
    """Replay ``reads`` against a model of a cache-aside cache, without Redis or a database.

    A read hits if its key was stored and has not expired; otherwise it misses and the key
    is stored. ``warmed`` keys are stored before the first read. Read i happens at
    ``i / rate`` seconds (``rate``: reads per second), and entries live ``ttl`` seconds
    (``None``: forever). Used to predict — and check — what a real run will do."""
    if (ttl is None) != (rate is None):
        raise ValueError("give both ttl and rate (to expire entries), or neither")
    if rate is not None and rate <= 0:
        raise ValueError("rate must be positive")
    forever = float("inf")
    expires = dict.fromkeys(warmed, forever if ttl is None else ttl)
    counter = HitCounter()
    for index, key in enumerate(reads):
        now = 0.0 if rate is None else index / rate
        if expires.get(key, -1.0) > now:
            counter.hit()
        else:
            counter.miss()
            expires[key] = forever if ttl is None else now + ttl
    return counter


@dataclass(frozen=True)
class Prediction:
    """What :func:`predict` expects a cache-aside run to cost the database."""

    reads: int
    hits: int
    misses: int
    warmed: int

    @property
    def statements(self) -> int:
        """One statement per miss, plus one for the warm-up (all warmed rows at once)."""
        return self.misses + (1 if self.warmed else 0)

    @property
    def hit_rate(self) -> float:
        return self.hits / self.reads if self.reads else 0.0

    @property
    def saved(self) -> float:
        """Share of an uncached run's statements (one per read) that the cache saves."""
        return 1 - self.statements / self.reads if self.reads else 0.0


def predict(
    keys: Sequence[Any],
    reads: int,
    *,
    s: float = 1.1,
    warm: int = 0,
    ttl: float | None = None,
    rate: float = 100.0,
    seed: int = 0,
) -> Prediction:
    """Model a cache-aside run over a Zipf workload: ``reads`` reads of ``keys`` with skew
    ``s`` (as :func:`zipf_workload`), the first ``warm`` keys warmed in one statement, and
    entries that live ``ttl`` seconds (``None``: forever) while reads arrive at ``rate`` per
    second. No Redis and no database: :func:`simulate` replays the reads."""
    workload = zipf_workload(keys, reads, s=s, seed=seed)
    warmed = list(keys[:warm])
    expiry = {"ttl": ttl, "rate": rate} if ttl else {}
    model = simulate(workload, warmed=warmed, **expiry)
    return Prediction(len(workload), model.hits, model.misses, len(warmed))


# --------------------------------------------------------------------------- reporting


def workload_table(runs: Mapping[str, tuple[int, HitCounter | None, float]]):
    """A DataFrame of workload runs: name → (database statements, hit counter or ``None``
    for an uncached run, seconds). The first run is the baseline that savings are
    measured against."""
    import pandas as pd

    if not runs:
        raise ValueError("no runs to tabulate")
    baseline = next(iter(runs.values()))[0]
    rows = [
        {
            "run": name,
            "database statements": count,
            "statements saved (%)": round((1 - count / baseline) * 100, 1) if baseline else 0.0,
            "hit rate (%)": None if counter is None else round(counter.hit_rate * 100, 1),
            "seconds": round(seconds, 2),
        }
        for name, (count, counter, seconds) in runs.items()
    ]
    return pd.DataFrame(rows).set_index("run")


def plot_hit_rate(
    counters: Mapping[str, HitCounter],
    *,
    window: int = 500,
    target: float | None = None,
    target_label: str = "target",
    title: str = "Hit rate over time",
):
    """Rolling hit rate of each counter (one line each), with an optional horizontal
    ``target`` line; returns the matplotlib Figure."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    for name, counter in counters.items():
        ax.plot(counter.rolling(window), label=name)
    if target is not None:
        ax.axhline(target, color="grey", linestyle="--", label=target_label)
    ax.set(xlabel="read number", ylabel=f"hit rate (last {window} reads)", ylim=(0, 1.02))
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    plt.close(fig)
    return fig


# --------------------------------------------------------------------------- key clean-up


def scan_prefix(client: Any, prefix: str) -> Iterator[Any]:
    """The keys that start with ``prefix``, found with SCAN (never ``KEYS``, which blocks
    the server); glob characters in ``prefix`` match only themselves."""
    escaped = "".join("\\" + ch if ch in "*?[]\\" else ch for ch in prefix)
    return client.scan_iter(match=escaped + "*", count=1000)


def delete_prefix(client: Any, prefix: str, *, batch: int = 500) -> int:
    """Delete every key that starts with ``prefix`` (SCAN + UNLINK); returns how many.

    Never ``KEYS`` or ``FLUSHDB`` on a shared server: SCAN walks the keyspace in small
    steps, and only this prefix is touched."""
    if not prefix:
        raise ValueError("refusing to delete with an empty prefix: that would be every key")
    deleted, pending = 0, []
    for key in scan_prefix(client, prefix):
        pending.append(key)
        if len(pending) >= batch:
            deleted += client.unlink(*pending)
            pending.clear()
    if pending:
        deleted += client.unlink(*pending)
    return deleted


# --------------------------------------------------------------------------- expiry: TTL jitter


def jittered_ttl(ttl: float, spread: float = 0.1, rng: random.Random | None = None) -> int:
    """``ttl`` times a random factor between ``1 - spread`` and ``1 + spread``, in whole
    seconds (at least 1), for ``SET ... EX``.

    Entries written together with the same TTL (a warm-up, the misses of a burst after a
    deploy) expire in the same second, and their next reads all go to the database at
    once. With jittered TTLs they expire spread over ``2 * spread * ttl`` seconds. A seeded
    ``random.Random`` gives the same TTLs on every run (``None``: the ``random`` module).

    >>> import random
    >>> rng = random.Random(2024)
    >>> [jittered_ttl(300, rng=rng) for _ in range(6)]
    [298, 314, 288, 323, 295, 313]
    >>> all(270 <= jittered_ttl(300) <= 330 for _ in range(1_000))
    True
    >>> jittered_ttl(300, spread=0)
    300
    """
    if ttl <= 0:
        raise ValueError(f"ttl must be positive, not {ttl}")
    if not 0 <= spread < 1:
        raise ValueError(f"spread must be in [0, 1), not {spread}")
    factor = (rng or random).uniform(1 - spread, 1 + spread)
    return max(1, round(ttl * factor))


def expiry_seconds(client: Any, keys: Sequence[str]) -> list[int | None]:
    """For each key, the second in which it expires, counted from now (0: within the next
    second), read with one pipelined ``PTTL`` per key; ``None`` for a key that does not
    exist or has no TTL. Equal values are keys that expire, and are reloaded, together.

    >>> from labkit import cache
    >>> r, prefix = cache.redis_client(), "doctest:expiry:"
    >>> r.set(prefix + "a", "1", ex=300), r.set(prefix + "b", "1")
    (True, True)
    >>> first, *rest = expiry_seconds(r, [prefix + "a", prefix + "b", prefix + "none"])
    >>> 290 <= first <= 300, rest
    (True, [None, None])
    >>> delete_prefix(r, prefix)
    2
    """
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.pttl(key)
    return [ms // 1000 if ms >= 0 else None for ms in pipe.execute()]


def plot_expiries(runs: Mapping[str, Sequence[int | None]], *, title: str = ""):
    """Bar charts, one row per run (name → :func:`expiry_seconds`' list), of how many keys
    expire in each second, on shared axes (so the peaks compare); returns the Figure."""
    from collections import Counter

    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(runs), 1, figsize=(8, 1.2 + 1.1 * len(runs)), sharex=True,
                             sharey=True, squeeze=False)  # fmt: skip
    for ax, (name, seconds) in zip(axes[:, 0], runs.items(), strict=True):
        counts = Counter(s for s in seconds if s is not None)
        ax.bar(list(counts), list(counts.values()), width=1.0)
        ax.set_ylabel("keys")
        ax.set_title(f"{name}: at most {max(counts.values(), default=0)} keys in one second",
                     fontsize=10, loc="left")  # fmt: skip
    axes[-1, 0].set_xlabel("second (from now) in which the key expires")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    plt.close(fig)
    return fig


# --------------------------------------------------------------------------- memory: eviction


@dataclass(frozen=True)
class EvictionRun:
    """What :func:`fill_past_maxmemory` counted for one ``maxmemory-policy``."""

    policy: str
    entries_have_ttl: bool
    written: int  # SETs sent by the flood of entries
    refused: int  # of them, refused with an out-of-memory error
    evicted: int  # INFO stats evicted_keys
    untimed: int  # small keys without a TTL written first (like version keys)
    untimed_left: int
    hot: int  # entries read many times before the flood
    hot_left: int

    def row(self) -> dict[str, Any]:
        """The run as a table row."""
        return {
            "maxmemory-policy": self.policy,
            "entries have a TTL": "yes" if self.entries_have_ttl else "no",
            "writes refused (OOM)": self.refused,
            "keys evicted": self.evicted,
            f"keys without TTL kept (of {self.untimed})": self.untimed_left,
            f"hot entries kept (of {self.hot})": self.hot_left,
        }


def fill_past_maxmemory(
    server: Any,
    policy: str,
    *,
    room: int = 1_000_000,
    entries: int = 4_000,
    value_bytes: int = 1_000,
    ttl: int = 300,
    entries_have_ttl: bool = True,
    untimed: int = 100,
    hot: int = 20,
    hot_reads: int = 100,
) -> EvictionRun:
    """Fill a private Redis past its ``maxmemory`` under ``policy``, and count what it did.

    ``server`` must be a :class:`labkit.cache.ThrowawayRedis`: this runs ``FLUSHALL`` and
    ``CONFIG SET``, never to be run on a shared server. It empties the server and sets
    ``maxmemory`` to what the empty server uses plus ``room`` bytes; writes ``untimed``
    small keys without a TTL (like version keys), then ``hot`` entries that it reads
    ``hot_reads`` times each; then a flood of ``entries`` entries of ``value_bytes`` each
    (about four times the room by default). Entries have a TTL of ``ttl`` seconds, or none
    if ``entries_have_ttl`` is false. A write refused for lack of memory is counted, not
    raised. At the end ``maxmemory`` is 0 (no limit) again.

    >>> from labkit import cache
    >>> with cache.ThrowawayRedis() as spare:
    ...     full = fill_past_maxmemory(spare, "noeviction")
    ...     lfu = fill_past_maxmemory(spare, "allkeys-lfu")
    >>> full.refused > 0 and full.evicted == 0       # noeviction: the writes fail
    True
    >>> lfu.refused == 0 and lfu.evicted > 0 and lfu.hot_left >= lfu.hot * 3 // 4
    True
    """
    from labkit.cache import ThrowawayRedis

    if not isinstance(server, ThrowawayRedis):
        raise TypeError(
            "fill_past_maxmemory runs FLUSHALL and CONFIG SET: give it a "
            "labkit.cache.ThrowawayRedis, never a shared server"
        )
    client = server.client(socket_timeout=5)
    value, expiry = "x" * value_bytes, (ttl if entries_have_ttl else None)
    client.config_set("maxmemory", 0)
    client.flushall()
    client.config_set("maxmemory-policy", policy)  # before the writes: LFU counts from there
    client.config_resetstat()
    client.config_set("maxmemory", client.info("memory")["used_memory"] + room)
    try:
        pipe = client.pipeline(transaction=False)
        for i in range(untimed):
            pipe.set(f"version:{i}", 1)
        for i in range(hot):
            pipe.set(f"hot:{i}", value, ex=expiry)
        pipe.execute()
        for _ in range(hot_reads):  # a round at a time: a reply buffer counts as memory too
            pipe = client.pipeline(transaction=False)
            for i in range(hot):
                pipe.get(f"hot:{i}")
            pipe.execute()
        refused = 0
        for start in range(0, entries, 50):
            pipe = client.pipeline(transaction=False)
            for i in range(start, min(start + 50, entries)):
                pipe.set(f"entry:{i}", value, ex=expiry)
            replies = pipe.execute(raise_on_error=False)
            refused += sum(isinstance(reply, Exception) for reply in replies)
        evicted = client.info("stats")["evicted_keys"]
        untimed_left = client.exists(*[f"version:{i}" for i in range(untimed)]) if untimed else 0
        hot_left = client.exists(*[f"hot:{i}" for i in range(hot)]) if hot else 0
    finally:
        client.config_set("maxmemory", 0)
        client.close()
    return EvictionRun(
        policy, entries_have_ttl, entries, refused, evicted, untimed, untimed_left, hot, hot_left
    )


# --------------------------------------------------------------------------- stampede protection

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


def get_or_compute(
    client: Any,
    key: str,
    compute: Callable[[], Any],
    *,
    ttl: float,
    lock: bool = True,
    lock_ttl: float = 10.0,
    wait: float = 5.0,
    poll: float = 0.005,
    counter: HitCounter | None = None,
) -> Any:
    """Cache-aside read of ``key``; on a miss, ``compute()`` is stored for ``ttl`` seconds.

    With ``lock=True`` (stampede protection) only the caller that wins ``SET key:lock
    NX PX`` computes; the others poll the key until the value appears (at most ``wait``
    seconds, after which they compute it themselves rather than fail). The lock expires
    after ``lock_ttl`` seconds even if its holder dies, and is released only by its owner
    (compare-and-delete in one Lua script)."""
    cached = client.get(key)
    if cached is not None:
        if counter:
            counter.hit()
        return loads(cached)
    if counter:
        counter.miss()
    if not lock:
        value = compute()
        client.set(key, dumps(value), px=int(ttl * 1000))
        return value

    lock_key, token = f"{key}:lock", uuid.uuid4().hex
    if client.set(lock_key, token, nx=True, px=int(lock_ttl * 1000)):
        try:
            cached = client.get(key)  # filled between our first GET and the lock?
            if cached is not None:
                return loads(cached)
            value = compute()
            client.set(key, dumps(value), px=int(ttl * 1000))
            return value
        finally:
            client.eval(_RELEASE, 1, lock_key, token)

    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        time.sleep(poll)
        cached = client.get(key)
        if cached is not None:
            return loads(cached)
    return compute()  # the holder is too slow or gone: serve the read anyway


# --------------------------------------------------------------------------- pub/sub


def wait_for_subscribers(client: Any, channel: str, count: int = 1, *, timeout: float = 5.0) -> int:
    """Wait until ``channel`` has at least ``count`` subscribers (``PUBSUB NUMSUB``); returns
    how many it has. A message published before Redis registers a subscription is lost,
    so publish only after this returns."""
    deadline = time.monotonic() + timeout
    while True:
        subscribers = client.pubsub_numsub(channel)[0][1]
        if subscribers >= count or time.monotonic() >= deadline:
            return subscribers
        time.sleep(0.01)


# --------------------------------------------------------------------------- concurrency


def run_concurrently(fn: Callable[[int], Any], threads: int, *, timeout: float = 60.0) -> list:
    """Call ``fn(i)`` in ``threads`` threads released together by a barrier; results in order.

    The barrier makes the readers arrive at the same moment, which is what a cache
    stampede is. The first exception raised in a thread is re-raised here."""
    if threads < 1:
        raise ValueError("threads must be at least 1")
    barrier = threading.Barrier(threads)
    results: list[Any] = [None] * threads
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            barrier.wait(timeout)
            results[index] = fn(index)
        except BaseException as exc:  # handed to the caller below
            errors.append(exc)

    workers = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(timeout)
    if any(thread.is_alive() for thread in workers):
        raise TimeoutError(f"some of the {threads} threads were still running after {timeout} s")
    if errors:
        raise errors[0]
    return results
