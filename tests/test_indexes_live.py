"""Lesson 01, 4.6-4.8, against the course's PostgreSQL: the collation rule for LIKE
(labkit.index_misses), watching DDL locks and concurrent builds (labkit.online_ddl), and
what indexes cost each write (labkit.write_cost)."""

from __future__ import annotations

import pytest

from labkit import data, db, index_misses, online_ddl, write_cost

pytestmark = pytest.mark.xdist_group("services")


@pytest.fixture(scope="module")
def blog():
    demo = data.blog_database("test_indexes_live", scale="tiny")
    yield demo
    db.drop_database("test_indexes_live")


@pytest.fixture
def conn(blog):
    with blog.connect(autocommit=True) as connection:
        yield connection


# --------------------------------------------------------------------------- index_misses


def test_database_collation_matches_the_catalog(conn):
    """The name and provider come from pg_database; C and POSIX are byte order."""
    found = index_misses.database_collation(conn)
    provider, collate = conn.execute(
        "SELECT datlocprovider, datcollate FROM pg_database WHERE datname = current_database()"
    ).fetchone()
    assert found.provider == {"b": "builtin", "c": "libc", "i": "icu"}[provider]
    if provider == "c":
        assert found.name == collate
        assert found.byte_order == (collate in ("C", "POSIX"))


def test_like_prefix_needs_byte_order_or_pattern_ops(conn):
    """Under a linguistic collation a plain index cannot serve LIKE 'x%'; text_pattern_ops
    can; under the database's own collation the plain index can if it is byte order."""
    linguistic = index_misses.linguistic_collation(conn)
    assert linguistic not in ("C", "POSIX")
    ddl = index_misses.collated_copy(conn, "t_titles", "posts", "title", linguistic)
    assert ddl.startswith('CREATE TABLE "t_titles" AS SELECT "title"::text COLLATE')
    collation = conn.execute(
        "SELECT collation_name FROM information_schema.columns "
        "WHERE table_name = 't_titles' AND column_name = 'title'"
    ).fetchone()[0]
    assert collation == linguistic
    title = conn.execute("SELECT title FROM t_titles ORDER BY title LIMIT 1 OFFSET 500").fetchone()
    like = ("SELECT title FROM t_titles WHERE title LIKE %(p)s", {"p": title[0][:9] + "%"})
    conn.execute("CREATE INDEX t_plain ON t_titles (title)")
    conn.execute("ANALYZE t_titles")
    assert not db.explain(conn, *like).uses_index()
    conn.execute("CREATE INDEX t_pattern ON t_titles (title text_pattern_ops)")
    assert db.explain(conn, *like).uses_index("t_pattern")
    conn.execute("DROP TABLE t_titles")
    conn.execute("SET enable_seqscan = off")  # 200 users: a scan of 3 pages would win
    users = db.explain(conn, "SELECT id FROM users WHERE email LIKE 'joan%'")
    conn.execute("RESET enable_seqscan")
    assert users.uses_index("users_email_key") == index_misses.database_collation(conn).byte_order


def test_collated_copy_quotes_its_identifiers(conn):
    """Names that need quoting are quoted, not spliced in."""
    ddl = index_misses.collated_copy(conn, 'odd "name"', "users", "email", "C")
    assert '"odd ""name"""' in ddl
    assert conn.execute('SELECT count(*) FROM "odd ""name"""').fetchone()[0] == 200
    conn.execute('DROP TABLE "odd ""name"""')


# --------------------------------------------------------------------------- online_ddl


def test_attempt_reports_success_and_failure(conn):
    """A statement that works gives its rowcount; an error comes back as 'Class: message'."""
    ok = online_ddl.attempt(conn, "UPDATE posts SET view_count = view_count WHERE id < %s", (4,))
    assert ok.ok and ok.rowcount == 3 and ok.error is None and ok.seconds >= 0
    bad = online_ddl.attempt(conn, "SELECT * FROM no_such_table")
    assert not bad.ok and bad.rowcount is None
    assert bad.error.startswith("UndefinedTable: relation")


