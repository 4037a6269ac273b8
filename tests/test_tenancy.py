"""labkit.tenancy against a real PostgreSQL: row-based tenancy (filtered reads and bulk
writes, stamped inserts, foreign writes refused, the statement-log check), schema per tenant
(hostile names refused with nothing created, Alembic per schema with its version table in
the schema, the bulk path building the same tables) and moving one tenant, atomically."""

from __future__ import annotations

import pytest
from sqlalchemy import delete, func, select, text, update

from labkit import db, tenancy
from labkit.db import Statement
from labkit.tenancy import Project, Task, TenantError, TenantNameError


@pytest.fixture(scope="module")
def engine():
    database = db.fresh_database("s12a_test_tenancy")
    engine = database.engine()
    tenancy.create_shared(engine)
    tenancy.load_shared(engine, tenants=4, projects=3, tasks=5)
    yield engine
    engine.dispose()
    db.drop_database("s12a_test_tenancy")


def counts(engine) -> dict[int, int]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT tenant_id, count(*) FROM tasks GROUP BY 1")).all()
    return dict(rows)


def test_reads_and_bulk_writes_are_filtered_and_inserts_stamped(engine):
    """A tenant's session sees its rows only (joins too), a bulk UPDATE/DELETE changes its
    rows only, a new row is stamped, and a row of another tenant is refused at flush; the
    statement log of the workload holds no unfiltered statement."""
    before = counts(engine)
    with db.record_queries(engine) as log, tenancy.session_for(engine, 2) as session:
        seen = session.scalars(select(Task)).all()
        joined = session.execute(
            select(Task.tenant_id, Project.tenant_id).join(
                Project, (Project.tenant_id == Task.tenant_id) & (Project.id == Task.project_id)
            )
        ).all()
        project = Project(name="Website")
        session.add(project)
        session.flush()
        session.add(Task(project_id=project.id, title="launch"))
        seen[0].title = "renamed"
        changed = session.execute(update(Task).values(done=True)).rowcount
        removed = session.execute(delete(Task).where(Task.title == "launch")).rowcount
        seen_tenants, stamped = {t.tenant_id for t in seen}, project.tenant_id
        session.commit()
    assert seen_tenants == {2} and len(seen) == before[2] == 15
    assert set(joined) == {(2, 2)} and len(joined) == 15
    assert stamped == 2
    assert (changed, removed) == (16, 1)
    assert counts(engine) == before
    assert tenancy.unfiltered_statements(log.statements, 2) == []
    assert len(log.statements) >= 6
    with engine.connect() as conn:
        done = dict(
            conn.execute(text("SELECT tenant_id, bool_and(done) FROM tasks GROUP BY 1")).all()
        )
    assert done == {1: False, 2: True, 3: False, 4: False}
    with tenancy.session_for(engine, 2) as session:
        session.add(Task(tenant_id=3, project_id=7, title="planted"))
        with pytest.raises(TenantError, match="tenant 3"):
            session.flush()
        session.rollback()
        other = session.get(Task, (3, 40))  # another tenant's key: filtered out
        assert other is None
        moved = session.scalars(select(Task)).first()
        moved.tenant_id = 1
        with pytest.raises(TenantError):
            session.flush()
    with pytest.raises(TenantError, match="session_for"):
        tenancy.TenantSession(engine).scalars(select(Task)).all()


def test_the_statement_log_check_catches_forgotten_filters(engine):
    """Raw SQL, a Core statement on the table, a filter for another tenant, a join with one
    side unfiltered, an insert for another tenant: each is reported; filtered ones are not."""
    with db.record_queries(engine) as log, tenancy.session_for(engine, 1) as session:
        session.execute(text("SELECT count(*) FROM tasks WHERE NOT done")).scalar()
        session.execute(Task.__table__.select().where(Task.__table__.c.id == 1)).all()
        session.scalars(select(Task).where(Task.id == 1)).all()
    flagged = tenancy.unfiltered_statements(log.statements, 1)
    assert [s.sql.split()[0] for s in flagged] == ["SELECT", "SELECT"]
    assert "count(*)" in flagged[0].sql and len(log.statements) == 3

    def check(sql, params=None):
        return tenancy.unfiltered_statements([Statement(sql, params or {}, 0.0, 0)], 5) == []

    assert check("SELECT * FROM tasks WHERE tenant_id = 5")
    assert not check("SELECT * FROM tasks WHERE tenant_id = 6")
    assert check("SELECT * FROM tasks AS t WHERE t.tenant_id = %(x)s", {"x": 5})
    assert not check("SELECT * FROM tasks AS t WHERE t.tenant_id = %(x)s", {"x": 4})
    assert not check(
        "SELECT * FROM tasks JOIN projects ON projects.id = tasks.project_id "
        "WHERE tasks.tenant_id = 5"
    )
    assert check("SELECT * FROM tenants WHERE id = 6")  # not a tenant-owned table
    assert check(
        "INSERT INTO tasks (tenant_id, title) VALUES (%(tenant_id)s, 'a')", {"tenant_id": 5}
    )
    assert not check(
        "INSERT INTO tasks (tenant_id, title) VALUES (%(tenant_id)s, 'a')", {"tenant_id": 2}
    )
    assert not check("INSERT INTO tasks (title) VALUES ('a')")


