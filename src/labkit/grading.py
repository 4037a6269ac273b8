"""Run nbgrader's real pipeline and the instructor's workflow around it.

Usage::

    from labkit import grading
    with grading.scratch_course() as course:             # a temporary copy of grading/
        course.release("00-warmup")
        course.submit("00-warmup", "alice", course.source_dir("00-warmup"))
        course.submit("00-warmup", "bob", course.release_dir("00-warmup"))
        course.autograde("00-warmup")
        course.scores("00-warmup")["alice"].score

The instructor's workflow (``grading/INSTRUCTORS.md``; ``python -m labkit grade ...``)::

    course = grading.Course(grading.course_dir())
    course.release("00-warmup", exchange=Path("/srv/nbgrader/exchange"))
    course.collect_exchange("00-warmup", Path("/srv/nbgrader/exchange"))
    course.collect_folder("00-warmup", Path("~/mail/warmup").expanduser())
    course.autograde("00-warmup")                       # → seconds per submission
    course.feedback("00-warmup")                        # HTML, hidden tests left out
    course.export(Path("grades.csv"))

Collecting never overwrites a submission: every version received (from the exchange or
a folder) is kept under ``grading/archive/<assignment>/<student>/<timestamp>/`` and the
newest one is what ``submitted/`` holds. Also :func:`student_copies` (the ``exercises/``
folder learners open), :func:`apply_answers`, :func:`solution_cells`,
:func:`exchange_fetch` / :func:`exchange_submit` (a student's side of the exchange).
Scores come from nbgrader's gradebook, per notebook and per graded cell.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import filecmp
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from labkit import config

__all__ = [
    "AutogradeRun",
    "CollectReport",
    "Course",
    "GradingError",
    "Score",
    "apply_answers",
    "assignments",
    "course_dir",
    "exchange_fetch",
    "exchange_submit",
    "grade_cells",
    "read_grades_csv",
    "scratch_course",
    "solution_cells",
    "student_copies",
    "student_copies_dir",
]

# nbgrader's own format for timestamp.txt (what `nbgrader submit` writes).
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S.%f %Z"
# How files received by e-mail or from an LMS are named (see grading/INSTRUCTORS.md):
#   <student>/<notebook>.ipynb            a folder per student
#   <student>__<notebook>.ipynb           a flat folder, student id and notebook name
#                                          separated by two underscores
FOLDER_PATTERNS = (
    r"^(?P<student>[^/]+)/(?P<notebook>[^/]+\.ipynb)$",
    r"^(?P<student>[^/]+?)__(?P<notebook>[^/]+\.ipynb)$",
)
_STUDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]*$")


class GradingError(RuntimeError):
    """An nbgrader step failed; the message says which and what to do."""


def course_dir() -> Path:
    """The nbgrader course directory of the checkout (``grading/``)."""
    return config.project_root() / "grading"


def student_copies_dir() -> Path:
    """Where the student versions that learners open live (``exercises/``)."""
    return config.project_root() / "exercises"


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


@dataclass
class AutogradeRun:
    """What one ``nbgrader autograde`` call graded, and how long it took."""

    assignment: str
    students: list[str]
    seconds: float

    @property
    def seconds_per_submission(self) -> float:
        return self.seconds / max(1, len(self.students))

    def __str__(self) -> str:
        return (
            f"graded {len(self.students)} submission(s) of {self.assignment} in "
            f"{self.seconds:.1f} s ({self.seconds_per_submission:.1f} s per submission)"
        )


@dataclass
class CollectReport:
    """What a collection did: new or newer submissions placed in ``submitted/``,
    submissions already there, versions only archived (older than the one in use), and
    files that could not be matched to a student and a notebook."""

    collected: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    archived_only: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [
            f"collected (new or newer): {', '.join(self.collected) or '-'}",
            f"unchanged: {', '.join(self.unchanged) or '-'}",
        ]
        if self.archived_only:
            lines.append(f"kept in the archive only (older): {', '.join(self.archived_only)}")
        lines += [f"skipped: {reason}" for reason in self.skipped]
        return "\n".join(lines)


def _utc(timestamp: dt.datetime) -> dt.datetime:
    if timestamp.tzinfo is None:
        return timestamp.replace(tzinfo=dt.UTC)
    return timestamp.astimezone(dt.UTC)


def _parse_timestamp(text: str) -> dt.datetime:
    from nbgrader.utils import parse_utc

    return _utc(parse_utc(text.strip()))


def _format_timestamp(timestamp: dt.datetime) -> str:
    return _utc(timestamp).strftime(TIMESTAMP_FORMAT)


def _digest(folder: Path) -> str:
    """A hash of a submission's notebooks (names and bytes)."""
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.ipynb")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


