"""What an instructor following grading/INSTRUCTORS.md literally ran into (issue 7, part 6):
collecting from a folder must archive every file received and grade the newest copy of
each notebook; nothing may be left out without a word (missing notebooks, ungraded
students in the export); mistakes get messages that say what to do; the documented
commands work as written; grades are never written where git would commit them."""

from __future__ import annotations

import hashlib
import html
import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import nbformat
import pytest

from labkit.course import cli, grading

ROOT = Path(__file__).resolve().parents[1]
WARMUP = "00-warmup"
PHASE1 = "01-performance"


def answered(course: grading.Course, assignment: str, name: str, folder: Path) -> Path:
    """The release notebook ``name`` with every answer filled in (full marks)."""
    source = course.source_dir(assignment) / name
    return grading.apply_answers(
        course.release_dir(assignment) / name, grading.solution_cells(source), folder / name
    )


def put(notebook: Path, target: Path, mtime: float) -> Path:
    """Copy ``notebook`` to ``target``, received at ``mtime``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(notebook, target)
    os.utime(target, (mtime, mtime))
    return target


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def archived(course: grading.Course, assignment: str, student: str) -> set[str]:
    """The hashes of every notebook in a student's archive."""
    return {
        sha(path)
        for version in course.archived_versions(assignment, student)
        for path in version.glob("*.ipynb")
    }


def grade(*args: str, course: grading.Course) -> list[str]:
    return ["grade", *args, "--course-dir", str(course.root)]


def test_newest_copy_is_graded_and_every_copy_is_archived(tmp_path):
    """Both layouts at once, two copies with the same time, nbgrader's own layout, and
    copies that arrive later (newer, and older): every file is archived, the newest copy
    of each notebook is graded (ties: the path that sorts last), and "archived only" is
    said once, when it happens."""
    with grading.scratch_course(ROOT / "grading") as course:
        release = course.release(WARMUP)
        empty = release / "warmup.ipynb"
        full = answered(course, WARMUP, "warmup.ipynb", tmp_path / "answers")
        inbox = tmp_path / "inbox"
        now = time.time()
        put(empty, inbox / "ivy" / "warmup.ipynb", now - 3600)  # older, wrong
        put(full, inbox / "ivy__warmup.ipynb", now - 60)  # newer, right
        put(full, inbox / "jo" / "warmup.ipynb", now - 120)  # same time, different copies
        put(empty, inbox / "jo__warmup.ipynb", now - 120)
        put(full, inbox / "kim" / WARMUP / "warmup.ipynb", now)  # nbgrader's submitted/ layout
        (inbox / "kim" / WARMUP / "timestamp.txt").write_text("2026-03-01 17:05:00.000000 UTC")

        report = course.collect_folder(WARMUP, inbox)
        text = str(report)
        assert report.skipped == [], text
        assert report.collected == ["ivy", "jo", "kim"], text
        assert report.archived_only == ["ivy"], text
        assert "ivy/warmup.ipynb" in text and "archive" in text, text
        assert any("jo" in note and "same time" in note for note in report.notes), text
        submitted = {
            s: sha(course.submission_dir(WARMUP, s) / "warmup.ipynb") for s in "ivy jo kim".split()
        }
        assert submitted == {"ivy": sha(full), "jo": sha(empty), "kim": sha(full)}, (
            "ivy: the newer copy; jo: same time, jo__warmup.ipynb sorts after jo/warmup.ipynb"
        )
        assert archived(course, WARMUP, "ivy") == {sha(full), sha(empty)}, "a copy was lost"
        assert archived(course, WARMUP, "jo") == {sha(full), sha(empty)}, "a copy was lost"
        stamp = (course.submission_dir(WARMUP, "kim") / "timestamp.txt").read_text()
        assert stamp.startswith("2026-03-01 17:05:00"), stamp

        again = course.collect_folder(WARMUP, inbox)
        assert again.collected == [] and again.archived_only == [], str(again)
        assert again.unchanged == ["ivy", "jo", "kim"], str(again)
        assert "archive only" not in str(again) and "same time" not in str(again), str(again)

        # later: jo sends a corrected copy; an even older copy of ivy's turns up
        later = tmp_path / "later"
        put(full, later / "jo__warmup.ipynb", now)
        partial = grading.apply_answers(
            empty,
            dict(
                list(grading.solution_cells(course.source_dir(WARMUP) / "warmup.ipynb").items())[:1]
            ),
            tmp_path / "partial" / "warmup.ipynb",
        )
        put(partial, later / "ivy" / "warmup.ipynb", now - 7200)
        late = course.collect_folder(WARMUP, later)
        assert late.collected == ["jo"] and late.archived_only == ["ivy"], str(late)
        assert sha(course.submission_dir(WARMUP, "jo") / "warmup.ipynb") == sha(full)
        assert sha(course.submission_dir(WARMUP, "ivy") / "warmup.ipynb") == sha(full)
        assert archived(course, WARMUP, "ivy") == {sha(full), sha(empty), sha(partial)}
        assert course.collect_folder(WARMUP, later).archived_only == [], "said once only"

        course.autograde(WARMUP)
        scores = {s: (v.score, v.max_score) for s, v in course.scores(WARMUP).items()}
    assert scores == {s: (6.0, 6.0) for s in ("ivy", "jo", "kim")}, scores


