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
}
