"""Run nbgrader's real pipeline and the instructor's workflow around it.

For example, the solutions and an untouched student version, graded by nbgrader::

    >>> from labkit.course import grading
    >>> grading.assignments()
    ['00-warmup', '01-performance', ...]
    >>> with grading.scratch_course() as course:  # a temporary copy of grading/
    ...     release = course.release("00-warmup")
    ...     _ = course.submit("00-warmup", "alice", course.source_dir("00-warmup"))
    ...     _ = course.submit("00-warmup", "bob", release)
    ...     run = course.autograde("00-warmup")
    ...     scores = course.scores("00-warmup")
    >>> scores["alice"].score, scores["bob"].score, scores["alice"].max_score
    (6.0, 0.0, 6.0)

The instructor's workflow (``grading/INSTRUCTORS.md``; ``python -m labkit grade ...``)::

    course = grading.Course(grading.course_dir())
    course.release("00-warmup", exchange=Path("/srv/nbgrader/exchange"))
    course.collect_exchange("00-warmup", Path("/srv/nbgrader/exchange"))
    course.collect_folder("00-warmup", Path("~/mail/warmup").expanduser())
    course.autograde("00-warmup")                       # → seconds per submission
    course.feedback("00-warmup")                        # HTML, hidden tests left out
    course.export()                                     # → grading/exports/grades.csv

Collecting never overwrites a submission: every version received (from the exchange or
a folder) is kept under ``grading/archive/<assignment>/<student>/<timestamp>/`` and the
newest copy of each notebook is what ``submitted/`` holds. Nothing is left out without a
word: skipped files, missing notebooks and ungraded students are reported, and
:meth:`Course.export` refuses to write grades where git would commit them. Also :func:`student_copies` (the ``exercises/``
folder learners open), :func:`apply_answers`, :func:`solution_cells`,
:func:`exchange_fetch` / :func:`exchange_submit` (a student's side of the exchange).
Scores come from nbgrader's gradebook, per notebook and per graded cell.

Every nbgrader command is nbgrader's own ``main()``, forked from one process per Python
process that imported nbgrader once (~1.2 CPU-s saved per command; Linux;
``LABKIT_NBGRADER_FORK_SERVER=0`` starts a new process each time instead), and each
graded notebook's kernel is forked from a template that imported ipykernel and the
course's libraries once (:mod:`labkit.course.forkkernel`; ``LABKIT_KERNEL_FORK_SERVER=0``
starts plain kernels).
``scratch_course(released=A)`` copies one release of ``A`` made once per process.
"""

from __future__ import annotations

import atexit
import contextlib
import csv
import datetime as dt
import filecmp
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from labkit import config
from labkit.course import cells
from labkit.errors import GradingError

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
#   <student>/<assignment>/<notebook>.ipynb   nbgrader's own layout (its submitted/ folder)
FOLDER_PATTERNS = (
    r"^(?P<student>[^/]+)/(?P<notebook>[^/]+\.ipynb)$",
    r"^(?P<student>[^/]+?)__(?P<notebook>[^/]+\.ipynb)$",
    r"^(?P<student>[^/]+)/(?P<assignment>[^/]+)/(?P<notebook>[^/]+\.ipynb)$",
)
_LAYOUTS = (
    "<student>__<notebook>.ipynb, <student>/<notebook>.ipynb or "
    "<student>/<assignment>/<notebook>.ipynb"
)
_STUDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]*$")
# Archive folder names: the time a version was received, e.g. 20260301T170500.000000Z
# (then -2, -3, ... for different versions received at the same time, in arrival order).
_ARCHIVE_STAMP = "%Y%m%dT%H%M%S.%fZ"


def course_dir() -> Path:
    """The nbgrader course directory of the checkout (``grading/``)."""
    return config.project_root() / "grading"


def student_copies_dir() -> Path:
    """Where the student versions that learners open live (``exercises/``)."""
    return config.project_root() / "exercises"


def assignments(root: Path | None = None, *, autograded: bool | None = None) -> list[str]:
    """Names of the assignments under ``source/``, in order. ``autograded=True``: only those
    with autograded test cells (exercises); ``False``: only those graded by hand (the
    capstones' write-ups, whose answers the instructor grades in formgrader)."""
    source = (root or course_dir()) / "source"
    names = sorted(p.name for p in source.iterdir() if p.is_dir() and not p.name.startswith("."))
    if autograded is None:
        return names
    return [name for name in names if is_autograded(source / name) == autograded]


