"""The instructor's workflow for every assignment under grading/source/: release →
collect (a folder of files received by e-mail) → autograde → feedback → export CSV; and
end to end for the assignments of WHOLE_WORKFLOW: through nbgrader's exchange too, then
the same again (idempotent) → a resubmission that keeps every earlier version. Also:
feedback never shows hidden test code, and one student's leftovers never change the next
student's score.

Simulated students: ``full`` (every answer; through the exchange where it is used),
``empty`` (the release untouched), ``partial`` (the first half of each notebook's answers)
and ``wrong`` (all answers, with the first plausible wrong answer of tests/wrong_answers/)."""

from __future__ import annotations

import html
import importlib.util
import os
import re
import shutil
import signal
import time
from pathlib import Path

import nbformat
import pytest
from notebook_text import HIDDEN, SOLUTION, normalize, secret_lines

from labkit import cache, db
from labkit.course import cells, grading

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENTS = grading.assignments(ROOT / "grading", autograded=True)


def first_wrong_answer(assignment: str) -> dict:
    path = ROOT / "tests" / "wrong_answers" / f"{assignment.replace('-', '_')}.py"
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CASES[0]


def plan(course: grading.Course, assignment: str, folder: Path):
    """The four students' notebooks, and the score each must get (derived from the
    notebooks' own points, not written down)."""
    source, release = course.source_dir(assignment), course.release_dir(assignment)
    wrong = first_wrong_answer(assignment)
    students: dict[str, dict[str, Path]] = {s: {} for s in ("full", "empty", "partial", "wrong")}
    expected = dict.fromkeys(students, 0.0)
    max_score = 0.0
    for name in course.notebooks(assignment):
        solutions = grading.solution_cells(source / name)
        points = grading.grade_cells(source / name)
        max_score += sum(points.values())
        students["full"][name] = grading.apply_answers(
            release / name, solutions, folder / "full" / name
        )
        students["empty"][name] = release / name
        # partial: the first half of the answer cells; a test cell counts if no unanswered
        # answer cell comes before it
        order = [c.grade_id for c in cells.read(source / name) if c.kind in ("answer", "test")]
        answered = list(solutions)[: max(1, len(solutions) // 2)]
        students["partial"][name] = grading.apply_answers(
            release / name, {k: solutions[k] for k in answered}, folder / "partial" / name
        )
        for grade_id in order:
            if grade_id in solutions and grade_id not in answered:
                break
            expected["partial"] += points.get(grade_id, 0.0)
        answers = dict(solutions)
        if name == wrong["notebook"]:
            answers.update(wrong["answers"])
        students["wrong"][name] = grading.apply_answers(
            release / name, answers, folder / "wrong" / name
        )
    expected["full"] = max_score
    wrong_points = grading.grade_cells(source / wrong["notebook"])
    expected["wrong"] = max_score - sum(wrong_points[g] for g in wrong["loses"])
    assert 0 < expected["partial"] < max_score, f"partial must be in between: {expected}"
    return students, expected, max_score


def html_text(path: Path) -> str:
    page = path.read_text()
    return normalize(html.unescape(re.sub(r"<[^>]+>", " ", page[page.find("<body") :])))


def errors(notebook: Path) -> list[str]:
    """The error messages in a (graded) notebook's test cells."""
    found = []
    graded = nbformat.read(notebook, as_version=4)
    for info in cells.read(graded):
        if info.kind == "test":
            for output in graded.cells[info.index].get("outputs", []):
                if output.get("output_type") == "error" and output.get("evalue"):
                    found.append(normalize(output["evalue"]))
    return found


def grades(csv_path: Path) -> dict[str, tuple[float, float]]:
    return {
        row["student_id"]: (float(row["score"]), float(row["max_score"]))
        for row in grading.read_grades_csv(csv_path)
    }


def snapshot(course: grading.Course, assignment: str) -> dict[str, str]:
    """Every file under submitted/ and archive/ for the assignment, with its bytes' hash."""
    import hashlib

    files = {}
    for base in (course.root / "submitted", course.root / "archive" / assignment):
        for path in sorted(base.rglob("*")) if base.exists() else []:
            if path.is_file() and (assignment in path.parts):
                files[str(path.relative_to(course.root))] = hashlib.sha256(
                    path.read_bytes()
                ).hexdigest()
    return files


#: The assignments whose test also goes through nbgrader's exchange and the second pass
#: (re-collecting, a resubmission, a late old copy, everyone graded again). That part of the
#: workflow is the same code for every assignment: it runs for the one INSTRUCTORS.md walks
#: through and for the one with two notebooks. Every assignment gets the rest: its release,
#: collecting, autograding, feedback without hidden tests, and the exported grades.
WHOLE_WORKFLOW = ("00-warmup", "01-performance")


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_instructor_pipeline(assignment, tmp_path):
    """release → collect → autograde → feedback → export; for WHOLE_WORKFLOW through the
    exchange too, and then all again, with a resubmission and a late old copy: unchanged
    grades stay, nothing is lost."""
    whole = assignment in WHOLE_WORKFLOW
    exchange = tmp_path / "exchange" if whole else None
    mail = tmp_path / "mail"
    with grading.scratch_course(ROOT / "grading") as course:
        release = course.release(assignment, exchange=exchange)
        notebooks = course.notebooks(assignment)
        assert sorted(p.name for p in release.glob("*.ipynb")) == notebooks
        students, expected, max_score = plan(course, assignment, tmp_path / "answers")

        if whole:  # full: fetches from the exchange, works, submits through the exchange
            home, student_cache = tmp_path / "home-full", tmp_path / "student-cache"
            fetched = grading.exchange_fetch(
                assignment, home, exchange, course.course_id, cache=student_cache
            )
            assert sorted(p.name for p in fetched.glob("*.ipynb")) == notebooks
            for name, path in students["full"].items():
                shutil.copyfile(path, fetched / name)
            grading.exchange_submit(
                assignment, home, exchange, course.course_id, student="full", cache=student_cache
            )
        # the others sent their notebooks by e-mail: flat names, and a folder per student
        for student in ("empty", "partial") if whole else ("empty", "full", "partial"):
            for name, path in students[student].items():
                (mail / f"{student}__{name}").parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, mail / f"{student}__{name}")
        for name, path in students["wrong"].items():
            (mail / "wrong").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, mail / "wrong" / name)
        shutil.copyfile(students["empty"][notebooks[0]], mail / "untitled.ipynb")

        if whole:
            from_exchange = course.collect_exchange(assignment, exchange, check_owner=False)
            assert from_exchange.collected == ["full"], str(from_exchange)
        from_mail = course.collect_folder(assignment, mail)
        by_mail = ["empty", "partial", "wrong"] if whole else ["empty", "full", "partial", "wrong"]
        assert from_mail.collected == by_mail, str(from_mail)
        assert len(from_mail.skipped) == 1 and "untitled.ipynb" in from_mail.skipped[0]

        run = course.autograde(assignment)
        print(f"\n{assignment}: {run}")
        feedback = course.feedback(assignment, exchange=exchange)
        if whole:
            released = sorted((exchange / course.course_id / "feedback").glob("*.html"))
            assert len(released) == len(notebooks), f"full's feedback in the exchange: {released}"
        first_csv = course.export(tmp_path / "grades.csv", assignment)

        # exactly the expected scores
        got = grades(first_csv)
        assert got == {s: (expected[s], max_score) for s in students}, (
            f"exported {got}, expected {expected} out of {max_score}"
        )
        # feedback for everyone, with their score and without hidden test code
        scores = course.scores(assignment)
        assert len(feedback) == len(students) * len(notebooks)
        for student in students:
            for name in notebooks:
                page = course.feedback_dir(assignment, student) / name.replace(".ipynb", ".html")
                assert page.is_file(), f"no feedback {page}"
                text = html_text(page)
                stem = Path(name).stem
                earned = sum(
                    v for k, v in scores[student].cells.items() if k.startswith(f"{stem}:")
                )
                top = sum(
                    v for k, v in scores[student].max_cells.items() if k.startswith(f"{stem}:")
                )
                assert f"{stem} (Score: {earned:.1f} / {top:.1f})" in text, (
                    f"{page.name} of {student} does not show the score {earned}/{top}"
                )
                hidden = secret_lines(course.source_dir(assignment) / name, HIDDEN)
                graded = course.autograded_dir(assignment, student) / name
                graded_lines = {
                    normalize(line)
                    for cell in nbformat.read(graded, as_version=4).cells
                    for line in cell.source.splitlines()
                }
                # the detector is sensitive: the instructor's graded copy holds every line
                assert hidden and set(hidden) <= graded_lines, (
                    f"hidden test lines not in the autograded copy: {set(hidden) - graded_lines}"
                )
                leaked = [line for line in hidden if line in text]
                assert not leaked, f"hidden test code in {student}'s {page.name}: {leaked[:3]}"
                assert "HIDDEN TESTS" not in text
                for message in errors(graded):  # the messages are shown
                    assert message[:60] in text, f"{student}'s {page.name} lacks {message!r}"
        assert errors(
            course.autograded_dir(assignment, "wrong") / first_wrong_answer(assignment)["notebook"]
        )
        if not whole:
            return

        # The pipeline again. Re-collecting the same mail and exchange changes nothing; then
        # partial sends a complete version, and an old copy of empty's work turns up late.
        before = snapshot(course, assignment)
        again_exchange = course.collect_exchange(assignment, exchange, check_owner=False)
        again_mail = course.collect_folder(assignment, mail)
        assert again_exchange.collected == [] and again_exchange.unchanged == ["full"]
        assert again_mail.collected == [], str(again_mail)
        assert again_mail.unchanged == ["empty", "partial", "wrong"], str(again_mail)
        assert snapshot(course, assignment) == before, "re-collecting changed files"
        later = tmp_path / "mail-later"
        later.mkdir()
        yesterday = time.time() - 86400
        for name, path in students["full"].items():
            shutil.copyfile(path, later / f"partial__{name}")
            shutil.copyfile(path, later / f"empty__{name}")
            os.utime(later / f"empty__{name}", (yesterday, yesterday))
        resent = course.collect_folder(assignment, later)
        assert resent.collected == ["partial"] and resent.archived_only == ["empty"], str(resent)
        versions = {s: len(course.archived_versions(assignment, s)) for s in students}
        assert versions == {"full": 1, "empty": 2, "partial": 2, "wrong": 1}, versions

        course.autograde(assignment)  # everyone again (--force)
        assert len(course.feedback(assignment)) == len(feedback)
        second = course.export(tmp_path / "grades-again.csv", assignment)
    rows = {row["student_id"]: row for row in grading.read_grades_csv(first_csv)}
    rows_again = {row["student_id"]: row for row in grading.read_grades_csv(second)}
    for student in ("full", "empty", "wrong"):
        assert rows_again[student] == rows[student], f"{student}'s grade changed on a re-run"
    assert grades(second)["partial"] == (max_score, max_score), "the newer version counts"
    assert rows_again["partial"]["timestamp"] > rows["partial"]["timestamp"]


