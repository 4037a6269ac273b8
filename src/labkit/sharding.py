"""Hash sharding across several PostgreSQL databases: a stable hash, a consistent-hash ring
with virtual nodes, scatter-gather and moving rows when a shard is added.

>>> stable_hash("user-1") == stable_hash("user-1") and 0 <= stable_hash("user-1") < 2**64
True
>>> modulo_shard("user-1", 3) in (0, 1, 2)
True
>>> ring = HashRing(["s0", "s1", "s2"], vnodes=64)
>>> keys = [f"user-{i}" for i in range(3000)]
>>> bigger = ring.with_node("s3")
>>> moved = moved_keys(keys, ring.node_for, bigger.node_for)
>>> {bigger.node_for(k) for k in moved}       # every moved key went to the new node
{'s3'}
>>> 0.15 < len(moved) / len(keys) < 0.35      # about 1/(n+1) = 0.25
True

**Why not ``hash()``.** Python salts the hash of ``str`` per process (``PYTHONHASHSEED``), so
two application servers (or one restarted) would route the same key to different shards;
:func:`python_hash_shards` shows it by asking two processes. :func:`stable_hash` is the
first 8 bytes of SHA-256 of the key's UTF-8 text, the same in every process and language.

**The cluster.** :class:`ShardCluster` holds one database per shard (``db.fresh_database``),
an engine on each, and counts the statements each shard receives (SQLAlchemy
``before_cursor_execute``). :meth:`ShardCluster.scatter` runs one query on every shard at once
(a thread per shard) and returns the per-shard rows for the caller to merge;
:meth:`ShardCluster.add_shard` creates a new shard and :meth:`ShardCluster.rebalance` moves
the rows whose owner changed, copying then deleting, shard pair by shard pair.
"""

from __future__ import annotations

import bisect
import hashlib
import os
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

__all__ = [
    "HashRing",
    "ShardCluster",
    "drop_databases",
    "modulo_shard",
    "moved_keys",
    "plot_moves",
    "python_hash_shards",
    "sample_accounts",
    "stable_hash",
]