class Course:
    """An nbgrader course directory, driven through nbgrader's own command line."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # ------------------------------------------------------------------ layout

    def source_dir(self, assignment: str) -> Path:
        return self.root / "source" / assignment

    def release_dir(self, assignment: str) -> Path:
        return self.root / "release" / assignment

    def submission_dir(self, assignment: str, student: str) -> Path:
        return self.root / "submitted" / student / assignment

    def archive_dir(self, assignment: str, student: str | None = None) -> Path:
        """Every version of every submission ever collected: ``archive/<assignment>/<student>/``."""
        folder = self.root / "archive" / assignment
        return folder / student if student else folder

    def feedback_dir(self, assignment: str, student: str) -> Path:
        return self.root / "feedback" / student / assignment

    def autograded_dir(self, assignment: str, student: str) -> Path:
        return self.root / "autograded" / student / assignment

    def notebooks(self, assignment: str) -> list[str]:
        """File names of the assignment's notebooks."""
        return sorted(p.name for p in self.source_dir(assignment).glob("*.ipynb"))

    def students(self, assignment: str) -> list[str]:
        """Students with a submission of ``assignment`` in ``submitted/``."""
        submitted = self.root / "submitted"
        if not submitted.is_dir():
            return []
        return sorted(p.name for p in submitted.iterdir() if (p / assignment).is_dir())

    @property
    def course_id(self) -> str:
        """``CourseDirectory.course_id`` from the course's ``nbgrader_config.py``."""
        from traitlets.config.loader import PyFileConfigLoader

        loaded = PyFileConfigLoader("nbgrader_config.py", path=str(self.root)).load_config()
        course_id = loaded.CourseDirectory.get("course_id")
        if not course_id:
            raise GradingError(f"{self.root / 'nbgrader_config.py'} sets no course_id")
        return course_id

    # ------------------------------------------------------------------ nbgrader

    def nbgrader(
        self, *args: str, cwd: Path | None = None, timeout: float = 1800
    ) -> subprocess.CompletedProcess:
        """Run ``nbgrader ARGS`` in the course directory; raise with its output on failure.

        A course config that fails to load is an error too (nbgrader only logs it and goes
        on with defaults: wrong folders, a 30 s cell timeout, no sandbox)."""
        return _run_nbgrader(args, cwd=cwd or self.root, timeout=timeout)

    def release(self, assignment: str, *, exchange: Path | str | None = None) -> Path:
        """``nbgrader generate_assignment``: the student version, without solutions and hidden
        tests, in ``release/``; with ``exchange`` (a folder, or ``""`` for the one nbgrader's
        config names) also ``nbgrader release_assignment`` so students can fetch it."""
        self.nbgrader("generate_assignment", assignment, "--force")
        if exchange is not None:
            self.nbgrader("release_assignment", assignment, "--force", *_exchange_args(exchange))
        return self.release_dir(assignment)

    def submit(self, assignment: str, student: str, notebooks: Path | Mapping[str, Path]) -> Path:
        """Place a student's notebooks where ``nbgrader autograde`` looks for them (replacing
        what is there: for tests; the instructor's way in is :meth:`collect_folder`).

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

    # ------------------------------------------------------------------ collecting

    def _archive(self, assignment: str, student: str, timestamp: dt.datetime, files: Path) -> bool:
        """Copy one received version into the archive unless it is there already."""
        stamp = _utc(timestamp).strftime("%Y%m%dT%H%M%S.%fZ")
        digest = _digest(files)
        student_archive = self.archive_dir(assignment, student)
        if any(
            _digest(existing) == digest for existing in self.archived_versions(assignment, student)
        ):
            return False
        target = student_archive / stamp
        suffix = 1
        while target.exists():  # same second, different content: keep both
            suffix += 1
            target = student_archive / f"{stamp}-{suffix}"
        target.mkdir(parents=True)
        for path in sorted(files.glob("*.ipynb")):
            shutil.copyfile(path, target / path.name)
        (target / "timestamp.txt").write_text(_format_timestamp(timestamp))
        return True

    def archived_versions(self, assignment: str, student: str) -> list[Path]:
        """The archived versions of one student's submission, oldest first."""
        folder = self.archive_dir(assignment, student)
        return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []

    def _current(self, assignment: str, student: str) -> tuple[dt.datetime | None, str | None]:
        folder = self.submission_dir(assignment, student)
        if not folder.is_dir():
            return None, None
        stamp_file = folder / "timestamp.txt"
        stamp = (
            _parse_timestamp(stamp_file.read_text())
            if stamp_file.is_file()
            else dt.datetime.fromtimestamp(folder.stat().st_mtime, dt.UTC)
        )
        return stamp, _digest(folder)

    def _accept(self, assignment: str, student: str, timestamp: dt.datetime, files: Path) -> str:
        """Archive a received version; make it the submission if it is the newest.

        Returns 'collected', 'unchanged' or 'archived_only'."""
        current_stamp, current_digest = self._current(assignment, student)
        if current_stamp is not None:  # what is in submitted/ must be in the archive too
            self._archive(
                assignment, student, current_stamp, self.submission_dir(assignment, student)
            )
        self._archive(assignment, student, timestamp, files)
        digest = _digest(files)
        if current_digest == digest:
            return "unchanged"
        if current_stamp is not None and _utc(timestamp) < current_stamp:
            return "archived_only"
        target = self.submission_dir(assignment, student)
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        for path in sorted(files.glob("*.ipynb")):
            shutil.copyfile(path, target / path.name)
        (target / "timestamp.txt").write_text(_format_timestamp(timestamp))
        return "collected"

    def collect_folder(
        self, assignment: str, folder: Path, *, patterns: Sequence[str] = FOLDER_PATTERNS
    ) -> CollectReport:
        """Collect notebooks received by e-mail or downloaded from an LMS.

        Files are matched (by their path relative to ``folder``) against ``patterns``,
        regular expressions with the named groups ``student`` and ``notebook``; by default
        ``<student>/<notebook>.ipynb`` or ``<student>__<notebook>.ipynb``. A submission's
        time is nbgrader's ``timestamp.txt`` next to the files (a folder per student), or
        else the newest file's modification time. Every version is archived; the newest
        becomes the submission. Re-running with the same files changes nothing."""
        folder = Path(folder)
        if not folder.is_dir():
            raise GradingError(f"no folder {folder}: save the received notebooks there first")
        expected = set(self.notebooks(assignment))
        compiled = [re.compile(p) for p in patterns]
        received: dict[str, dict[str, Path]] = {}
        report = CollectReport()
        for path in sorted(folder.rglob("*.ipynb")):
            relative = path.relative_to(folder).as_posix()
            if ".ipynb_checkpoints" in relative:
                continue
            match = next((m for p in compiled if (m := p.match(relative))), None)
            if not match:
                report.skipped.append(
                    f"{relative}: name it <student>__<notebook>.ipynb or <student>/<notebook>.ipynb"
                )
                continue
            student, notebook = match["student"], match["notebook"]
            if not _STUDENT_ID.match(student):
                report.skipped.append(f"{relative}: {student!r} is not a usable student id")
            elif notebook not in expected:
                report.skipped.append(
                    f"{relative}: {assignment} has no notebook {notebook!r} "
                    f"(expected {', '.join(sorted(expected))})"
                )
            elif notebook in received.setdefault(student, {}):
                report.skipped.append(f"{relative}: a second {notebook} for {student}")
            else:
                received[student][notebook] = path
        for student, files in sorted(received.items()):
            if not files:
                continue
            stamp_file = next(iter(files.values())).parent / "timestamp.txt"
            if stamp_file.is_file() and stamp_file.parent != folder:
                timestamp = _parse_timestamp(stamp_file.read_text())
            else:
                newest = max(p.stat().st_mtime for p in files.values())
                timestamp = dt.datetime.fromtimestamp(newest, dt.UTC)
            with tempfile.TemporaryDirectory(prefix="labkit-collect-") as staging:
                for name, path in files.items():
                    shutil.copyfile(path, Path(staging) / name)
                outcome = self._accept(assignment, student, timestamp, Path(staging))
            getattr(report, outcome).append(student)
        return report

    def collect_exchange(
        self, assignment: str, exchange: Path | str = "", *, check_owner: bool = True
    ) -> CollectReport:
        """Collect what students submitted through nbgrader's exchange (``nbgrader collect``).

        Every version in the exchange's inbound folder is archived first (nbgrader itself
        only takes the newest per student); then ``nbgrader collect --update`` puts the
        newest into ``submitted/``. ``check_owner=False`` silences nbgrader's warning when
        one OS user submitted for several students (a simulation)."""
        root = Path(exchange) if exchange else self._configured_exchange()
        inbound = root / self.course_id / "inbound"
        if not inbound.is_dir():
            raise GradingError(
                f"no exchange inbound folder {inbound}: release the assignment to this "
                "exchange first (`python -m labkit grade release A --exchange DIR`)"
            )
        before = {s: self._current(assignment, s) for s in self.students(assignment)}
        for student, (stamp, _) in before.items():  # archived before nbgrader replaces it
            self._archive(assignment, student, stamp, self.submission_dir(assignment, student))
        senders = set()
        for entry in sorted(inbound.glob(f"*+{assignment}+*")):
            student, _, rest = entry.name.partition(f"+{assignment}+")
            stamp_file = entry / "timestamp.txt"
            text = stamp_file.read_text() if stamp_file.is_file() else rest.split("+")[0]
            self._archive(assignment, student, _parse_timestamp(text), entry)
            senders.add(student)
        self.nbgrader(
            "collect", assignment, "--update",
            f"--ExchangeCollect.check_owner={check_owner}", *_exchange_args(root),
        )  # fmt: skip
        report = CollectReport()
        for student in sorted(senders):
            stamp, digest = self._current(assignment, student)
            self._archive(assignment, student, stamp, self.submission_dir(assignment, student))
            if before.get(student, (None, None))[1] == digest:
                report.unchanged.append(student)
            else:
                report.collected.append(student)
        return report

    def _configured_exchange(self) -> Path:
        from traitlets.config.loader import PyFileConfigLoader

        loaded = PyFileConfigLoader("nbgrader_config.py", path=str(self.root)).load_config()
        return Path(loaded.Exchange.get("root", "/srv/nbgrader/exchange"))

    # ------------------------------------------------------------------ grading

    def autograde(
        self, assignment: str, student: str | None = None, *, extra: Sequence[str] = ()
    ) -> AutogradeRun:
        """``nbgrader autograde --force``: every submitted student (or one), each notebook in
        its own sandbox (see :mod:`labkit.nbgrader_ext`). Returns the time it took."""
        students = [student] if student else self.students(assignment)
        if not students:
            raise GradingError(
                f"no submissions of {assignment} in {self.root / 'submitted'}: collect them first"
            )
        args = ["autograde", assignment, "--force", "--create", *extra]
        if student:
            args.append(f"--student={student}")
        started = time.perf_counter()
        self.nbgrader(*args)
        return AutogradeRun(assignment, students, time.perf_counter() - started)

    def feedback(self, assignment: str, *, exchange: Path | str | None = None) -> list[Path]:
        """``nbgrader generate_feedback --force`` (HTML per student and notebook, hidden tests
        left out); with ``exchange``, also ``nbgrader release_feedback`` for the students who
        submitted through it."""
        self.nbgrader("generate_feedback", assignment, "--force")
        if exchange is not None:
            # Only submissions that came through the exchange can fetch feedback from it
            # (nbgrader keys it by their submission secret); the others get it by e-mail.
            by_mail = [
                student
                for student in self.students(assignment)
                if not (self.feedback_dir(assignment, student) / "submission_secret.txt").exists()
            ]
            self.nbgrader(
                "release_feedback", assignment, *_exchange_args(exchange),
                f"--CourseDirectory.student_id_exclude={','.join(by_mail)}",
            )  # fmt: skip
        return sorted((self.root / "feedback").glob(f"*/{assignment}/*.html"))

    def export(self, to: Path, assignment: str | None = None) -> Path:
        """Grades to a CSV file, one row per student and assignment: what ``nbgrader export``
        writes (its own CSV plug-in, run in this process on the course's gradebook)."""
        from nbgrader.api import Gradebook
        from nbgrader.plugins import CsvExportPlugin

        to = Path(to).resolve()
        to.parent.mkdir(parents=True, exist_ok=True)
        plugin = CsvExportPlugin(to=str(to), assignment=[assignment] if assignment else [])
        with Gradebook(f"sqlite:///{self.root / 'gradebook.db'}") as gradebook:
            plugin.export(gradebook)
        return to

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


