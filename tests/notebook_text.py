"""Text of nbgrader notebooks, for tests that look for solutions or hidden tests where
they must not be (student copies, feedback, self-check messages)."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat

HIDDEN = r"### BEGIN HIDDEN TESTS\n(.*?)### END HIDDEN TESTS"
SOLUTION = r"### BEGIN SOLUTION\n(.*?)### END SOLUTION"
_STRING = re.compile(r"[rbfu]{0,2}(\"([^\"\\]|\\.)*\"|'([^'\\]|\\.)*')")


def normalize(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def region_lines(source: Path, pattern: str) -> tuple[list[str], set[str]]:
    """The lines inside ``pattern``'s regions of a source notebook, and the lines a student
    sees anyway (everything outside solution and hidden test regions), normalized."""
    inside, outside = [], set()
    for cell in nbformat.read(source, as_version=4).cells:
        for region in re.findall(pattern, cell.source, re.S):
            inside += [normalize(line) for line in region.splitlines()]
        shown = re.sub(SOLUTION, "", re.sub(HIDDEN, "", cell.source, flags=re.S), flags=re.S)
        outside |= {normalize(line) for line in shown.splitlines()}
    return inside, outside


def secret_lines(source: Path, pattern: str) -> list[str]:
    """Code lines of the solution (``SOLUTION``) or hidden test (``HIDDEN``) regions that a
    student has no other way to see: not short, not a comment, not only string literals
    (assertion messages are meant to be shown), and not standing in a line outside those
    regions."""
    inside, outside = region_lines(source, pattern)
    lines = []
    for text in inside:
        code = _STRING.sub("", text)
        if len(text) < 12 or text.startswith("#") or not re.search(r"[A-Za-z]", code):
            continue
        # A student sees it anyway if it stands in a visible line (e.g. the task's markdown
        # names `warm_top_users(r, n)`, which a hidden test also calls).
        if not any(text in visible for visible in outside):
            lines.append(text)
    return lines
