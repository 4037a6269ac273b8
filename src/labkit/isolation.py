"""Performance isolation between tenants: a statement timeout, a concurrency limit and a
rate limit per tenant, and a noisy-neighbour load that measures what they contain.

**The limits.** Each tenant has a :class:`Plan` (stored in the ``plans`` table, looked up
through ``tenants.plan``). :class:`Gateway` is the application's path for one request: it
asks the :class:`RateLimiter` (a token bucket per tenant and kind of request, one atomic
Lua script in Redis) for a token, takes a slot from the :class:`ConcurrencyLimiter` (a
counting semaphore in Redis, a sorted set of leases, so several application servers share
one limit and a crashed holder's slot expires), and runs the statement in a transaction
whose ``statement_timeout`` is set with ``set_config(..., true)`` (``SET LOCAL``: it ends
with the transaction, so a pooled connection never carries one tenant's timeout to the
next), sent in psycopg's pipeline mode so the setting costs no extra round trip. Each
limit is optional, so the lesson can add them one at a time.

>>> from labkit import cache, db
>>> r = cache.redis_client()
>>> limiter = RateLimiter(r, namespace="s12b:doctest:")
>>> _ = limiter.reset()
>>> [limiter.allow("t1:report", rate_per_s=0.01, burst=2).allowed for _ in range(4)]
[True, True, False, False]
>>> slots = ConcurrencyLimiter(r, namespace="s12b:doctest:")
>>> first, second = slots.try_acquire("t1", limit=1), slots.try_acquire("t1", limit=1)
>>> bool(first), second
(True, None)
>>> slots.release("t1", first)  # no waiter: no wake token pushed
False
>>> _ = limiter.reset()

**The load.** :func:`load_demo` creates the tables and the data: tenants with their
``orders``, one of them big (the noisy neighbour). :func:`run_phase` runs the quiet
tenants' cheap dashboard query in closed loops (one thread and connection each) while
the noisy tenant's threads run an expensive report, all through one :class:`Gateway`; a
monitor samples ``pg_stat_activity`` for the noisy tenant's active statements. Closed
loops send a new query only when the last one answered, so a slow period gets fewer
samples (coordinated omission): the percentiles understate the tail, and the quiet
tenants' throughput is shown beside them. The
:class:`PhaseResult` holds the quiet tenants' latencies and the deterministic counts:
statements cancelled by the timeout (``QueryCanceled``), requests refused by the rate
limiter, waits for a slot, and the most noisy statements seen active at once.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from labkit.errors import LabkitError

__all__ = [
    "DASHBOARD_QUERY",
    "REPORT_QUERY",
    "ConcurrencyLimiter",
    "Decision",
    "Gateway",
    "PhaseResult",
    "Plan",
    "RateLimited",
    "RateLimiter",
    "SlotUnavailable",
    "TenantLimitError",
    "application_name",
    "default_namespace",
    "grant_app_role",
    "load_demo",
    "load_plans",
    "phase_table",
    "plot_phases",
    "run_phase",
    "run_rounds",
]


class TenantLimitError(LabkitError):
    """A tenant's request was refused by one of its plan's limits (tell the client to retry)."""


class RateLimited(TenantLimitError):
    """The tenant's token bucket is empty: retry after ``retry_after_ms``."""

    def __init__(self, key: str, retry_after_ms: int) -> None:
        super().__init__(
            f"rate limit reached for {key}: retry after {retry_after_ms} ms "
            "(or move the tenant to a plan with a higher rate)"
        )
        self.retry_after_ms = retry_after_ms


class SlotUnavailable(TenantLimitError):
    """Every concurrency slot of the tenant stayed taken for the whole wait."""


def default_namespace(part: str = "") -> str:
    """The Redis key prefix of this part: ``s12b:``, the test worker's prefix, then ``part``."""
    return f"s12b:{os.environ.get('LABKIT_DB_PREFIX', '')}{part}"


def application_name(tenant_id: int) -> str:
    """The ``application_name`` a tenant's connections carry, so pg_stat_activity shows them."""
    return f"s12b-tenant-{int(tenant_id)}"


# --------------------------------------------------------------------------- plans


@dataclass(frozen=True)
class Plan:
    """A tenant's limits: statement timeout, statements at once, reads and reports per second."""

    name: str
    statement_timeout_ms: int
    max_concurrent: int
    reads_per_s: float
    read_burst: int
    reports_per_s: float
    report_burst: int

    def rate(self, kind: str) -> tuple[float, int]:
        """The (tokens per second, bucket size) of a kind of request: ``read`` or ``report``."""
        if kind == "read":
            return self.reads_per_s, self.read_burst
        if kind == "report":
            return self.reports_per_s, self.report_burst
        raise ValueError(f"unknown kind of request {kind!r}: use 'read' or 'report'")