def test_a_write_waits_for_an_open_index_build_and_is_seen_waiting(blog, conn):
    """The uncommitted CREATE INDEX's ShareLock blocks an UPDATE, which pg_stat_activity
    and pg_locks show; it finishes once the transaction ends."""
    with blog.connect() as trial:
        trial.execute("CREATE INDEX t_try ON posts (created_at)")
        update = "UPDATE posts SET view_count = view_count + 1 WHERE id = 1"
        with online_ddl.Background(blog, update, lock_timeout="10s") as write:
            waiting = online_ddl.wait_for_lock(conn, write.pid)
            locks = online_ddl.relation_locks(conn, "posts")
            trial.rollback()
        assert waiting["wait_event"] == "relation"
        assert waiting["blocked_by"] == [trial.info.backend_pid]
        assert waiting["query"].startswith("UPDATE posts")
    assert [(lock["mode"], lock["granted"]) for lock in locks] == [
        ("ShareLock", True),
        ("RowExclusiveLock", False),
    ]
    assert write.result().ok and write.result().rowcount == 1


def test_lock_timeout_ends_a_background_wait(blog, conn):
    """A background statement blocked past its lock_timeout fails; it never hangs."""
    with blog.connect() as holder:
        holder.execute("LOCK TABLE posts IN ACCESS EXCLUSIVE MODE")
        with online_ddl.Background(
            blog, "SELECT 1 FROM posts LIMIT 1", lock_timeout="150ms"
        ) as job:
            pass
        holder.rollback()
    outcome = job.result()
    assert not outcome.ok and outcome.error.startswith("LockNotAvailable")


def test_wait_for_lock_times_out_and_needs_autocommit(blog, conn):
    """A session that never waits raises TimeoutError; a transactional watcher is refused."""
    with pytest.raises(TimeoutError):
        online_ddl.wait_for_lock(conn, conn.info.backend_pid, timeout=0.2)
    with blog.connect() as in_transaction, pytest.raises(ValueError):
        online_ddl.wait_for_lock(in_transaction, conn.info.backend_pid, timeout=0.2)


def test_concurrent_build_waits_for_writers_and_lets_new_writes_through(blog, conn):
    """CREATE INDEX CONCURRENTLY waits for an open write transaction (virtualxid), shows in
    pg_stat_progress_create_index, and does not block a new write meanwhile; a failed one
    leaves an invalid index that invalid_indexes lists."""
    with blog.connect() as open_writer:
        writer_pid = open_writer.info.backend_pid
        open_writer.execute("UPDATE posts SET view_count = view_count + 1 WHERE id = 2")
        build_sql = "CREATE INDEX CONCURRENTLY t_conc ON posts (created_at)"
        with online_ddl.Background(blog, build_sql, lock_timeout="10s") as build:
            waits = online_ddl.wait_for_lock(conn, build.pid, event="virtualxid")
            progress = online_ddl.build_progress(conn, "posts")
            write = online_ddl.attempt(conn, "UPDATE posts SET view_count = 0 WHERE id = 3")
            open_writer.commit()
    assert waits["blocked_by"] == [writer_pid]
    assert progress["pid"] == build.pid and progress["phase"].startswith("waiting for")
    assert write.ok and build.result().ok
    assert online_ddl.invalid_indexes(conn, "posts") == []
    assert online_ddl.build_progress(conn, "posts") is None
    conn.execute("DROP INDEX t_conc")
    with blog.connect() as open_writer:
        open_writer.execute("UPDATE posts SET view_count = view_count + 1 WHERE id = 2")
        conn.execute("SET lock_timeout = '100ms'")
        failed = online_ddl.attempt(conn, build_sql)
        open_writer.rollback()
    conn.execute("RESET lock_timeout")
    assert not failed.ok
    (invalid,) = online_ddl.invalid_indexes(conn, "posts")
    assert invalid["index"] == "t_conc" and invalid["valid"] is False
    conn.execute("DROP INDEX CONCURRENTLY t_conc")


# --------------------------------------------------------------------------- write_cost