def stable_hash(key: Any) -> int:
    """A 64-bit hash of ``str(key)`` that is the same in every process: the first 8 bytes of
    its SHA-256, read as a big-endian unsigned integer."""
    digest = hashlib.sha256(str(key).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


def modulo_shard(key: Any, shards: int) -> int:
    """The naive placement: ``stable_hash(key) % shards`` (stable, but almost every key moves
    when the number of shards changes)."""
    if shards < 1:
        raise ValueError(f"shards must be at least 1, not {shards}")
    return stable_hash(key) % shards


def python_hash_shards(keys: Sequence[str], shards: int, seed: int) -> list[int]:
    """``hash(key) % shards`` for each key, computed by a new Python process whose
    ``PYTHONHASHSEED`` is ``seed`` — what another application server would compute."""
    script = (
        "import sys\n"
        "n = int(sys.argv[1])\n"
        "for line in sys.stdin.read().splitlines():\n"
        "    print(hash(line) % n)\n"
    )
    if any("\n" in key for key in keys):
        raise ValueError("keys must not contain newlines")
    env = {**os.environ, "PYTHONHASHSEED": str(seed)}
    done = subprocess.run(
        [sys.executable, "-c", script, str(shards)],
        input="\n".join(keys),
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=30,
    )
    return [int(line) for line in done.stdout.split()]


def sample_accounts(n: int, *, seed: int = 13) -> list[dict]:
    """``n`` accounts (email, country, balance_cents), the same for a given seed: a few
    countries hold most accounts, and balances are skewed (log-normal), as in real data."""
    import random

    from labkit import data

    vocabulary = data.vocabulary()  # the blog's countries and weights (data/countries.csv)
    rng = random.Random(seed)
    countries = rng.choices(vocabulary.countries, weights=vocabulary.country_weights, k=n)
    return [
        {
            "email": f"user{i:07d}@example.com",
            "country": countries[i],
            "balance_cents": int(rng.lognormvariate(9, 1.2)),
        }
        for i in range(n)
    ]


def plot_moves(fractions: dict[str, float], *, ideal: float, title: str):
    """Bars of the fraction of keys moved per placement scheme, with the ideal 1/(n+1)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    names = list(fractions)
    ax.bar(
        names, [fractions[n] for n in names], color=["#c44e52", "#55a868", "#4c72b0"][: len(names)]
    )
    ax.axhline(ideal, color="black", linestyle="--", label=f"ideal 1/(n+1) = {ideal:.2f}")
    ax.set_ylabel("fraction of keys moved")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(loc="upper right")
    fig.tight_layout()
    return fig


class HashRing:
    """A consistent-hash ring: each node owns ``vnodes`` points ``stable_hash(f"{node}#{i}")``,
    and a key belongs to the first point at or after ``stable_hash(key)``, wrapping around.

    Adding a node takes over only the arcs just before its own points, so only the keys on
    those arcs move (about 1/(n+1) of them), all to the new node."""

    def __init__(self, nodes: Iterable[str] = (), *, vnodes: int = 100) -> None:
        if vnodes < 1:
            raise ValueError(f"vnodes must be at least 1, not {vnodes}")
        self.vnodes = vnodes
        self.nodes: list[str] = []
        self._points: list[int] = []
        self._owners: list[str] = []
        for node in nodes:
            self.add(node)

    def add(self, node: str) -> None:
        """Put ``node``'s virtual nodes on the ring."""
        if node in self.nodes:
            raise ValueError(f"{node!r} is already on the ring")
        self.nodes.append(node)
        for i in range(self.vnodes):
            point = stable_hash(f"{node}#{i}")
            at = bisect.bisect_left(self._points, point)
            self._points.insert(at, point)
            self._owners.insert(at, node)

    def with_node(self, node: str) -> HashRing:
        """A copy of this ring with ``node`` added (this ring is unchanged)."""
        bigger = HashRing(self.nodes, vnodes=self.vnodes)
        bigger.add(node)
        return bigger

    def node_for(self, key: Any) -> str:
        """The node that owns ``key``."""
        if not self._points:
            raise ValueError("the ring has no node: add one first")
        at = bisect.bisect_left(self._points, stable_hash(key))
        return self._owners[at % len(self._points)]

    def share(self) -> dict[str, float]:
        """The fraction of the hash space each node owns."""
        space = 2**64
        shares: Counter[str] = Counter()
        for i, point in enumerate(self._points):
            previous = self._points[i - 1] if i else self._points[-1] - space
            shares[self._owners[i]] += (point - previous) / space
        return {node: shares[node] for node in self.nodes}

    def __repr__(self) -> str:
        return f"HashRing(nodes={self.nodes!r}, vnodes={self.vnodes})"


def moved_keys(
    keys: Iterable[Any], before: Callable[[Any], Any], after: Callable[[Any], Any]
) -> list[Any]:
    """The keys whose placement differs between ``before(key)`` and ``after(key)``."""
    return [key for key in keys if before(key) != after(key)]


class ShardCluster:
    """Several databases on one server, one per shard, routed by a :class:`HashRing`.

    ``ShardCluster.create("s13b_shard", 3)`` makes ``s13b_shard_0`` .. ``_2`` (fresh, with
    the course's prefix). ``ddl`` given to :meth:`run_everywhere` is run on every shard (and
    on shards added later). ``statements`` counts the statements each shard has received."""

    def __init__(self, prefix: str, databases: dict[str, Any], *, vnodes: int = 100) -> None:
        self.prefix = prefix
        self.databases = dict(databases)
        self.engines = {}
        self.statements: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._ddl: list[str] = []
        self.ring = HashRing(self.databases, vnodes=vnodes)
        for name in self.databases:
            self._attach(name)

    @classmethod
    def create(cls, prefix: str, shards: int, *, vnodes: int = 100) -> ShardCluster:
        """Fresh databases ``<prefix>_0`` .. ``<prefix>_<shards-1>`` as one cluster."""
        from labkit import db

        if shards < 1:
            raise ValueError(f"a cluster needs at least 1 shard, not {shards}")
        names = [f"{prefix}_{i}" for i in range(shards)]
        with ThreadPoolExecutor(max_workers=shards) as pool:
            databases = dict(zip(names, pool.map(db.fresh_database, names), strict=True))
        return cls(prefix, databases, vnodes=vnodes)

    def _attach(self, name: str) -> None:
        from sqlalchemy import event

        engine = self.databases[name].engine(pool_size=2, max_overflow=2)

        def count(conn, cursor, statement, parameters, context, executemany):
            with self._lock:
                self.statements[name] += 1

        event.listen(engine, "before_cursor_execute", count)
        self.engines[name] = engine

    @property
    def names(self) -> list[str]:
        return list(self.databases)

    def run_everywhere(self, ddl: str) -> None:
        """Run ``ddl`` (schema statements) on every shard, and remember it for new shards."""
        from sqlalchemy import text

        self._ddl.append(ddl)
        for engine in self.engines.values():
            with engine.begin() as conn:
                conn.execute(text(ddl))

    def shard_for(self, key: Any) -> str:
        """The name of the shard that owns ``key``."""
        return self.ring.node_for(key)

    def engine_for(self, key: Any):
        """The engine of the shard that owns ``key``."""
        return self.engines[self.shard_for(key)]

    def route(self, rows: Iterable[dict], key: str) -> dict[str, list[dict]]:
        """Rows grouped by the shard that owns ``row[key]``."""
        grouped: dict[str, list[dict]] = {name: [] for name in self.names}
        for row in rows:
            grouped[self.shard_for(row[key])].append(row)
        return grouped

    def reset_counts(self) -> None:
        with self._lock:
            self.statements.clear()

    def counts(self) -> dict[str, int]:
        """Statements received per shard since the last :meth:`reset_counts`."""
        with self._lock:
            return {name: self.statements[name] for name in self.names}

    def scatter(self, sql: str, params: dict | None = None) -> dict[str, list[tuple]]:
        """Run one query on every shard in parallel (a thread per shard): rows per shard."""
        from sqlalchemy import text

        def one(name: str) -> list[tuple]:
            with self.engines[name].connect() as conn:
                return [tuple(row) for row in conn.execute(text(sql), params or {})]

        with ThreadPoolExecutor(max_workers=len(self.engines)) as pool:
            results = dict(zip(self.names, pool.map(one, self.names), strict=True))
        return results

    def row_counts(self, table: str) -> dict[str, int]:
        """Rows of ``table`` on each shard."""
        from sqlalchemy import text

        statement = text(f"SELECT count(*) FROM {_quote(table)}")
        counts = {}
        for name, engine in self.engines.items():
            with engine.connect() as conn:
                counts[name] = conn.execute(statement).scalar_one()
        return counts

    def add_shard(self) -> str:
        """Create the next shard database (``<prefix>_<n>``), run the schema on it and put it
        on a copy of the ring; returns its name. Rows stay where they are until
        :meth:`rebalance` (reads route by the new ring from now on, so move them first)."""
        from sqlalchemy import text

        from labkit import db

        name = f"{self.prefix}_{len(self.databases)}"
        self.databases[name] = db.fresh_database(name)
        self._attach(name)
        with self.engines[name].begin() as conn:
            for ddl in self._ddl:
                conn.execute(text(ddl))
        self.ring = self.ring.with_node(name)
        return name

    def misplaced(self, table: str, key: str) -> dict[tuple[str, str], list[Any]]:
        """Keys of ``table`` that sit on a shard other than their owner, as
        ``{(from shard, to shard): [keys]}``."""
        from sqlalchemy import text

        found: dict[tuple[str, str], list[Any]] = {}
        for name, engine in self.engines.items():
            with engine.connect() as conn:
                for (value,) in conn.execute(text(f"SELECT {_quote(key)} FROM {_quote(table)}")):
                    owner = self.shard_for(value)
                    if owner != name:
                        found.setdefault((name, owner), []).append(value)
        return found

    def rebalance(self, table: str, key: str, *, batch: int = 5000) -> dict[tuple[str, str], int]:
        """Move every misplaced row of ``table`` to its owner: per (source, target) pair,
        copy the rows (``ON CONFLICT DO NOTHING``, so a retry after a crash is safe), then
        delete them from the source. Returns the rows moved per pair."""
        from sqlalchemy import column, text
        from sqlalchemy import table as table_clause
        from sqlalchemy.dialects.postgresql import insert

        moved: dict[tuple[str, str], int] = {}
        for (source, target), keys in self.misplaced(table, key).items():
            for start in range(0, len(keys), batch):
                chunk = keys[start : start + batch]
                with self.engines[source].connect() as conn:
                    result = conn.execute(
                        text(f"SELECT * FROM {_quote(table)} WHERE {_quote(key)} = ANY(:keys)"),
                        {"keys": chunk},
                    )
                    columns = list(result.keys())
                    rows = [dict(zip(columns, row, strict=True)) for row in result]
                target_table = table_clause(table, *(column(c) for c in columns))
                with self.engines[target].begin() as conn:
                    conn.execute(insert(target_table).on_conflict_do_nothing(), rows)
                with self.engines[source].begin() as conn:
                    conn.execute(
                        text(f"DELETE FROM {_quote(table)} WHERE {_quote(key)} = ANY(:keys)"),
                        {"keys": chunk},
                    )
                moved[(source, target)] = moved.get((source, target), 0) + len(rows)
        return moved

    def close(self, *, drop: bool = False) -> None:
        """Dispose of the engines (and drop the shard databases if ``drop``)."""
        for engine in self.engines.values():
            engine.dispose()
        if drop:
            drop_databases([database.name for database in self.databases.values()], qualified=True)

    def __repr__(self) -> str:
        return f"ShardCluster(shards={self.names!r}, vnodes={self.ring.vnodes})"


def drop_databases(names: Iterable[str], *, qualified: bool = False) -> None:
    """Drop several databases at once: :func:`labkit.db.drop_databases`."""
    from labkit import db

    db.drop_databases(names, qualified=qualified)


def _quote(name: str) -> str:
    """``name`` quoted as a PostgreSQL identifier by SQLAlchemy's own preparer."""
    from sqlalchemy.dialects import postgresql

    return postgresql.dialect().identifier_preparer.quote_identifier(name)
