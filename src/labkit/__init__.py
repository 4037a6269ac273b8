"""labkit — the helper package of the production data-layer engineering course.

Usage::

    import labkit
    labkit.services_table()          # what runs where (starts nothing)
    from labkit import db, data, measure, cache

Modules, one per concern:

- servers and connections: :mod:`labkit.services` (start/stop the course's servers),
  :mod:`labkit.supervisor` (the life cycle they share with the extra servers a lesson
  starts: PostgreSQL clusters, uvicorn-served ASGI apps, workers),
  :mod:`labkit.config` (which URLs), :mod:`labkit.db` (engines, isolated databases, the
  query recorder, EXPLAIN as data), :mod:`labkit.cache` (Redis, a Redis you may kill);
- data: :mod:`labkit.data` (the demo dataset), :mod:`labkit.blog` (its ORM models);
- measurement: :mod:`labkit.measure` (timings, before/after tables),
  :mod:`labkit.explain_tools` (plan comparisons), :mod:`labkit.practice` (the practice
  run), :mod:`labkit.caching` (codec, hit counters, Zipf workloads, stampede lock);
- exercises and grading: :mod:`labkit.exercises` (per-exercise isolation),
  :mod:`labkit.grading` (nbgrader's pipeline), :mod:`labkit.nbgrader_ext` (grading
  sandbox, feedback without hidden tests), :mod:`labkit.selfcheck` (check your own work),
  :mod:`labkit.progress` (your progress);
- :mod:`labkit.cli` (``python -m labkit``) and :mod:`labkit.bench` (the budgets).

Importing starts nothing.
"""

from __future__ import annotations

__all__ = ["__version__", "services_table"]

__version__ = "0.1.0"


def services_table():
    """A DataFrame of the course's servers: mode, running, version, URL (password masked).

    Raises :class:`labkit.config.ServicesNotRunning` with what to do if a server is down."""
    import pandas as pd

    from labkit.config import ServicesNotRunning
    from labkit.services import Services

    statuses = Services(quiet=True).status()
    down = [s.name for s in statuses.values() if not s.running]
    if down:
        raise ServicesNotRunning(
            f"not running: {', '.join(down)}. Run `make lab` (or `python -m labkit services "
            "up`) in a terminal, or set DATABASE_URL / REDIS_URL to servers you have."
        )
    return pd.DataFrame(
        [
            {"service": s.name, "mode": s.mode, "version": s.version, "url": s.url}
            for s in statuses.values()
        ]
    ).set_index("service")
