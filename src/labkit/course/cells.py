"""nbgrader's cell metadata, read in one place.

For example::

    >>> from labkit.course import cells
    >>> cells.kind({"cell_type": "code", "metadata": {"nbgrader": {"solution": True, "grade_id": "a"}}})
    'answer'
    >>> cells.kind({"cell_type": "code", "metadata": {"nbgrader": {"grade": True, "points": 2}}})
    'test'
    >>> cells.kind({"cell_type": "markdown", "metadata": {"nbgrader": {"solution": True, "grade": True}}})
    'manual'
    >>> cells.kind({"cell_type": "code", "metadata": {}})
    'other'

:func:`read` gives every cell of a notebook as a :class:`Cell` (kind, grade id, points,
source); :func:`answers`, :func:`tests`, :func:`manual` and :func:`task_tests` are the views
the grading tools need. Nothing else in the package reads ``cell.metadata["nbgrader"]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Cell", "answers", "kind", "manual", "read", "task_tests", "tests"]


def _meta(cell: Mapping[str, Any]) -> Mapping[str, Any]:
    return cell.get("metadata", {}).get("nbgrader", {})


def kind(cell: Mapping[str, Any]) -> str:
    """``"answer"`` (a solution cell), ``"test"`` (an autograded code cell), ``"manual"`` (an
    answer the instructor grades by hand in formgrader: a write-up), ``"task"`` (a locked
    markdown cell, such as a task's text), ``"locked"`` (other locked code: setup) or
    ``"other"``."""
    meta = _meta(cell)
    if meta.get("solution") and meta.get("grade"):
        return "manual"
    if meta.get("solution") and not meta.get("grade"):
        return "answer"
    if meta.get("grade") and cell.get("cell_type") == "code":
        return "test"
    if meta.get("locked"):
        return "task" if cell.get("cell_type") == "markdown" else "locked"
    return "other"


@dataclass(frozen=True)
class Cell:
    """One cell of an nbgrader notebook, as the grading tools see it."""

    index: int
    kind: str
    grade_id: str | None
    points: float
    source: str
    cell_type: str


def read(notebook: Path | Any) -> list[Cell]:
    """Every cell of a notebook (a path, or a notebook already read), in order."""
    import nbformat

    node = nbformat.read(notebook, as_version=4) if isinstance(notebook, str | Path) else notebook
    return [
        Cell(
            index,
            kind(cell),
            _meta(cell).get("grade_id"),
            float(_meta(cell).get("points", 0) or 0),
            cell.source,
            cell.cell_type,
        )
        for index, cell in enumerate(node.cells)
    ]


def answers(notebook: Path | Any) -> dict[str, str]:
    """The answer cells: grade id → source, in order."""
    return {c.grade_id: c.source for c in read(notebook) if c.kind == "answer"}


def tests(notebook: Path | Any) -> dict[str, float]:
    """The autograded test cells: grade id → points, in order."""
    return {c.grade_id: c.points for c in read(notebook) if c.kind == "test"}


def manual(notebook: Path | Any) -> dict[str, float]:
    """The answers graded by hand (write-ups): grade id → points, in order."""
    return {c.grade_id: c.points for c in read(notebook) if c.kind == "manual"}


def task_tests(notebook: Path | Any) -> dict[str, list[str]]:
    """For each answer cell, the test cells of its task: those after it, up to the next
    answer cell that comes after a test cell (answer cells in a row share their tests)."""
    own: dict[str, list[str]] = {}
    pending: list[str] = []
    tested = False
    for cell in read(notebook):
        if cell.kind == "answer":
            if tested:
                pending, tested = [], False
            pending.append(cell.grade_id)
            own[cell.grade_id] = []
        elif cell.kind == "test":
            for answer in pending:
                own[answer].append(cell.grade_id)
            tested = True
    return own