def test_each_index_adds_a_wal_record_per_inserted_row(conn):
    """Records per row: about 2 with the primary key alone, one more per secondary index."""
    per_row = {}
    for count in (0, 2, 6):
        ddl = write_cost.create_table(conn, f"t_bench_{count}", indexes=count)
        assert len(ddl) == 2 + count
        cost = write_cost.insert_rows(conn, f"t_bench_{count}", 1_000)
        assert cost.rows == 1_000 and cost.wal_bytes > 0 and cost.ms > 0
        per_row[count] = cost.wal_records / cost.rows
    assert 1.9 <= per_row[0] <= 2.5
    assert per_row[2] - per_row[0] == pytest.approx(2, abs=0.3)
    assert per_row[6] - per_row[0] == pytest.approx(6, abs=0.5)
    write_cost.vacuum(conn, "t_bench_6")
    updated = write_cost.update_rows(conn, "t_bench_6", every=4)
    assert updated.rows == 250 and updated.statement.startswith('UPDATE "t_bench_6"')
    frame = write_cost.per_row({0: {"update": updated}})
    assert list(frame.columns) == [
        "update: WAL records/row",
        "update: WAL bytes/row",
        "update: µs/row",
    ]
    write_cost.drop_tables(conn, [f"t_bench_{n}" for n in (0, 2, 6)])
    assert write_cost.table_pages is not None


def test_create_table_checks_its_arguments(conn):
    """More indexes than INDEXES holds is refused."""
    with pytest.raises(ValueError):
        write_cost.create_table(conn, "t_bad", indexes=len(write_cost.INDEXES) + 1)


def test_fillfactor_makes_single_row_updates_hot(blog, conn):
    """At fillfactor 70 every spread single-row update is HOT and the table does not grow;
    at 100 the first update of each page moves its row."""
    runs = {}
    for fillfactor in (100, 70):
        name = f"t_ff{fillfactor}"
        write_cost.create_table(conn, name, indexes=3, fillfactor=fillfactor)
        write_cost.insert_rows(conn, name, 2_000)
        write_cost.vacuum(conn, name)
        runs[fillfactor] = write_cost.single_row_updates(
            conn, name, write_cost.spread_ids(2_000, 400)
        )
    full, roomy = runs[100], runs[70]
    assert roomy.updates == roomy.hot == 400 and roomy.new_page == 0
    assert roomy.heap_pages_after == roomy.heap_pages_before
    assert full.new_page >= full.pages_touched > 0
    assert full.heap_pages_after > full.heap_pages_before
    assert full.wal_records > roomy.wal_records
    assert conn.execute("SHOW synchronous_commit").fetchone()[0] == "on"
    with blog.connect() as in_transaction, pytest.raises(ValueError):
        write_cost.single_row_updates(in_transaction, "t_ff70", [1])
    write_cost.drop_tables(conn, ["t_ff100", "t_ff70"])


def test_spread_ids_are_distinct_and_cover_the_table():
    """A stride sample: distinct ids in 1..rows, refused when it cannot be."""
    ids = write_cost.spread_ids(5_000, 1_000)
    assert len(set(ids)) == 1_000 and min(ids) >= 1 and max(ids) <= 5_000
    assert max(ids) - min(ids) > 4_000
    with pytest.raises(ValueError):
        write_cost.spread_ids(10, 11)
    with pytest.raises(ValueError):
        write_cost.spread_ids(7919, 3)


def test_plot_draws_two_panels():
    """The figure has the WAL panel and the time panel."""
    import pandas as pd

    frame = pd.DataFrame(
        {
            "insert: WAL records/row": [2.0, 5.0],
            "insert: µs/row": [3.0, 6.0],
            "update: WAL records/row": [3.0, 6.0],
            "update: µs/row": [8.0, 9.0],
        },
        index=[0, 3],
    )
    fig = write_cost.plot(frame)
    assert [ax.get_title() for ax in fig.axes] == [
        "WAL records per row (deterministic)",
        "time per row, µs (varies)",
    ]