def test_nbgrader_commands_fork_as_new_processes_would(monkeypatch):
    """The fork server (nbgrader imported once, a child per command) gives what a new
    `python -m nbgrader` process gives: the same release, the same failure with its
    output, and a timeout that stops the command."""
    import subprocess

    with grading.scratch_course(ROOT / "grading") as course:

        def release() -> dict[str, bytes]:
            course.nbgrader("generate_assignment", "00-warmup", "--force")
            folder = course.release_dir("00-warmup")
            return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}

        def failure() -> str:
            with pytest.raises(grading.GradingError) as caught:
                course.nbgrader("generate_assignment", "no-such-assignment")
            return re.sub(r"\d\d:\d\d:\d\d\.\d+", "", str(caught.value))

        forked = release(), failure()
        assert grading._fork_server() is not None
        monkeypatch.setenv(grading.FORK_SERVER_ENV, "0")
        assert grading._fork_server() is None
        spawned = release(), failure()
        assert forked == spawned
        assert "no-such-assignment" in forked[1]
        monkeypatch.delenv(grading.FORK_SERVER_ENV)
        with pytest.raises(subprocess.TimeoutExpired):
            course.nbgrader("generate_assignment", "00-warmup", "--force", timeout=0.05)
        # A kernel interrupted or shut down (JupyterLab, a learner's self-check) sends SIGINT
        # to its process group: the server ignores it, instead of dying with a traceback on
        # the learner's terminal, and goes on serving.
        server = grading._fork_server()
        os.kill(server.process.pid, signal.SIGINT)
        time.sleep(0.5)
        assert server.alive()
        assert release() == forked[0]


