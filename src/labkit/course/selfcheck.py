"""Check your own exercise notebook: the visible tests at once, then the full autograde.

Usage (a terminal, from the course folder)::

    python -m labkit check 00-warmup                  # exercises/00-warmup/*.ipynb
    python -m labkit check 00-warmup path/to/warmup.ipynb
    python -m labkit check 00-warmup --quick          # visible tests only

or the last cell of the exercise notebook itself (the check reads the saved file: save
first; it warns when cells ran that the file does not hold)::

    from labkit.course import selfcheck
    selfcheck.check("00-warmup", "warmup.ipynb")

The check executes the notebook, last cell included: while it runs, ``check`` called from
that cell (or from any notebook the check executes) returns at once, marked ``skipped``,
instead of checking again (``RUNNING_ENV`` is set in the environment of those kernels).
Run by an executor (papermill, nbconvert, an instructor's nbgrader autograde), the cell
is skipped too: the check is for a learner at JupyterLab (or VS Code), or a terminal.

Which notebooks a check reads, and what it says about an assignment that does not exist::

    >>> from labkit.course import selfcheck
    >>> list(selfcheck.learner_notebooks("00-warmup"))  # exercises/00-warmup/
    ['warmup.ipynb']
    >>> selfcheck.check("00-warmpu")
    Traceback (most recent call last):
    ...
    labkit.errors.CheckError: no assignment '00-warmpu' (known: 00-warmup, 01-performance...)

1. **Visible tests**: your notebook runs as it is, top to bottom, in a fresh kernel; each
   test cell passes or shows its assertion message.
2. **Full autograde**: nbgrader grades your notebook exactly as an instructor would —
   with the hidden tests — in a private scratch course: a score per task and, where a
   test fails, its message (the messages, not the hidden test code).

Both run in a sandbox (their own databases and Redis), so they never disturb the
notebook you have open. A full check is recorded for ``python -m labkit progress``.

In the student edition (:mod:`labkit.course.edition`: no ``grading/``), there are no hidden
tests to run: a check runs the visible tests, says that the hidden tests run when the
instructor grades, and records the visible tests' result for ``progress``.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from labkit import config
from labkit.course import cells, edition, grading, progress
from labkit.errors import CheckError

__all__ = [
    "RUNNING_ENV",
    "CheckError",
    "CheckResult",
    "TaskResult",
    "check",
    "learner_notebooks",
]

#: Set (to the assignment's name) while a check executes notebooks: a check called there —
#: the exercise's own last cell — returns a skipped result instead of recursing.
RUNNING_ENV = "LABKIT_SELFCHECK_RUNNING"


NOT_ANSWERED = "not answered yet: the answer above still raises NotImplementedError"


@dataclass
class TaskResult:
    """One test cell: what it checks, and how your notebook did."""

    notebook: str
    task: str
    checks: str
    points: float
    visible: str = "not run"  # "pass" | "fail" | "not run"
    visible_message: str = ""
    score: float | None = None
    message: str = ""


@dataclass(repr=False)
class CheckResult:
    """The result of :func:`check`: one :class:`TaskResult` per test cell."""

    assignment: str
    notebooks: dict[str, Path]
    tasks: list[TaskResult] = field(default_factory=list)
    full: bool = False
    seconds: float = 0.0
    skipped: str = ""  # why nothing was checked (a check inside a check)
    warning: str = ""  # e.g. cells ran that the saved file does not hold

    @property
    def score(self) -> float:
        return sum(t.score or 0 for t in self.tasks)

    @property
    def max_score(self) -> float:
        return sum(t.points for t in self.tasks)

    def frame(self):
        import pandas as pd

        rows = []
        for t in self.tasks:
            row = {"notebook": t.notebook, "task": t.task, "checks": t.checks}
            row["visible tests"] = t.visible
            if self.full:
                row["score"] = f"{t.score or 0:g} / {t.points:g}"
            row["message"] = (t.message if self.full else t.visible_message) or ""
            rows.append(row)
        return pd.DataFrame(rows)

    def summary(self) -> str:
        if self.skipped:
            return self.skipped
        if not self.full and edition.is_student_edition():
            passed = sum(t.visible == "pass" for t in self.tasks)
            return (
                f"{self.assignment}: visible tests pass in {passed} of {len(self.tasks)} test "
                "cells. The hidden tests run when your instructor grades your submission: "
                "your score comes from there"
            )
        if not self.full:
            passed = sum(t.visible == "pass" for t in self.tasks)
            return (
                f"{self.assignment}: visible tests pass in {passed} of {len(self.tasks)} test "
                "cells (hidden tests not run: drop --quick for your score)"
            )
        return f"{self.assignment}: {self.score:g} / {self.max_score:g} points"

    def __str__(self) -> str:
        lines, notebook = [], None
        for t in self.tasks:
            if t.notebook != notebook:
                notebook = t.notebook
                lines.append(f"{notebook} ({self.notebooks[notebook]})")
            if self.full:
                mark = f"{t.score or 0:g}/{t.points:g}"
            else:
                mark = {"pass": "pass", "fail": "FAIL"}.get(t.visible, "?")
            lines.append(f"  [{mark}] {t.task} — {t.checks}")
            message = t.message if self.full else t.visible_message
            if message:
                lines.append(f"         {message}")
        warning = [f"note: {self.warning}"] if self.warning else []
        return "\n".join([*lines, self.summary(), *warning])

    __repr__ = __str__

    def _repr_html_(self) -> str:
        from html import escape

        summary = f"<p><b>{escape(self.summary())}</b></p>"
        warning = f"<p><b>Note:</b> {escape(self.warning)}</p>" if self.warning else ""
        if self.skipped:
            return summary
        table = self.frame().to_html(index=False, na_rep="", justify="left", escape=True)
        table = table.replace("<td>", "<td style='text-align:left'>")
        return f"{warning}{table}{summary}"


def learner_notebooks(assignment: str, notebook: str | Path | None = None) -> dict[str, Path]:
    """Which of your notebooks to check: a given file or folder; else, called from a cell of
    one of the assignment's notebooks in JupyterLab, that notebook; else
    ``exercises/<assignment>/``. Keyed by the assignment's notebook file name."""
    source = edition.assignment_folder(assignment)  # grading/source, or the edition's copies
    if not source.is_dir():
        known = ", ".join(edition.assignments()) or "none"
        raise CheckError(f"no assignment {assignment!r} (known: {known})")
    names = sorted(p.name for p in source.glob("*.ipynb"))
    if notebook is not None and Path(notebook).expanduser().is_dir():
        folder = Path(notebook).expanduser().resolve()
        found = {name: folder / name for name in names if (folder / name).is_file()}
        if not found:
            raise CheckError(f"none of {', '.join(names)} is in {folder}")
        return found
    if notebook is not None:
        path = Path(notebook).expanduser().resolve()
        if not path.is_file():
            raise CheckError(f"no notebook {path}")
        if path.name not in names:
            raise CheckError(
                f"{path.name} is not a notebook of {assignment} ({', '.join(names)}): keep the "
                "file name of the student copy"
            )
        return {path.name: path}
    if session := _open_notebook(names):  # called from a cell of one of them, in JupyterLab
        return session
    folder = grading.student_copies_dir() / assignment
    found = {name: folder / name for name in names if (folder / name).is_file()}
    if not found:
        raise CheckError(
            f"no student copy of {assignment} in {folder}: open the exercises from there, or "
            "pass the path of your notebook"
        )
    return found


