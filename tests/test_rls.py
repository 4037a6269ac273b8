"""labkit.rls against a real PostgreSQL: the multi-tenant schema and its data, the role and
table facts read from the catalog under real policies, LIKE patterns and ORDER BY clauses
executed by the server, and the table of measured attacks."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from labkit import db, rls

MATCH = "tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::int"


@pytest.fixture(scope="module")
def tenants():
    """A database with 3 tenants × 6 invoices, owned by an ordinary owner role, enabled and
    forced RLS on invoices, and an application role with GRANTs only."""
    demo = db.fresh_database("test_rls")
    report = rls.load_tenants(demo, tenants=3, invoices_per_tenant=6, members_per_tenant=2)
    owner, app = db.login_role("test_rls_owner"), db.login_role("test_rls_app")
    with demo.connect(autocommit=True) as conn:
        for table in ("tenants", "invoices", "members"):
            conn.execute(
                sql.SQL("ALTER TABLE {} OWNER TO {}").format(
                    sql.Identifier(table), sql.Identifier(owner.name)
                )
            )
        conn.execute(
            sql.SQL("GRANT SELECT, INSERT, UPDATE ON invoices TO {}").format(
                sql.Identifier(app.name)
            )
        )
        conn.execute("ALTER TABLE invoices ENABLE ROW LEVEL SECURITY")
        conn.execute(
            f"CREATE POLICY tenant_isolation ON invoices USING ({MATCH}) WITH CHECK ({MATCH})"
        )
    yield demo, report, owner, app
    db.drop_database("test_rls")


def test_load_tenants_writes_what_it_reports(tenants):
    """Rows per table and per tenant as reported; the LIKE special names belong to tenant 1;
    bad sizes are refused with a message naming the fix."""
    demo, report, _, _ = tenants
    with demo.connect() as conn:
        per_tenant = dict(
            conn.execute(
                "SELECT tenant_id, count(*) FROM invoices GROUP BY 1 ORDER BY 1"
            ).fetchall()
        )
        members = conn.execute("SELECT count(*) FROM members").fetchone()[0]
        specials = conn.execute(
            "SELECT DISTINCT tenant_id FROM invoices WHERE customer NOT LIKE 'Customer %'"
        ).fetchall()
    assert per_tenant == report.per_tenant == {1: 6, 2: 6, 3: 6}
    assert (report.invoices, report.members, members) == (18, 6, 6)
    assert specials == [(1,)]
    with pytest.raises(ValueError, match="at least 2"):
        rls.load_tenants(demo, tenants=1)
    with pytest.raises(ValueError, match="invoices_per_tenant"):
        rls.load_tenants(demo, invoices_per_tenant=2)


def test_role_and_table_facts_read_the_catalog(tenants):
    """role_facts tells the superuser, the owner and the application role apart (on an engine,
    a session and a psycopg connection); table_security and policies read the flags and the
    USING / WITH CHECK expressions; the owner sees every row until FORCE."""
    demo, report, owner, app = tenants
    from sqlalchemy.orm import Session

    admin = demo.engine()
    try:
        assert rls.role_facts(admin)["superuser"] is True
        with Session(owner.engine(demo.name)) as session:
            assert rls.role_facts(session) == {
                "user": owner.name, "superuser": False, "bypassrls": False, "owner": True
            }  # fmt: skip
        with psycopg.connect(app.url(demo.name)) as conn:
            assert rls.role_facts(conn)["owner"] is False
            conn.execute("SELECT set_config('app.tenant_id', '2', true)")
            seen = conn.execute("SELECT id, tenant_id FROM invoices").fetchall()
        assert len(seen) == 6 and rls.foreign_rows(seen, 2) == 0
        assert rls.table_security(admin) == {"enabled": True, "forced": False}
        with owner.engine(demo.name).connect() as conn:
            assert len(conn.exec_driver_sql("SELECT id FROM invoices").all()) == report.invoices
        [policy] = rls.policies(admin)
        assert policy["policy"] == "tenant_isolation" and policy["command"] == "ALL"
        assert "current_setting" in policy["using"] and "NULLIF" in policy["with_check"]
        assert rls.policies(admin, "members") == []
        with pytest.raises(ValueError, match="load_tenants"):
            rls.table_security(admin, "no_such_table")
        with pytest.raises(ValueError, match="load_tenants"):
            rls.policies(admin, "no_such_table")
    finally:
        admin.dispose()


def test_policies_are_read_for_the_table_of_one_schema(tenants):
    """A same-named table in another schema, with a policy of its own: each name gets only
    its own table's policies (pg_policies is matched on schema and table)."""
    demo, _, _, _ = tenants
    with demo.connect(autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS archive CASCADE")
        conn.execute("CREATE SCHEMA archive")
        conn.execute("CREATE TABLE archive.invoices (LIKE public.invoices)")
        conn.execute("ALTER TABLE archive.invoices ENABLE ROW LEVEL SECURITY")
        conn.execute("CREATE POLICY archived_only ON archive.invoices USING (false)")
        try:
            assert [p["policy"] for p in rls.policies(conn)] == ["tenant_isolation"]
            assert [p["policy"] for p in rls.policies(conn, "public.invoices")] == [
                "tenant_isolation"
            ]
            [archived] = rls.policies(conn, "archive.invoices")
            assert (archived["policy"], archived["using"]) == ("archived_only", "false")
        finally:
            conn.execute("DROP SCHEMA archive CASCADE")


def test_a_member_of_the_owner_role_counts_as_owner_and_bypasses(tenants):
    """GRANT owner TO app: the application role now has the owner's privileges, so it skips
    the (unforced) policy and reads every tenant; role_facts reports it as owner. Revoked
    again, it is back to its own rows and owner False."""
    demo, report, owner, app = tenants
    grant = sql.SQL("GRANT {} TO {}").format(sql.Identifier(owner.name), sql.Identifier(app.name))
    revoke = sql.SQL("REVOKE {} FROM {}").format(
        sql.Identifier(owner.name), sql.Identifier(app.name)
    )

    def as_app():
        with psycopg.connect(app.url(demo.name)) as conn:
            facts = rls.role_facts(conn)
            conn.execute("SELECT set_config('app.tenant_id', '1', true)")
            seen = conn.execute("SELECT id, tenant_id FROM invoices").fetchall()
        return facts["owner"], rls.foreign_rows(seen, 1)

    with demo.connect(autocommit=True) as conn:
        conn.execute(grant)
        try:
            as_member = as_app()
        finally:
            conn.execute(revoke)
    foreign = report.invoices - report.per_tenant[1]
    assert as_member == (True, foreign)
    assert as_app() == (False, 0)


def test_like_pattern_matches_the_term_itself(tenants):
    """Escaped patterns find the one customer holding %, _ or a backslash; the unescaped term
    '%' matches every invoice of the tenant. Non-text terms are refused."""
    demo, report, _, _ = tenants
    with demo.connect() as conn:

        def count(pattern):
            query = "SELECT count(*) FROM invoices WHERE tenant_id = 1 AND customer ILIKE %s"
            return conn.execute(query, (pattern,)).fetchone()[0]

        assert {t: count(rls.like_pattern(t)) for t in ("%", "_", "\\", "organic")} == {
            "%": 1, "_": 1, "\\": 1, "organic": 1
        }  # fmt: skip
        assert count("%%%") == report.per_tenant[1]
    with pytest.raises(ValueError, match="text"):
        rls.like_pattern(5)


def test_order_by_quotes_an_allowed_column_and_refuses_the_rest(tenants):
    """order_by sorts by the chosen column with id breaking ties, in either direction; columns
    outside the allowlist (hostile or merely unknown) raise ValueError before any SQL."""
    demo, _, _, _ = tenants
    with demo.connect() as conn:
        for descending in (False, True):
            query = sql.SQL("SELECT amount_cents, id FROM invoices {}").format(
                rls.order_by("amount_cents", descending=descending)
            )
            rows = conn.execute(query).fetchall()
            assert rows == sorted(rows, key=lambda r: (-r[0] if descending else r[0], r[1]))
        custom = rls.order_by("email", allowed=["email"]).as_string(conn)
        assert custom == 'ORDER BY "email" ASC, "id"'
    for hostile in ("id; DROP TABLE invoices", 'id"', "ID", "tenant_id"):
        with pytest.raises(ValueError, match="choose one of"):
            rls.order_by(hostile)


def test_attack_table_records_frames_and_plots():
    """Measures land in their cells, a missing one is NA, an unknown defence is refused, and
    the chart has one bar per attack and defence."""
    import matplotlib

    matplotlib.use("Agg")
    table = rls.AttackTable()
    assert table.record("raw SQL", "app-level filter", 40) == 40
    table.record("raw SQL", "PostgreSQL RLS", 0)
    table.record("superuser", "PostgreSQL RLS", 40)
    frame = table.frame()
    assert frame.loc["raw SQL"].tolist() == [40, 0]
    assert frame["app-level filter"].isna().tolist() == [False, True]
    assert table.seen("superuser", "PostgreSQL RLS") == 40
    with pytest.raises(ValueError, match="unknown defence"):
        table.record("raw SQL", "firewall", 1)
    assert len(table.bars().patches) == 4


def test_a_grading_sandbox_drops_the_roles_made_under_its_prefix(monkeypatch):
    """The exercises make their roles with db.login_role inside a grading sandbox: on exit
    the sandbox drops them with its databases (even one that owned tables there), and
    leaves every role outside its prefix alone."""
    from labkit.course.nbgrader_ext import Sandbox

    outside = db.login_role("test_rls_outside")
    with Sandbox("test_rls/roles") as env:
        monkeypatch.setenv("LABKIT_DB_PREFIX", env["LABKIT_DB_PREFIX"])
        owner = db.login_role("test_rls_sandboxed")
        demo = db.fresh_database("test_rls_sandboxed")
        with demo.connect(autocommit=True) as conn:
            conn.execute("CREATE TABLE t (id int)")
            conn.execute(sql.SQL("ALTER TABLE t OWNER TO {}").format(sql.Identifier(owner.name)))
        monkeypatch.delenv("LABKIT_DB_PREFIX")
    with db.connect() as conn:
        left = conn.execute(
            "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s) ORDER BY 1",
            ([owner.name, outside.name],),
        ).fetchall()
    assert owner.name.startswith(env["LABKIT_DB_PREFIX"])
    assert left == [(outside.name,)] and not db.database_exists(demo.name, qualified=True)