def leftovers_notebook(path: Path) -> Path:
    """An assignment whose answer leaves state behind in PostgreSQL and Redis (a table with
    an index and rows, a counter key), and whose tests see whether earlier state leaked in."""
    key = f"{os.environ.get('LABKIT_DB_PREFIX', '')}iso:visits"

    def cell(source: str, grade_id: str, **nbgrader) -> nbformat.NotebookNode:
        new = nbformat.v4.new_code_cell(source)
        new.metadata["nbgrader"] = {
            "grade": False, "grade_id": grade_id, "locked": True, "schema_version": 3,
            "solution": False, "task": False, **nbgrader,
        }  # fmt: skip
        return new

    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    notebook.cells = [
        cell(
            "from labkit import cache, db\n"
            "if not db.database_exists('ex_iso_leftovers'):  # NOT fresh on purpose\n"
            "    db.fresh_database('ex_iso_leftovers')\n"
            "notes = db.database('ex_iso_leftovers')\n"
            "r = cache.redis_client()",
            "setup",
        ),
        cell(
            "### BEGIN SOLUTION\n"
            "with notes.connect(autocommit=True) as conn:\n"
            "    conn.execute('CREATE TABLE IF NOT EXISTS visits (id serial PRIMARY KEY, at timestamptz)')\n"
            "    conn.execute('CREATE INDEX IF NOT EXISTS visits_at ON visits (at)')\n"
            "    conn.execute('INSERT INTO visits (at) VALUES (now())')\n"
            f"r.incr({key!r})\n"
            "### END SOLUTION",
            "answer",
            locked=False,
            solution=True,
        ),
        cell(
            '"""Only this submission\'s row is in the table."""\n'
            "with notes.connect() as conn:\n"
            "    count = conn.execute('SELECT count(*) FROM visits').fetchone()[0]\n"
            "assert count == 1, f'{count} rows: an earlier submission left rows behind'",
            "test_database",
            grade=True,
            points=1,
        ),
        cell(
            '"""Only this submission counted in Redis."""\n'
            f"value = r.get({key!r})\n"
            "assert value == '1', f'the counter is {value}: an earlier submission left it'",
            "test_redis",
            grade=True,
            points=1,
        ),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, path)
    return path