def _open_notebook(names: list[str]) -> dict[str, Path] | None:
    """The notebook whose kernel calls us, when it is one of ``names``: Jupyter's server
    tells its kernels their notebook's path (``JPY_SESSION_NAME``)."""
    session = os.environ.get("JPY_SESSION_NAME")
    if not session or Path(session).name not in names:
        return None
    path = Path(session).expanduser()
    candidates = [path] if path.is_absolute() else [Path.cwd() / path.name, Path.cwd() / path]
    for candidate in candidates:
        if candidate.is_file():
            return {candidate.name: candidate.resolve()}
    return None


def _first_line(source: str) -> str:
    text = source.strip()
    for quote in ('"""', "'''"):
        if text.startswith(quote):
            return text[3:].split(quote, 1)[0].strip().splitlines()[0]
    return ""


def _error(cell) -> tuple[str, str] | None:
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            return output.get("ename", "Error"), output.get("evalue", "")
    return None


def _message(cell, unanswered: bool) -> str:
    error = _error(cell)
    if error is None:
        return ""
    if error[0] == "NotImplementedError" or (unanswered and error[0] == "NameError"):
        return NOT_ANSWERED
    name, value = error
    return f"{name}: {value}".strip().rstrip(":")


def _tasks(executed, notebook: str) -> list[tuple[str, object, bool]]:
    """(grade id, executed cell, an answer cell before it is unanswered) per test cell."""
    found, unanswered = [], False
    for info in cells.read(executed):
        cell = executed.cells[info.index]
        if info.kind == "answer":
            error = _error(cell)
            unanswered = unanswered or bool(error and error[0] == "NotImplementedError")
        if info.kind == "test":
            found.append((info.grade_id, cell, unanswered))
            unanswered = False  # the next task's answer cells come after this test cell
    return found


