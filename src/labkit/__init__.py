"""labkit — the helper package of the production data-layer engineering course.

Usage::

    import labkit
    labkit.services_table()          # what runs where (starts nothing)
    from labkit import db, data, measure, cache

Modules: :mod:`labkit.services` (start/stop the servers), :mod:`labkit.db` (engines,
isolated databases, query recorder, EXPLAIN as data), :mod:`labkit.data` (the demo
dataset), :mod:`labkit.blog` (its ORM models), :mod:`labkit.measure` (timings and
before/after tables), :mod:`labkit.cache` (Redis). Importing starts nothing.
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