HOSTILE = [
    'acme"; DROP SCHEMA public CASCADE; --',
    "acme'; SELECT 1; --",
    "pg_catalog",
    "pg_toast",
    "public",
    "information_schema",
    "tenant",
    "x" * 64,
    "Acme",
    "ácme",
    "acme\n",
    "",
    "1acme",
    "acme corp",
    None,
]


def test_hostile_names_are_refused_before_reaching_the_server(engine):
    """Every hostile name raises TenantNameError (a ValueError) saying what to use, and no
    schema or table is created; a 63-byte name is accepted."""
    schemas_before = tenancy.tenant_schemas(engine)
    with engine.connect() as conn:
        tables_before = conn.execute(text("SELECT count(*) FROM pg_class")).scalar()
    for name in HOSTILE:
        with pytest.raises(TenantNameError) as refused, engine.begin() as conn:
            tenancy.provision_schema(conn, name)
        assert isinstance(refused.value, ValueError)
        assert (
            "refused" in str(refused.value)
            or "reserved" in str(refused.value)
            or ("bytes" in str(refused.value) or "string" in str(refused.value))
        )
    assert tenancy.tenant_schemas(engine) == schemas_before
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM pg_class")).scalar() == tables_before
    assert tenancy.check_schema_name("a" * 63) == "a" * 63


def test_provisioning_runs_alembic_per_schema_and_the_bulk_path_matches(engine):
    """Alembic leaves its version table in the tenant's schema (none in public); the bulk
    path builds the same columns and indexes at the same revision; an existing schema is
    refused; a tenant engine reads its own schema and a plain engine cannot read 'tenant'."""
    with engine.begin() as conn:
        tenancy.provision_schema(conn, "s12a_alpha")
        tenancy.provision_schema(conn, "s12a_bravo", migrate=False)
        with pytest.raises(TenantError, match="exists already"):
            tenancy.provision_schema(conn, "s12a_alpha")
    with engine.connect() as conn:
        versions = (
            conn.execute(
                text(
                    "SELECT table_schema FROM information_schema.tables WHERE table_name = 'alembic_version'"
                )
            )
            .scalars()
            .all()
        )
        alpha = tenancy.schema_fingerprint(conn, "s12a_alpha")
        assert alpha == tenancy.schema_fingerprint(conn, "s12a_bravo")
        tenancy.load_schema_data(conn, "s12a_alpha", projects=2, tasks=3)
        conn.commit()
    assert sorted(versions) == ["s12a_alpha", "s12a_bravo"]
    assert alpha["version"] == "tenant_0002"
    assert (
        "tasks_open_idx",
        "CREATE INDEX tasks_open_idx ON tasks USING btree (project_id) WHERE (NOT done)",
    ) in alpha["indexes"]
    with tenancy.tenant_engine(engine, "s12a_alpha").connect() as conn:
        assert conn.execute(select(func.count()).select_from(tenancy.schema_tasks)).scalar() == 6
    with tenancy.tenant_engine(engine, "s12a_bravo").connect() as conn:
        assert conn.execute(select(func.count()).select_from(tenancy.schema_tasks)).scalar() == 0
    with (
        pytest.raises(Exception, match='relation "tenant.tasks" does not exist'),
        engine.connect() as conn,
    ):
        conn.execute(select(tenancy.schema_tasks))
    cost = tenancy.catalog_cost(engine)
    assert cost["pg_class_rows"] > 400 and cost["database_bytes"] > cost["pg_class_bytes"] > 0


