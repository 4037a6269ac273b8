"""labkit.audit against a real PostgreSQL and an ordinary application role: the trigger
records ORM-less raw SQL with who, when and the changed columns only; the log is
append-only for the application (and for the owner, but for audit.redact); redaction is
itself logged; the dashboard counts changes per user per day."""

from __future__ import annotations

import psycopg
import pytest

from labkit import audit, db

DB = "s11b_test_audit"


@pytest.fixture
def logged():
    database = db.fresh_database(DB)
    app = db.login_role("s11b_app")
    with database.connect(autocommit=True) as conn:
        audit.install(conn)
        audit.install(conn)  # idempotent
        conn.execute(
            "CREATE TABLE accounts (id int PRIMARY KEY, owner text, balance int, pin text)"
        )
        conn.execute(f'GRANT SELECT, INSERT, UPDATE, DELETE ON accounts TO "{app.name}"')
        audit.track(conn, "accounts", key="id", masked=["pin"])
        audit.grant_reader(conn, app.name)
    yield database, app
    db.drop_database(DB)


def test_trigger_records_who_when_and_changed_columns_for_raw_sql(logged):
    """Raw SQL by the app role, in transactions naming two app users: one entry per row
    change, the UPDATE holds only the changed columns, the masked column never shows its
    value, a no-op UPDATE adds nothing, and the app user does not leak past its transaction."""
    database, app = logged
    with psycopg.connect(app.url(database.name)) as conn:
        with conn.transaction():
            audit.set_app_user(conn, "alice")
            conn.execute(
                "INSERT INTO accounts VALUES (1, 'Ada', 100, '1234'), (2, 'Bob', 5, '0000')"
            )
        with conn.transaction():
            audit.set_app_user(conn, "bob")
            conn.execute("UPDATE accounts SET balance = 90, pin = '9999' WHERE id = 1")
            conn.execute("UPDATE accounts SET balance = balance WHERE id = 2")  # no change
            conn.execute("DELETE FROM accounts WHERE id = 2")
        conn.execute("UPDATE accounts SET owner = 'Ada L.' WHERE id = 1")  # no app user
        conn.commit()
        rows = conn.execute(
            "SELECT app_user, db_user, op, row_key, old, new, at <= now() FROM audit.log ORDER BY id"
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
    database, app = logged
    with database.connect(autocommit=True) as owner:
        owner.execute("INSERT INTO accounts VALUES (7, 'Grace', 1, '1111')")
        owner.execute("UPDATE accounts SET owner = 'Grace H.' WHERE id = 7")
    with psycopg.connect(app.url(database.name), autocommit=True) as conn:
        for statement in (
            "UPDATE audit.log SET app_user = 'nobody'",
            "DELETE FROM audit.log",
            "TRUNCATE audit.log",
            "INSERT INTO audit.log (table_name, op) VALUES ('accounts', 'INSERT')",
            "SELECT audit.redact('accounts', ARRAY['7'], NULL, 'x')",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
                conn.execute(statement)
        assert conn.execute("SELECT count(*) FROM audit.log").fetchone()[0] == 2
    with database.connect(autocommit=True) as owner:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            owner.execute("DELETE FROM audit.log")
        with pytest.raises(psycopg.errors.RaiseException, match="needs a reason"):
            audit.redact(owner, "accounts", [7], reason=" ")
        with owner.transaction():
            audit.set_app_user(owner, "dpo")
            assert audit.redact(owner, "accounts", [7], reason="DSR-1") == 2
        rows = owner.execute(
            "SELECT op, app_user, row_key, old, new FROM audit.log ORDER BY id"
        ).fetchall()
    assert "Grace" not in str(rows[:2]) and rows[0][2] == "[redacted]"
    assert rows[1][3] == {"owner": "[redacted]"}
    assert rows[2][:3] == ("REDACT", "dpo", None)
    assert rows[2][4] == {"reason": "DSR-1", "entries": 2, "columns": "all"}


def test_dashboard_counts_changes_per_user_per_day(logged):
    """Entries imported for earlier days by the owner and today's changes: the pivot has
    one row per day and one column per user; REDACT entries are not counted."""
    database, _ = logged
    with database.connect(autocommit=True) as conn:
        conn.execute(
            "INSERT INTO audit.log (at, app_user, table_name, op, row_key) "
            "SELECT now() - make_interval(days => d), u, 'accounts', 'UPDATE', '1' "
            "FROM generate_series(1, 3) d, unnest(ARRAY['alice', 'bob']) u, generate_series(1, d) n"
        )
        with conn.transaction():
            audit.set_app_user(conn, "alice")
            conn.execute("INSERT INTO accounts VALUES (1, 'Ada', 1, '1'), (2, 'Bo', 1, '2')")
            audit.redact(conn, "accounts", [1], reason="test")
        table = audit.changes_per_user_per_day(conn, days=7)
    assert list(table.columns) == ["alice", "bob"]
    assert table["alice"].tolist() == [3, 2, 1, 2]
    assert table["bob"].tolist() == [3, 2, 1, 0]
    assert audit.plot_dashboard(table).axes[0].get_title().startswith("Audit trail")
