"""A grading sandbox's role has no CREATEROLE: the roles row-level security is taught with
(``db.login_role``: an owner and an application role) come from a SECURITY DEFINER function
owned by a NOLOGIN role manager (labkit.course.gradeuser.ensure_role_function), which makes
LOGIN roles with no other attribute, only under the caller's own prefix, and grants them to
the caller. Each refusal here is one a hostile submission would meet (fast, as root)."""

from __future__ import annotations

import secrets
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import pytest
from gradingpool import grading_pool
from psycopg import sql

from labkit import db
from labkit.course import gradeuser

#: Pool users of these tests (deleted at the end).
USERS = "labkit-gsr"
CALL = sql.SQL("SELECT {}(%s, %s)").format(sql.Identifier(*db.ROLE_FUNCTION))


@pytest.fixture(scope="module")
def pool():
    with grading_pool(USERS):
        yield USERS


def url_as(name: str, password: str, database: str) -> str:
    parts = urlsplit(db.admin_url())
    netloc = f"{quote(name, safe='')}:{quote(password, safe='')}@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc, path="/" + database))


def refusal(conn, statement, params=None) -> str:
    """The error ``statement`` raises (it must raise)."""
    try:
        conn.execute(statement, params)
    except psycopg.Error as exc:
        return f"{type(exc).__name__}: {exc}"
    raise AssertionError(f"not refused: {statement!r} {params!r}")


