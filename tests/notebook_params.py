"""Parameters CI passes to lesson notebooks (their `parameters` cell holds the defaults).

Keep CI sizes big enough that every measured claim the notebook asserts still holds."""

CI_PARAMETERS: dict[str, dict] = {
    "00-start-here.ipynb": {},
    # 3,000 users / 30,000 posts keep every asserted claim (>= 90% fewer buffers, >= 5x
    # faster, >= 90% fewer statements under the cache workload) with a margin, in ~20-40 s.
    "01-performance-and-optimization.ipynb": {
        "USERS": 3_000,
        "POSTS": 30_000,
        "READS_PER_USER": 1,
        "TIMING_REPEAT": 9,
    },
}