def test_moving_a_tenant_is_atomic_and_counted(engine):
    """A move copies every table (counts equal), empties the tenant's shared rows, leaves
    the others alone and records the schema; a move that fails half-way (its schema exists)
    changes nothing."""
    before = counts(engine)
    with engine.begin() as conn:
        conn.execute(text("CREATE SCHEMA s12a_taken"))
    with pytest.raises(TenantError, match="exists already"):
        tenancy.move_tenant_to_schema(engine, 3, "s12a_taken")
    assert counts(engine) == before
    moved = tenancy.move_tenant_to_schema(engine, 3, "s12a_moved")
    assert moved == {"projects": 3, "tasks": before[3]}
    after = counts(engine)
    assert 3 not in after and {k: v for k, v in before.items() if k != 3} == after
    with tenancy.tenant_engine(engine, "s12a_moved").connect() as conn:
        titles = conn.execute(select(func.count()).select_from(tenancy.schema_tasks)).scalar()
        conn.execute(tenancy.schema_projects.insert().values(name="after the move"))
        assert conn.execute(select(func.max(tenancy.schema_projects.c.id))).scalar() > 9
    assert titles == before[3]
    with engine.connect() as conn:
        assert (
            conn.execute(text("SELECT schema_name FROM tenants WHERE id = 3")).scalar()
            == "s12a_moved"
        )
    with pytest.raises(TenantError, match="lives in schema"):
        tenancy.move_tenant_to_schema(engine, 3, "s12a_again")


def test_catalog_comparison_holds_the_same_tenants_both_ways():
    """Row-based: the catalog does not grow with tenants; schema per tenant: the same number
    of relations per tenant, by either provisioning path, and the timings count every tenant."""
    try:
        frame, timings = tenancy.catalog_comparison(
            (2, 5), prefix="s12a_test_catalog", alembic_sample=1, batch=2, progress=False
        )
        cost = frame.set_index(["layout", "tenants"])["pg_class_rows"]
        assert cost[("row-based", 2)] == cost[("row-based", 5)]
        assert cost[("schema per tenant", 5)] - cost[("schema per tenant", 2)] == 3 * 14
        assert (timings["alembic_tenants"], timings["bulk_tenants"]) == (1, 4)
        schemas = db.database("s12a_test_catalog_schemas").engine()
        with schemas.connect() as conn:
            assert tenancy.tenant_schemas(conn) == [f"tenant_{n}" for n in (1, 2, 3, 4, 5)]
            assert tenancy.schema_fingerprint(conn, "tenant_1") == tenancy.schema_fingerprint(
                conn, "tenant_5"
            )
        schemas.dispose()
    finally:
        db.drop_database("s12a_test_catalog_rows")
        db.drop_database("s12a_test_catalog_schemas")


def test_a_move_waits_for_writers_of_that_tenant_and_loses_none(engine):
    """A writer of the tenant holds a row (an UPDATE) and references the tenant (an INSERT):
    the move waits for its commit (the locks of its first statements), then copies both, so
    no write is lost between the copy and the delete."""
    import threading

    writer = engine.connect()
    writer.execute(text("UPDATE tasks SET title = 'edited' WHERE tenant_id = 4 AND id = 46"))
    writer.execute(text("INSERT INTO tasks (tenant_id, project_id, title) VALUES (4, 10, 'late')"))
    before = counts(engine)[4]
    outcome = {}
    mover = threading.Thread(
        target=lambda: outcome.update(moved=tenancy.move_tenant_to_schema(engine, 4, "s12a_locked"))
    )
    mover.start()
    mover.join(0.5)
    waited = mover.is_alive()
    writer.commit()
    writer.close()
    mover.join(10)
    assert waited, "the move did not wait for the open transaction of a writer of tenant 4"
    assert outcome["moved"]["tasks"] == before + 1
    with tenancy.tenant_engine(engine, "s12a_locked").connect() as conn:
        titles = set(conn.execute(select(tenancy.schema_tasks.c.title)).scalars())
    assert {"edited", "late"} <= titles
    assert 4 not in counts(engine)