def is_autograded(folder: Path) -> bool:
    """Whether an assignment's source folder has an autograded test cell in a notebook."""
    return any(cells.tests(path) for path in sorted(Path(folder).glob("*.ipynb")))


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
    """What a collection did: students whose submission in ``submitted/`` is new or newer,
    and those whose submission stayed the same; students of whom a version arrived that is
    older than the one graded (archived only: said once, when it arrives); notes (which
    file that was, copies with the same time); notebooks missing from a submission; and
    files not collected, with the reason (these make ``grade collect`` fail)."""

    collected: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    archived_only: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    missing: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [
            f"collected (new or newer): {', '.join(self.collected) or '-'}",
            f"unchanged: {', '.join(self.unchanged) or '-'}",
        ]
        lines += [f"  {note}" for note in self.notes]
        lines += [
            f"missing: {student} sent no {', '.join(names)} (scores 0; the feedback says so)"
            for student, names in self.missing.items()
        ]
        lines += [f"skipped, not collected: {reason}" for reason in self.skipped]
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


def _notebook_files(files: Path | Mapping[str, Path]) -> dict[str, Path]:
    """File name → path of a folder's notebooks (or of a mapping), sorted by name."""
    if isinstance(files, Mapping):
        return dict(sorted(files.items()))
    return {p.name: p for p in sorted(Path(files).glob("*.ipynb"))}


def _digest(files: Mapping[str, Path]) -> str:
    """A hash of a submission's notebooks (names and bytes)."""
    digest = hashlib.sha256()
    for name, path in sorted(files.items()):
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _archive_order(version: Path) -> tuple[str, int]:
    """Sort key of an archive folder: its time, then its arrival order at that time."""
    stamp, _, suffix = version.name.partition("-")
    return stamp, int(suffix) if suffix.isdigit() else 1


def _version_time(version: Path) -> dt.datetime:
    """When an archived version was received (its timestamp.txt, else its folder name)."""
    stamp_file = version / "timestamp.txt"
    if stamp_file.is_file():
        return _parse_timestamp(stamp_file.read_text())
    stamp = version.name.partition("-")[0]
    return dt.datetime.strptime(stamp, _ARCHIVE_STAMP).replace(tzinfo=dt.UTC)