def test_collect_exits_nonzero_for_skipped_files_and_says_why(tmp_path, capsys):
    """A skipped file makes `grade collect` fail (exit 1), with the reason per file; an
    unusable student id names the characters allowed and suggests a name."""
    with grading.scratch_course(ROOT / "grading") as course:
        release = course.release(WARMUP)
        inbox = tmp_path / "inbox"
        now = time.time()
        put(release / "warmup.ipynb", inbox / "ada__warmup.ipynb", now)
        put(release / "warmup.ipynb", inbox / "Hal Smith__warmup.ipynb", now)
        put(release / "warmup.ipynb", inbox / "untitled.ipynb", now)
        rc = cli.main(grade("collect", WARMUP, "--folder", str(inbox), course=course))
        out, err = capsys.readouterr()
        assert rc == 1, f"skipped files must fail the command\n{out}\n{err}"
        assert "untitled.ipynb:" in out + err and "<student>__<notebook>.ipynb" in out + err
        assert "'Hal Smith'" in out + err
        assert "letters, digits" in out + err, "say which characters are allowed"
        assert "Hal.Smith__warmup.ipynb" in out + err, "suggest a usable name"
        assert "2 file(s) skipped" in err, err
        assert course.students(WARMUP) == ["ada"]

        # the same folder, fixed: exit 0
        (inbox / "Hal Smith__warmup.ipynb").rename(inbox / "Hal.Smith__warmup.ipynb")
        (inbox / "untitled.ipynb").unlink()
        assert cli.main(grade("collect", WARMUP, "--folder", str(inbox), course=course)) == 0
        capsys.readouterr()

        # autograde one student who sent nothing
        rc = cli.main(grade("autograde", WARMUP, "--student", "zed", course=course))
        err = capsys.readouterr().err
        assert rc == 2 and "zed has no submission of 00-warmup; collected: Hal.Smith, ada" in err, (
            err
        )


@pytest.mark.parametrize(
    "action", ["release", "collect", "collect-exchange", "autograde", "feedback", "export"]
)
def test_a_mistyped_assignment_is_named(action, tmp_path, capsys):
    """Every `grade` action says "no such assignment" and lists the known ones."""
    with grading.scratch_course(ROOT / "grading") as course:
        extra = {
            "collect": ["--folder", str(tmp_path)],
            "collect-exchange": ["--exchange", str(tmp_path)],
            "export": ["--to", str(tmp_path / "grades.csv")],
        }.get(action, [])
        args = grade(action.split("-")[0], "00-warmpu", *extra, course=course)
        rc = cli.main(args)
        err = capsys.readouterr().err
    known = ", ".join(grading.assignments(ROOT / "grading"))
    assert rc == 2, err
    assert f"no such assignment '00-warmpu' (known: {known})" in err, err


def test_a_missing_notebook_is_reported_and_in_the_feedback(tmp_path):
    """A student who sent one notebook of two: collect says which is missing, and the
    student's feedback has a page for it."""
    with grading.scratch_course(ROOT / "grading") as course:
        release = course.release(PHASE1)
        inbox = tmp_path / "inbox"
        put(
            release / "step06-query-optimization.ipynb",
            inbox / "lee__step06-query-optimization.ipynb",
            time.time(),
        )
        report = course.collect_folder(PHASE1, inbox)
        assert report.collected == ["lee"], str(report)
        assert report.missing == {"lee": ["step07-caching.ipynb"]}, str(report)
        assert "lee" in str(report) and "step07-caching.ipynb" in str(report)

        course.autograde(PHASE1)
        pages = course.feedback(PHASE1)
        missing = course.feedback_dir(PHASE1, "lee") / "step07-caching.html"
        assert missing in pages, pages
        page = html.unescape(re.sub(r"<[^>]+>", " ", missing.read_text()))
        assert "step07-caching.ipynb" in page and "not received" in page.lower(), page
        source = nbformat.read(ROOT / "grading" / "source" / PHASE1 / "step07-caching.ipynb", 4)
        points = sum(
            c.metadata["nbgrader"].get("points", 0)
            for c in source.cells
            if c.metadata.get("nbgrader", {}).get("grade")
        )
        assert points >= 12 and f"0 / {points:g}" in page, (points, page)


