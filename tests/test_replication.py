"""labkit.replication against a real primary and a real streaming replica (a pair of
clusters of the test's own, in a temporary folder: the course's server is not touched)."""

from __future__ import annotations

import shutil
import tempfile

import psycopg
import pytest

from labkit.replication import (
    LagSampler,
    ReplicaPair,
    current_lsn,
    plot_lag,
    replay_paused,
    replication_status,
    reset_statements,
    slot_status,
    statement_calls,
    wait_for_replay,
    write_load,
)
from labkit.supervisor import Supervisor


@pytest.fixture(scope="module")
def pair():
    home = tempfile.mkdtemp(prefix="labkit-s13a-")  # private: ReplicaPair opens it as needed
    with Supervisor(say=lambda m: None) as supervisor:
        pair = ReplicaPair(home, supervisor=supervisor, database="shop").up()
        with psycopg.connect(pair.url("primary"), autocommit=True) as conn:
            conn.execute("CREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL)")
            conn.execute("INSERT INTO accounts SELECT g, 0 FROM generate_series(1, 300) g")
            conn.execute(
                "CREATE TABLE events (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
                "payload text NOT NULL)"
            )
        pair.catch_up()
        yield pair
        supervisor.down(pair.replica)
        assert [s["active"] for s in slot_status(pair.url("primary"))] == [False]
        assert pair.drop_slot() is True  # the replica is gone: so is its slot
        assert slot_status(pair.url("primary")) == [] and pair.drop_slot() is False
        pair.down()
        assert pair.primary.pid() is None and pair.replica.pid() is None
    shutil.rmtree(home, ignore_errors=True)


def test_pair_streams_and_the_replica_refuses_writes_even_from_the_app_role(pair):
    """The primary streams to one replica; the app role is ordinary; the replica is in
    recovery and refuses the app's UPDATE that the primary accepts."""
    (status,) = replication_status(pair.url("primary"))
    assert status["state"] == "streaming" and status["sync_state"] == "async"
    assert pair.primary.port() != pair.replica.port()
    (slot,) = slot_status(pair.url("primary"))  # pg_basebackup -C -S made it, -R uses it
    assert (slot["slot_name"], slot["slot_type"], slot["active"]) == (pair.slot, "physical", True)
    assert slot["wal_status"] == "reserved" and slot["restart_lsn"] is not None
    with psycopg.connect(pair.url("replica", role="app"), autocommit=True) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
        assert conn.execute(
            "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"
        ).fetchone() == (False, False)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("UPDATE accounts SET balance = 1 WHERE id = 1")
    with psycopg.connect(pair.url("primary", role="app"), autocommit=True) as conn:
        assert conn.execute("UPDATE accounts SET balance = 0 WHERE id = 1").rowcount == 1
    with pytest.raises(ValueError, match="primary' or 'replica"):
        pair.url("standby")
    with pytest.raises(ValueError, match="'admin' or 'app'"):
        pair.url("replica", role="postgres")
    with pytest.raises(ValueError, match="labkit_"):
        ReplicaPair(pair.home, supervisor=pair.supervisor, app_user="app")
    with pytest.raises(ValueError, match="lower-case letters"):
        ReplicaPair(pair.home, supervisor=pair.supervisor, database="shop; DROP")
    with pytest.raises(ValueError, match="slot name"):
        ReplicaPair(pair.home, supervisor=pair.supervisor, slot="replica")


def test_reads_right_after_a_write_are_stale_until_the_lsn_is_replayed(pair):
    """With replay paused, every read right after a commit misses it and the LSN wait times
    out; resumed, the wait returns and the read sees the commit. After waiting for the
    commit's LSN, never stale. A wait on the primary (not a replica) or past the end is
    refused, and so is pausing a primary."""
    tries = 60

    def stale_reads(wait: bool) -> int:
        stale = 0
        with (
            psycopg.connect(pair.url("primary", role="app"), autocommit=True) as w,
            psycopg.connect(pair.url("replica", role="app"), autocommit=True) as r,
        ):
            for i in range(1, tries + 1):
                new = w.execute(
                    "UPDATE accounts SET balance = balance + 1 WHERE id = %s RETURNING balance",
                    (i,),
                ).fetchone()[0]
                if wait:
                    assert wait_for_replay(r, current_lsn(w), timeout=10) >= 0
                seen = r.execute("SELECT balance FROM accounts WHERE id = %s", (i,)).fetchone()[0]
                stale += seen != new
        return stale

    with replay_paused(pair.url("replica")):
        assert stale_reads(wait=False) == tries
        with (
            psycopg.connect(pair.url("primary"), autocommit=True) as w,
            psycopg.connect(pair.url("replica"), autocommit=True) as r,
        ):
            lsn = current_lsn(w)
            with pytest.raises(TimeoutError, match="has not replayed"):
                wait_for_replay(r, lsn, timeout=0.2)
            assert pair.replay_behind(lsn) > 0
    with psycopg.connect(pair.url("replica"), autocommit=True) as r:
        assert wait_for_replay(r, lsn, timeout=10) >= 0
    assert pair.replay_behind(lsn) == 0
    assert stale_reads(wait=True) == 0
    with pytest.raises(ValueError, match="not a replica"):
        with replay_paused(pair.url("primary")):
            pass
    with psycopg.connect(pair.url("primary"), autocommit=True) as conn:
        with pytest.raises(ValueError, match="not to a replica"):
            wait_for_replay(conn, current_lsn(conn))
    with psycopg.connect(pair.url("replica"), autocommit=True) as conn:
        with pytest.raises(TimeoutError, match="has not replayed"):
            wait_for_replay(conn, "FF/0", timeout=0.2)