def _usable_id(student: str) -> str:
    """A usable student id close to ``student`` (for the message that rejects it)."""
    usable = re.sub(r"[^A-Za-z0-9._@-]+", ".", student).strip("._@-")
    return usable or "ada.lovelace"


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
        self.known(assignment)
        self.nbgrader("generate_assignment", assignment, "--force")
        if exchange is not None:
            self.nbgrader("release_assignment", assignment, "--force", *_exchange_args(exchange))
            from labkit.course.exchange import protect_root

            protect_root(Path(exchange).resolve() if exchange else self.exchange_root())
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

    def known(self, assignment: str) -> str:
        """``assignment``, if the course has it; else a :class:`GradingError` that lists the
        assignments it has (a typo must not read as "nothing collected yet")."""
        names = assignments(self.root) if (self.root / "source").is_dir() else []
        if assignment not in names:
            raise GradingError(
                f"no such assignment {assignment!r} (known: {', '.join(names) or 'none'}): "
                f"check the name (the folders of {self.root / 'source'})"
            )
        return assignment

    def _archive(
        self,
        assignment: str,
        student: str,
        timestamp: dt.datetime,
        files: Path | Mapping[str, Path],
    ) -> Path | None:
        """Copy one received version (a folder of notebooks, or file name → path) into the
        archive unless it is there already (the same notebooks received at the same time: a
        re-run). Returns its archive folder, or None when it was there already."""
        items = _notebook_files(files)
        digest = _digest(items)
        if any(
            _version_time(existing) == _utc(timestamp)
            and _digest(_notebook_files(existing)) == digest
            for existing in self.archived_versions(assignment, student)
        ):
            return None
        stamp = _utc(timestamp).strftime(_ARCHIVE_STAMP)
        student_archive = self.archive_dir(assignment, student)
        target = student_archive / stamp
        suffix = 1
        while target.exists():  # same time, different content: keep both, in arrival order
            suffix += 1
            target = student_archive / f"{stamp}-{suffix}"
        target.mkdir(parents=True)
        for name, path in items.items():
            shutil.copyfile(path, target / name)
        (target / "timestamp.txt").write_text(_format_timestamp(timestamp))
        return target

    def archived_versions(self, assignment: str, student: str) -> list[Path]:
        """The archived versions of one student's submission, oldest first (same time: in
        the order they were archived)."""
        folder = self.archive_dir(assignment, student)
        if not folder.is_dir():
            return []
        return sorted((p for p in folder.iterdir() if p.is_dir()), key=_archive_order)

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
        return stamp, _digest(_notebook_files(folder))

    def _keep_current(self, assignment: str, student: str) -> None:
        """Archive what ``submitted/`` holds unless every notebook of it is archived already."""
        stamp, _ = self._current(assignment, student)
        files = _notebook_files(self.submission_dir(assignment, student)) if stamp else {}
        if not files:
            return
        archived = {
            (path.name, _file_digest(path))
            for version in self.archived_versions(assignment, student)
            for path in version.glob("*.ipynb")
        }
        if any((name, _file_digest(path)) not in archived for name, path in files.items()):
            self._archive(assignment, student, stamp, files)

    def _newest_copies(self, assignment: str, student: str) -> dict[str, Path]:
        """For each notebook of the assignment, the archived version with its newest copy
        (same time: the one archived last)."""
        expected = set(self.notebooks(assignment))
        chosen: dict[str, Path] = {}
        for version in self.archived_versions(assignment, student):
            for path in version.glob("*.ipynb"):
                if path.name in expected:
                    chosen[path.name] = version
        return dict(sorted(chosen.items()))

    def _install(self, assignment: str, student: str, chosen: Mapping[str, Path]) -> bool:
        """Make ``submitted/`` hold the chosen copies; False if it held them already."""
        files = {name: version / name for name, version in chosen.items()}
        target = self.submission_dir(assignment, student)
        if target.is_dir() and _digest(_notebook_files(target)) == _digest(files):
            return False
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        for name, path in files.items():
            shutil.copyfile(path, target / name)
        newest = max(_version_time(version) for version in chosen.values())
        (target / "timestamp.txt").write_text(_format_timestamp(newest))
        return True

    def missing_notebooks(self, assignment: str, student: str) -> list[str]:
        """The notebooks of ``assignment`` that ``student``'s submission lacks."""
        folder = self.submission_dir(assignment, student)
        return [name for name in self.notebooks(assignment) if not (folder / name).is_file()]

    def collect_folder(
        self, assignment: str, folder: Path, *, patterns: Sequence[str] = FOLDER_PATTERNS
    ) -> CollectReport:
        """Collect notebooks received by e-mail or downloaded from an LMS.

        Files are matched (by their path relative to ``folder``) against ``patterns``,
        regular expressions with the named groups ``student`` and ``notebook`` (and
        optionally ``assignment``); by default ``<student>/<notebook>.ipynb``,
        ``<student>__<notebook>.ipynb`` or nbgrader's ``<student>/<assignment>/<notebook>.ipynb``.
        The files of one student in one folder are one version, received at the time in an
        nbgrader ``timestamp.txt`` beside them (not for the flat names), else at the newest
        file's modification time. Every version is archived; for each notebook the newest
        copy (of everything archived for the student) becomes the submission, and on equal
        times the one archived last: in one collection, the file whose path sorts last.
        Re-running with the same files changes nothing and reports nothing new."""
        self.known(assignment)
        folder = Path(folder)
        if not folder.is_dir():
            raise GradingError(f"no folder {folder}: save the received notebooks there first")
        expected = set(self.notebooks(assignment))
        compiled = [re.compile(p) for p in patterns]
        groups: dict[tuple[str, str, int], dict[str, Path]] = {}
        report = CollectReport()
        for path in sorted(folder.rglob("*.ipynb")):
            relative = path.relative_to(folder).as_posix()
            if ".ipynb_checkpoints" in relative:
                continue
            match = next((m for p in compiled if (m := p.match(relative))), None)
            if not match:
                report.skipped.append(f"{relative}: name it {_LAYOUTS}")
                continue
            found = match.groupdict()
            student, notebook = found["student"], found["notebook"]
            if found.get("assignment") not in (None, assignment):
                report.skipped.append(
                    f"{relative}: in a folder for {found['assignment']!r}, not {assignment} "
                    f"(name it {_LAYOUTS})"
                )
            elif not _STUDENT_ID.match(student):
                usable = _usable_id(student)
                report.skipped.append(
                    f"{relative}: {student!r} is not a usable student id: use only letters, "
                    "digits, '.', '_', '@' and '-', starting with a letter or digit; e.g. "
                    f"rename it to {relative.replace(student, usable, 1)}"
                )
            elif notebook not in expected:
                report.skipped.append(
                    f"{relative}: {assignment} has no notebook {notebook!r} "
                    f"(expected {', '.join(sorted(expected))})"
                )
            else:
                place, n = path.parent.relative_to(folder).as_posix(), 0
                while notebook in groups.get((student, place, n), {}):
                    n += 1  # a pattern of your own matched two files to one notebook
                groups.setdefault((student, place, n), {})[notebook] = path
        received: dict[str, list[tuple[dt.datetime, str, dict[str, Path]]]] = {}
        for (student, place, _), files in sorted(
            groups.items(), key=lambda item: min(p.as_posix() for p in item[1].values())
        ):
            label = ", ".join(sorted(p.relative_to(folder).as_posix() for p in files.values()))
            stamp_file = folder / place / "timestamp.txt"
            if place != "." and stamp_file.is_file():
                try:
                    timestamp = _parse_timestamp(stamp_file.read_text())
                except (ValueError, OverflowError) as exc:
                    report.skipped.append(
                        f"{label}: {stamp_file.relative_to(folder)} holds no time nbgrader can "
                        f"read ({exc}): write it as '2026-03-01 17:05:00.000000 UTC', or delete "
                        "it to use the files' modification time"
                    )
                    continue
            else:
                newest = max(p.stat().st_mtime for p in files.values())
                timestamp = dt.datetime.fromtimestamp(newest, dt.UTC)
            received.setdefault(student, []).append((timestamp, label, files))
        for student, versions in sorted(received.items()):
            self._keep_current(assignment, student)
            new: dict[Path, str] = {}
            for timestamp, label, files in versions:
                archived = self._archive(assignment, student, timestamp, files)
                if archived:
                    new[archived] = label
            chosen = self._newest_copies(assignment, student)
            changed = self._install(assignment, student, chosen)
            (report.collected if changed else report.unchanged).append(student)
            for version, label in new.items():
                when = _version_time(version)
                tied = any(  # reported as a tie below, not as older
                    _version_time(chosen[path.name]) == when
                    for path in version.glob("*.ipynb")
                    if path.name in chosen
                )
                if version not in chosen.values() and not tied:
                    if student not in report.archived_only:
                        report.archived_only.append(student)
                    report.notes.append(
                        f"{student}: {label} (received {_format_timestamp(when)}) "
                        "is older than the copy being graded: kept in the archive only"
                    )
            report.notes += self._ties(assignment, student, chosen, new)
            if missing := self.missing_notebooks(assignment, student):
                report.missing[student] = missing
        return report

    def _ties(
        self, assignment: str, student: str, chosen: Mapping[str, Path], new: Mapping[Path, str]
    ) -> list[str]:
        """Notes on notebooks of which two different copies have the same time (said when one
        of them has just arrived)."""

        def where(version: Path) -> str:
            return new.get(version) or str(version.relative_to(self.root))

        notes = []
        versions = self.archived_versions(assignment, student)
        for name, version in chosen.items():
            when = _version_time(version)
            digest = _file_digest(version / name)
            rivals = [
                other
                for other in versions
                if other != version
                and (other / name).is_file()
                and _version_time(other) == when
                and _file_digest(other / name) != digest
            ]
            if rivals and any(v in new for v in (version, *rivals)):
                notes.append(
                    f"{student}: {len(rivals) + 1} different copies of {name} with the same time "
                    f"({_format_timestamp(when)}): grading {where(version)}, the one collected "
                    f"last (in one collection: whose path sorts last); the other(s) "
                    f"({', '.join(where(v) for v in rivals)}) are archived — check which one "
                    "the student meant"
                )
        return notes

    def collect_exchange(
        self, assignment: str, exchange: Path | str = "", *, check_owner: bool = True
    ) -> CollectReport:
        """Collect what students submitted through nbgrader's exchange (``nbgrader collect``).

        Every version in the exchange's inbound folder is archived first (nbgrader itself
        only takes the newest per student); then ``nbgrader collect --update`` puts the
        newest into ``submitted/``. ``check_owner=False`` silences nbgrader's warning when
        one OS user submitted for several students (a simulation)."""
        self.known(assignment)
        root = Path(exchange) if exchange else self.exchange_root()
        inbound = root / self.course_id / "inbound"
        if not inbound.is_dir():
            raise GradingError(
                f"no exchange inbound folder {inbound}: release the assignment to this "
                "exchange first (`python -m labkit grade release A --exchange DIR`)"
            )
        before = {s: self._current(assignment, s) for s in self.students(assignment)}
        for student in before:  # archived before nbgrader replaces it
            self._keep_current(assignment, student)
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
            _, digest = self._current(assignment, student)
            self._keep_current(assignment, student)
            if before.get(student, (None, None))[1] == digest:
                report.unchanged.append(student)
            else:
                report.collected.append(student)
            if missing := self.missing_notebooks(assignment, student):
                report.missing[student] = missing
        return report

    def exchange_root(self) -> Path:
        """The exchange's root nbgrader uses here: ``c.Exchange.root`` from the course's
        ``nbgrader_config.py``, else from the Jupyter config folders nbgrader also reads
        (``~/.jupyter``, ``/etc/jupyter``...: on a shared server the students' config may
        name it there), else nbgrader's default ``/srv/nbgrader/exchange``."""
        from jupyter_core.paths import jupyter_config_path
        from traitlets.config.loader import ConfigFileNotFound, PyFileConfigLoader

        root = "/srv/nbgrader/exchange"
        # The first folder of jupyter_config_path() wins, and the course's over all of them.
        for folder in [*reversed(jupyter_config_path()), str(self.root)]:
            try:
                loaded = PyFileConfigLoader("nbgrader_config.py", path=folder).load_config()
            except ConfigFileNotFound:
                continue
            root = loaded.Exchange.get("root", root)
        return Path(root)

    # ------------------------------------------------------------------ grading

    def autograde(
        self, assignment: str, student: str | None = None, *, extra: Sequence[str] = ()
    ) -> AutogradeRun:
        """``nbgrader autograde --force``: every submitted student (or one), each notebook in
        its own sandbox (see :mod:`labkit.course.nbgrader_ext`). Returns the time it took."""
        self.known(assignment)
        collected = self.students(assignment)
        if not collected:
            raise GradingError(
                f"no submissions of {assignment} in {self.root / 'submitted'}: collect them first"
            )
        if student and student not in collected:
            raise GradingError(
                f"{student} has no submission of {assignment}; collected: {', '.join(collected)}"
            )
        students = [student] if student else collected
        self._private_for_grading()
        args = ["autograde", assignment, "--force", "--create", *extra]
        if student:
            args.append(f"--student={student}")
        started = time.perf_counter()
        self.nbgrader(*args)
        return AutogradeRun(assignment, students, time.perf_counter() - started)

    def _private_for_grading(self) -> None:
        """As root, graded kernels run as other users (:mod:`labkit.course.gradeuser`): the
        course folder (gradebook, submissions, archive, feedback, hidden tests) becomes
        reachable by its owner alone, and the files nbgrader writes are private too."""
        from labkit.course import gradeuser

        if gradeuser.wanted():
            os.chmod(self.root, 0o700)

    def feedback(self, assignment: str, *, exchange: Path | str | None = None) -> list[Path]:
        """``nbgrader generate_feedback --force`` (HTML per student and notebook, hidden tests
        left out); with ``exchange``, also ``nbgrader release_feedback`` for the students who
        submitted through it. A notebook missing from a submission gets a page that says it
        was not received (nbgrader makes none)."""
        self.known(assignment)
        if not self.students(assignment):
            raise GradingError(
                f"no submissions of {assignment} in {self.root / 'submitted'}: collect them first"
            )
        self._refuse_hand_grades_pending([assignment], "sent back as feedback")
        self.nbgrader("generate_feedback", assignment, "--force")
        self._missing_feedback(assignment)
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
            # nbgrader releases feedback readable by everyone who can guess its name: as
            # root, each page is given to its student alone (labkit.course.exchange).
            from labkit.course.exchange import restrict_feedback

            restrict_feedback(
                Path(exchange).resolve() if exchange else self.exchange_root(),
                self.course_id,
                {
                    student: self.feedback_dir(assignment, student)
                    for student in self.students(assignment)
                    if student not in by_mail
                },
            )
        return sorted((self.root / "feedback").glob(f"*/{assignment}/*.html"))

    def _missing_feedback(self, assignment: str) -> list[Path]:
        """A feedback page for each notebook missing from a graded submission."""
        pages = []
        for student in self.students(assignment):
            if not self.autograded_dir(assignment, student).is_dir():
                continue  # not graded: no feedback at all (``ungraded`` names them)
            for name in self.missing_notebooks(assignment, student):
                stem = Path(name).stem
                points = sum(grade_cells(self.source_dir(assignment) / name).values())
                page = self.feedback_dir(assignment, student) / f"{stem}.html"
                page.parent.mkdir(parents=True, exist_ok=True)
                page.write_text(_MISSING_PAGE.format(
                    stem=stem, name=name, assignment=assignment, points=points
                ))  # fmt: skip
                pages.append(page)
        return pages

    def ungraded(self, assignment: str) -> list[str]:
        """Collected students of ``assignment`` with no grade in the gradebook, or one
        computed from an older copy than the one collected since."""
        from nbgrader.api import Gradebook, MissingEntry

        collected = self.students(assignment)
        if not collected:
            return []
        with Gradebook(f"sqlite:///{self.root / 'gradebook.db'}") as gradebook:
            try:
                submissions = gradebook.assignment_submissions(assignment)
            except MissingEntry:  # never released or graded with this gradebook
                submissions = []
            graded = {submission.student.id: submission.timestamp for submission in submissions}
        stale = []
        for student in collected:
            stamp_file = self.submission_dir(assignment, student) / "timestamp.txt"
            if student not in graded:
                stale.append(student)
            elif stamp_file.is_file() and (
                graded[student] is None
                or _utc(graded[student]) != _parse_timestamp(stamp_file.read_text())
            ):
                stale.append(student)
        return stale

    def awaiting_hand_grades(self, assignment: str) -> dict[str, list[str]]:
        """Student → the written answers (``notebook:grade id``) that wait for the
        instructor's hand grade in formgrader (a write-up's answers; an answer left blank
        scores 0 by itself). A hand grade given before autograde ran again still counts."""
        from nbgrader.api import Gradebook, MissingEntry

        waiting: dict[str, list[str]] = {}
        with Gradebook(f"sqlite:///{self.root / 'gradebook.db'}") as gradebook:
            try:
                submissions = gradebook.assignment_submissions(assignment)
            except MissingEntry:
                return {}
            for submission in submissions:
                cells = [
                    f"{notebook.name}:{grade.name}"
                    for notebook in submission.notebooks
                    for grade in notebook.grades
                    if grade.needs_manual_grade and grade.manual_score is None
                ]
                if cells:
                    waiting[submission.student.id] = sorted(cells)
        return waiting

    def _refuse_hand_grades_pending(self, names: Sequence[str], what: str) -> None:
        pending = {name: found for name in names if (found := self.awaiting_hand_grades(name))}
        if not pending:
            return
        lines = [
            f"  {name}: {', '.join(f'{s} ({len(c)})' for s, c in sorted(found.items()))}"
            for name, found in pending.items()
        ]
        raise GradingError(
            f"not {what}: written answers wait for your grade by hand (student (answers)):\n"
            + "\n".join(lines)
            + "\nGrade them in formgrader (`make lab-instructor`, Formgrader, Gradebook, the "
            "assignment, each submission marked as needing manual grading); their 0 would "
            "otherwise count as a grade. Assignments graded without them can be exported alone "
            "(`grade export 00-warmup`)."
        )

    def default_export(self, assignment: str | None = None) -> Path:
        """Where grades go without ``--to``: ``exports/`` in the course folder (git-ignored)."""
        return self.root / "exports" / (f"grades-{assignment}.csv" if assignment else "grades.csv")

    def export(self, to: Path | None = None, assignment: str | None = None) -> Path:
        """Grades to a CSV file, one row per student and assignment: what ``nbgrader export``
        writes (its own CSV plug-in, run in this process on the course's gradebook).

        ``to`` defaults to :meth:`default_export`. Refused (nothing written) when ``to`` is
        in a git repository that does not ignore it (grades must not be committed by
        accident), or when a collected student is not graded, or graded on an older copy
        (an export lists every collected student)."""
        from nbgrader.api import Gradebook
        from nbgrader.plugins import CsvExportPlugin

        if assignment:
            self.known(assignment)
        to = Path(to).resolve() if to else self.default_export(assignment)
        if repository := _committable(to):
            raise GradingError(
                f"not exported: {to} is in the git repository {repository} and git does not "
                "ignore it, so the grades could be committed by accident. Leave out --to (the "
                f"default is {self.default_export(assignment)}, which git ignores), or write "
                "outside the repository"
            )
        names = [assignment] if assignment else assignments(self.root)
        ungraded = {name: found for name in names if (found := self.ungraded(name))}
        if ungraded:
            lines = [
                f"  {name}: {', '.join(students)} — run `.venv/bin/python -m labkit grade "
                f"autograde {name}`"
                for name, students in ungraded.items()
            ]
            raise GradingError(
                "not exported: collected but not graded (or collected again since grading):\n"
                + "\n".join(lines)
                + "\nAn export lists every collected student; grade them first."
            )
        self._refuse_hand_grades_pending(names, "exported")
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


