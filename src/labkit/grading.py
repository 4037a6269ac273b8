"""Run nbgrader's real pipeline (generate → submit → autograde) and read the scores.

Usage::

    from labkit import grading
    with grading.scratch_course() as course:             # a temporary copy of grading/
        course.release("00-warmup")
        course.submit("00-warmup", "alice", course.source_dir("00-warmup"))
        course.submit("00-warmup", "bob", course.release_dir("00-warmup"))
        course.autograde("00-warmup")
        course.scores("00-warmup")["alice"].score

Also :func:`apply_answers`, which writes a copy of a notebook with some answer cells
replaced (how the tests build a plausible wrong answer), and :func:`solution_cells`.
Scores come from nbgrader's gradebook, per notebook and per graded cell.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from labkit import config

__all__ = [
    "Course",
    "Score",
    "apply_answers",
    "assignments",
    "course_dir",
    "scratch_course",
    "solution_cells",
]


def course_dir() -> Path:
    """The nbgrader course directory of the checkout (``grading/``)."""
    return config.project_root() / "grading"


def assignments(root: Path | None = None) -> list[str]:
    """Names of the assignments under ``source/``, in order."""
    source = (root or course_dir()) / "source"
    return sorted(p.name for p in source.iterdir() if p.is_dir() and not p.name.startswith("."))


@dataclass
class Score:
    """One student's result for one assignment: totals, and per graded cell."""

    score: float
    max_score: float
    cells: dict[str, float] = field(default_factory=dict)
    max_cells: dict[str, float] = field(default_factory=dict)

    @property
    def full_marks(self) -> bool:
        return self.max_score > 0 and abs(self.score - self.max_score) < 1e-9


class Course:
    """An nbgrader course directory, driven through nbgrader's own command line."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def source_dir(self, assignment: str) -> Path:
        return self.root / "source" / assignment

    def release_dir(self, assignment: str) -> Path:
        return self.root / "release" / assignment

    def submission_dir(self, assignment: str, student: str) -> Path:
        return self.root / "submitted" / student / assignment

    def nbgrader(self, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
        """Run ``nbgrader ARGS`` in the course directory; raise with its output on failure."""
        env = dict(os.environ)
        # nbgrader runs `alembic` by name when it creates a gradebook.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        proc = subprocess.run(
            [sys.executable, "-m", "nbgrader", *args],
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"nbgrader {' '.join(args)} failed (exit {proc.returncode}):\n"
                f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            )
        return proc

    def release(self, assignment: str) -> Path:
        """``nbgrader generate_assignment``: the student version, without solutions/hidden tests."""
        self.nbgrader("db", "assignment", "add", assignment)
        self.nbgrader("generate_assignment", assignment, "--force")
        return self.release_dir(assignment)

    def submit(self, assignment: str, student: str, notebooks: Path | Mapping[str, Path]) -> Path:
        """Place a student's notebooks where ``nbgrader autograde`` looks for them.

        ``notebooks`` is a folder of ``.ipynb`` files or a mapping of file name → path."""
        target = self.submission_dir(assignment, student)
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        if isinstance(notebooks, Mapping):
            items = list(notebooks.items())
        else:
            items = [(p.name, p) for p in sorted(Path(notebooks).glob("*.ipynb"))]
        for name, path in items:
            shutil.copyfile(path, target / name)
        return target

    def autograde(self, assignment: str, student: str | None = None) -> None:
        args = ["autograde", assignment, "--force", "--create"]
        if student:
            args.append(f"--student={student}")
        self.nbgrader(*args)

    def scores(self, assignment: str) -> dict[str, Score]:
        """Every graded student's :class:`Score` for ``assignment``, from the gradebook."""
        from nbgrader.api import Gradebook

        results: dict[str, Score] = {}
        with Gradebook(f"sqlite:///{self.root / 'gradebook.db'}") as gradebook:
            for submission in gradebook.assignment_submissions(assignment):
                student = submission.student.id
                score = Score(submission.score, submission.max_score)
                for notebook in submission.notebooks:
                    for grade in notebook.grades:
                        key = f"{notebook.name}:{grade.name}"
                        score.cells[key] = grade.score
                        score.max_cells[key] = grade.max_score
                results[student] = score
        return results


@contextlib.contextmanager
def scratch_course(root: Path | None = None) -> Iterator[Course]:
    """A temporary copy of the course (config + sources), removed afterwards."""
    source_root = root or course_dir()
    with tempfile.TemporaryDirectory(prefix="labkit-course-") as folder:
        target = Path(folder)
        shutil.copyfile(source_root / "nbgrader_config.py", target / "nbgrader_config.py")
        shutil.copytree(source_root / "source", target / "source")
        yield Course(target)


def solution_cells(notebook_path: Path) -> dict[str, str]:
    """The answer cells of an nbgrader source notebook: grade_id → source."""
    import nbformat

    notebook = nbformat.read(notebook_path, as_version=4)
    cells = {}
    for cell in notebook.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("solution") and not meta.get("grade"):
            cells[meta["grade_id"]] = cell.source
    return cells


def apply_answers(notebook_path: Path, answers: Mapping[str, str], out_path: Path) -> Path:
    """Write a copy of ``notebook_path`` with the answer cells named in ``answers``
    (grade_id → new source) replaced; unknown ids raise KeyError."""
    import nbformat

    notebook = nbformat.read(notebook_path, as_version=4)
    remaining = dict(answers)
    for cell in notebook.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in remaining:
            cell.source = remaining.pop(grade_id)
    if remaining:
        raise KeyError(f"no answer cells {sorted(remaining)} in {notebook_path.name}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, out_path)
    return out_path
