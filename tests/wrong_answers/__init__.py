"""The requirement table and the plausible wrong answers of each assignment.

``<assignment with _>.py`` holds:

- ``REQUIREMENTS``: every requirement the task texts state, as
  ``Requirement(id, answer cell, quoted phrase of the task's markdown, test cell)``: the
  test cell is the one that fails when only that requirement is broken;
- ``CONTEXT``: per answer cell, the phrases of its task text that state no requirement
  (background, hints) — so that every sentence of the text is either a requirement or
  context, and a new sentence cannot go unread (``test_requirements.py`` checks it);
- ``CASES``: the wrong answers. Each case breaks one requirement (``breaks``) by replacing
  answer cells of one notebook (``answers``: grade_id → source) and must lose exactly the
  test cells in ``loses``. ``source`` says who wrote it: ``"course"`` or ``"outside
  review"`` (written from the student version and the task text only, without the tests);
- ``ALTERNATIVES``: right answers written another way, which must keep full marks (the
  tests check behaviour, not one way of writing it).
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Requirement:
    """One requirement of a task's text, and the test cell that checks it."""

    id: str
    notebook: str
    answer: str  # the answer cell's grade_id
    text: str  # a phrase quoted from the task's markdown
    test: str  # the test cell that fails when only this requirement is broken


def _module(assignment: str):
    path = HERE / f"{assignment.replace('-', '_')}.py"
    if not path.exists():
        raise FileNotFoundError(
            f"{assignment} needs a requirement table and wrong answers in {path}"
        )
    spec = importlib.util.spec_from_file_location(f"wrong_answers_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cases(assignment: str) -> list[dict]:
    """The wrong-answer cases of ``assignment`` (e.g. "00-warmup")."""
    return _module(assignment).CASES


def alternatives(assignment: str) -> list[dict]:
    """Right answers written another way (``name``, ``notebook``, ``answers``)."""
    return getattr(_module(assignment), "ALTERNATIVES", [])


def requirements(assignment: str) -> list[Requirement]:
    """The requirement table of ``assignment``."""
    return _module(assignment).REQUIREMENTS


def context(assignment: str) -> dict[str, list[str]]:
    """Per answer cell, the phrases of its task text that state no requirement."""
    return _module(assignment).CONTEXT


def normalize(markdown: str) -> str:
    """Markdown as plain words: no emphasis, one space between words."""
    text = re.sub(r"\*\*|__|(?<!\w)\*(?!\s)|(?<!\s)\*(?!\w)", "", markdown)
    return re.sub(r"\s+", " ", text).strip()


def sentences(markdown: str) -> list[str]:
    """The sentences and bullet points of a task's text, headings and code blocks left out."""
    body = re.sub(r"```.*?```", " ", markdown, flags=re.S)
    body = "\n".join(line for line in body.splitlines() if not line.startswith("#"))
    parts = []
    for block in re.split(r"\n\s*(?:- |\n)", body):
        text = normalize(block)
        parts += [s for s in re.split(r"(?<=[.!?])\s+(?=[A-Z`(])", text) if s.strip()]
    return parts
