"""nbgrader's exchange with several Unix users, for real (the classroom step runs as root).

The instructor (root, in a scratch copy of grading/) releases 00-warmup through the course's
CLI to a fresh exchange; three students, each their own Unix user made by the test, fetch it,
solve it (one right, one partly right, one wrong) and submit with nbgrader as themselves;
the instructor collects, autogrades, returns feedback through the exchange, and exports the
grades. Each student fetches their own feedback. The expected scores come from the
notebook's points. File permissions keep each student out of the others' submissions and
feedback, and out of the released assignment."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from test_instructor_workflow import errors, grades, html_text
from wrong_answers import cases

from labkit.course import cells, cli, grading, sharedenv
from labkit.course.exchange import released_feedback, student_config

ROOT = Path(__file__).resolve().parents[2]
ASSIGNMENT = "00-warmup"
NOTEBOOK = "warmup.ipynb"
#: The students, by how they solve it. Unix user names start with this helper's prefix.
RIGHT, PARTLY, WRONG = "xchg-ada", "xchg-bo", "xchg-cy"
STUDENTS = (RIGHT, PARTLY, WRONG)
PROF = "xchg-prof"  # an instructor who is not root
RUNUSER = shutil.which("runuser") or "/usr/sbin/runuser"


# --------------------------------------------------------------------------- Unix users


def _uid(user: str) -> int | None:
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return None


def _kill_processes_of(uid: int) -> None:
    """Stop every process that runs as ``uid`` (a user this test made), by pid."""
    for _ in range(50):
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if entry.stat().st_uid == uid:
                        pids.append(int(entry.name))
                except FileNotFoundError:
                    continue
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        time.sleep(0.1)


def remove_user(user: str) -> None:
    """Delete ``user``, their processes, home and mail spool (and their group)."""
    uid = _uid(user)
    if uid is None:
        return
    _kill_processes_of(uid)
    subprocess.run(["userdel", "--remove", user], capture_output=True, check=False)
    assert _uid(user) is None, f"could not delete the test user {user}"


@contextlib.contextmanager
def unix_users(*names: str) -> Iterator[list[str]]:
    """Unix users, each with a group and a home (0700) of their own, deleted afterwards even
    on failure, with their processes and files; a leftover of an interrupted run is deleted
    first."""
    made = []
    try:
        for user in names:
            remove_user(user)
            subprocess.run(
                ["useradd", "--create-home", "--user-group", "--shell", "/bin/sh", user],
                check=True, capture_output=True,
            )  # fmt: skip
            made.append(user)
            home(user).chmod(0o700)
        yield made
    finally:
        homes = [home(user) for user in made if _uid(user) is not None]
        for user in made:
            remove_user(user)
        assert not [path for path in homes if path.exists()], f"homes left behind: {homes}"


@pytest.fixture
def students():
    with unix_users(*STUDENTS) as made:
        yield made


@pytest.fixture
def shared_folder():
    """A temporary folder every user can reach (pytest's tmp_path is root's alone)."""
    folder = Path(tempfile.mkdtemp(prefix="labkit-exchange-test-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def home(user: str) -> Path:
    return Path(pwd.getpwnam(user).pw_dir)


def as_student(user: str, *argv: str) -> subprocess.CompletedProcess:
    """Run ``argv`` as ``user``, in their home, with the Python every user can run first on
    the PATH and nothing of root's environment."""
    base = {
        "HOME": str(home(user)),
        "USER": user,
        "LOGNAME": user,
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
    }
    return subprocess.run(
        [RUNUSER, "-u", user, "--", *argv],
        cwd=home(user), env=sharedenv.shared_python().env(base),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def ok(done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert done.returncode == 0, (
        f"{done.args} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    )
    return done


def denied(user: str, *argv: str) -> str:
    """Run ``argv`` as ``user``; it must fail for want of permission (EACCES, or EPERM: the
    sticky bit)."""
    done = as_student(user, *argv)
    assert done.returncode != 0, f"{user} could run {argv}: {done.stdout[:300]}"
    assert any(m in done.stderr for m in ("Permission denied", "Operation not permitted")), (
        f"{argv} as {user}: {done.stderr[-500:]}"
    )
    return done.stderr


def grade(course: grading.Course, *argv: str) -> None:
    """The instructor's command, ``python -m labkit grade ARGV --course-dir COURSE``."""
    argv = ("grade", *argv, "--course-dir", str(course.root))
    assert cli.main(list(argv)) == 0, f"labkit {' '.join(argv)} failed"


# --------------------------------------------------------------------------- the answers


def answers_and_expected(source: Path) -> tuple[dict[str, dict[str, str]], dict[str, float]]:
    """What each student types into the answer cells, and the score that must give, from
    the notebook's points: right = every solution; partly = the solutions of the answer
    cells before the last (a test scores if no answer cell before it is left unanswered);
    wrong = plausible wrong answers (tests/wrong_answers/) for the first and last answer
    cells, the solution of the others (it loses the tests those cases lose)."""
    solutions = grading.solution_cells(source)
    points = grading.grade_cells(source)
    order = [c.grade_id for c in cells.read(source) if c.kind in ("answer", "test")]
    answer_ids = list(solutions)
    partly = {k: solutions[k] for k in answer_ids[:-1]}
    partly_score, unanswered = 0.0, False
    for grade_id in order:
        if grade_id in solutions and grade_id not in partly:
            unanswered = True
        elif grade_id in points and not unanswered:
            partly_score += points[grade_id]
    wrong, lost = dict(solutions), set()
    for target in (answer_ids[0], answer_ids[-1]):
        case = next(
            c
            for c in cases(ASSIGNMENT)
            if c["notebook"] == source.name and set(c["answers"]) == {target}
        )
        wrong.update(case["answers"])
        lost |= set(case["loses"])
    top = sum(points.values())
    expected = {RIGHT: top, PARTLY: partly_score, WRONG: top - sum(points[t] for t in lost)}
    assert 0 < expected[WRONG] < expected[PARTLY] < expected[RIGHT], expected
    return {RIGHT: solutions, PARTLY: partly, WRONG: wrong}, expected


# --------------------------------------------------------------------------- the test


def test_three_students_through_the_exchange(students, shared_folder, capsys):
    """Release, fetch, solve, submit, collect, autograde, feedback both ways, export: the
    exact scores, and nobody reads or changes what is not theirs."""
    laps: dict[str, float] = {}
    clock = [time.perf_counter()]

    def lap(name: str) -> None:
        now = time.perf_counter()
        laps[name], clock[0] = now - clock[0], now

    exchange = shared_folder / "exchange"
    with grading.scratch_course(ROOT / "grading") as course:
        course_id = course.course_id
        grade(course, "release", ASSIGNMENT, "--exchange", str(exchange))
        released = exchange / course_id / "outbound" / ASSIGNMENT / NOTEBOOK
        released_bytes = released.read_bytes()
        # The release tells the instructor the config students need: the one they get here.
        config_text = student_config(exchange, course_id)
        told = capsys.readouterr().out
        assert config_text in told, told
        lap("release")

        answers, expected = answers_and_expected(course.source_dir(ASSIGNMENT) / NOTEBOOK)
        max_score = expected[RIGHT]

        # Each student, as themselves and at the same time as the others: the course's
        # nbgrader config (on a hub: /etc/jupyter), then fetch, type the answers, submit.
        def fetch_solve_submit(user: str) -> None:
            config = home(user) / ".jupyter" / "nbgrader_config.py"
            config.parent.mkdir()
            config.write_text(config_text)
            for path in (config.parent, config):
                shutil.chown(path, user, user)
            ok(as_student(user, "nbgrader", "fetch_assignment", ASSIGNMENT))
            fetched = home(user) / ASSIGNMENT / NOTEBOOK
            assert fetched.read_bytes() == released_bytes and fetched.stat().st_uid == _uid(user)
            # The answers typed in: the student copies a notebook with the answer cells filled
            # over theirs (a Python of their own here would cost a second per student).
            typed_in = grading.apply_answers(
                fetched, answers[user], shared_folder / "answers" / user / NOTEBOOK
            )
            for path in (typed_in.parent.parent, typed_in.parent, typed_in):
                path.chmod(0o755 if path.is_dir() else 0o644)
            ok(as_student(user, "cp", str(typed_in), str(fetched)))
            assert fetched.stat().st_uid == _uid(user)
            typed = {c.grade_id: c.source for c in cells.read(fetched) if c.kind == "answer"}
            assert all(typed[k] == v for k, v in answers[user].items())
            ok(as_student(user, "nbgrader", "submit", ASSIGNMENT))

        with ThreadPoolExecutor(len(students)) as pool:
            list(pool.map(fetch_solve_submit, students))
        lap("students fetch, solve, submit")

        # inbound/ cannot be listed, and a submission opened by its exact name is readable
        # by its own student only.
        inbound = exchange / course_id / "inbound"
        submitted = {user: next(inbound.glob(f"{user}+{ASSIGNMENT}+*")) for user in students}
        for user, folder in submitted.items():
            assert folder.stat().st_uid == _uid(user)
            # Everything in it: the student's, readable by inbound's group (the instructors;
            # root here) and by nobody else.
            for path in (folder, *folder.rglob("*")):
                info = path.stat()
                assert (info.st_uid, info.st_gid) == (_uid(user), inbound.stat().st_gid), path
                assert info.st_mode & 0o077 == (0o070 if path.is_dir() else 0o040), path
            ok(as_student(user, "cat", str(folder / NOTEBOOK)))  # the path is right
        denied(PARTLY, "ls", str(inbound))
        for reader, owner in ((PARTLY, RIGHT), (WRONG, RIGHT), (RIGHT, WRONG)):
            denied(reader, "cat", str(submitted[owner] / NOTEBOOK))
            denied(reader, "cat", str(submitted[owner] / "submission_secret.txt"))
            denied(reader, "ls", str(submitted[owner]))
        # The released assignment: no student can change, add to, remove or move it.
        mine = str(home(WRONG) / ASSIGNMENT / NOTEBOOK)
        denied(WRONG, "sh", "-c", f"echo x >> '{released}'")
        denied(WRONG, "cp", mine, str(released))
        denied(WRONG, "cp", mine, str(released.parent / "extra.ipynb"))
        denied(WRONG, "rm", "-f", str(released))
        denied(WRONG, "mv", str(exchange / course_id), str(exchange / "moved"))
        assert released.read_bytes() == released_bytes
        lap("permission checks")

        # The instructor collects (nbgrader checks each folder's owner), grades, returns
        # feedback through the exchange and exports the grades.
        grade(course, "collect", ASSIGNMENT, "--exchange", str(exchange))
        assert course.students(ASSIGNMENT) == sorted(students)
        lap("collect")
        grade(course, "autograde", ASSIGNMENT)
        lap("autograde")
        grade(course, "feedback", ASSIGNMENT, "--exchange", str(exchange))
        csv_path = shared_folder / "grades.csv"
        grade(course, "export", ASSIGNMENT, "--to", str(csv_path))
        lap("feedback, export")
        assert grades(csv_path) == {u: (expected[u], max_score) for u in students}, (
            f"exported {grades(csv_path)}, expected {expected} out of {max_score}"
        )
        # The wrong one lost its points to failed assertions, not to an unanswered cell.
        wrong_errors = errors(course.autograded_dir(ASSIGNMENT, WRONG) / NOTEBOOK)
        assert wrong_errors and not any("NotImplementedError" in e for e in wrong_errors)

        # Each student fetches their own feedback, with their own score...
        pages = released_feedback(
            exchange, course_id, {u: course.feedback_dir(ASSIGNMENT, u) for u in students}
        )
        stem = Path(NOTEBOOK).stem
        with ThreadPoolExecutor(len(students)) as pool:
            fetching = [(u, "nbgrader", "fetch_feedback", ASSIGNMENT) for u in students]
            for done in pool.map(lambda argv: as_student(*argv), fetching):
                ok(done)
        for user in students:
            fetched = list((home(user) / ASSIGNMENT / "feedback").glob(f"*/{stem}.html"))
            assert len(fetched) == 1 and len(pages[user]) == 1, (fetched, pages)
            text = html_text(fetched[0])
            assert f"{stem} (Score: {expected[user]:.1f} / {max_score:.1f})" in text, text[:500]
        # ... and nobody else's: not by listing, not by its exact name.
        denied(RIGHT, "ls", str(exchange / course_id / "feedback"))
        for reader, owner in ((PARTLY, RIGHT), (RIGHT, WRONG), (WRONG, PARTLY)):
            denied(reader, "cat", str(pages[owner][0]))
        for user in students:  # as root, each page is given to its student
            assert pages[user][0].stat().st_uid == _uid(user)
        lap("students fetch feedback")

    print("\nexchange, 3 Unix users: " + ", ".join(f"{k} {v:.1f} s" for k, v in laps.items()))
    print(f"total {sum(laps.values()):.1f} s")


def test_an_instructor_who_is_not_root(students, shared_folder):
    """On a shared server the instructor is often a Unix user like the students, in a group
    of their own. They release and collect with the course's CLI; a submission is readable
    by them through inbound's group, still by no other student."""
    exchange = shared_folder / "exchange"
    exchange.mkdir()
    exchange.chmod(0o1777)  # made by the server's administrator
    course_root = shared_folder / "course"
    with grading.scratch_course(ROOT / "grading") as course:
        shutil.copytree(course.root, course_root)
        course_id = course.course_id
    python = str(sharedenv.shared_python().python)
    with unix_users(PROF) as (prof,):
        subprocess.run(["chown", "-R", f"{prof}:{prof}", str(course_root)], check=True)
        course_root.chmod(0o700)

        def instructor(*argv: str) -> str:
            cmd = (python, "-m", "labkit", "grade", *argv, "--course-dir", str(course_root))
            return ok(as_student(prof, *cmd)).stdout

        told = instructor("release", ASSIGNMENT, "--exchange", str(exchange))
        assert student_config(exchange, course_id) in told, told
        config = home(RIGHT) / ".jupyter" / "nbgrader_config.py"
        config.parent.mkdir()
        config.write_text(student_config(exchange, course_id))
        ok(as_student(RIGHT, "nbgrader", "fetch_assignment", ASSIGNMENT))
        ok(as_student(RIGHT, "nbgrader", "submit", ASSIGNMENT))
        inbound = exchange / course_id / "inbound"
        assert inbound.stat().st_gid == pwd.getpwnam(prof).pw_gid
        mine = next(inbound.glob(f"{RIGHT}+{ASSIGNMENT}+*")) / NOTEBOOK
        ok(as_student(prof, "cat", str(mine)))
        denied(PARTLY, "cat", str(mine))
        denied(PARTLY, "mv", str(exchange / course_id), str(exchange / "moved"))

        report = instructor("collect", ASSIGNMENT, "--exchange", str(exchange))
        assert f"collected (new or newer): {RIGHT}\n" in report, report
        collected = course_root / "submitted" / RIGHT / ASSIGNMENT / NOTEBOOK
        assert collected.read_bytes() == (home(RIGHT) / ASSIGNMENT / NOTEBOOK).read_bytes()


def test_the_exchange_root_is_the_one_nbgrader_uses(tmp_path, monkeypatch):
    """`--exchange` without a folder: the root nbgrader's config names, also when it is in a
    Jupyter config folder (as /etc/jupyter on a shared server), the course's config first."""
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "jupyter"))
    with grading.scratch_course(ROOT / "grading") as course:
        assert course.exchange_root() == Path("/srv/nbgrader/exchange")  # nbgrader's default
        (tmp_path / "jupyter").mkdir()
        (tmp_path / "jupyter" / "nbgrader_config.py").write_text(
            student_config(tmp_path / "site", course.course_id)
        )
        assert course.exchange_root() == tmp_path / "site"
        with open(course.root / "nbgrader_config.py", "a") as config:
            config.write(f"c.Exchange.root = {str(tmp_path / 'course')!r}\n")
        assert course.exchange_root() == tmp_path / "course"