_MISSING_PAGE = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>{stem}</title></head>
<body>
<h1>{stem} (Score: 0.0 / {points:.1f})</h1>
<p><strong>Not received:</strong> your submission of {assignment} had no
<code>{name}</code>, so its tasks score 0 / {points:g}. If you did send it, reply with
the file named <code>{name}</code>.</p>
</body>
</html>
"""


def _committable(path: Path) -> Path | None:
    """The git repository in which ``path`` could be committed (inside its work tree and
    not ignored), or None."""
    git = shutil.which("git")
    folder = path.parent
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    if not git:
        return None
    top = subprocess.run(
        [git, "-C", str(folder), "rev-parse", "--show-toplevel"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if top.returncode != 0:
        return None  # not in a repository
    repository = Path(top.stdout.strip())
    ignored = subprocess.run(
        [git, "-C", str(repository), "check-ignore", "-q", "--", str(path)],
        capture_output=True, check=False,
    )  # fmt: skip
    return None if ignored.returncode == 0 else repository


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
    from labkit.course import forkkernel, gradeuser

    env = dict(os.environ)
    # Graded notebooks' kernels start forked (see forkkernel); as root, from a template that
    # runs the shared interpreter, so that they can drop privileges (see gradeuser).
    kernels = forkkernel.server(sandboxed=gradeuser.wanted())
    if kernels is not None:
        env.update(kernels.env)
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
    server = _fork_server()
    if server is None:
        proc = subprocess.run(
            [sys.executable, "-c", _NBGRADER, *args],
            cwd=cwd,
            env=_tool_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    else:
        proc = server.run(args, cwd=cwd, env=_tool_env(), timeout=timeout)
    config_broken = "Exception while loading config file" in proc.stderr
    if proc.returncode != 0 or config_broken:
        what = "could not load its config" if config_broken else f"failed (exit {proc.returncode})"
        # The first failure comes last: a log viewer that keeps only the end still shows it.
        raise GradingError(
            f"nbgrader {' '.join(args)} {what}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            f"{_first_failure(proc.stderr)}"
        )
    return proc


# --------------------------------------------------------------------------- fork server

#: Set to 0 to start every nbgrader command as a new Python process (as ``nbgrader`` on a
#: terminal does) instead of forking it from :class:`_ForkServer`.
FORK_SERVER_ENV = "LABKIT_NBGRADER_FORK_SERVER"

# The fork server: imports nbgrader once (1.2 CPU-s: jupyter_server, nbconvert, SQLAlchemy,
# setuptools...), then for each connection forks a child that runs nbgrader's own main()
# with the request's arguments, working directory and environment, its output in files,
# exactly as `python -m nbgrader ARGS` would; the child sends its pid, then its exit code.
# It is single-threaded (fork is safe), reaps its children (so their CPU time is counted,
# as a subprocess's is) and stops when its parent closes its stdin.
_FORK_SERVER = r"""
import sys
sys.modules["rfc3987_syntax"] = None
import atexit, contextlib, json, os, selectors, signal, socket, struct, threading, time, traceback
# Ctrl-C, or a kernel interrupted or shut down, sends SIGINT to the whole process group: the
# server ignores it (it stops when its parent closes its stdin), a command's child does not.
signal.signal(signal.SIGINT, signal.SIG_IGN)

