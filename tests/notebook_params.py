"""Parameters CI passes to lesson notebooks (their `parameters` cell holds the defaults).

Keep CI sizes big enough that every measured claim the notebook asserts still holds."""

CI_PARAMETERS: dict[str, dict] = {
    "00-start-here.ipynb": {},
    # Half the guide's size keeps every asserted claim with a margin (measured: 98% fewer
    # buffers, 93% fewer statements under the cache workload; times are shown, never
    # asserted) in ~20-30 s a run (each section starts from a fresh copy of the data).
    "01-performance-and-optimization.ipynb": {
        "USERS": 5_000,
        "POSTS": 50_000,
        "READS_PER_USER": 1,
        "TIMING_REPEAT": 9,
    },
    # Every claim of lesson 02 is a count that holds at any size (statements per request,
    # events lost, errors, origin hits): CI shrinks the data and the processes started.
    # The storm needs instances × pool size (3 × 5) above max_connections (10), and the
    # concurrency bound (2) below max_connections - 1.
    "02-production-architecture.ipynb": {
        "S8_USER_COUNTS": [5, 20, 50],  # a list: papermill passes a tuple as its text
        "S9S_ROWS": 500,
        "S9_EVENTS": 50,
        "S9_K": 1,
        "S9G_ORDERS_PER_POINT": 2,
        "S9G_REQUESTS": 12,
        "S9G_USERS": 50,
        # A TTL of 2 s (heartbeat 0.5 s) lets an instance starved of CPU for 1.5 s keep its
        # registration: the browser test runs this beside other lessons' load tests.
        "S9G_TTL": 2.0,
        "S9G_RENAMES": 20,
        "S10_WARM_INVOCATIONS": 3,
        "S10_MAX_CONNECTIONS": 10,
        "S10_INSTANCES": 3,
        "S10_BOUNDED_CONCURRENCY": 2,
        "S10_PGBOUNCER_POOL": 3,
        "S10_EDGE_REQUESTS": 20,
        "S10_PREVIEW_BRANCHES": 1,
        "S10_PREVIEW_ROWS": 2_000,
    },
    # Lesson 03's claims are counts that hold at any size (foreign rows seen per attack,
    # old-key rows left, traces left, keys moved, stale reads, statements per shard, alert
    # states): CI shrinks the data, the load and the phases of the noisy-neighbour run.
    "03-security-and-scale.ipynb": {
        "S11A_INVOICES": 20,
        "S11B_CUSTOMERS": 300,  # at least 300: below it PostgreSQL skips the blind index
        "S11B_BATCH": 50,
        "S12A_TENANTS": 40,  # at least 40: with fewer, plans switch to sequential scans
        "S12A_SMALL": 5,
        "S12A_LARGE": 20,
        "S12A_ALEMBIC_SAMPLE": 2,
        "S12B_ROUNDS": 1,
        "S12B_PHASE_S": 0.6,
        # the lesson's own 6,000 (36 M pairs, about 1.1 s here): the lesson asserts that the
        # report outlasts 3x the starter plan's timeout (300 ms), and at 3,000 (9 M pairs) it took
        # 284 ms on this 2-core machine when quiet (two lesson runs failed on it)
        "S12B_NOISY_ROWS": 6_000,
        "S13A_ROWS": 30_000,
        "S13A_ACCOUNTS": 1_000,
        "S13A_TRIES": 50,
        "S13A_LAG_TRANSACTIONS": 30,
        "S13A_LAG_ROWS": 500,
        "S13A_THREADS": 4,
        "S13A_REQUESTS": 100,
        "S13B_ACCOUNTS": 3_000,
        "S13B_VIEWS": 50_000,
        "S13B_TICKS": 14,  # at least 12
    },
    # Lesson 04's claims are counts (notifications, changes lost or repeated, members
    # online, edits lost, deliveries, tests passed, spans and statements per request):
    # CI shrinks the changes, the clients, the examples and the locust runs.
    "04-realtime-and-testing.ipynb": {
        "S14_FEED_CHANGES": 50,
        "S14_AWAY_CHANGES": 10,
        "S14_PRESENCE_TTL_MS": 1_000,
        "S14_LOAD_CLIENTS": [10, 50],
        "S14_LOAD_MESSAGES": 10,
        "S15_ISOLATION_TESTS": 5,
        "S15_PROPERTY_EXAMPLES": 50,
        "S15_BLOG_USERS": 50,
        "S15_LOCUST_USERS": [1, 8],  # two points still bracket the knee on 2 busy cores
        "S15_LOCUST_SECONDS": 2,
    },
    # The capstone briefs demonstrate their starters and run one quick acceptance check
    # each (the suites themselves are tests/capstones/): CI shrinks the demos.
    "05-capstone-collab.ipynb": {"DEMO_EDITS": 2, "RUN_CHECK": "no-cross-tenant-rows"},
    "05-capstone-marketplace.ipynb": {
        "DEMO_BUYERS": 20,
        "DEMO_ORDERS": 10,
        "CHECK_ONLY": ["order-flow"],
    },
    "05-capstone-analytics.ipynb": {"DEMO_EVENTS": 50_000},
}
