"""The dashboard: its queries (on the rollup) and its controls and plot (ipywidgets).

:func:`dashboard_data` answers every view from ``events_per_minute``: a day of minutes is at
most 1,440 rows per kind whatever the event rate, where the raw events would be hundreds of
thousands. :func:`dashboard` draws it with matplotlib into an ``Image`` widget; its text
summary comes from ``labkit.controls.live``. No ``Output`` widget: the notebook runs the same
under papermill as in JupyterLab.
"""

from __future__ import annotations

import io
from datetime import datetime, timedelta

__all__ = ["BUCKETS", "dashboard", "dashboard_data", "plot"]

BUCKETS = {"minute": "1 minute", "hour": "1 hour", "day": "1 day"}

_QUERY = """
SELECT date_bin(%(step)s::interval, minute, timestamptz '2000-01-01 00:00:00+00') AS bucket,
       kind, sum(events)::bigint, sum(amount_cents)::bigint
FROM events_per_minute
WHERE minute >= %(start)s AND minute < %(end)s
  AND (%(kinds)s::text[] IS NULL OR kind = ANY(%(kinds)s::text[]))
GROUP BY 1, 2
ORDER BY 1, 2"""


def dashboard_data(
    conn, start: datetime, end: datetime, *, kinds: list[str] | None = None, bucket: str = "hour"
) -> list[tuple]:
    """``(bucket start, kind, events, amount_cents)`` for each UTC ``bucket`` ("minute",
    "hour" or "day") in ``[start, end)`` that has events, ordered by bucket and kind."""
    if bucket not in BUCKETS:
        raise ValueError(f"bucket must be one of {list(BUCKETS)}, not {bucket!r}")
    params = {"step": BUCKETS[bucket], "start": start, "end": end, "kinds": kinds}
    return [tuple(row) for row in conn.execute(_QUERY, params)]


def plot(rows: list[tuple], *, title: str = "events"):
    """A matplotlib figure: events per bucket, one line per kind."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3))
    for kind in sorted({row[1] for row in rows}):
        points = [(row[0], row[2]) for row in rows if row[1] == kind]
        ax.plot([p[0] for p in points], [p[1] for p in points], label=kind, linewidth=1)
    ax.set_title(title)
    ax.set_ylabel("events")
    if rows:
        ax.legend(loc="upper right", fontsize="small")
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return buffer.getvalue()


def dashboard(conn):
    """Controls (kind, bucket, window) above a plot and a one-line summary."""
    import ipywidgets as widgets

    from labkit import controls

    first, last = conn.execute("SELECT min(minute), max(minute) FROM events_per_minute").fetchone()
    if first is None:
        raise ValueError("events_per_minute is empty: run setup_rollup(conn) after loading events")
    hours = max(1, int((last - first).total_seconds() // 3600) + 1)
    kinds = [r[0] for r in conn.execute("SELECT DISTINCT kind FROM events_per_minute ORDER BY 1")]
    kind = widgets.Dropdown(options=["all", *kinds], value="all", description="kind")
    bucket = widgets.Dropdown(options=list(BUCKETS), value="hour", description="bucket")
    window = widgets.IntRangeSlider(value=(0, hours), min=0, max=hours, step=1, description="hours")
    image = widgets.Image(format="png")

    def render(kind: str, bucket: str, window: tuple[int, int]) -> str:
        start = first + timedelta(hours=window[0])
        end = first + timedelta(hours=max(window[1], window[0] + 1))
        rows = dashboard_data(
            conn, start, end, kinds=None if kind == "all" else [kind], bucket=bucket
        )
        image.value = _png(plot(rows, title=f"{kind} events per {bucket}"))
        total = sum(row[2] for row in rows)
        revenue = sum(row[3] for row in rows) / 100
        return f"{total:,} events, {revenue:,.2f} revenue, {len(rows)} points from the rollup"

    box = controls.live(render, kind=kind, bucket=bucket, window=window)
    return widgets.VBox([box, image])