def _run_visible(path: Path) -> object:
    """Execute a copy of ``path`` as it is (errors do not stop it), in a sandbox."""
    import os
    import subprocess

    import nbformat
    from nbclient import NotebookClient

    from labkit.course.nbgrader_ext import Sandbox

    notebook = nbformat.read(path, as_version=4)
    with Sandbox(f"check/{path}") as env:
        client = NotebookClient(
            notebook,
            timeout=300,
            kernel_name="python3",
            allow_errors=True,
            resources={"metadata": {"path": str(path.parent)}},
        )
        # The kernel's own stderr (start-up warnings) is noise here; errors are in the outputs.
        client.execute(env={**os.environ, **env}, stderr=subprocess.DEVNULL)
    return notebook


def _cached_course(assignment: str) -> Path:
    """A course directory where ``assignment`` is generated (gradebook included), cached
    under the state dir and keyed by the sources and config, so that a check does not pay
    for ``nbgrader generate_assignment`` every time."""
    root = grading.course_dir()
    import nbgrader

    digest = hashlib.sha256(nbgrader.__version__.encode())
    digest.update((root / "nbgrader_config.py").read_bytes())
    for path in sorted(grading.Course(root).source_dir(assignment).rglob("*")):
        if path.is_file():
            digest.update(path.name.encode() + path.read_bytes())
    cache = config.state_dir() / "selfcheck" / f"{assignment}-{digest.hexdigest()[:16]}"
    if not cache.is_dir():
        cache.parent.mkdir(parents=True, exist_ok=True)
        with grading.scratch_course(root) as course:
            course.nbgrader("generate_assignment", assignment, "--force")
            staging = Path(tempfile.mkdtemp(prefix=f".{cache.name}-", dir=cache.parent))
            shutil.copytree(course.root, staging, dirs_exist_ok=True)
            try:
                staging.rename(cache)  # atomic: a concurrent check may have won the race
            except OSError:
                shutil.rmtree(staging, ignore_errors=True)
        for old in cache.parent.glob(f"{assignment}-*"):  # made from older sources
            if old != cache and re.fullmatch(rf"{re.escape(assignment)}-[0-9a-f]{{16}}", old.name):
                shutil.rmtree(old, ignore_errors=True)
    return cache