def test_lag_is_sampled_under_a_write_load_and_returns_to_zero(pair):
    """With replay paused during the load, the replica is behind by at least the WAL the
    load wrote (measured on the replica, and by the sampler's last reading before the
    resume); once it has caught up, nothing up to the load's end is behind."""
    with LagSampler(pair.url("primary"), interval=0.01, replica_url=pair.url("replica")) as sampler:
        with replay_paused(pair.url("replica")):
            load = write_load(pair.url("primary", role="app"), transactions=40,
                              rows_per_transaction=500, progress=False)  # fmt: skip
            behind = pair.replay_behind(load["last_lsn"])
            after_load = sampler.next_sample()  # a reading begun after the load, still paused
            resumed = sampler.elapsed()
        pair.catch_up()
    assert load["rows"] == 20_000 and load["wal_bytes"] > 20_000 * 200
    assert behind >= load["wal_bytes"]
    assert pair.replay_behind(load["last_lsn"]) == 0
    assert after_load.t < resumed and after_load.bytes_behind >= load["wal_bytes"]
    assert [s.t for s in sampler.samples] == sorted(s.t for s in sampler.samples)
    fig = plot_lag(sampler.samples, marks={"resumed": resumed})
    assert len(fig.axes) == 2
    with pytest.raises(ValueError, match="no samples"):
        plot_lag([])
    with pytest.raises(ValueError, match="interval"):
        LagSampler(pair.url("primary"), interval=0)
    with pytest.raises(ValueError, match="at least 1"):
        write_load(pair.url("primary", role="app"), transactions=0)


def test_statement_calls_count_what_the_replica_itself_ran(pair):
    """pg_stat_statements on the replica counts exactly the reads sent to it, not the
    primary's."""
    reset_statements(pair.url("replica"))
    reset_statements(pair.url("primary"))
    with (
        psycopg.connect(pair.url("replica", role="app"), autocommit=True) as r,
        psycopg.connect(pair.url("primary", role="app"), autocommit=True) as w,
    ):
        for i in range(1, 8):
            r.execute("SELECT balance FROM accounts WHERE id = %s", (i,))
        w.execute("SELECT balance FROM accounts WHERE id = %s", (1,))
    assert statement_calls(pair.url("replica"), "from accounts where") == 7
    assert statement_calls(pair.url("primary"), "FROM ACCOUNTS WHERE") == 1


def test_synchronous_standby_makes_remote_apply_commits_visible_on_the_replica(pair):
    """Inside pair.synchronous(): the replica is listed as sync and a commit that sets
    remote_apply is on the replica when it returns (0 stale of 30); after: async again."""
    with pair.synchronous("walreceiver") as probes:
        (status,) = replication_status(pair.url("primary"))
        stale = 0
        with (
            psycopg.connect(pair.url("primary", role="app")) as w,
            psycopg.connect(pair.url("replica", role="app"), autocommit=True) as r,
        ):
            for i in range(1, 31):
                w.execute("SET LOCAL synchronous_commit = remote_apply")
                new = w.execute(
                    "UPDATE accounts SET balance = balance + 1 WHERE id = %s RETURNING balance",
                    (i,),
                ).fetchone()[0]
                w.commit()
                seen = r.execute("SELECT balance FROM accounts WHERE id = %s", (i,)).fetchone()[0]
                stale += seen != new
    assert probes >= 1 and status["sync_state"] == "sync" and stale == 0
    (status,) = replication_status(pair.url("primary"))
    assert status["sync_state"] == "async"
    with pytest.raises(ValueError, match="application_name"):
        with pair.synchronous("walreceiver'; DROP"):
            pass
