"""labkit.audit against a real PostgreSQL and an ordinary application role: the trigger
records ORM-less raw SQL with who, when and the changed columns only; the log is
append-only for the application (and for the owner, but for audit.redact); redaction is
itself logged; the dashboard counts changes per user per day."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from labkit import audit, db

DB = "s11b_test_audit"


@pytest.fixture(scope="module")
def database():
    database = db.fresh_database(DB)
    app = db.login_role("s11b_app")
    with database.connect(autocommit=True) as conn:
        audit.install(conn)
        audit.install(conn)  # idempotent
        audit.grant_reader(conn, app.name)
    yield database, app
    db.drop_database(DB)


@pytest.fixture
def logged(database, request):
    """A tracked table of this test's own (``pin`` masked): its name is returned third."""
    database_, app = database
    table = "accounts_" + request.node.name.split("_")[1]
    with database_.connect(autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} (id int PRIMARY KEY, owner text, balance int, pin text)"
            ).format(sql.Identifier(table))
        )
        conn.execute(
            sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {}").format(
                sql.Identifier(table), sql.Identifier(app.name)
            )
        )
        audit.track(conn, table, key="id", masked=["pin"])
    return database_, app, table


def q(text: str, table: str):
    """``text`` with ``{t}`` replaced by the quoted table name."""
    return sql.SQL(text).format(t=sql.Identifier(table))


def test_trigger_records_who_when_and_changed_columns_for_raw_sql(logged):
    """Raw SQL by the app role, in transactions naming two app users: one entry per row
    change, the UPDATE holds only the changed columns, the masked column never shows its
    value, a no-op UPDATE adds nothing, and the app user does not leak past its transaction."""
    database, app, table = logged
    with psycopg.connect(app.url(database.name)) as conn:
        with conn.transaction():
            audit.set_app_user(conn, "alice")
            conn.execute(
                q("INSERT INTO {t} VALUES (1, 'Ada', 100, '1234'), (2, 'Bob', 5, '0000')", table)
            )
        with conn.transaction():
            audit.set_app_user(conn, "bob")
            conn.execute(q("UPDATE {t} SET balance = 90, pin = '9999' WHERE id = 1", table))
            conn.execute(q("UPDATE {t} SET balance = balance WHERE id = 2", table))  # no change
            conn.execute(q("DELETE FROM {t} WHERE id = 2", table))
        conn.execute(q("UPDATE {t} SET owner = 'Ada L.' WHERE id = 1", table))  # no app user
        conn.commit()
        rows = conn.execute(
            "SELECT app_user, db_user, op, row_key, old, new FROM audit.log "
            "WHERE table_name = %s ORDER BY id",
            (table,),
        ).fetchall()
    assert [(r[0], r[2], r[3]) for r in rows] == [
        ("alice", "INSERT", "1"),
        ("alice", "INSERT", "2"),
        ("bob", "UPDATE", "1"),
        ("bob", "DELETE", "2"),
        (None, "UPDATE", "1"),
    ]
    assert {r[1] for r in rows} == {app.name}
    assert rows[2][4:6] == ({"balance": 100, "pin": "[masked]"}, {"balance": 90, "pin": "[masked]"})
    assert rows[0][5] == {"id": 1, "owner": "Ada", "balance": 100, "pin": "[masked]"}
    assert rows[3][4]["owner"] == "Bob" and rows[3][5] is None
    assert "1234" not in str(rows) and "9999" not in str(rows)