def test_sandbox_roles_come_only_from_the_role_function(pool, monkeypatch):
    """The sandbox's role cannot create roles; db.login_role, in the sandbox, goes through
    the function; the function makes only LOGIN roles named with the caller's own prefix,
    alters no role of another prefix (the superuser, the role manager, another slot's
    roles), and its roles reach no other slot's databases and cannot call it themselves.
    All of them are dropped with the sandbox, even one that owns a table there."""
    other_slot = f"{gradeuser.SLOT_PREFIX}{gradeuser.MAX_SLOTS}_"
    elsewhere = f"{other_slot}00000000_bystander"  # another slot's database
    # Another slot's sandbox role and a role it made (as the function would name them).
    neighbour = f"{other_slot}{secrets.token_hex(4)}"
    neighbour_made = f"{neighbour}_labkit_ex03_owner"
    first = gradeuser.Slot.acquire()
    sandbox = gradeuser.UserSandbox(first)
    second = peer = None
    made: list[str] = []
    try:
        second = gradeuser.Slot.acquire()
        peer = gradeuser.UserSandbox(second)
        with db.connect(autocommit=True) as admin:
            db.drop_database(elsewhere, qualified=True, conn=admin)
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(elsewhere)))
            for name in (neighbour, neighbour_made):
                admin.execute(
                    sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                        sql.Identifier(name), sql.Literal(secrets.token_hex(16))
                    )
                )
        env = sandbox.start()
        peer_env = peer.start()
        # db.login_role as the notebook calls it, with the sandbox's environment.
        monkeypatch.setenv("DATABASE_URL", env["DATABASE_URL"])
        monkeypatch.setenv("LABKIT_DB_PREFIX", env["LABKIT_DB_PREFIX"])
        owner = db.login_role("ex03_owner")
        again = db.login_role("ex03_owner")  # once more: the function alters, same password
        app = db.login_role("ex03_app")
        demo = db.fresh_database("ex03_roles")
        demo_name = demo.name
        made += [owner.name, app.name]
        with psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn:
            caller = conn.execute(
                "SELECT rolcreaterole, rolsuper FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
            create_role = refusal(conn, "CREATE ROLE lks_extra")
            attributes = conn.execute(
                "SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolreplication, "
                "rolbypassrls, rolcanlogin, rolinherit FROM pg_roles "
                "WHERE starts_with(rolname, %s) ORDER BY 1",
                (sandbox.prefix,),
            ).fetchall()
            grants = conn.execute(
                "SELECT r.rolname, m.admin_option, m.inherit_option, m.set_option "
                "FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid "
                "WHERE m.member = (SELECT oid FROM pg_roles WHERE rolname = current_user) "
                "AND starts_with(r.rolname, %s) ORDER BY 1",
                (sandbox.prefix,),
            ).fetchall()
            memberships = conn.execute(
                "SELECT array_agg(r.rolname ORDER BY r.rolname) FROM pg_auth_members m "
                "JOIN pg_roles r ON r.oid = m.roleid JOIN pg_roles x ON x.oid = m.member "
                "WHERE x.rolname = ANY(%s)",
                ([owner.name, app.name],),
            ).fetchone()[0]
            password = secrets.token_hex(16)
            outside = {
                name: refusal(conn, CALL, (name, password))
                for name in (
                    "postgres",  # the grader's superuser
                    gradeuser.ROLE_MAKER,
                    gradeuser.ROLE_GROUP,
                    sandbox.role,  # itself (it would get LOGIN back... and more)
                    neighbour,  # another slot's role
                    neighbour_made,  # a role another slot's sandbox made
                    f"{peer.prefix}labkit_ex03_owner",  # another sandbox's prefix
                    f"{first.prefix}00000000_labkit_x",  # its slot's prefix, not its own
                    f"{sandbox.prefix}Upper",
                    sandbox.prefix,
                )
            }
            alter_directly = refusal(
                conn,
                sql.SQL("ALTER ROLE {} PASSWORD 'x'").format(sql.Identifier(owner.name)),
            )
            # More than the limit: refused (the two made above count).
            for number in range(gradeuser.ROLE_LIMIT - 2):
                name = f"{sandbox.prefix}extra_{number}"
                conn.execute(CALL, (name, password))
                made.append(name)
            too_many = refusal(conn, CALL, (f"{sandbox.prefix}one_too_many", password))
            with demo.connect(autocommit=True) as mine:  # the set-up cell's hand-over
                mine.execute("CREATE TABLE invoices (id int)")
                mine.execute(
                    sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(
                        sql.Identifier(owner.name)
                    )
                )
                mine.execute(
                    sql.SQL("ALTER TABLE invoices OWNER TO {}").format(sql.Identifier(owner.name))
                )
        with psycopg.connect(app.url(demo_name), autocommit=True) as conn:
            as_app = conn.execute("SELECT current_user").fetchone()[0]
        with psycopg.connect(app.url(gradeuser.SANDBOX_DATABASE), autocommit=True) as conn:
            app_calls = refusal(conn, CALL, (f"{sandbox.prefix}from_app", password))
        connects = {}
        for database in (elsewhere, "template1"):
            try:
                psycopg.connect(app.url(database), connect_timeout=5).close()
                connects[database] = "connected"
            except psycopg.OperationalError as exc:
                connects[database] = "rejected" if "pg_hba.conf rejects" in str(exc) else str(exc)
        monkeypatch.undo()  # the grader's superuser again
        with db.connect(autocommit=True) as admin:  # the superuser is what it was
            superuser = admin.execute(
                "SELECT rolsuper, rolcanlogin FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
            neighbours = admin.execute(
                "SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname = ANY(%s) ORDER BY 1",
                ([neighbour, neighbour_made],),
            ).fetchall()
        with psycopg.connect(peer_env["DATABASE_URL"]) as conn:
            peer_alive = conn.execute("SELECT 1").fetchone()
    finally:
        monkeypatch.undo()
        if peer is not None:
            peer.stop()
        elif second is not None:
            second.release()
        sandbox.stop()
        with db.connect(autocommit=True) as admin:
            db.drop_database(elsewhere, qualified=True, conn=admin)
            for name in (neighbour, neighbour_made):
                admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
            left = admin.execute(
                "SELECT array_agg(rolname) FROM pg_roles WHERE starts_with(rolname, %s) "
                "OR starts_with(rolname, %s)",
                (sandbox.role, peer.role if peer else sandbox.role),
            ).fetchone()[0]
            databases_left = admin.execute(
                "SELECT count(*) FROM pg_database WHERE starts_with(datname, %s)",
                (sandbox.prefix,),
            ).fetchone()[0]

    assert caller == (False, False), "the sandbox's role may create roles"
    assert "permission denied to create role" in create_role, create_role
    assert owner.name == f"{sandbox.prefix}labkit_ex03_owner" and again == owner
    ordinary = (False, False, False, False, False, True, True)
    assert attributes == [(name, *ordinary) for name in (app.name, owner.name)], attributes
    # Granted to the caller so that it may hand them tables; never with ADMIN.
    assert grants == [(name, False, True, True) for name in (app.name, owner.name)], grants
    assert memberships is None, f"the roles it made are members of {memberships}"
    for name, error in outside.items():
        assert "InsufficientPrivilege" in error and "refused" in error, (name, error)
    assert "InsufficientPrivilege" in alter_directly, alter_directly
    assert "at most" in too_many, too_many
    assert as_app == app.name
    assert "permission denied for" in app_calls, app_calls
    assert connects == {elsewhere: "rejected", "template1": "rejected"}, connects
    assert superuser == (True, True)
    assert neighbours == sorted([(neighbour, True), (neighbour_made, True)])
    assert peer_alive == (1,)
    assert left is None and databases_left == 0, f"left behind: {left}, {databases_left}"
