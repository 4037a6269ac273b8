"""Timing that returns numbers, and before/after comparisons as a table and a plot.

Usage::

    from labkit import measure
    t = measure.timeit(lambda: conn.execute(q).fetchall(), repeat=7)
    t.median_ms
    table = measure.compare({"by author": before}, {"by author": after})
    measure.plot_comparison(table)
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = ["Timing", "compare", "plot_comparison", "timeit"]


@dataclass(frozen=True)
class Timing:
    """Repeated wall-clock measurements of one callable, in milliseconds."""

    runs_ms: tuple[float, ...]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.runs_ms)

    @property
    def min_ms(self) -> float:
        return min(self.runs_ms)

    @property
    def max_ms(self) -> float:
        return max(self.runs_ms)

    def __str__(self) -> str:
        return f"median {self.median_ms:.3f} ms over {len(self.runs_ms)} runs"


def timeit(fn: Callable[[], object], *, repeat: int = 5, warmup: int = 1) -> Timing:
    """Call ``fn`` ``warmup`` times unmeasured, then ``repeat`` times measured."""
    if repeat < 1:
        raise ValueError("repeat must be at least 1")
    for _ in range(warmup):
        fn()
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - started) * 1000)
    return Timing(tuple(runs))


def _ms(value: Timing | float) -> float:
    return value.median_ms if isinstance(value, Timing) else float(value)


def compare(
    before: Mapping[str, Timing | float], after: Mapping[str, Timing | float], *, unit: str = "ms"
):
    """A DataFrame with one row per name: before, after, speed-up (×) and change (%).

    Values are Timings (their medians are used) or plain numbers in ``unit`` — e.g.
    buffers or statement counts, where lower is better as well."""
    import pandas as pd

    rows = []
    for name in before:
        if name not in after:
            raise KeyError(f"{name!r} is measured before but not after")
        b, a = _ms(before[name]), _ms(after[name])
        rows.append(
            {
                "query": name,
                f"before ({unit})": round(b, 3),
                f"after ({unit})": round(a, 3),
                "speed-up (×)": round(b / a, 1) if a else float("inf"),
                "change (%)": round((a - b) / b * 100, 1) if b else 0.0,
            }
        )
    return pd.DataFrame(rows).set_index("query")


def plot_comparison(table, *, title: str = "Before and after", log: bool = True):
    """A horizontal bar chart of a :func:`compare` table (returns the matplotlib Figure)."""
    import matplotlib.pyplot as plt

    before_col = next(c for c in table.columns if c.startswith("before"))
    after_col = next(c for c in table.columns if c.startswith("after"))
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * len(table)))
    positions = range(len(table))
    ax.barh([p + 0.2 for p in positions], table[before_col], height=0.4, label="before")
    ax.barh([p - 0.2 for p in positions], table[after_col], height=0.4, label="after")
    ax.set_yticks(list(positions), list(table.index))
    ax.invert_yaxis()
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(before_col.replace("before ", ""))
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    plt.close(fig)
    return fig