def read_grades_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV written by :meth:`Course.export`."""
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _exchange_args(exchange: Path | str) -> list[str]:
    return [f"--Exchange.root={Path(exchange).resolve()}"] if exchange else []


# `python -m nbgrader`, minus ~1.5 s per call: jsonschema's optional IRI-format checker
# (rfc3987_syntax, which builds a parser at import) is never used by nbformat's schema.
_NBGRADER = (
    "import sys; sys.modules['rfc3987_syntax'] = None; sys.argv[0] = 'nbgrader'; "
    "from nbgrader.apps.nbgraderapp import main; main()"
)


def _tool_env() -> dict[str, str]:
    env = dict(os.environ)
    # nbgrader runs `alembic` by name when it creates a gradebook.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def _empty_gradebook() -> Path:
    """An empty gradebook, made once per nbgrader version and copied into scratch courses
    (creating one runs `alembic` in a subprocess: ~4 s)."""
    import importlib.metadata

    version = importlib.metadata.version("nbgrader")
    cached = config.state_dir() / "nbgrader" / f"empty-gradebook-{version}.db"
    if not cached.is_file():
        cached.parent.mkdir(parents=True, exist_ok=True)
        staging = cached.with_name(f".{cached.name}.{os.getpid()}")
        staging.unlink(missing_ok=True)
        script = (
            "import sys; sys.modules['rfc3987_syntax'] = None; "
            "from nbgrader.api import Gradebook; Gradebook(sys.argv[1]).close()"
        )
        subprocess.run(
            [sys.executable, "-c", script, f"sqlite:///{staging}"],
            env=_tool_env(),
            check=True,
            capture_output=True,
            timeout=300,
        )
        os.replace(staging, cached)  # atomic: concurrent makers both succeed
    return cached


def _run_nbgrader(args: Sequence[str], *, cwd: Path, timeout: float = 1800):
    proc = subprocess.run(
        [sys.executable, "-c", _NBGRADER, *args],
        cwd=cwd,
        env=_tool_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    config_broken = "Exception while loading config file" in proc.stderr
    if proc.returncode != 0 or config_broken:
        what = "could not load its config" if config_broken else f"failed (exit {proc.returncode})"
        raise GradingError(
            f"nbgrader {' '.join(args)} {what}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


def exchange_fetch(
    assignment: str, home: Path, exchange: Path, course_id: str, *, cache: Path | None = None
) -> Path:
    """A student's ``nbgrader fetch_assignment``: the released notebooks into ``home/<assignment>``."""
    home.mkdir(parents=True, exist_ok=True)
    args = ["fetch_assignment", assignment, f"--course={course_id}", *_exchange_args(exchange)]
    if cache:
        args.append(f"--Exchange.cache={cache}")
    _run_nbgrader(args, cwd=home)
    return home / assignment


