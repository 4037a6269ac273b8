"""Lesson 04's load generators against real servers: locust headless in a subprocess
(labkit.loadtest.run_locust) on a feed server's /health, and WebSocket fan-out
(labkit.wsload.fan_out) through the change feed, including clients that cannot connect."""

from __future__ import annotations

import math

import pytest

from labkit import changefeed, db, loadtest, wsload
from labkit.supervisor import Supervisor

LOCUSTFILE = """
from locust import HttpUser, constant, task


class Prober(HttpUser):
    wait_time = constant(0.01)

    @task
    def probe(self):
        self.client.get("{path}", name="probe")
"""


@pytest.fixture(scope="module")
def feed():
    database = db.fresh_database("s15_test_loadgen")
    with database.connect(autocommit=True) as conn:
        conn.execute("CREATE TABLE ticks (id int PRIMARY KEY, label text NOT NULL)")
        changefeed.install(conn, "ticks")
    with Supervisor(say=lambda message: None) as supervisor:
        server = changefeed.start(supervisor, database.url)
        yield database, server
        changefeed.stop(supervisor, server)
    db.drop_database("s15_test_loadgen")


def test_run_locust_reads_requests_failures_and_percentiles(feed, tmp_path):
    """A healthy endpoint: requests counted, none failed, percentiles ordered. A missing
    one (404): every request is a failure, and the run still returns its numbers. A run
    that sent nothing (a locustfile whose users never get to a task) is an error."""
    _, server = feed
    host = server.health_url.removesuffix("/health")
    good, bad = tmp_path / "good.py", tmp_path / "bad.py"
    good.write_text(LOCUSTFILE.replace("{path}", "/health"))
    bad.write_text(LOCUSTFILE.replace("{path}", "/no-such-page"))
    point = loadtest.run_locust(good, host, 2, seconds=2)
    assert point.users == 2 and point.requests > 10 and point.failures == 0
    assert 0 < point.p50_ms <= point.p95_ms and point.per_s > 0
    # a p99 of fewer than 100 requests would be their maximum by another name: NaN
    assert point.p95_ms <= point.p99_ms if point.requests >= 100 else math.isnan(point.p99_ms)
    failing = loadtest.run_locust(bad, host, 1, seconds=2)
    assert failing.requests > 0 and failing.failures == failing.requests
    idle = tmp_path / "idle.py"
    idle.write_text(
        LOCUSTFILE.replace("constant(0.01)", "constant(60)").replace(
            "    @task",
            "    def on_start(self):\n        import time\n        time.sleep(60)\n\n    @task",
        )
    )
    with pytest.raises(RuntimeError, match="no request"):
        loadtest.run_locust(idle, host, 1, seconds=1)


def test_run_locust_says_why_it_could_not_start(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("this is not python\n")
    with pytest.raises(RuntimeError, match="locust failed"):
        loadtest.run_locust(broken, "http://127.0.0.1:9", 1, seconds=1)


def test_knee_needs_points_and_ignores_their_order():
    points = [loadtest.LocustPoint(u, 10, 0, 1.0, 1, p95, 1, 1) for u, p95 in
              [(8, 30.0), (1, 10.0), (4, 19.0), (2, 12.0)]]  # fmt: skip
    assert loadtest.knee(points).users == 8
    assert loadtest.knee(points, factor=1.9).users == 4
    with pytest.raises(ValueError, match="no load-test points"):
        loadtest.knee([])


def test_fan_out_delivers_every_change_to_every_client_and_runs_again(feed):
    database, server = feed
    first = wsload.fan_out(server.url, database, "ticks", clients=20, messages=5, progress=False)
    again = wsload.fan_out(server.url, database, "ticks", clients=3, messages=4, progress=False)
    for result, clients, messages in [(first, 20, 5), (again, 3, 4)]:
        assert (result.connected, result.failed, result.missed) == (clients, 0, 0)
        assert result.deliveries == clients * messages and result.per_s > 0
        stats = result.percentiles()
        assert 0 < stats["p50_ms"] <= stats["p95_ms"] <= stats["p99_ms"] <= stats["max_ms"]


def test_fan_out_reads_the_servers_memory_and_times_each_commit(feed):
    database, server = feed
    pid = server.served.process.pid()
    result = wsload.fan_out(server.url, database, "ticks", clients=30, messages=3,
                            progress=False, server_pid=pid)  # fmt: skip
    assert result.rss_before_kb > 10_000 and result.rss_connected_kb > 10_000
    assert result.kb_per_client is not None and len(result.commit_ms) == 3
    assert all(ms > 0 for ms in result.commit_ms)
    assert result.row()["server_kb_per_client"] == round(result.kb_per_client, 1)
    assert wsload.resident_kb(2**22 + 12345) is None  # no such process


def test_fan_out_counts_clients_that_cannot_connect(feed):
    """A URL where nothing listens: every client fails, none is waited for, nothing raised."""
    database, _ = feed
    result = wsload.fan_out(lambda after: "ws://127.0.0.1:9/changes", database, "ticks",
                            clients=4, messages=2, timeout=5, progress=False)  # fmt: skip
    assert (result.connected, result.failed, result.deliveries, result.missed) == (0, 4, 0, 0)
    with pytest.raises(ValueError, match="at least one client"):
        wsload.fan_out(lambda after: "", database, "ticks", clients=0, messages=1)
    with pytest.raises(ValueError, match="open files"):
        wsload.fan_out(lambda after: "", database, "ticks", clients=10**7, messages=1)


def test_the_open_files_limit_is_raised_and_reported():
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
        raised = wsload.open_files_limit(want=min(4096, hard))
        assert raised == min(4096, hard) == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