def _autograde(assignment: str, notebooks: dict[str, Path]):
    """nbgrader's own autograde of the learner's notebooks as student ``me``."""
    import nbformat

    from labkit.course import gradeuser

    # A learner checks their own code with their own privileges: the grading sandbox's
    # throwaway Unix users (as root) protect an instructor from students, not a learner
    # from themselves, and would cost a learner who works as root (a container) nothing but
    # time. The databases and the Redis stay private to the check, as always.
    previous = os.environ.get(gradeuser.MODE_ENV)
    os.environ[gradeuser.MODE_ENV] = "off"
    try:
        with tempfile.TemporaryDirectory(prefix="labkit-check-") as folder:
            shutil.copytree(_cached_course(assignment), folder, dirs_exist_ok=True)
            course = grading.Course(Path(folder))
            course.submit(assignment, "me", notebooks)
            course.autograde(assignment, "me")
            score = course.scores(assignment)["me"]
            graded = {
                name: nbformat.read(course.autograded_dir(assignment, "me") / name, as_version=4)
                for name in notebooks
            }
    finally:
        if previous is None:
            os.environ.pop(gradeuser.MODE_ENV, None)
        else:
            os.environ[gradeuser.MODE_ENV] = previous
    return score, graded


def check(
    assignment: str,
    notebook: str | Path | None = None,
    *,
    full: bool = True,
    record: bool = True,
    echo: Callable[[str], None] | None = print,
) -> CheckResult:
    """Check your notebooks of ``assignment``: visible tests, then (``full``) the autograde
    with hidden tests. ``echo`` receives progress lines as it goes (``None``: silence)."""

    say = echo or (lambda line: None)
    if running := os.environ.get(RUNNING_ENV):
        skipped = CheckResult(assignment, {}, full=full)
        skipped.skipped = (
            f"self-check skipped: this notebook is being checked ({running}) right now; "
            "its score is shown where the check was started"
        )
        return skipped
    if _run_by_an_executor():
        skipped = CheckResult(assignment, {}, full=full)
        skipped.skipped = (
            "self-check skipped: this notebook is being run by an executor (papermill, "
            "nbconvert, nbgrader), not from JupyterLab. Run this cell in JupyterLab, or "
            f"`make check A={assignment}` in a terminal, to see your score"
        )
        return skipped
    started = time.perf_counter()
    full = full and not edition.is_student_edition()  # no hidden tests to run there
    notebooks = learner_notebooks(assignment, notebook)
    source = edition.assignment_folder(assignment)
    result = CheckResult(assignment, notebooks, full=full)
    result.warning = _unsaved_warning(notebooks)
    if result.warning:
        say(f"note: {result.warning}")
    os.environ[RUNNING_ENV] = assignment  # the kernels the check starts inherit it
    try:
        _check_into(result, assignment, notebooks, source, full, record, say)
    finally:
        os.environ.pop(RUNNING_ENV, None)
    result.seconds = time.perf_counter() - started
    return result


def _run_by_an_executor(shell=None, environ=None) -> bool:
    """True in a kernel that no notebook front end started — papermill, nbconvert, or an
    instructor's nbgrader autograde running a submission whose last cell is the check
    (which must not start a check of its own there). Jupyter's server tells the kernels it
    starts their notebook (``JPY_SESSION_NAME``); VS Code sets ``__vsc_ipynb_file__``."""
    environ = os.environ if environ is None else environ
    if shell is None:
        try:
            from IPython import get_ipython
        except ImportError:
            return False
        shell = get_ipython()
    if shell is None or not hasattr(shell, "kernel"):
        return False  # a terminal, a script, pytest: the check runs
    if environ.get("JPY_SESSION_NAME"):
        return False
    return "__vsc_ipynb_file__" not in getattr(shell, "user_ns", {})