def test_leftovers_never_change_the_next_score(tmp_path):
    """Three students in a row whose answers leave tables, indexes and Redis keys behind:
    each scores full marks in its sandbox — and, without the sandbox, the second and third
    lose marks (so the test can tell)."""
    key = f"{os.environ.get('LABKIT_DB_PREFIX', '')}iso:visits"
    with grading.scratch_course(ROOT / "grading") as course:
        source = leftovers_notebook(course.source_dir("iso-leftovers") / "leftovers.ipynb")
        course.release("iso-leftovers")
        for student in ("s1", "s2", "s3"):
            course.submit("iso-leftovers", student, {"leftovers.ipynb": source})

        course.autograde("iso-leftovers")
        sandboxed = {s: v.score for s, v in course.scores("iso-leftovers").items()}

        db.drop_database("ex_iso_leftovers")
        cache.redis_client().delete(key)
        try:
            course.autograde(
                "iso-leftovers",
                extra=["--EnterSandbox.enabled=False", "--LeaveSandbox.enabled=False"],
            )
            shared = {s: v.score for s, v in course.scores("iso-leftovers").items()}
        finally:
            db.drop_database("ex_iso_leftovers")
            cache.redis_client().delete(key)
    assert sandboxed == {"s1": 2, "s2": 2, "s3": 2}, f"with the sandbox: {sandboxed}"
    assert sorted(shared.values()) == [0, 0, 2], f"without it, leftovers must show: {shared}"
    prefix = os.environ.get("LABKIT_DB_PREFIX", "")
    with db.connect(autocommit=True) as conn:
        left = conn.execute(
            "SELECT datname FROM pg_database WHERE datname ~ %s", (f"^{prefix}g[0-9a-f]{{10}}_",)
        ).fetchall()
    assert not left, f"sandbox databases left behind: {left}"


