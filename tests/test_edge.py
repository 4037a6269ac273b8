"""labkit.edge against a real origin process and a real PostgreSQL: Cache-Control, ETag and
304 from the origin, hishel's RFC 9111 cache in front of it (origin hits counted by the
origin), and preview databases copied from a template."""

from __future__ import annotations

import time

import httpx
import pytest

from labkit import db, edge
from labkit.edge import (
    branch_database_name,
    cache_control,
    edge_client,
    etag_of,
    preview_database,
    serve_origin,
)
from labkit.supervisor import Supervisor

QUIET = {"say": lambda message: None}


@pytest.fixture(scope="module")
def supervisor():
    with Supervisor(**QUIET) as sup:
        yield sup


def test_origin_sends_policy_and_validators_and_answers_304(supervisor):
    """The origin's own HTTP: Cache-Control with s-maxage and stale-while-revalidate, a
    strong ETag, 304 without a body for a matching If-None-Match, 200 for a stale tag."""
    with serve_origin(supervisor, s_maxage=60, stale_while_revalidate=30) as origin:
        first = httpx.get(f"{origin.url}/articles/7")
        assert first.headers["cache-control"] == cache_control(60, 30)
        assert "s-maxage=60" in first.headers["cache-control"]
        assert first.headers["etag"] == etag_of(first.content)
        again = httpx.get(
            f"{origin.url}/articles/7", headers={"if-none-match": first.headers["etag"]}
        )
        assert (again.status_code, again.content) == (304, b"")
        assert again.headers["etag"] == first.headers["etag"]
        assert httpx.post(f"{origin.url}/articles/7").status_code == 204
        changed = httpx.get(
            f"{origin.url}/articles/7", headers={"if-none-match": first.headers["etag"]}
        )
        assert changed.status_code == 200 and changed.json()["version"] == 1
        assert httpx.get(f"{origin.url}/nope").status_code == 404
        assert origin.stats() == {"requests": 4, "full": 2, "not_modified": 1, "writes": 1}


def test_shared_cache_saves_origin_hits(supervisor):
    """Fresh (s-maxage=60): 12 requests over 3 articles reach the origin 3 times; a POST
    through the cache invalidates its entry (the next GET goes to the origin)."""
    with serve_origin(supervisor, s_maxage=60) as origin, edge_client(origin.url) as client:
        responses = [client.get(f"/articles/{i % 3}") for i in range(12)]
        assert all(r.status_code == 200 for r in responses)
        assert sum(r.extensions["caching"]["from_cache"] for r in responses) == 9
        assert origin.stats()["requests"] == 3
        client.post("/articles/1")
        fresh = client.get("/articles/1")
        assert fresh.json()["version"] == 1 and not fresh.extensions["caching"]["from_cache"]
        assert origin.stats()["requests"] == 5


def test_expired_entries_are_revalidated_with_304(supervisor):
    """s-maxage=0: every reuse asks the origin, which answers 304 (no body) while the ETag
    matches. hishel does not implement stale-while-revalidate: it revalidates in line."""
    with serve_origin(supervisor, s_maxage=0, stale_while_revalidate=30) as origin, \
            edge_client(origin.url) as client:  # fmt: skip
        responses = [client.get(f"/articles/{i % 2}") for i in range(6)]
        assert [r.extensions["caching"]["revalidated"] for r in responses] == [False] * 2 + [
            True
        ] * 4
        assert origin.stats() == {"requests": 6, "full": 2, "not_modified": 4, "writes": 0}
    with serve_origin(supervisor, s_maxage=1) as origin, edge_client(origin.url) as client:
        client.get("/articles/1")
        time.sleep(1.2)
        late = client.get("/articles/1")
        assert late.extensions["caching"]["revalidated"] and origin.stats()["not_modified"] == 1


def test_a_private_cache_ignores_s_maxage(supervisor):
    """s-maxage is for shared caches: a browser-like private cache sees max-age=0 and
    revalidates."""
    with serve_origin(supervisor, s_maxage=60) as origin, \
            edge_client(origin.url, shared=False) as client:  # fmt: skip
        for _ in range(3):
            client.get("/articles/1")
        assert origin.stats()["requests"] == 3


def test_preview_database_from_a_template_is_created_and_dropped():
    template = db.fresh_database("test_edge_template")
    with template.connect(autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY)")
        conn.execute("INSERT INTO items SELECT generate_series(1, 50)")
    with preview_database("feature/Edge-Test", template.name) as (preview, timing):
        with preview.connect() as conn:
            assert conn.execute("SELECT count(*) FROM items").fetchone()[0] == 50
        assert db.database_exists(preview.name, qualified=True)
        assert timing.create_s > 0
    assert not db.database_exists(preview.name, qualified=True) and timing.drop_s > 0
    with template.connect() as busy, pytest.raises(RuntimeError, match="another session"):
        busy.execute("SELECT 1")
        with preview_database("feature/busy", template.name):
            pass
    db.drop_database("test_edge_template")


def test_branch_names_become_safe_database_names():
    name = branch_database_name('x"; DROP DATABASE postgres; --' + "a" * 80)
    assert len(name) <= 63 and name.replace("_", "").isalnum()
    assert branch_database_name("a/b") != branch_database_name("a-b")
    with pytest.raises(ValueError, match="branch name"):
        branch_database_name("  ")
    with pytest.raises(ValueError, match="seconds"):
        cache_control(-1)


def test_origin_hits_table_counts_what_the_origin_saw(supervisor):
    rows = {row["policy"]: row for row in edge.origin_hits(supervisor, requests=12, articles=3)}
    assert (rows["no cache"]["origin hits"], rows["no cache"]["full responses"]) == (12, 12)
    assert cache_control(0, 0) == "public, max-age=0, s-maxage=0"  # no stale-while-revalidate
    assert rows["hishel, s-maxage=60"]["origin hits"] == 3
    assert (rows["hishel, s-maxage=0"]["full responses"], rows["hishel, s-maxage=0"]["304s"]) == (
        3,
        9,
    )