def _unsaved_warning(notebooks: dict[str, Path]) -> str:
    """Called from a notebook's kernel: a warning when cells ran here that none of the saved
    ``notebooks`` holds (answers typed but not saved: the check reads the files)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return ""
    shell = get_ipython()
    manager = getattr(shell, "history_manager", None)
    # The cells as typed (magics untransformed), in the order they ran; the last is this one.
    history = getattr(manager, "input_hist_raw", None)
    if not history:
        return ""
    import nbformat

    saved: set[str] = set()
    for path in notebooks.values():
        try:
            cells = nbformat.read(path, as_version=4).cells
        except Exception:
            return ""
        saved.update(_normalized(c.source) for c in cells if c.cell_type == "code")
    ran = [_normalized(src) for src in history[1:-1] if src.strip()]  # not the running cell
    if any(src and src not in saved and "selfcheck" not in src for src in ran[-50:]):
        return (
            "some cells that ran in this kernel are not in the saved notebook, and the check "
            "reads the saved file: if you changed answers since you saved, save (Ctrl+S, or "
            "Cmd+S on a Mac) and run this cell again"
        )
    return ""


def _normalized(source: str) -> str:
    return "\n".join(line.rstrip() for line in source.strip().splitlines())


def _check_into(result, assignment, notebooks, source, full, record, say) -> None:
    by_key: dict[tuple[str, str], TaskResult] = {}
    for name, path in notebooks.items():
        points = grading.grade_cells(source / name)
        sources = {c.grade_id: c.source for c in cells.read(source / name) if c.kind == "test"}
        for grade_id, value in points.items():
            task = TaskResult(name, grade_id, _first_line(sources[grade_id]), value)
            by_key[(name, grade_id)] = task
            result.tasks.append(task)

        say(f"visible tests: running {path.name} as it is ...")
        executed = _run_visible(path)
        for grade_id, cell, unanswered in _tasks(executed, name):
            task = by_key.get((name, grade_id))
            if task is None:
                continue
            error = _error(cell)
            task.visible = "fail" if error else "pass"
            task.visible_message = _message(cell, unanswered)
        for task in result.tasks:
            if task.notebook == name:
                mark = {"pass": "ok  ", "fail": "FAIL", "not run": "?   "}[task.visible]
                say(f"  {mark} {task.task}  {task.visible_message}".rstrip())

    if full:
        say("full autograde (hidden tests included): nbgrader is grading your notebook ...")
        score, graded = _autograde(assignment, notebooks)
        for name, executed in graded.items():
            for grade_id, cell, unanswered in _tasks(executed, name):
                task = by_key.get((name, grade_id))
                if task is not None:
                    task.score = score.cells.get(f"{Path(name).stem}:{grade_id}", 0.0)
                    task.message = _message(cell, unanswered)
        if record:
            for name in notebooks:
                tasks = {
                    t.task: (t.score or 0.0, t.points) for t in result.tasks if t.notebook == name
                }
                progress.record_exercise(
                    assignment,
                    name,
                    sum(s for s, _ in tasks.values()),
                    sum(m for _, m in tasks.values()),
                    tasks,
                )
    elif record and edition.is_student_edition():  # what a student edition can know
        for name in notebooks:
            progress.record_visible(
                assignment, name, {t.task: t.visible for t in result.tasks if t.notebook == name}
            )


def main(assignment: str, notebook: str | None, quick: bool) -> int:
    """``python -m labkit check``: print as it goes, then the per-task table."""

    def say(line: str) -> None:
        print(line, flush=True)

    from labkit.course import grading

    source = edition.assignment_folder(assignment)
    if source.is_dir() and not grading.is_autograded(source):  # a write-up, graded by hand
        print(
            f"{assignment} has no autograded tests: your instructor grades its answers by hand, "
            "with the rubric written under each question. Check a capstone project with "
            "`python -m labkit check capstone-<name>` (collab, marketplace, analytics)."
        )
        return 0
    result = check(assignment, notebook, full=not quick, echo=say)
    print()
    if result.full:
        print("Your score, per task (hidden tests included):")
    elif edition.is_student_edition():
        print("Visible tests (the hidden tests run when your instructor grades):")
    else:
        print("Visible tests:")
    print(result)
    if result.full:
        print(f"(checked in {result.seconds:.0f} s; recorded for `python -m labkit progress`)")
    sys.stdout.flush()
    return 0