PLANS_DDL = """
CREATE TABLE IF NOT EXISTS plans (
    name text PRIMARY KEY,
    statement_timeout_ms int NOT NULL CHECK (statement_timeout_ms > 0),
    max_concurrent int NOT NULL CHECK (max_concurrent > 0),
    reads_per_s real NOT NULL CHECK (reads_per_s > 0),
    read_burst int NOT NULL CHECK (read_burst > 0),
    reports_per_s real NOT NULL CHECK (reports_per_s > 0),
    report_burst int NOT NULL CHECK (report_burst > 0)
);
CREATE TABLE IF NOT EXISTS tenants (
    id int PRIMARY KEY,
    name text NOT NULL UNIQUE,
    plan text NOT NULL REFERENCES plans (name)
);
CREATE TABLE IF NOT EXISTS orders (
    tenant_id int NOT NULL REFERENCES tenants (id),
    id bigint NOT NULL,
    amount int NOT NULL,
    placed_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE TABLE IF NOT EXISTS customers (
    tenant_id int NOT NULL REFERENCES tenants (id),
    id bigint NOT NULL,
    email text NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, email)
);
"""

#: The plans of the demo: a small one with tight limits, a bigger one with loose limits.
DEMO_PLANS = (
    Plan("starter", 100, 1, 5_000, 500, 0.5, 1),
    Plan("pro", 2_000, 3, 20_000, 2_000, 5, 5),
)

#: The quiet tenants' cheap query: a small aggregate over their own orders (~1 ms).
DASHBOARD_QUERY = "SELECT count(*), sum(amount) FROM orders WHERE tenant_id = %s AND amount > 100"

#: The noisy tenant's expensive report: every order compared with every other (n² rows).
REPORT_QUERY = (
    "SELECT count(*) FROM orders a JOIN orders b ON a.amount > b.amount "
    "WHERE a.tenant_id = %s AND b.tenant_id = %s"
)


def load_demo(
    database: Any,
    *,
    tenants: int = 5,
    rows: int = 3_000,
    noisy_rows: int = 3_000,
    customers: int = 50,
    seed: int = 12,
) -> dict[str, Any]:
    """Create plans, tenants (the last one, on ``starter``, is the noisy one; the others are
    on ``pro``), ``orders`` (``rows`` per tenant, ``noisy_rows`` for the noisy one) and
    ``customers``; the data comes from ``random()`` after ``setseed``, the same every run.

    Idempotent on a fresh database; returns ``{"tenants": [...], "noisy": id,
    "orders": {tenant: rows}, "customers": {tenant: rows}}``."""
    if tenants < 2:
        raise ValueError("load_demo needs at least 2 tenants: quiet ones and the noisy one")
    with database.connect() as conn:
        conn.execute(PLANS_DDL)
        conn.execute("SELECT setseed(%s)", (seed / 100,))
        for plan in DEMO_PLANS:
            conn.execute(
                "INSERT INTO plans VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (
                    plan.name,
                    plan.statement_timeout_ms,
                    plan.max_concurrent,
                    plan.reads_per_s,
                    plan.read_burst,
                    plan.reports_per_s,
                    plan.report_burst,
                ),
            )
        ids = list(range(1, tenants + 1))
        for tenant in ids:
            plan = "starter" if tenant == ids[-1] else "pro"
            conn.execute(
                "INSERT INTO tenants VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                (tenant, f"tenant-{tenant}", plan),
            )
            count = noisy_rows if tenant == ids[-1] else rows
            conn.execute(
                "INSERT INTO orders SELECT %s, i, (random() * 10000)::int, "
                "timestamptz '2026-01-01' + i * interval '1 minute' "
                "FROM generate_series(1, %s) i ON CONFLICT DO NOTHING",
                (tenant, count),
            )
            conn.execute(
                "INSERT INTO customers SELECT %s, i, format('c%%s@tenant-%%s.example', i, %s) "
                "FROM generate_series(1, %s) i ON CONFLICT DO NOTHING",
                (tenant, tenant, customers),
            )
        conn.execute("ANALYZE orders")
        conn.execute("ANALYZE customers")
        conn.commit()
        orders = dict(conn.execute("SELECT tenant_id, count(*) FROM orders GROUP BY 1").fetchall())
        people = dict(
            conn.execute("SELECT tenant_id, count(*) FROM customers GROUP BY 1").fetchall()
        )
    return {"tenants": ids, "noisy": ids[-1], "orders": orders, "customers": people}


