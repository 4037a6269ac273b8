"""labkit.metering against the course's PostgreSQL: statements and rows counted from
SQLAlchemy events for a workload whose counts are known, storage from the catalog, the
admin table, and one tenant's export with no foreign rows."""

from __future__ import annotations

import csv
import threading

import pytest
from sqlalchemy import text

from labkit import db, isolation, metering


@pytest.fixture(scope="module")
def demo():
    database = db.fresh_database("s12b_test_metering")
    info = isolation.load_demo(database, tenants=3, rows=40, noisy_rows=60, customers=7)
    with database.connect(autocommit=True) as conn:
        metering.create_usage_table(conn)
    yield database, info
    db.drop_database("s12b_test_metering")


def test_meter_counts_a_known_workload_and_stores_it(demo):
    """Tenant 1: 3 SELECTs of 10 rows, an INSERT of 5, an UPDATE of 2 → 5 queries, 37
    rows; tenant 2: 1 SELECT of 7, plus 200 from 4 threads; unbilled work is not counted.
    A second flush adds to the stored counts."""
    database, _ = demo
    engine = database.engine()
    meter = metering.UsageMeter().attach(engine)
    try:
        with engine.connect() as conn:  # no tenant: not billed
            conn.execute(text("SELECT count(*) FROM orders")).all()
        one, two = engine.execution_options(tenant_id=1), engine.execution_options(tenant_id=2)
        with one.begin() as conn:
            for _ in range(3):
                conn.execute(
                    text("SELECT * FROM orders WHERE tenant_id = 1 ORDER BY id LIMIT 10")
                ).all()
            conn.execute(
                text("INSERT INTO orders SELECT 1, 1000 + i, 5, now() FROM generate_series(1, 5) i")
            )
            conn.execute(text("UPDATE orders SET amount = 6 WHERE tenant_id = 1 AND id IN (1, 2)"))
        with two.connect() as conn:
            conn.execute(text("SELECT * FROM customers WHERE tenant_id = 2")).all()

        def many() -> None:
            with two.connect() as conn:
                for _ in range(50):
                    conn.execute(text("SELECT 1")).all()

        threads = [threading.Thread(target=many) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert meter.pending() == {1: {"queries": 5, "rows": 37}, 2: {"queries": 201, "rows": 207}}
        with database.connect(autocommit=True) as conn:
            assert meter.flush(conn) == 4
            assert meter.pending() == {} and meter.flush(conn) == 0
            meter.add(1, queries=2, rows=3, statement_ms=1.4)
            meter.add(1, statement_ms=1.4)
            assert meter.pending(timed=True)[1]["statement_ms"] == pytest.approx(2.8)
            meter.flush(conn)
            usage = metering.usage_per_hour(conn)
        totals = usage.groupby("tenant_id")[["queries", "rows"]].sum().to_dict("index")
        assert totals == {1: {"queries": 7, "rows": 40}, 2: {"queries": 201, "rows": 207}}
        assert usage.groupby("tenant_id")["statement_ms"].sum().to_dict() == {1: 3, 2: 0}
    finally:
        meter.detach()
        engine.dispose()
    with pytest.raises(ValueError, match="tenant's id"):
        meter.add("1; DROP TABLE usage", queries=1)


def test_storage_per_tenant_comes_from_the_catalog(demo):
    """orders has fixed-width rows: each tenant's bytes are its rows times one row's size;
    a compressed value TOASTed out of line counts at its compressed size (the whole-row
    value does not decompress it); a second snapshot in the same hour replaces the first;
    the admin table shows both."""
    database, _ = demo
    with database.connect(autocommit=True) as conn:
        counts = dict(conn.execute("SELECT tenant_id, count(*) FROM orders GROUP BY 1").fetchall())
        width = conn.execute("SELECT pg_column_size(o.*) FROM orders o LIMIT 1").fetchone()[0]
        conn.execute("CREATE TABLE docs (tenant_id int, body text)")
        conn.execute(  # ~1 MB that compresses to ~13 kB: too big for a page, so out of line
            "INSERT INTO docs SELECT 2, string_agg(md5((i % 50)::text), ' ') "
            "FROM generate_series(1, 30000) i"
        )
        toasted = metering.storage_by_tenant(conn, tables=["docs"])[2]["docs"]
        raw, stored, external = conn.execute(
            "SELECT octet_length(body), pg_column_size(body), "
            "pg_relation_size((SELECT reltoastrelid FROM pg_class WHERE relname = 'docs')) "
            "FROM docs"
        ).fetchone()
        conn.execute("DROP TABLE docs")
        assert external > 0 and stored < raw // 50  # compressed, and stored out of line
        assert stored < toasted < stored + 64  # the value at its stored size, plus the header
        sizes = metering.storage_by_tenant(conn)
        assert {t: s["orders"] for t, s in sizes.items()} == {
            t: n * width for t, n in counts.items()
        }
        assert set(next(iter(sizes.values()))) == {"orders", "customers"}  # usage is not billed
        first = metering.record_storage(conn)
        conn.execute("DELETE FROM orders WHERE tenant_id = 3 AND id > 10")
        second = metering.record_storage(conn)
        assert second[3] < first[3] and second[1] == first[1]
        stored = conn.execute(
            "SELECT tenant_id, value FROM usage WHERE metric = 'storage_bytes'"
        ).fetchall()
        assert dict(stored) == second
        table = metering.admin_table(conn)
    assert list(table.index) == [1, 2, 3]
    assert table.loc[3, "plan"] == "starter" and table.loc[3, "storage_bytes"] == second[3]
    assert table.loc[3, "storage"] == metering.human_bytes(second[3])


def test_export_writes_only_the_tenants_rows(demo, tmp_path):
    """Every tenant table (found in the catalog, an odd name included) is exported with
    the tenant's row count and no row of another tenant; bad ids are refused. All files
    share one snapshot: a row committed by another connection after the first file is
    in none of them."""
    database, _ = demo
    odd = 'odd "name"; drop'
    with database.connect(autocommit=True) as conn:
        from psycopg import sql

        conn.execute(
            sql.SQL("CREATE TABLE IF NOT EXISTS {} (tenant_id int, id int)").format(
                sql.Identifier(odd)
            )
        )
        conn.execute(
            sql.SQL("INSERT INTO {} VALUES (1, 1), (2, 2), (2, 3)").format(sql.Identifier(odd))
        )
        first = metering.tenant_tables(conn)[0]
        assert first == "customers"
        written_after: list[str] = []

        def write_elsewhere(exported: metering.ExportedFile) -> None:
            if exported.table == first:  # committed by another connection, mid-export
                with database.connect(autocommit=True) as other:
                    other.execute("INSERT INTO orders VALUES (2, 9999, 1, now())")
                written_after.append(exported.table)

        files = metering.export_tenant(conn, 2, tmp_path / "t2", after_table=write_elsewhere)
        assert written_after == [first]
        assert (conn.read_only, conn.isolation_level) == (None, None)  # restored
        conn.execute("DELETE FROM orders WHERE tenant_id = 2 AND id = 9999")
        expected = {
            table: conn.execute(
                sql.SQL("SELECT count(*) FROM {} WHERE tenant_id = 2").format(sql.Identifier(table))
            ).fetchone()[0]
            for table in metering.tenant_tables(conn)
        }
        with pytest.raises(ValueError, match="tenant's id"):
            metering.export_tenant(conn, "2 OR true", tmp_path / "bad")
        with pytest.raises(ValueError, match="no tenant 99"):
            metering.export_tenant(conn, 99, tmp_path / "bad")
    assert {f.table: f.rows for f in files} == expected
    assert odd in expected and expected[odd] == 2
    for exported in files:
        with exported.path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert len(rows) == exported.rows
        assert {row["tenant_id"] for row in rows} <= {"2"}
        if exported.table == "orders":
            assert "9999" not in {row["id"] for row in rows}  # the same snapshot