# ----------------------------------------------------------------------- student copies


def committed(path: Path) -> bytes:
    """The committed version of ``path`` (git's HEAD, so that a learner's answers in their
    working copy do not count), or the file itself when it is not tracked yet."""
    import subprocess

    relative = path.relative_to(ROOT).as_posix()
    proc = subprocess.run(
        ["git", "show", f"HEAD:{relative}"], cwd=ROOT, capture_output=True, check=False
    )
    return proc.stdout if proc.returncode == 0 else path.read_bytes()


def test_student_copies_are_current(tmp_path):
    """exercises/ holds exactly what `python -m labkit grade student-copies` makes from
    grading/source today."""
    fresh = tmp_path / "exercises"
    grading.student_copies(fresh, root=ROOT / "grading")
    made = sorted(p.relative_to(fresh) for p in fresh.rglob("*.ipynb"))
    exercises = ROOT / "exercises"
    present = (
        sorted(p.relative_to(exercises) for p in exercises.rglob("*.ipynb"))
        if exercises.exists()
        else []
    )
    present = [p for p in present if ".ipynb_checkpoints" not in p.parts]
    fix = "run `python -m labkit grade student-copies` and commit exercises/"
    assert present == made, f"exercises/ has {present}, grading/source makes {made}: {fix}"
    for relative in made:
        assert committed(exercises / relative) == (fresh / relative).read_bytes(), (
            f"exercises/{relative} is stale: {fix}"
        )


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_student_copies_contain_no_solutions(assignment):
    """No solution line and no hidden test line of the source is in a student copy."""
    for source in sorted((ROOT / "grading" / "source" / assignment).glob("*.ipynb")):
        copy = ROOT / "exercises" / assignment / source.name
        assert copy.is_file(), (
            f"no student copy {copy}: run `python -m labkit grade student-copies`"
        )
        text = committed(copy).decode()
        assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text
        notebook = nbformat.reads(text, as_version=4)
        copy_lines = {normalize(line) for c in notebook.cells for line in c.source.splitlines()}
        solutions, hidden = secret_lines(source, SOLUTION), secret_lines(source, HIDDEN)
        assert solutions and hidden, f"{source.name}: no solution or hidden test lines found"
        leaked = sorted((set(solutions) | set(hidden)) & copy_lines)
        assert not leaked, f"solution or hidden test text in {copy}: {leaked[:3]}"


def test_student_copies_keep_a_learners_work_but_take_new_tasks(tmp_path):
    """Regenerating the student copies refuses to overwrite an answer a learner wrote, and
    replaces a copy that only lacks a task added to the source since (found when Step 6 and
    Step 7 got new tasks: the old copies were refused as if they held work)."""
    import nbformat

    copies = tmp_path / "exercises"
    grading.student_copies(copies, ["00-warmup"], root=ROOT / "grading")
    (path,) = sorted((copies / "00-warmup").glob("*.ipynb"))
    fresh = path.read_bytes()
    notebook = nbformat.read(path, as_version=4)
    answers = [c for c in notebook.cells if c.metadata.get("nbgrader", {}).get("solution")]
    assert len(answers) >= 2
    notebook.cells.remove(answers[-1])  # an older copy: made before the last task existed
    nbformat.write(notebook, path)
    grading.student_copies(copies, ["00-warmup"], root=ROOT / "grading")
    assert path.read_bytes() == fresh, "a copy without the new task is brought up to date"
    notebook = nbformat.read(path, as_version=4)
    next(
        c for c in notebook.cells if c.metadata.get("nbgrader", {}).get("solution")
    ).source = "answer = 42  # a learner's work"
    nbformat.write(notebook, path)
    with pytest.raises(grading.GradingError, match="hold answers"):
        grading.student_copies(copies, ["00-warmup"], root=ROOT / "grading")
    assert "a learner's work" in path.read_text(), "the learner's work is left where it was"