def test_bulk_orm_inserts_are_stamped_or_refused(engine):
    """``insert(Task)`` never reaches before_flush: the listener stamps a missing tenant_id
    (values() and executemany) and refuses another tenant's, before anything is sent."""
    from sqlalchemy import insert

    before = counts(engine)
    with tenancy.session_for(engine, 2) as session:
        with pytest.raises(TenantError, match=r"tenant \[3\] rows"):
            session.execute(insert(Task).values(tenant_id=3, project_id=7, title="planted"))
        session.rollback()
        with pytest.raises(TenantError, match=r"tenant \[1\] rows"):
            session.execute(insert(Task), [{"tenant_id": 1, "project_id": 1, "title": "planted"}])
        session.rollback()
        session.execute(insert(Task).values(project_id=4, title="stamped"))
        session.execute(insert(Task), [{"project_id": 4, "title": "bulk"}] * 2)
        with engine.connect() as other:  # not committed yet: nothing visible elsewhere
            assert (
                other.execute(text("SELECT count(*) FROM tasks WHERE title = 'planted'")).scalar()
                == 0
            )
        session.flush()
        stamped = session.execute(
            text(
                "SELECT tenant_id, count(*) FROM tasks WHERE title IN ('stamped', 'bulk') GROUP BY 1"
            )
        ).all()
        session.rollback()
    assert stamped == [(2, 3)]
    assert counts(engine) == before


def test_a_moved_tenant_cannot_write_to_the_shared_tables(engine):
    """A session of a tenant holding the directory row (its first write) makes the move wait;
    after the move every ORM write of that tenant (flush, bulk UPDATE, bulk INSERT) is
    refused, and the shared tables hold none of its rows."""
    import threading

    from sqlalchemy import insert

    tenancy.load_shared(engine, tenants=1, projects=3, tasks=5, first=5)
    writer = tenancy.session_for(engine, 5)
    writer.execute(update(Task).where(Task.id == 61).values(title="before the move"))
    outcome = {}
    mover = threading.Thread(
        target=lambda: outcome.update(moved=tenancy.move_tenant_to_schema(engine, 5, "s12a_five"))
    )
    mover.start()
    mover.join(0.5)
    waited = mover.is_alive()
    writer.commit()
    mover.join(10)
    assert waited and outcome["moved"] == {"projects": 3, "tasks": 15}
    writes = {
        "flush": lambda: (writer.add(Project(name="late")), writer.flush()),
        "update": lambda: writer.execute(update(Task).values(done=True)),
        "delete": lambda: writer.execute(delete(Task)),
        "insert": lambda: writer.execute(insert(Task).values(project_id=61, title="late")),
    }
    refused = []
    for name, write in writes.items():
        with pytest.raises(TenantError, match="moved to schema 's12a_five'"):
            write()
        refused.append(name)
        writer.rollback()
    writer.close()
    assert refused == list(writes) and 5 not in counts(engine)


def test_a_write_that_arrives_during_the_move_waits_and_is_refused(engine):
    """The move holds the directory row; a tenant write that starts meanwhile waits on its
    check (FOR KEY SHARE) instead of on the rows, and after the commit it is refused rather
    than landing in the shared tables or changing 0 rows without a word."""
    import threading
    import time

    tenancy.load_shared(engine, tenants=1, projects=3, tasks=5, first=6)
    blocker = engine.connect()  # holds one of tenant 6's rows: the move stops half-way
    blocker.execute(text("SELECT 1 FROM tasks WHERE tenant_id = 6 AND id = 76 FOR UPDATE"))
    outcome = {}

    def move():
        outcome["moved"] = tenancy.move_tenant_to_schema(engine, 6, "s12a_six")

    def write():
        with tenancy.session_for(engine, 6) as session:
            try:
                outcome["changed"] = session.execute(update(Task).values(done=True)).rowcount
                session.commit()
            except TenantError as error:
                outcome["refused"] = str(error)

    def waiting(pattern):
        with engine.connect() as conn:
            return conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE :p"
                ),
                {"p": pattern},
            ).scalar()

    mover, writer = threading.Thread(target=move), threading.Thread(target=write)
    mover.start()
    for _ in range(100):
        if waiting("SELECT 1 FROM tasks%FOR UPDATE"):
            break
        time.sleep(0.05)
    writer.start()
    for _ in range(100):
        if waiting("SELECT tenants.schema_name%FOR KEY SHARE"):
            break
        time.sleep(0.05)
    writer_waited = writer.is_alive()
    blocker.rollback()
    blocker.close()
    mover.join(10)
    writer.join(10)
    assert writer_waited and outcome["moved"] == {"projects": 3, "tasks": 15}
    assert "changed" not in outcome and "moved to schema 's12a_six'" in outcome["refused"]
    assert 6 not in counts(engine)
