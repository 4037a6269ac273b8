"""The dashboard: its queries (on the rollup) and its controls and plot (ipywidgets).

:func:`dashboard_data` answers each view of the dashboard (for now from the raw events).
:func:`dashboard` draws it with matplotlib into an ``Image`` widget; its text summary
comes from ``labkit.controls.live``. No ``Output`` widget: the notebook runs the same under
papermill as in JupyterLab.
"""

from __future__ import annotations

import io
from datetime import datetime, timedelta

__all__ = ["BUCKETS", "dashboard", "dashboard_data", "plot"]

BUCKETS = {"minute": "1 minute", "hour": "1 hour", "day": "1 day"}

_QUERY = """
SELECT date_bin(%(step)s::interval, occurred_at, timestamptz '2000-01-01 00:00:00+00') AS bucket,
       kind, count(*), coalesce(sum(amount_cents), 0)
FROM events
WHERE occurred_at >= %(start)s AND occurred_at < %(end)s
  AND (%(kinds)s::text[] IS NULL OR kind = ANY(%(kinds)s::text[]))
GROUP BY 1, 2
ORDER BY 1, 2"""


def dashboard_data(
    conn, start: datetime, end: datetime, *, kinds: list[str] | None = None, bucket: str = "hour"
) -> list[tuple]:
    """``(bucket start, kind, events, amount_cents)`` for each UTC ``bucket`` ("minute",
    "hour" or "day") in ``[start, end)`` that has events, ordered by bucket and kind."""
    # TODO R3: this reads every raw event in the window: answer it from your rollup instead
    # (sum the minutes into hours and days), so that it stays fast at 10 million events.
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
    """Controls (for now only the kind) above a plot and a one-line summary."""
    import ipywidgets as widgets

    from labkit import controls

    # TODO R7: add controls (at least a time window and the bucket size), each redrawing the
    # plot; and read the first and last minute from your rollup, not from the raw events.
    first, last = conn.execute("SELECT min(occurred_at), max(occurred_at) FROM events").fetchone()
    if first is None:
        raise ValueError("events is empty: run load_events(conn, ...) first")
    kind = widgets.Dropdown(options=["all", "view", "click", "signup", "purchase"], value="all")
    image = widgets.Image(format="png")
    bucket = "hour"

    def render(kind: str) -> str:
        rows = dashboard_data(
            conn,
            first,
            last + timedelta(minutes=1),
            kinds=None if kind == "all" else [kind],
            bucket=bucket,
        )
        image.value = _png(plot(rows, title=f"{kind} events per {bucket}"))
        total = sum(row[2] for row in rows)
        revenue = sum(row[3] for row in rows) / 100
        return f"{total:,} events, {revenue:,.2f} revenue, {len(rows)} points"

    box = controls.live(render, kind=kind)
    return widgets.VBox([box, image])