from nbgrader.apps.nbgraderapp import main
import jupyter_client.manager, nbclient, nbconvert.preprocessors, nbgrader.api  # noqa
import labkit.course.nbgrader_ext  # noqa: what the course's nbgrader_config.py imports

def child(conn):
    code = 1
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        request = json.loads(conn.makefile("rb").readline())
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), fd)
        conn.sendall(struct.pack("!i", os.getpid()))
        sys.argv = ["nbgrader", *request["args"]]
        try:
            main()
            code = 0
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
        getattr(threading, "_shutdown", lambda: None)()  # what the interpreter's exit does
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        conn.sendall(struct.pack("!i", code))
    finally:
        os._exit(0)

listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(sys.argv[1])
listener.listen(64)
selector = selectors.DefaultSelector()
selector.register(listener, selectors.EVENT_READ)
selector.register(sys.stdin, selectors.EVENT_READ)
assert threading.active_count() == 1, "nbgrader's imports started a thread: cannot fork"
print("ready", flush=True)
while True:
    events = selector.select(timeout=1)
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass  # reaped here, a child's CPU time counts as this process's children's
    for key, _ in events:
        if key.fileobj is sys.stdin:
            if not sys.stdin.buffer.read1(4096):  # the parent is done, or gone
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline:  # reap those exiting
                    try:
                        if not os.waitpid(-1, os.WNOHANG)[0]:
                            time.sleep(0.02)
                    except ChildProcessError:
                        break
                sys.exit(0)
            continue
        conn, _ = listener.accept()
        if os.fork() == 0:
            selector.close()
            listener.close()
            child(conn)
        conn.close()
