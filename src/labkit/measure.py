"""Timing that returns numbers, before/after comparisons as a table and a plot, and
results shown for reading (tables, computed sentences).

>>> from labkit import measure
>>> t = measure.timeit(lambda: sum(range(1000)), repeat=7)
>>> len(t.runs_ms), t.min_ms <= t.median_ms <= t.max_ms
(7, True)
>>> table = measure.compare({"buffers": 2353}, {"buffers": 52}, unit="pages")
>>> float(table.loc["buffers", "speed-up (×)"])
45.2
>>> measure.table(table)   # integers as integers, SQL in full, — where nothing applies
        before (pages) after (pages) speed-up (×) change (%)
query
buffers          2,353            52         45.2      -97.8
>>> measure.say("2,353 buffers before, 52 after")   # Markdown in a notebook
2,353 buffers before, 52 after

``measure.plot_comparison(table)`` draws the same table as bars.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = ["Table", "Timing", "compare", "plot_comparison", "say", "table", "timeit"]


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


# --------------------------------------------------------------------------- showing results

#: Columns shown as code: left-aligned, monospace, in full (wrapped, never cut with "...").
CODE_COLUMNS = ("sql", "query", "statement", "plan", "plan after", "plan before")
NOT_APPLICABLE = "—"


def _cell_text(value, digits: int) -> str:
    import math
    import numbers

    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NOT_APPLICABLE
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Integral):
        return f"{value:,}"
    if isinstance(value, numbers.Real):
        value = float(value)
        if math.isinf(value):
            return "∞" if value > 0 else "-∞"
        if value.is_integer() and abs(value) < 1e15:
            return f"{int(value):,}"
        return f"{value:,.{digits}f}".rstrip("0").rstrip(".")
    if isinstance(value, Timing):
        return f"{value.median_ms:,.{digits}f} ms"
    return str(value)


class Table:
    """A DataFrame shown for reading (:func:`table`): ``.frame`` is the data itself."""

    def __init__(self, frame, *, digits: int = 3, code: tuple[str, ...] = CODE_COLUMNS) -> None:
        self.frame = frame
        self.digits = digits
        self.code = tuple(c.lower() for c in code)

    def _texts(self):
        return self.frame.map(lambda v: _cell_text(v, self.digits))

    def __repr__(self) -> str:
        import pandas as pd

        with pd.option_context("display.max_colwidth", None, "display.width", 200):
            return self._texts().to_string()

    def _repr_html_(self) -> str:
        import numbers
        from html import escape

        import pandas as pd

        texts = self._texts()
        frame = self.frame
        names = list(frame.index.names)
        show_index = any(n is not None for n in names) or not isinstance(frame.index, pd.RangeIndex)
        left = "text-align:left; vertical-align:top"
        numeric = "text-align:right; vertical-align:top; font-variant-numeric:tabular-nums"
        code_style = f"{left}; font-family:var(--jp-code-font-family, monospace); "
        code_style += "white-space:pre-wrap; word-break:normal; overflow-wrap:anywhere"
        head = []
        if show_index:
            head += [
                f"<th style='{left}'>{escape(str(n)) if n is not None else ''}</th>" for n in names
            ]
        head += [f"<th style='{left}'>{escape(str(c))}</th>" for c in frame.columns]
        rows = []
        for position in range(len(frame)):
            key = frame.index[position]
            keys = key if isinstance(key, tuple) else (key,)
            cells = []
            if show_index:
                cells += [f"<th style='{left}'>{escape(str(k))}</th>" for k in keys]
            for column_index, column in enumerate(frame.columns):
                value = frame.iat[position, column_index]
                text = escape(texts.iat[position, column_index])
                if str(column).lower() in self.code:
                    style = code_style
                elif isinstance(value, numbers.Real) and not isinstance(value, bool):
                    style = numeric
                else:
                    style = left
                cells.append(f"<td style='{style}'>{text}</td>")
            rows.append("<tr>" + "".join(cells) + "</tr>")
        return (
            "<table class='dataframe labkit-table'><thead><tr>"
            + "".join(head)
            + "</tr></thead><tbody>"
            + "".join(rows)
            + "</tbody></table>"
        )


def table(frame, *, digits: int = 3, code: tuple[str, ...] = CODE_COLUMNS) -> Table:
    """``frame`` (a DataFrame or Series) for reading: whole numbers as integers (``4,690``,
    not ``4690.000``), other numbers to ``digits`` decimals, ``—`` where a value does not
    apply (``NaN``/``None``), text left-aligned, and the ``code`` columns (SQL, plans) in
    full, left-aligned and wrapped — never cut with ``...``. The data stays in ``.frame``."""
    import pandas as pd

    if isinstance(frame, pd.Series):
        frame = frame.to_frame()
    return Table(frame, digits=digits, code=code)


def _markdown_escape(text: str) -> str:
    out = []
    for part_index, part in enumerate(text.split("`")):
        if part_index % 2:  # inside a code span: as is
            out.append(f"`{part}`")
            continue
        part = part.replace("\\", "\\\\")
        for char in "*_[]<>|#":
            part = part.replace(char, "\\" + char)
        out.append(part)
    return "".join(out)


class Sentence(str):
    """A computed sentence: Markdown in a notebook (wraps between words), text elsewhere."""

    def _repr_markdown_(self) -> str:
        return _markdown_escape(str(self))


def say(*sentences: str) -> None:
    """Show computed sentences (one paragraph each) as Markdown in a notebook, so that they
    wrap between words, not mid-word as long printed lines do; print them elsewhere.
    Text between backticks is shown as code."""
    text = "\n\n".join(sentences)
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:  # pragma: no cover - IPython comes with the course
        print(text)
        return
    if get_ipython() is None or not hasattr(get_ipython(), "kernel"):
        print(text)
        return
    display(Sentence(text))