def grant_app_role(database: Any, name: str = "s12b_app") -> Any:
    """The application's role: an ordinary LOGIN role (:func:`labkit.db.login_role`, so
    ``labkit_<name>``, neither superuser nor owner) with CONNECT on ``database`` and
    SELECT, INSERT, UPDATE, DELETE on its tables (those that exist now). Returns the Role."""
    from psycopg import sql

    from labkit import db

    role = db.login_role(name)
    who = sql.Identifier(role.name)
    with database.connect(autocommit=True) as conn:
        conn.execute(
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(database.name), who)
        )
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(who))
        conn.execute(
            sql.SQL(
                "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {}"
            ).format(who)
        )
    return role


def load_plans(conn: Any) -> dict[int, Plan]:
    """Every tenant's :class:`Plan`, read from ``tenants`` joined to ``plans``."""
    rows = conn.execute(
        "SELECT t.id, p.name, p.statement_timeout_ms, p.max_concurrent, p.reads_per_s, "
        "p.read_burst, p.reports_per_s, p.report_burst "
        "FROM tenants t JOIN plans p ON p.name = t.plan ORDER BY t.id"
    ).fetchall()
    return {row[0]: Plan(*row[1:]) for row in rows}


# --------------------------------------------------------------------------- rate limiter


@dataclass(frozen=True)
class Decision:
    """The rate limiter's answer: allowed or not, when to retry, tokens left."""

    allowed: bool
    retry_after_ms: int
    tokens: float


class RateLimiter:
    """A token bucket per key in Redis, refilled continuously at ``rate_per_s`` up to
    ``burst``; each request takes ``cost`` tokens.

    One Lua script reads, refills, takes and writes back: Redis runs it atomically, so
    two application servers can never both take the last token (a GET then SET from the
    client could). The clock is Redis's own ``TIME`` (one clock for every server), unless
    ``now_ms`` is given (tests)."""

    SCRIPT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local now = tonumber(ARGV[4])
if now < 0 then
    local t = redis.call('TIME')
    now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000)
local allowed, retry = 0, 0
if tokens >= cost then
    tokens = tokens - cost
    allowed = 1