def exchange_submit(
    assignment: str,
    home: Path,
    exchange: Path,
    course_id: str,
    *,
    student: str | None = None,
    cache: Path | None = None,
) -> None:
    """A student's ``nbgrader submit`` of ``home/<assignment>`` (``student`` overrides the
    OS user name, as when one account simulates several students)."""
    args = ["submit", assignment, f"--course={course_id}", *_exchange_args(exchange)]
    if student:
        args.append(f"--student={student}")
    if cache:
        args.append(f"--Exchange.cache={cache}")
    _run_nbgrader(args, cwd=home)


@contextlib.contextmanager
def scratch_course(root: Path | None = None) -> Iterator[Course]:
    """A temporary copy of the course (config + sources, and an empty gradebook), removed
    afterwards."""
    source_root = root or course_dir()
    with tempfile.TemporaryDirectory(prefix="labkit-course-") as folder:
        target = Path(folder)
        shutil.copyfile(source_root / "nbgrader_config.py", target / "nbgrader_config.py")
        shutil.copytree(source_root / "source", target / "source")
        shutil.copyfile(_empty_gradebook(), target / "gradebook.db")
        yield Course(target)


# --------------------------------------------------------------------------- student copies


def _answer_sources(path: Path) -> dict[str, str]:
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    return {
        c.metadata["nbgrader"]["grade_id"]: c.source
        for c in notebook.cells
        if c.metadata.get("nbgrader", {}).get("solution")
    }


