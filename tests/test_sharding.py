"""labkit.sharding against real databases: a stable hash (Python's is not), a ring that moves
about 1/(n+1) of the keys, routed reads and writes, scatter-gather and a real rebalance."""

from __future__ import annotations

import heapq

import pytest
from sqlalchemy import text

from labkit import db, sharding
from labkit.sharding import HashRing, ShardCluster


def test_stable_hash_is_sha256_and_python_hash_is_salted():
    """stable_hash is the first 8 bytes of SHA-256 (big-endian); hash() differs by process."""
    assert sharding.stable_hash("a") == 0xCA978112CA1BBDCA
    keys = [f"k{i}" for i in range(300)]
    first = sharding.python_hash_shards(keys, 4, seed=1)
    assert first == sharding.python_hash_shards(keys, 4, seed=1)
    assert (
        sum(
            a != b for a, b in zip(first, sharding.python_hash_shards(keys, 4, seed=2), strict=True)
        )
        > 100
    )
    with pytest.raises(ValueError, match="at least 1"):
        sharding.modulo_shard("a", 0)


def test_ring_moves_only_the_new_nodes_share_and_wraps_around():
    """Adding a 5th node moves ~1/5 of the keys, all to it; modulo moves ~4/5; a key hashed
    past the last point belongs to the first; a vnode's own label maps to that node."""
    ring = HashRing(["a", "b", "c", "d"], vnodes=100)
    keys = [f"user-{i}" for i in range(20_000)]
    bigger = ring.with_node("e")
    moved = sharding.moved_keys(keys, ring.node_for, bigger.node_for)
    assert abs(len(moved) / len(keys) - 0.2) < 0.04
    assert {bigger.node_for(k) for k in moved} == {"e"}
    naive = sharding.moved_keys(
        keys, lambda k: sharding.modulo_shard(k, 4), lambda k: sharding.modulo_shard(k, 5)
    )
    assert len(naive) / len(keys) > 0.7
    assert ring.nodes == ["a", "b", "c", "d"], "with_node must not change the original ring"
    assert abs(sum(bigger.share().values()) - 1) < 1e-9
    assert all(ring.node_for(f"{node}#7") == node for node in ring.nodes)
    last = max(ring._points)
    beyond = next(k for k in (f"x{i}" for i in range(100_000)) if sharding.stable_hash(k) > last)
    assert ring.node_for(beyond) == ring._owners[0]
    with pytest.raises(ValueError, match="already"):
        ring.add("a")
    with pytest.raises(ValueError, match="add one"):
        HashRing().node_for("k")


def test_cluster_routes_scatters_and_rebalances():
    """Writes and reads reach only the owner shard; scatter asks each shard once; adding a
    shard and rebalancing moves exactly the predicted rows, and none is lost."""
    cluster = ShardCluster.create("test_s13b_shard", 2, vnodes=50)
    try:
        cluster.run_everywhere("CREATE TABLE t (k text PRIMARY KEY, v int NOT NULL)")
        rows = [{"k": f"key-{i}", "v": i % 97} for i in range(1500)]
        for name, part in cluster.route(rows, "k").items():
            with cluster.engines[name].begin() as conn:
                conn.execute(text("INSERT INTO t VALUES (:k, :v)"), part)
        assert sum(cluster.row_counts("t").values()) == 1500
        cluster.reset_counts()
        with cluster.engine_for("key-7").connect() as conn:
            assert conn.execute(text("SELECT v FROM t WHERE k = 'key-7'")).scalar_one() == 7
        assert (
            cluster.counts()[cluster.shard_for("key-7")] == 1
            and sum(cluster.counts().values()) == 1
        )
        cluster.reset_counts()
        parts = cluster.scatter("SELECT k, v FROM t ORDER BY v DESC, k LIMIT :n", {"n": 5})
        assert cluster.counts() == {name: 1 for name in cluster.names}
        top = heapq.nsmallest(
            5, (r for p in parts.values() for r in p), key=lambda r: (-r[1], r[0])
        )
        assert top == sorted(((r["k"], r["v"]) for r in rows), key=lambda r: (-r[1], r[0]))[:5]
        before = cluster.ring
        added = cluster.add_shard()
        predicted = sharding.moved_keys(
            [r["k"] for r in rows], before.node_for, cluster.ring.node_for
        )
        moved = cluster.rebalance("t", "k", batch=100)
        assert sum(moved.values()) == len(predicted) > 0
        assert {target for _, target in moved} == {added}
        assert sum(cluster.row_counts("t").values()) == 1500
        assert cluster.misplaced("t", "k") == {}
        with pytest.raises(ValueError):
            ShardCluster.create("test_s13b_none", 0)
    finally:
        cluster.close(drop=True)
    gone = [
        d.name for d in cluster.databases.values() if db.database_exists(d.name, qualified=True)
    ]
    assert gone == [], f"close(drop=True) left {gone}"