"""


class _ForkServer:
    """Runs nbgrader commands forked from one process that imported nbgrader already:
    the same ``main()``, arguments, config, working directory and environment as a new
    ``python -m nbgrader`` process, minus ~1.2 CPU-s of imports per command."""

    def __init__(self) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="labkit-nbgrader-")
        self.socket_path = str(Path(self._folder.name) / "socket")
        self.process = subprocess.Popen(
            [sys.executable, "-c", _FORK_SERVER, self.socket_path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=_tool_env(),
        )
        line = self.process.stdout.readline()
        if line.strip() != b"ready":
            self.process.kill()
            raise GradingError(f"the nbgrader fork server did not start (said {line!r})")

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self._folder.cleanup()

    def run(
        self, args: Sequence[str], *, cwd: Path, env: Mapping[str, str], timeout: float
    ) -> subprocess.CompletedProcess:
        """One nbgrader command; like ``subprocess.run(..., capture_output=True, text=True,
        timeout=timeout)`` (the command is killed, and TimeoutExpired raised, on timeout)."""
        import socket
        import struct

        with tempfile.TemporaryDirectory(prefix="labkit-nbgrader-run-") as folder:
            out, err = Path(folder) / "stdout", Path(folder) / "stderr"
            request = {"args": list(args), "cwd": str(Path(cwd).resolve()), "env": dict(env),
                       "stdout": str(out), "stderr": str(err)}  # fmt: skip
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.connect(self.socket_path)
                conn.sendall(json.dumps(request).encode() + b"\n")
                conn.settimeout(timeout)
                reply = b""
                pid = None
                try:
                    while len(reply) < 8:
                        chunk = conn.recv(8 - len(reply))
                        if not chunk:
                            break  # the child died without a word (killed)
                        reply += chunk
                        if pid is None and len(reply) >= 4:
                            pid = struct.unpack("!i", reply[:4])[0]
                except TimeoutError:
                    if pid is not None:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                    raise subprocess.TimeoutExpired(["nbgrader", *args], timeout) from None
            code = struct.unpack("!i", reply[4:8])[0] if len(reply) == 8 else -signal.SIGKILL
            read = lambda path: path.read_text(errors="replace") if path.exists() else ""  # noqa: E731
            return subprocess.CompletedProcess(["nbgrader", *args], code, read(out), read(err))


_fork_servers: dict[int, _ForkServer] = {}
_fork_lock = threading.Lock()


def _fork_server() -> _ForkServer | None:
    """This process's fork server (started on first use; Linux only), or None when
    :data:`FORK_SERVER_ENV` is 0."""
    if sys.platform != "linux" or os.environ.get(FORK_SERVER_ENV, "1") == "0":
        return None
    with _fork_lock:
        server = _fork_servers.get(os.getpid())  # not one inherited through a fork
        if server is None or not server.alive():
            server = _fork_servers[os.getpid()] = _ForkServer()
            atexit.register(server.stop)
        return server


def _first_failure(log: str) -> str:
    """The first traceback (or ERROR line) of an nbgrader log that is longer than its tail:
    nbgrader logs the cause of a failed submission where it happens and only a summary at
    the end, so the tail alone does not say what went wrong."""
    if len(log) <= 3000:
        return ""
    starts = [i for i in (log.find("Traceback"), log.find("| ERROR]")) if i >= 0]
    if not starts or min(starts) >= len(log) - 3000:
        return ""
    start = log.rfind("\n", 0, min(starts)) + 1
    end = log.find("\n[", start + 1)  # the next log record ends the traceback
    end = start + 4000 if end < 0 else min(end + 1, start + 4000)
    return f"\n[...]\nthe first error in nbgrader's log:\n{log[start:end]}"


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
def scratch_course(root: Path | None = None, *, released: str | None = None) -> Iterator[Course]:
    """A temporary copy of the course (config + sources, and an empty gradebook), removed
    afterwards.

    ``released``: an assignment to find released already, as after ``course.release``:
    its ``release/`` folder and gradebook are copies of what one ``nbgrader
    generate_assignment`` made, once per process for these sources and config (many
    scratch courses grading one assignment need not make the same release each)."""
    source_root = root or course_dir()
    with tempfile.TemporaryDirectory(prefix="labkit-course-") as folder:
        target = Path(folder)
        shutil.copyfile(source_root / "nbgrader_config.py", target / "nbgrader_config.py")
        shutil.copytree(source_root / "source", target / "source")
        if released:
            made = _released(source_root, released)
            shutil.copyfile(made / "gradebook.db", target / "gradebook.db")
            shutil.copytree(made / "release", target / "release")
        else:
            shutil.copyfile(_empty_gradebook(), target / "gradebook.db")
        yield Course(target)


_releases: dict[str, Path] = {}
_releases_lock = threading.Lock()


def _released(root: Path, assignment: str) -> Path:
    """A folder with the gradebook and ``release/`` of a scratch course in which
    ``assignment`` was released, made once per process for the same config, sources and
    nbgrader version (removed at exit)."""
    import importlib.metadata

    source = root / "source" / assignment
    digest = hashlib.sha256(importlib.metadata.version("nbgrader").encode())
    for path in [root / "nbgrader_config.py", *sorted(source.rglob("*"))]:
        if path.is_file():
            digest.update(f"\0{path.relative_to(root)}\0".encode() + path.read_bytes())
    key = f"{assignment}-{digest.hexdigest()[:16]}"
    with _releases_lock:
        if key not in _releases:
            folder = Path(tempfile.mkdtemp(prefix=f"labkit-release-{assignment}-"))
            atexit.register(shutil.rmtree, folder, ignore_errors=True)
            with scratch_course(root) as course:
                course.release(assignment)
                shutil.copyfile(course.root / "gradebook.db", folder / "gradebook.db")
                shutil.copytree(course.root / "release", folder / "release")
            _releases[key] = folder
        return _releases[key]


# --------------------------------------------------------------------------- student copies


def _answer_sources(path: Path) -> dict[str, str]:
    """What a learner writes: code answers, and the write-ups graded by hand."""
    return {c.grade_id: c.source for c in cells.read(path) if c.kind in ("answer", "manual")}


def _holds_work(copy: dict[str, str], fresh: dict[str, str]) -> bool:
    """Whether a student copy's answer cells (``copy``) hold work that regenerating it from
    the fresh stubs (``fresh``) would lose: an answer that differs from its stub, or an
    answer cell the source no longer has. A task added to the source (a cell the copy does
    not have yet) is not a learner's work."""
    return any(name not in fresh or fresh[name] != source for name, source in copy.items())


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
    call fails) unless ``force``. A copy that only lacks a task added since is replaced."""
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
                    if _holds_work(_answer_sources(destination), _answer_sources(path)):
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
    return cells.answers(notebook_path)


def grade_cells(notebook_path: Path) -> dict[str, float]:
    """The autograded test cells of a notebook: grade_id → points, in cell order."""
    return cells.tests(notebook_path)


def apply_answers(notebook_path: Path, answers: Mapping[str, str], out_path: Path) -> Path:
    """Write a copy of ``notebook_path`` with the answer cells named in ``answers``
    (grade_id → new source) replaced; unknown ids raise KeyError."""
    import nbformat

    notebook = nbformat.read(notebook_path, as_version=4)
    remaining = dict(answers)
    for cell in cells.read(notebook):
        if cell.grade_id in remaining:
            notebook.cells[cell.index].source = remaining.pop(cell.grade_id)
    if remaining:
        raise KeyError(f"no answer cells {sorted(remaining)} in {notebook_path.name}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, out_path)
    return out_path