def test_log_is_append_only_and_redaction_is_controlled_and_logged(logged):
    """The app role cannot UPDATE, DELETE, TRUNCATE or INSERT into the log, nor call
    audit.redact; the owner's direct UPDATE is refused too; audit.redact needs a reason,
    masks the values and logs a REDACT entry."""
    database, app, table = logged
    with database.connect(autocommit=True) as owner:
        owner.execute(q("INSERT INTO {t} VALUES (7, 'Grace', 1, '1111')", table))
        owner.execute(q("UPDATE {t} SET owner = 'Grace H.' WHERE id = 7", table))
    with psycopg.connect(app.url(database.name), autocommit=True) as conn:
        for statement in (
            "UPDATE audit.log SET app_user = 'nobody'",
            "DELETE FROM audit.log",
            "TRUNCATE audit.log",
            "INSERT INTO audit.log (table_name, op) VALUES ('x', 'INSERT')",
            "SELECT audit.redact('x', ARRAY['7'], NULL, 'x')",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
                conn.execute(statement)
        mine = "SELECT count(*) FROM audit.log WHERE table_name = %s"
        assert conn.execute(mine, (table,)).fetchone()[0] == 2
    with database.connect(autocommit=True) as owner:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            owner.execute("DELETE FROM audit.log WHERE table_name = %s", (table,))
        with pytest.raises(psycopg.errors.RaiseException, match="needs a reason"):
            audit.redact(owner, table, [7], reason=" ")
        with owner.transaction():
            audit.set_app_user(owner, "dpo")
            assert audit.redact(owner, table, [7], reason="DSR-1") == 2
        rows = owner.execute(
            "SELECT op, app_user, row_key, old, new FROM audit.log WHERE table_name = %s "
            "ORDER BY id",
            (table,),
        ).fetchall()
    assert "Grace" not in str(rows[:2]) and rows[0][2] == "[redacted]"
    assert rows[1][3] == {"owner": "[redacted]"}
    assert rows[2][:3] == ("REDACT", "dpo", None)
    assert rows[2][4] == {"reason": "DSR-1", "entries": 2, "columns": "all"}


def test_dashboard_counts_changes_per_user_per_day(logged):
    """Entries imported for earlier days by the owner and today's changes: one row per day,
    one column per user (other tests' users share the log; carol's and dave's are this
    test's own); REDACT entries are not counted."""
    database, _, table = logged
    with database.connect(autocommit=True) as conn:
        conn.execute(
            "INSERT INTO audit.log (at, app_user, table_name, op, row_key) "
            "SELECT now() - make_interval(days => d), u, %s, 'UPDATE', '1' "
            "FROM generate_series(1, 3) d, unnest(ARRAY['carol', 'dave']) u, generate_series(1, d) n",
            (table,),
        )
        with conn.transaction():
            audit.set_app_user(conn, "carol")
            conn.execute(q("INSERT INTO {t} VALUES (1, 'Ada', 1, '1'), (2, 'Bo', 1, '2')", table))
            audit.redact(conn, table, [1], reason="test")
        board = audit.changes_per_user_per_day(conn, days=7)
    assert {"carol", "dave"} <= set(board.columns)
    assert board["carol"].tolist() == [3, 2, 1, 2]
    assert board["dave"].tolist() == [3, 2, 1, 0]
    assert audit.plot_dashboard(board).axes[0].get_title().startswith("Audit trail")


def test_ownership_by_a_nologin_role_stops_forging_and_dropping(logged):
    """The forging recipe that beat the first design (set the old 'redacting' flag, then
    UPDATE) is refused for the app role (no privilege) and for a superuser (the guard trusts
    no session setting); a non-superuser who owns the database and its tables cannot
    UPDATE the log, disable its guard or drop it; the owner role cannot log in."""
    database, app, table = logged
    forge = (
        "SELECT set_config('audit.redacting', 'on', true); "
        "UPDATE audit.log SET app_user = 'forged', new = '{}'"
    )
    with psycopg.connect(app.url(database.name)) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
            conn.execute(forge)
    with database.connect() as admin:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            admin.execute(forge)
        admin.rollback()
        login, members = admin.execute(
            "SELECT r.rolcanlogin, (SELECT count(*) FROM pg_auth_members m WHERE m.roleid = r.oid) "
            "FROM pg_roles r JOIN pg_class c ON c.relowner = r.oid "
            "WHERE c.oid = 'audit.log'::regclass AND r.rolname = %s",
            (audit.owner_role(),),
        ).fetchone()
    assert (login, members) == (False, 0)
    boss = db.login_role("s11b_dbowner")
    with database.connect(autocommit=True) as admin:
        audit.grant_reader(admin, boss.name)  # so each refusal is about the log, not the schema
        admin.execute(
            sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                sql.Identifier(database.name), sql.Identifier(boss.name)
            )
        )
        admin.execute(
            sql.SQL("ALTER TABLE {} OWNER TO {}").format(
                sql.Identifier(table), sql.Identifier(boss.name)
            )
        )
    try:
        with psycopg.connect(boss.url(database.name), autocommit=True) as conn:
            for statement in (
                "UPDATE audit.log SET app_user = 'forged'",
                "ALTER TABLE audit.log DISABLE TRIGGER log_append_only",
                "DROP TABLE audit.log",
                "DROP SCHEMA audit CASCADE",
            ):
                with pytest.raises(
                    psycopg.errors.InsufficientPrivilege,
                    match="must be owner|permission denied for table log",
                ):
                    conn.execute(statement)
            assert conn.execute(
                "SELECT count(*) FROM audit.log WHERE app_user = 'forged'"
            ).fetchone() == (0,)
    finally:
        with database.connect(autocommit=True) as admin:
            admin.execute(
                sql.SQL("ALTER DATABASE {} OWNER TO CURRENT_USER").format(
                    sql.Identifier(database.name)
                )
            )
            admin.execute(
                sql.SQL("ALTER TABLE {} OWNER TO CURRENT_USER").format(sql.Identifier(table))
            )


def test_truncate_and_schema_are_recorded(logged):
    """A TRUNCATE of a tracked table leaves one entry; entries name the table's schema, so
    a same-named table elsewhere is not confused with it."""
    database, _, table = logged
    with database.connect(autocommit=True) as conn:
        conn.execute(q("INSERT INTO {t} VALUES (1, 'Ada', 1, '1')", table))
        conn.execute("CREATE SCHEMA IF NOT EXISTS other")
        conn.execute(
            sql.SQL("CREATE TABLE other.{} (id int PRIMARY KEY)").format(sql.Identifier(table))
        )
        audit.track(conn, f"other.{table}")
        conn.execute(sql.SQL("INSERT INTO other.{} VALUES (1)").format(sql.Identifier(table)))
        with conn.transaction():
            audit.set_app_user(conn, "ops")
            conn.execute(q("TRUNCATE {t}", table))
        rows = conn.execute(
            "SELECT table_schema, op, app_user, row_key, txid > 0 FROM audit.log "
            "WHERE table_name = %s ORDER BY id",
            (table,),
        ).fetchall()
    assert rows == [
        ("public", "INSERT", None, "1", True),
        ("other", "INSERT", None, "1", True),
        ("public", "TRUNCATE", "ops", None, True),
    ]