else
    retry = math.ceil((cost - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return {allowed, retry, tostring(tokens)}
"""

    def __init__(self, client: Any, *, namespace: str | None = None) -> None:
        self.client = client
        self.namespace = namespace if namespace is not None else default_namespace("rate:")
        if not self.namespace:
            raise ValueError("give the limiter a key namespace (e.g. 's12b:rate:')")
        self._script = client.register_script(self.SCRIPT)

    def key(self, name: str) -> str:
        return f"{self.namespace}bucket:{name}"

    def allow(
        self,
        name: str,
        *,
        rate_per_s: float,
        burst: int,
        cost: int = 1,
        now_ms: float | None = None,
    ) -> Decision:
        """Take ``cost`` tokens from the bucket ``name`` if it holds them."""
        if rate_per_s <= 0 or burst < 1 or cost < 1:
            raise ValueError("rate_per_s must be > 0, burst ≥ 1 and cost ≥ 1")
        if cost > burst:
            raise ValueError(f"a request costing {cost} can never pass a bucket of {burst}")
        allowed, retry, tokens = self._script(
            keys=[self.key(name)],
            args=[rate_per_s, burst, cost, -1 if now_ms is None else now_ms],
        )
        return Decision(bool(allowed), int(retry), float(tokens))

    def reset(self) -> int:
        """Delete every key of this namespace; returns how many."""
        from labkit.caching import delete_prefix

        return delete_prefix(self.client, self.namespace)


# --------------------------------------------------------------------------- concurrency limiter


class ConcurrencyLimiter:
    """A counting semaphore per tenant in Redis: a sorted set of holders scored by when
    their lease ends. Acquiring (one Lua script) drops expired leases, then adds the holder
    if fewer than ``limit`` remain; releasing removes it and, if a waiter is registered
    (a counter of waiters) and fewer wake tokens are queued than waiters, pushes one wake
    token on a list the waiters block on with ``BLPOP`` (so they do not poll Redis in a
    tight loop, and tokens never pile up for waiters that do not exist). The woken waiter
    still has to win the acquire script: the queue is not fair (not FIFO), a newcomer can
    take the slot first. A holder that dies without releasing loses its slot when its lease
    ends (``lease_ms``); waiters look again every ``poll_s`` for that (and for a release
    that came between their failed acquire and their registration)."""

    ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
    if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then
        redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
    end
    return 1
end
return 0
"""

    RELEASE = """
redis.call('ZREM', KEYS[1], ARGV[1])
local waiting = tonumber(redis.call('GET', KEYS[3]) or '0')
if waiting > redis.call('LLEN', KEYS[2]) then
    redis.call('RPUSH', KEYS[2], 1)
    redis.call('PEXPIRE', KEYS[2], 10000)
    return 1
end
return 0
"""

    def __init__(
        self,
        client: Any,
        *,
        namespace: str | None = None,
        lease_ms: int = 30_000,
        poll_s: float = 0.05,
    ) -> None:
        self.client = client
        self.namespace = namespace if namespace is not None else default_namespace("slots:")
        if not self.namespace:
            raise ValueError("give the limiter a key namespace (e.g. 's12b:slots:')")
        self.lease_ms = lease_ms
        self.poll_s = poll_s
        self.waits = 0  # slot() calls that found every slot taken at first
        self._lock = threading.Lock()
        self._acquire = client.register_script(self.ACQUIRE)
        self._release = client.register_script(self.RELEASE)

    def key(self, tenant: Any) -> str:
        return f"{self.namespace}holders:{tenant}"

    def try_acquire(self, tenant: Any, *, limit: int, lease_ms: int | None = None) -> str | None:
        """A holder id if a slot was free, else None (never waits)."""
        if limit < 1:
            raise ValueError("a concurrency limit must be ≥ 1")
        holder = uuid.uuid4().hex
        lease = self.lease_ms if lease_ms is None else lease_ms
        return (
            holder if self._acquire(keys=[self.key(tenant)], args=[limit, lease, holder]) else None
        )

    def wake_key(self, tenant: Any) -> str:
        return f"{self.namespace}wake:{tenant}"

    def waiting_key(self, tenant: Any) -> str:
        return f"{self.namespace}waiting:{tenant}"

    def release(self, tenant: Any, holder: str) -> bool:
        """Give the slot back; push a wake token only if registered waiters outnumber the
        tokens already queued. Returns True if it pushed one."""
        keys = [self.key(tenant), self.wake_key(tenant), self.waiting_key(tenant)]
        return bool(self._release(keys=keys, args=[holder]))

    def holders(self, tenant: Any) -> int:
        """Holders right now (expired leases included until the next acquire drops them)."""
        return int(self.client.zcard(self.key(tenant)))

    @contextmanager
    def slot(
        self,
        tenant: Any,
        *,
        limit: int,
        wait_s: float = 10.0,
        lease_ms: int | None = None,
        stop: threading.Event | None = None,
    ) -> Iterator[float]:
        """Hold one of the tenant's ``limit`` slots for the block; waits up to ``wait_s``
        (woken by a release, or every ``poll_s``) and raises :class:`SlotUnavailable` after,
        or soon after ``stop`` is set.
        Yields the ms waited."""
        started = time.perf_counter()
        deadline = started + wait_s
        waited = False
        try:
            while (holder := self.try_acquire(tenant, limit=limit, lease_ms=lease_ms)) is None:
                if not waited:
                    waited = True
                    with self._lock:
                        self.waits += 1
                    with self.client.pipeline(transaction=True) as pipe:  # register as a waiter
                        pipe.incr(self.waiting_key(tenant))
                        pipe.pexpire(self.waiting_key(tenant), 60_000)
                        pipe.execute()
                if time.perf_counter() >= deadline or (stop is not None and stop.is_set()):
                    raise SlotUnavailable(
                        f"tenant {tenant}: all {limit} slots stayed taken for {wait_s} s "
                        "(retry later, or raise the plan's max_concurrent)"
                    )
                # Sleep until a release pushes a wake token, or poll_s (a lease may have expired).
                self.client.blpop([self.wake_key(tenant)], timeout=self.poll_s)
        finally:
            if waited:
                self.client.decr(self.waiting_key(tenant))
        try:
            yield (time.perf_counter() - started) * 1000
        finally:
            self.release(tenant, holder)

    def reset(self) -> int:
        from labkit.caching import delete_prefix

        return delete_prefix(self.client, self.namespace)


# --------------------------------------------------------------------------- the request path


@dataclass
class Gateway:
    """The application's request path: rate limit, then a concurrency slot, then the
    statement in a transaction with the tenant's ``statement_timeout``. Each limit is off
    unless given (``timeouts=True``, ``slots=``, ``limiter=``). With a ``meter``
    (:class:`labkit.metering.UsageMeter`), every statement that reached PostgreSQL is
    billed to its tenant: one query, its rows, and its milliseconds (a cancelled one too:
    it used the server until it was cancelled).

    The rate limit and the slots guard the kinds in ``limited_kinds`` (the expensive
    ``report`` by default): each check is a Redis round trip, which a 1-ms read would
    feel. The timeout applies to every statement."""

    plans: Mapping[int, Plan]
    timeouts: bool = False
    slots: ConcurrencyLimiter | None = None
    limiter: RateLimiter | None = None
    slot_wait_s: float = 10.0
    limited_kinds: tuple[str, ...] = ("report",)
    label: str = ""
    meter: Any = None  # a labkit.metering.UsageMeter: bills every statement that ran

    def plan(self, tenant_id: int) -> Plan:
        try:
            return self.plans[tenant_id]
        except KeyError:
            raise ValueError(
                f"no tenant {tenant_id!r}: give a tenant id from the tenants table"
            ) from None

    def execute(
        self,
        conn: Any,
        tenant_id: int,
        query: str,
        params: Sequence[Any],
        *,
        kind: str = "read",
        timings: list[float] | None = None,
        stop: threading.Event | None = None,
    ):
        """Run ``query`` for the tenant; returns its rows. Raises :class:`RateLimited`,
        :class:`SlotUnavailable` or psycopg's ``QueryCanceled`` (statement timeout).
        ``timings``, if given, gets the transaction's ms (slot waits excluded); ``stop``
        ends a wait for a slot early."""
        plan = self.plan(tenant_id)
        limited = kind in self.limited_kinds
        if self.limiter is not None and limited:
            rate, burst = plan.rate(kind)
            decision = self.limiter.allow(f"{tenant_id}:{kind}", rate_per_s=rate, burst=burst)
            if not decision.allowed:
                raise RateLimited(f"tenant {tenant_id} {kind}s", decision.retry_after_ms)
        if self.slots is None or not limited:
            return self._run(conn, tenant_id, plan, query, params, timings)
        # The lease outlives the statement timeout, so only a crashed holder loses it.
        lease = plan.statement_timeout_ms + 5_000
        with self.slots.slot(
            tenant_id, limit=plan.max_concurrent, wait_s=self.slot_wait_s, lease_ms=lease, stop=stop
        ):
            return self._run(conn, tenant_id, plan, query, params, timings)

    def _run(
        self,
        conn: Any,
        tenant_id: int,
        plan: Plan,
        query: str,
        params: Sequence[Any],
        timings: list[float] | None,
    ):
        began = time.perf_counter()
        rows: list[Any] = []
        try:
            # Pipeline mode sends BEGIN, set_config, the statement and COMMIT together: the
            # timeout costs no extra round trip, so every phase pays the same network cost.
            with conn.pipeline():
                with conn.transaction():
                    if self.timeouts:
                        conn.execute(
                            "SELECT set_config('statement_timeout', %s, true)",
                            (f"{plan.statement_timeout_ms}ms",),
                        )
                    cursor = conn.execute(query, params)
                rows = cursor.fetchall()
            return rows
        finally:
            elapsed_ms = (time.perf_counter() - began) * 1000
            if timings is not None:
                timings.append(elapsed_ms)
            if self.meter is not None:
                self.meter.add(tenant_id, queries=1, rows=len(rows), statement_ms=elapsed_ms)


# --------------------------------------------------------------------------- the load


@dataclass
class PhaseResult:
    """One phase of the noisy-neighbour load (or several rounds of it, merged): the quiet
    tenants' latencies and the deterministic counts."""

    label: str
    duration_s: float = 0.0
    rounds: int = 0
    latencies_ms: dict[int, list[float]] = field(default_factory=dict)
    quiet_errors: dict[str, int] = field(default_factory=dict)
    noisy_attempts: int = 0
    noisy_completed: int = 0
    noisy_cancelled: int = 0
    noisy_refused: int = 0
    noisy_waited: int = 0
    noisy_stopped: int = 0
    noisy_busy_s: float = 0.0
    noisy_longest_ms: float = 0.0
    max_noisy_active: int = 0
    samples: int = 0
    noisy_users: set[str] = field(default_factory=set)
    allowed_bound: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def quiet_latencies(self) -> list[float]:
        return sorted(x for values in self.latencies_ms.values() for x in values)

    def percentile(self, q: float) -> float:
        """The quiet tenants' ``q``-th percentile latency in ms, by nearest rank (the
        smallest latency with at least ``q`` % of the samples at or below it). NaN when
        there are fewer than ``100 / (100 - q)`` samples (p99 needs 100): the top rank would
        only be the maximum."""
        values = self.quiet_latencies
        if not values or (q < 100 and len(values) < 100 / (100 - q)):
            return float("nan")
        return values[min(len(values) - 1, max(0, -(-len(values) * q // 100) - 1))]

    @property
    def noisy_started(self) -> int:
        """Reports that ran in PostgreSQL to an end (completed or cancelled by the timeout)."""
        return self.noisy_completed + self.noisy_cancelled

    @property
    def noisy_allowed(self) -> int:
        """Reports the rate limiter let through (every attempt it did not refuse)."""
        return self.noisy_attempts - self.noisy_refused

    def merge(self, other: PhaseResult) -> PhaseResult:
        """Add another round of the same phase to this one."""
        self.duration_s += other.duration_s
        self.rounds += other.rounds
        for tenant, values in other.latencies_ms.items():
            self.latencies_ms.setdefault(tenant, []).extend(values)
        for name, count in other.quiet_errors.items():
            self.quiet_errors[name] = self.quiet_errors.get(name, 0) + count
        for name in (
            "noisy_attempts", "noisy_completed", "noisy_cancelled", "noisy_refused", "noisy_waited",
            "noisy_stopped", "noisy_busy_s", "samples", "allowed_bound",
        ):  # fmt: skip
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.noisy_longest_ms = max(self.noisy_longest_ms, other.noisy_longest_ms)
        self.max_noisy_active = max(self.max_noisy_active, other.max_noisy_active)
        self.noisy_users |= other.noisy_users
        self.errors += other.errors
        return self

    @property
    def quiet_throughput(self) -> float:
        """The quiet tenants' completed queries per second of the phase (all of them)."""
        return len(self.quiet_latencies) / self.duration_s if self.duration_s else float("nan")

    @property
    def noisy_concurrency(self) -> float:
        """The noisy tenant's average concurrency: seconds of report statements in flight
        per second of the phase (the average number running at once, not CPU)."""
        return self.noisy_busy_s / self.duration_s if self.duration_s else float("nan")

    def row(self) -> dict[str, Any]:
        return {
            "phase": self.label,
            "quiet queries": len(self.quiet_latencies),
            "quiet queries/s": round(self.quiet_throughput),
            "quiet p50 ms": round(self.percentile(50), 2),
            "quiet p95 ms": round(self.percentile(95), 2),
            "quiet p99 ms": round(self.percentile(99), 2),
            "reports completed": self.noisy_completed,
            "cancelled by timeout": self.noisy_cancelled,
            "stopped at phase end": self.noisy_stopped,
            "refused by rate limit": self.noisy_refused,
            "waited for a slot": self.noisy_waited,
            "max noisy active": self.max_noisy_active,
            "noisy avg concurrency": round(self.noisy_concurrency, 2),
        }


def _timed_out(exc: Exception) -> bool:
    """True for PostgreSQL's 'canceling statement due to statement timeout' (57014 is
    also raised for a cancel request: 'due to user request')."""
    return "statement timeout" in str(exc)


def run_phase(
    database: Any,
    gateway: Gateway,
    *,
    quiet_tenants: Sequence[int],
    noisy_tenant: int | None,
    noisy_threads: int = 4,
    duration_s: float = 1.5,
    think_s: float = 0.002,
    monitor_interval_s: float = 0.005,
    label: str | None = None,
    role: Any = None,
) -> PhaseResult:
    """Run the quiet tenants' :data:`DASHBOARD_QUERY` in closed loops (one thread and one
    connection per tenant, ``think_s`` between a reply and the next query) for ``duration_s``,
    and, unless ``noisy_tenant`` is None, ``noisy_threads`` closed loops of
    :data:`REPORT_QUERY` for the noisy tenant, all through ``gateway``.

    A refused report sleeps the limiter's ``retry_after_ms``; a report cancelled by its
    timeout is retried at once. A monitor counts the noisy tenant's ``active`` statements
    in ``pg_stat_activity`` every ``monitor_interval_s`` (on a fixed schedule; a sample that
    takes longer delays the next one). At the end, reports still running
    are cancelled (counted as ``noisy_stopped``, not as timeouts) so a phase ends on time.

    The tenants' connections log in as ``role`` (a :class:`labkit.db.Role`, see
    :func:`grant_app_role`), as an application should; the monitor as the admin."""
    import psycopg

    if duration_s <= 0 or noisy_threads < 1:
        raise ValueError("duration_s must be > 0 and noisy_threads ≥ 1")
    if noisy_tenant is not None and noisy_tenant in quiet_tenants:
        raise ValueError(f"tenant {noisy_tenant} cannot be quiet and noisy at once")
    result = PhaseResult(label or gateway.label or "phase", rounds=1)
    lock = threading.Lock()
    stop = threading.Event()
    noisy_connections: list[Any] = []
    workers = len(quiet_tenants) + (noisy_threads if noisy_tenant is not None else 0)

    def connect(tenant: int):
        name = application_name(tenant)
        if role is None:
            return database.connect(autocommit=True, application_name=name)
        return psycopg.connect(
            role.url(database.name), autocommit=True, application_name=name, connect_timeout=10
        )

    start = threading.Barrier(workers + 1)

    def quiet(tenant: int) -> None:
        samples: list[float] = []
        errors: dict[str, int] = {}
        with connect(tenant) as conn:
            start.wait()
            while not stop.is_set():
                began = time.perf_counter()
                try:
                    gateway.execute(
                        conn, tenant, DASHBOARD_QUERY, (tenant,), kind="read", stop=stop
                    )
                except (TenantLimitError, psycopg.errors.QueryCanceled) as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    continue
                samples.append((time.perf_counter() - began) * 1000)
                time.sleep(think_s)
        with lock:
            result.latencies_ms[tenant] = samples
            for name, count in errors.items():
                result.quiet_errors[name] = result.quiet_errors.get(name, 0) + count

    def noisy(tenant: int) -> None:
        counts = {"attempts": 0, "completed": 0, "cancelled": 0, "refused": 0, "stopped": 0}
        timings: list[float] = []
        with connect(tenant) as conn:
            with lock:
                noisy_connections.append(conn)
            start.wait()
            while not stop.is_set():
                counts["attempts"] += 1
                try:
                    gateway.execute(
                        conn, tenant, REPORT_QUERY, (tenant, tenant), kind="report",
                        timings=timings, stop=stop,
                    )  # fmt: skip
                    counts["completed"] += 1
                except psycopg.errors.QueryCanceled as exc:
                    counts["cancelled" if _timed_out(exc) else "stopped"] += 1
                except RateLimited as exc:
                    counts["refused"] += 1
                    stop.wait(exc.retry_after_ms / 1000)
                except SlotUnavailable:
                    pass
            with lock:
                noisy_connections.remove(conn)
        with lock:
            result.noisy_attempts += counts["attempts"]
            result.noisy_completed += counts["completed"]
            result.noisy_cancelled += counts["cancelled"]
            result.noisy_refused += counts["refused"]
            result.noisy_stopped += counts["stopped"]
            result.noisy_busy_s += sum(timings) / 1000
            result.noisy_longest_ms = max([result.noisy_longest_ms, *timings])

    def guarded(target: Callable[[int], None], tenant: int) -> Callable[[], None]:
        def run() -> None:
            try:
                target(tenant)
            except threading.BrokenBarrierError:
                pass
            except Exception as exc:  # reported in the result, never lost in a thread
                with lock:
                    result.errors.append(f"{target.__name__} tenant {tenant}: {exc!r}")
                start.abort()
                stop.set()

        return run

    threads = [threading.Thread(target=guarded(quiet, t), daemon=True) for t in quiet_tenants]
    if noisy_tenant is not None:
        threads += [
            threading.Thread(target=guarded(noisy, noisy_tenant), daemon=True)
            for _ in range(noisy_threads)
        ]
    waits_before = _slot_waits(gateway)
    with database.connect(autocommit=True) as monitor:
        for thread in threads:
            thread.start()
        try:
            start.wait(timeout=60)
        except threading.BrokenBarrierError:
            stop.set()
        began = time.perf_counter()
        next_sample = began
        name = application_name(noisy_tenant) if noisy_tenant is not None else ""
        while not stop.is_set() and time.perf_counter() - began < duration_s:
            if noisy_tenant is not None:
                active, users = monitor.execute(
                    "SELECT count(*), coalesce(array_agg(DISTINCT usename::text), '{}') "
                    "FROM pg_stat_activity WHERE datname = current_database() "
                    "AND application_name = %s AND state = 'active' AND pid <> pg_backend_pid()",
                    (name,),
                ).fetchone()
                result.samples += 1
                result.max_noisy_active = max(result.max_noisy_active, active)
                result.noisy_users.update(users)
            next_sample += monitor_interval_s
            time.sleep(max(0.0, next_sample - time.perf_counter()))
        stop.set()
        result.duration_s = time.perf_counter() - began
        with lock:
            running = list(noisy_connections)
        for conn in running:  # end the reports still running: the phase is over
            with contextlib.suppress(psycopg.Error):
                conn.cancel_safe(timeout=5)
    for thread in threads:
        thread.join(timeout=60)
    result.noisy_waited = _slot_waits(gateway) - waits_before
    if gateway.limiter is not None and noisy_tenant is not None:
        rate, burst = gateway.plan(noisy_tenant).rate("report")
        # A bucket holds at most `burst` at the start and refills at `rate` (+50 ms of slack
        # for the threads' start before the clock above).
        result.allowed_bound = burst + rate * (result.duration_s + 0.05)
    if result.errors:
        raise RuntimeError("the load failed: " + "; ".join(result.errors))
    return result


def run_rounds(
    database: Any,
    gateways: Sequence[tuple[Gateway, bool]],
    *,
    rounds: int = 2,
    progress: bool = True,
    **kwargs: Any,
) -> list[PhaseResult]:
    """Run each ``(gateway, noisy)`` phase for ``rounds`` rounds, interleaved (A B C, A B C…)
    so that load from outside drifts over every phase alike, and merge each phase's rounds.
    Keyword arguments go to :func:`run_phase` (``noisy_tenant`` is used only where
    ``noisy`` is true). Rate buckets and slots are reset before each phase."""
    if rounds < 1 or not gateways:
        raise ValueError("give at least one round and one gateway")
    noisy_tenant = kwargs.pop("noisy_tenant")
    merged: dict[int, PhaseResult] = {}
    steps = [(r, i) for r in range(rounds) for i in range(len(gateways))]
    bar = None
    if progress:
        from tqdm import tqdm  # plain text: a saved notebook shows the final count

        bar = tqdm(total=len(steps), desc="phases", file=sys.stdout, leave=True, ascii=True)
    try:
        for _, index in steps:
            gateway, noisy = gateways[index]
            for limiter in (gateway.limiter, gateway.slots):
                if limiter is not None:
                    limiter.reset()
            one = run_phase(
                database, gateway, noisy_tenant=noisy_tenant if noisy else None, **kwargs
            )
            merged[index] = merged[index].merge(one) if index in merged else one
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return [merged[i] for i in range(len(gateways))]


def _slot_waits(gateway: Gateway) -> int:
    return gateway.slots.waits if gateway.slots is not None else 0


def phase_table(results: Sequence[PhaseResult]):
    """The phases side by side, as a pandas DataFrame indexed by phase."""
    import pandas as pd

    return pd.DataFrame([r.row() for r in results]).set_index("phase")


def plot_phases(results: Sequence[PhaseResult], *, ax: Any = None):
    """The quiet tenants' latency distributions per phase (ECDF, log scale) and their
    p50/p95 side by side."""
    import matplotlib.pyplot as plt
    import numpy as np

    if ax is None:
        fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    else:
        left, right = ax
        fig = left.figure
    for r in results:
        values = np.array(r.quiet_latencies)
        if len(values):
            left.step(
                values, np.arange(1, len(values) + 1) / len(values), where="post", label=r.label
            )
    left.set_xscale("log")
    left.axhline(0.95, color="grey", linestyle=":", linewidth=1)
    left.annotate(
        "p95", (0.01, 0.955), xycoords=("axes fraction", "data"), color="grey", fontsize=8
    )
    left.set_xlabel("quiet tenants' query latency (ms, log scale)")
    left.set_ylabel("share of queries at or below")
    left.set_title("Latency distribution of the quiet tenants")
    left.legend(fontsize=8)
    labels = [r.label for r in results]
    x = np.arange(len(results))
    right.bar(x - 0.2, [r.percentile(50) for r in results], width=0.4, label="p50")
    right.bar(x + 0.2, [r.percentile(95) for r in results], width=0.4, label="p95")
    right.set_xticks(x, labels, rotation=20, ha="right", fontsize=8)
    right.set_ylabel("ms")
    right.set_title("Quiet tenants: p50 and p95 per phase")
    right.legend()
    fig.tight_layout()
    return fig
