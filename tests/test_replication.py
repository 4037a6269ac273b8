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
    replication_status,
    reset_statements,
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
        pair.down()
        assert pair.primary.pid() is None and pair.replica.pid() is None
    shutil.rmtree(home, ignore_errors=True)


def test_pair_streams_and_the_replica_refuses_writes_even_from_the_app_role(pair):
    """The primary streams to one replica; the app role is ordinary; the replica is in
    recovery and refuses the app's UPDATE that the primary accepts."""
    (status,) = replication_status(pair.url("primary"))
    assert status["state"] == "streaming" and status["sync_state"] == "async"
    assert pair.primary.port() != pair.replica.port()
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


def test_reads_right_after_a_write_are_stale_until_the_lsn_is_replayed(pair):
    """Right after a commit the replica often misses it; after waiting for the commit's
    LSN, never. A wait on the primary (not a replica) or past the end is refused."""
    tries = 150

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

    assert stale_reads(wait=False) > 0
    assert stale_reads(wait=True) == 0
    with psycopg.connect(pair.url("primary"), autocommit=True) as conn:
        with pytest.raises(ValueError, match="not to a replica"):
            wait_for_replay(conn, current_lsn(conn))
    with psycopg.connect(pair.url("replica"), autocommit=True) as conn:
        with pytest.raises(TimeoutError, match="has not replayed"):
            wait_for_replay(conn, "FF/0", timeout=0.2)


def test_lag_is_sampled_under_a_write_load_and_returns_to_zero(pair):
    """The sampler reads pg_stat_replication during the load: the replica falls behind by
    some bytes, and nothing is behind once it has caught up."""
    with LagSampler(pair.url("primary"), interval=0.01) as sampler:
        load = write_load(pair.url("primary", role="app"), transactions=40,
                          rows_per_transaction=500, progress=False)  # fmt: skip
        pair.catch_up()
    assert load["rows"] == 20_000 and load["wal_bytes"] > 20_000 * 200
    assert len(sampler.samples) >= 2
    assert max(s.bytes_behind for s in sampler.samples) > 0
    assert [s.t for s in sampler.samples] == sorted(s.t for s in sampler.samples)
    (status,) = replication_status(pair.url("primary"))
    assert status["bytes_behind"] == 0
    fig = plot_lag(sampler.samples)
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