def student_copies(
    target: Path | None = None,
    names: Sequence[str] | None = None,
    *,
    root: Path | None = None,
    force: bool = False,
) -> list[Path]:
    """(Re)generate the student versions learners open: ``exercises/<assignment>/*.ipynb``,
    made by ``nbgrader generate_assignment`` from ``grading/source``. A copy whose answer
    cells differ from the fresh stubs holds a learner's work: it is left alone (and the
    call fails) unless ``force``."""
    target = Path(target) if target else student_copies_dir()
    written: list[Path] = []
    refused: list[str] = []
    with scratch_course(root) as course:
        for assignment in names or assignments(course.root):
            release = course.release(assignment)
            for path in sorted(p for p in release.rglob("*") if p.is_file()):
                destination = target / assignment / path.relative_to(release)
                if destination.exists() and path.suffix == ".ipynb" and not force:
                    if filecmp.cmp(path, destination, shallow=False):
                        continue
                    if _answer_sources(destination) != _answer_sources(path):
                        refused.append(str(destination))
                        continue
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, destination)
                written.append(destination)
    if refused:
        raise GradingError(
            "these student copies hold answers (a learner's work?) and were not replaced: "
            f"{', '.join(refused)}. Move them away, or pass force=True (--force)."
        )
    return written


# --------------------------------------------------------------------------- notebook cells


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


def grade_cells(notebook_path: Path) -> dict[str, float]:
    """The autograded test cells of a notebook: grade_id → points, in cell order."""
    import nbformat

    notebook = nbformat.read(notebook_path, as_version=4)
    return {
        c.metadata["nbgrader"]["grade_id"]: float(c.metadata["nbgrader"].get("points", 0))
        for c in notebook.cells
        if c.metadata.get("nbgrader", {}).get("grade")
    }


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
