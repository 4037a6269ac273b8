"""Plausible wrong answers per assignment: ``<assignment with _>.py`` holds ``CASES``.

Each case: ``name``, ``notebook`` (file name), ``answers`` (grade_id → replacement source)
and ``loses`` (the test cells that must lose their marks, and no others)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

HERE = Path(__file__).resolve().parent


def cases(assignment: str) -> list[dict]:
    """The wrong-answer cases of ``assignment`` (e.g. "00-warmup")."""
    path = HERE / f"{assignment.replace('-', '_')}.py"
    if not path.exists():
        raise FileNotFoundError(f"{assignment} needs plausible wrong answers in {path}")
    spec = importlib.util.spec_from_file_location(f"wrong_answers_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CASES