def test_export_lists_every_collected_student_or_refuses(tmp_path, capsys):
    """Export refuses while a collected student is not graded (or was graded on an older
    copy than the one collected since), naming them; once all are graded, one row each."""
    with grading.scratch_course(ROOT / "grading") as course:
        release = course.release(WARMUP)
        inbox = tmp_path / "inbox"
        now = time.time() - 600
        for student in ("ada", "bo", "cy"):
            put(release / "warmup.ipynb", inbox / f"{student}__warmup.ipynb", now)
        course.collect_folder(WARMUP, inbox)
        course.autograde(WARMUP, "ada")
        csv = tmp_path / "grades.csv"
        rc = cli.main(grade("export", "--to", str(csv), course=course))
        err = capsys.readouterr().err
        assert rc == 2 and not csv.exists(), "an export that leaves students out"
        assert "00-warmup: bo, cy" in err and "grade autograde 00-warmup" in err, err
        rc = cli.main(grade("feedback", WARMUP, course=course))
        err = capsys.readouterr().err
        assert rc == 1 and "no current feedback for bo, cy" in err, err

        course.autograde(WARMUP)
        assert cli.main(grade("export", "--to", str(csv), course=course)) == 0
        assert sorted(r["student_id"] for r in grading.read_grades_csv(csv)) == ["ada", "bo", "cy"]
        capsys.readouterr()

        later = tmp_path / "later"
        full = answered(course, WARMUP, "warmup.ipynb", tmp_path / "answers")
        put(full, later / "bo__warmup.ipynb", time.time())
        assert course.collect_folder(WARMUP, later).collected == ["bo"]
        with pytest.raises(grading.GradingError, match=r"00-warmup: bo\b"):
            course.export(tmp_path / "again.csv", WARMUP)


def test_grades_are_never_written_where_git_would_commit_them(tmp_path, monkeypatch, capsys):
    """`export --to grades.csv` run from the repository is refused (git does not ignore
    it); without --to the grades go to the course's exports/ folder, which git ignores."""
    target = ROOT / f"grades-test-{os.getpid()}.csv"
    monkeypatch.chdir(ROOT)
    with grading.scratch_course(ROOT / "grading") as course:
        try:
            rc = cli.main(grade("export", "--to", target.name, course=course))
            err = capsys.readouterr().err
            assert rc == 2 and not target.exists(), f"grades written into the repository\n{err}"
        finally:
            target.unlink(missing_ok=True)
        assert "git" in err and "committed" in err and "exports" in err, err
        assert cli.main(grade("export", course=course)) == 0
        assert (course.root / "exports" / "grades.csv").is_file()
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "grading/exports/grades.csv"], cwd=ROOT, check=False
    )
    assert ignored.returncode == 0, "git must ignore grading/exports/"


def _section_commands(text: str, first: str, last: str) -> list[str]:
    part = text[text.index(first) : text.index(last)]
    blocks = re.findall(r"```sh\n(.*?)```", part, re.S)
    lines = [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if "labkit" in line]


def test_documented_grading_commands_work_without_an_active_venv():
    """The commands of INSTRUCTORS.md's steps and of the README's "For instructors" run
    as written from the repository, in a shell where .venv is not activated."""
    guide = (ROOT / "grading" / "INSTRUCTORS.md").read_text()
    readme = (ROOT / "README.md").read_text()
    commands = _section_commands(guide, "## 1. Release", "## After editing")
    commands += _section_commands(readme, "## For instructors", "## How the services work")
    assert len(commands) >= 10, commands
    assert "source .venv/bin/activate" in guide and "source .venv/bin/activate" in readme
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH"}}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    prefixes = {shlex.join(shlex.split(c)[: shlex.split(c).index("grade")]) for c in commands}
    for prefix in sorted(prefixes):
        proc = subprocess.run(
            f"{prefix} grade --help", shell=True, cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert proc.returncode == 0, f"`{prefix} grade` fails without the venv: {proc.stderr}"


def test_one_notebook_resent_alone_keeps_the_others(tmp_path):
    """A student re-sends only step 6: step 6's new copy is graded, step 7 keeps its copy."""
    with grading.scratch_course(ROOT / "grading") as course:
        release = course.release(PHASE1)
        step06, step07 = course.notebooks(PHASE1)
        now = time.time()
        for name in (step06, step07):
            put(release / name, tmp_path / "first" / "lee" / name, now - 3600)
        assert course.collect_folder(PHASE1, tmp_path / "first").collected == ["lee"]
        fixed = answered(course, PHASE1, step06, tmp_path / "answers")
        put(fixed, tmp_path / "resent" / f"lee__{step06}", now)
        report = course.collect_folder(PHASE1, tmp_path / "resent")
        assert report.collected == ["lee"] and report.missing == {}, str(report)
        assert report.archived_only == [], str(report)
        submitted = course.submission_dir(PHASE1, "lee")
        assert sha(submitted / step06) == sha(fixed)
        assert sha(submitted / step07) == sha(release / step07)
        assert len(course.archived_versions(PHASE1, "lee")) == 2
