"""The student edition (``python -m labkit grade student-edition DIR``): a repository for a
graded class, checked from four sides.

1. Nothing secret in it: every distinctive line of every solution, hidden test, wrong answer,
   capstone reference solution and equivalent mutant is looked for in every file of the
   edition (notebooks decoded from their JSON), and a planted line is caught.
2. Its own commands: ``make test`` runs for real (a selection of its suite, chosen with
   pytest's own node ids; every test it collects is byte for byte a test of this
   repository's suite, which CI runs in full), ``make lab`` serves JupyterLab, ``labkit
   check`` runs the visible tests only and says so, the instructor's commands refuse.
3. The simulated Binder launch (tests/test_binder.py's helpers) from the edition.
4. Submissions made from the edition's student copies grade in the full repository's
   pipeline: answered as a student types the answers, full marks; untouched, zero.

Budget: 120 s on 2 busy cores. The edition's venv: ``make install`` in an edition took 44 s
with pip's cache here, so its ``make test`` and ``make lab`` use this repository's venv
through the edition Makefile's ``LABKIT_VENV`` (the edition's own ``src/`` first on
``PYTHONPATH``); the Binder simulation installs the edition with pip into a fresh venv
whose dependencies come from this repository's venv (the full install from PyPI of the same
binder/ files is tests/test_binder.py's).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import tomllib
import urllib.request
from pathlib import Path

import nbformat
import pytest
from notebook_text import HIDDEN, SOLUTION, normalize

from labkit import config
from labkit.course import cells, edition, grading
from labkit.course.cli import main as labkit

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(sys.prefix)  # this repository's venv: the edition's LABKIT_VENV in these tests
STRING = re.compile(r"[rbfu]{0,2}(\"([^\"\\]|\\.)*\"|'([^'\\]|\\.)*')")


@pytest.fixture(scope="module")
def base():
    # Readable by the unprivileged users the edition's servers and the Binder simulation
    # run as (mkdtemp makes it 700).
    folder = Path(tempfile.mkdtemp(prefix="labkit-se-edition-"))
    os.chmod(folder, 0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def made(base):
    """An edition, written by the command an instructor types."""
    target = base / "edition"
    assert labkit(["grade", "student-edition", str(target)]) == 0
    yield target
    # Its own servers, when a test started them (make test / make lab run `up`): the
    # edition's package and state folder, named twice, never this repository's servers.
    stopped = in_edition(target, "services", "down", "--state-dir", str(target / ".labkit"))
    assert stopped.returncode == 0, stopped.stderr
    from labkit.course.services import Services

    mine = Services(quiet=True).status()  # this repository's, which other tests share
    assert all(status.running for status in mine.values()), "this repository's servers stopped"


def edition_env(folder: Path, **extra: str) -> dict[str, str]:
    """The environment of a learner in the edition: its own state folder and servers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABKIT_", "PYTEST_"))}
    for key in ("DATABASE_URL", "REDIS_URL", "PYTHONPATH"):
        env.pop(key, None)
    env["LABKIT_DB_PREFIX"] = os.environ.get("LABKIT_DB_PREFIX", "se_")
    return {**env, **extra}


def in_edition(folder: Path, *argv: str, timeout: float = 300, **extra: str):
    """``python -m labkit ...`` run in the edition, with its own package (PYTHONPATH)."""
    env = edition_env(folder, PYTHONPATH=str(folder / "src"), **extra)
    return subprocess.run(
        [str(VENV / "bin/python"), "-m", "labkit", *argv],
        cwd=folder, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


# --------------------------------------------------------------------------- 1. secrets


def _regions(source: str, pattern: str) -> list[str]:
    return re.findall(pattern, source, re.S)


def secret_texts() -> dict[str, list[str]]:
    """Where each secret comes from → its lines: the solution regions of answer cells
    (the whole cell when it has no markers: nbgrader then replaces all of it), the written
    answers of write-ups, the hidden test regions of test cells; the wrong answers and
    wrong capstone designs; the capstones' reference solutions; the equivalent mutants."""
    found: dict[str, list[str]] = {}
    for path in sorted((ROOT / "grading" / "source").glob("*/*.ipynb")):
        where = str(path.relative_to(ROOT))
        for cell in nbformat.read(path, as_version=4).cells:
            kind = cells.kind(cell)
            if kind in ("answer", "manual"):
                parts = _regions(cell.source, SOLUTION) or [cell.source]
            elif kind == "test":
                parts = _regions(cell.source, HIDDEN)
            else:
                parts = []
            for part in parts:
                found.setdefault(where, []).extend(part.splitlines())
    files = [
        *sorted((ROOT / "tests" / "wrong_answers").glob("*.py")),
        *sorted((ROOT / "tests" / "capstones").glob("wrong_*.toml")),
        *sorted(p for p in (ROOT / "grading" / "capstones").rglob("*") if p.is_file()),
        ROOT / "grading" / "equivalent-mutants.toml",
    ]
    for path in files:
        if "__pycache__" not in path.parts:
            found[str(path.relative_to(ROOT))] = path.read_text().splitlines()
    return found


def public_lines() -> set[str]:
    """Lines a student sees anyway, by design: whatever stands outside the solution and
    hidden-test regions of the sources (the student version), and every file the edition
    takes from this repository as it is (lessons, package, starters, binder, data, the
    tests it carries)."""
    seen: set[str] = set()
    for path in sorted((ROOT / "grading" / "source").glob("*/*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            if cells.kind(cell) in ("answer", "manual") and not _regions(cell.source, SOLUTION):
                continue  # all of it is the solution
            shown = re.sub(HIDDEN, "", re.sub(SOLUTION, "", cell.source, flags=re.S), flags=re.S)
            seen |= {normalize(line) for line in shown.splitlines()}
    for path in public_files():
        seen |= {normalize(line) for line in file_text(path).splitlines()}
    return seen


def public_files() -> list[Path]:
    paths = [ROOT / relative for relative in edition.TESTS]
    for relative in edition._COPIED:
        top = ROOT / relative
        if top.is_file():
            paths.append(top)
        elif top.is_dir():
            paths += [
                p for p in sorted(top.rglob("*"))
                if p.is_file() and "__pycache__" not in p.parts
                and str(p.relative_to(ROOT)) not in edition._SKIPPED_PATHS
            ]  # fmt: skip
    return paths


MIN_LENGTH = 12


def distinctive(line: str) -> bool:
    """The rule for which secret lines the grep looks for (normalized: whitespace runs made
    one space). Left out: lines under 12 characters (``pass``, ``return rows``, ``)``,
    ``else:``: they stand in any Python file and identify no answer) and lines with no
    letter outside string literals (a bracket, a number). Also left out, by the caller:
    lines a student sees anyway, standing in (or inside) a line of :func:`public_lines` (a
    line public by design is not a leak, e.g. ``from labkit import db`` in both a solution
    and a lesson). Comments and assertion messages of hidden tests stay in: they tell the
    answer as well as code does."""
    return len(line) >= MIN_LENGTH and bool(re.search(r"[A-Za-z]", STRING.sub("", line)))


class Finder:
    """Which of many lines stand inside a text's lines (a grep -F of them all, in one pass:
    the lines are indexed by their first 12 characters)."""

    def __init__(self, needles) -> None:
        self.heads: dict[str, list[str]] = {}
        for needle in needles:
            self.heads.setdefault(needle[:MIN_LENGTH], []).append(needle)

    def found_in(self, text: str) -> set[str]:
        hits, heads = set(), self.heads
        for i in range(len(text) - MIN_LENGTH + 1):
            for needle in heads.get(text[i : i + MIN_LENGTH], ()):
                if text.startswith(needle, i):
                    hits.add(needle)
        return hits


def file_text(path: Path) -> str:
    """A file's text as a reader sees it: a notebook's cells and outputs decoded from JSON
    (a line of code is one JSON string there, with escaped quotes), other files as they
    are; binary files have no text."""
    try:
        raw = path.read_text()
    except (UnicodeDecodeError, OSError):
        return ""
    if path.suffix != ".ipynb":
        return raw
    texts = []
    for cell in json.loads(raw).get("cells", []):
        texts.append(_joined(cell.get("source", "")))
        texts.append(json.dumps(cell.get("metadata", {}), indent=1))
        for output in cell.get("outputs", []):
            texts.append(_joined(output.get("text", "")))
            for value in output.get("data", {}).values():
                texts.append(_joined(value))
    return "\n".join([*texts, raw])


def _joined(value) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def normalized_lines(text: str) -> str:
    """One normalized line per line, so that a match never spans two lines."""
    return "\n".join(normalize(line) for line in text.splitlines())


def leaks(folder: Path, secrets: dict[str, set[str]]) -> list[str]:
    """Each secret line found in (or inside) a line of a file of ``folder`` (``.git`` left
    out: it holds the same files, compressed), with the file and where the line comes from."""
    finder = Finder({line for lines in secrets.values() for line in lines})
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and ".git" not in p.parts):
        for line in sorted(finder.found_in(normalized_lines(file_text(path)))):
            origins = [origin for origin, lines in secrets.items() if line in lines]
            found.append(f"{path.relative_to(folder)}: {line!r} (from {', '.join(origins)})")
    return found


@pytest.fixture(scope="module")
def secrets() -> dict[str, set[str]]:
    texts = {
        origin: {normalize(line) for line in lines if distinctive(normalize(line))}
        for origin, lines in secret_texts().items()
    }
    public = Finder({line for lines in texts.values() for line in lines})
    seen = public.found_in("\n".join(public_lines()))
    return {origin: lines - seen for origin, lines in texts.items()}


def test_no_solution_or_hidden_test_in_the_edition(made, secrets):
    """No distinctive line of any secret stands in any file of the edition; the folders and
    files that hold them are not there at all."""
    every_source = [
        str(p.relative_to(ROOT)) for p in sorted((ROOT / "grading" / "source").glob("*/*.ipynb"))
    ]
    assert set(every_source) <= set(secrets), "a source notebook has no secret line to look for"
    assert sum(map(len, secrets.values())) > 1000, {k: len(v) for k, v in secrets.items()}
    assert leaks(made, secrets) == []
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=made, capture_output=True, text=True, check=True
    ).stdout.split()
    on_disk = sorted(str(p.relative_to(made)) for p in made.rglob("*") if ".git" not in p.parts)
    for name in [*tracked, *on_disk]:
        assert not name.startswith(("grading", "tests/wrong_answers", "tests/capstones")), name
        assert "INSTRUCTORS" not in name and "equivalent-mutants" not in name, name
        assert not name.endswith("course/mutation.py"), name
    readme = (made / "README.md").read_text()
    assert "labkit grade" not in readme and "INSTRUCTORS" not in readme
    assert "OWNER/REPO" in readme and "mybinder.org/v2/gh/" in readme


def test_a_planted_secret_is_caught(made, secrets, tmp_path):
    """The grep can fail: a solution line pasted into a lesson (inside the notebook's JSON)
    and a hidden test's line added to a module are both reported."""
    copy = tmp_path / "edition"
    shutil.copytree(made, copy, ignore=shutil.ignore_patterns(".git"))
    source = ROOT / "grading" / "source" / "00-warmup" / "warmup.ipynb"
    origin = str(source.relative_to(ROOT))
    solution = next(
        line
        for cell in nbformat.read(source, as_version=4).cells
        if cells.kind(cell) == "answer"
        for region in _regions(cell.source, SOLUTION)
        for line in region.splitlines()
        if normalize(line) in secrets[origin]
    )
    lesson = copy / "notebooks" / "00-start-here.ipynb"
    notebook = nbformat.read(lesson, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(f'print("x")\n{solution}\n'))
    nbformat.write(notebook, lesson)
    hidden_origin = "grading/source/01-performance/step07-caching.ipynb"
    hidden = sorted(secrets[hidden_origin])[0]
    with (copy / "src" / "labkit" / "practice.py").open("a") as out:
        out.write(f"\n# {hidden}\n")
    found = leaks(copy, secrets)
    assert any(f.startswith("notebooks/00-start-here.ipynb") and origin in f for f in found)
    assert any(f.startswith("src/labkit/practice.py") and hidden_origin in f for f in found)
    # And on the real thing: the full repository's grading/ holds every line looked for.
    held = leaks(ROOT / "grading", secrets)
    every = {
        line for origin, lines in secrets.items() if origin.startswith("grading/") for line in lines
    }
    assert {f.split(": ", 1)[1].rsplit(" (from ", 1)[0] for f in held} >= {repr(x) for x in every}


# --------------------------------------------------------------------------- 2. commands


def test_refuses_a_folder_that_is_not_new(tmp_path, capsys):
    """DIR not empty, or inside the course: a clear error, nothing written."""
    (tmp_path / "notes.txt").write_text("mine")
    assert labkit(["grade", "student-edition", str(tmp_path)]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    inside = ROOT / "build" / "se-edition"
    assert labkit(["grade", "student-edition", str(inside)]) == 2
    assert "inside the course repository" in capsys.readouterr().err
    assert not inside.exists()


def test_the_edition_is_one_commit_by_a_neutral_author(made):
    log = subprocess.run(
        ["git", "log", "--format=%an <%ae>|%s"], cwd=made, capture_output=True, text=True,
        check=True,
    ).stdout.splitlines()  # fmt: skip
    assert log == [
        "labkit student edition <student-edition@labkit.invalid>|Student edition of the course"
    ]
    status = subprocess.run(
        ["git", "status", "--porcelain"], cwd=made, capture_output=True, text=True, check=True
    ).stdout
    assert status == "", f"files left out of the commit: {status}"
    assert edition.is_student_edition(made) and not edition.is_student_edition(ROOT)
    # The student copies are current: what `grade student-copies` makes from the sources.
    for path in sorted((made / "exercises").glob("*/*.ipynb")):
        assert (
            path.read_bytes()
            == (ROOT / "exercises" / path.relative_to(made / "exercises")).read_bytes()
        )


def test_check_runs_the_visible_tests_and_grading_commands_refuse(
    made, tmp_path, monkeypatch, capsys
):
    """In the edition: `labkit check` reports the visible tests and says where the hidden
    ones run; `progress` counts visible tests passed; `grade ...` names the full repository."""
    project = config.read_env_file(config.state_dir() / config.ENV_FILE_NAME)
    urls = {k: project[k] for k in ("DATABASE_URL", "REDIS_URL")}  # this repository's servers
    progress = str(tmp_path / "progress")
    for argv in (["grade", "autograde", "00-warmup"], ["grade", "mutants"],
                 ["grade", "student-copies"], ["grade", "student-edition", str(tmp_path / "e")]):  # fmt: skip
        # In this process, with the edition as the course (LABKIT_HOME): the same code.
        monkeypatch.setenv("LABKIT_HOME", str(made))
        assert labkit(argv) == 2, argv
        assert "for the instructor's full repository" in capsys.readouterr().err, argv
    monkeypatch.delenv("LABKIT_HOME")
    checked = in_edition(made, "check", "00-warmup", LABKIT_PROGRESS_DIR=progress, **urls)
    assert checked.returncode == 0, checked.stderr
    assert "visible tests pass in 0 of 3 test cells" in checked.stdout, checked.stdout
    assert "hidden tests run when your instructor grades" in checked.stdout
    assert "full autograde" not in checked.stdout and "points" not in checked.stdout
    shown = in_edition(made, "progress", "--json", LABKIT_PROGRESS_DIR=progress)
    assert shown.returncode == 0, shown.stderr
    step = json.loads(shown.stdout)["steps"][0]
    assert step["exercises"] == "visible tests pass in 0 / 3 cells", step


def test_the_edition_is_told_by_its_marker_and_missing_sources(tmp_path):
    """A marker without grading/source is an edition; a marker copied into a full
    repository is not (its hidden tests stay in use); no marker is not."""
    (tmp_path / "grading" / "source").mkdir(parents=True)
    assert not edition.is_student_edition(tmp_path)
    (tmp_path / edition.MARKER).write_text("{}")
    assert not edition.is_student_edition(tmp_path)
    shutil.rmtree(tmp_path / "grading")
    assert edition.is_student_edition(tmp_path)
    (tmp_path / edition.MARKER).unlink()
    assert not edition.is_student_edition(tmp_path)


def test_progress_in_the_edition_counts_visible_tests(made, tmp_path):
    """A step is done there once its lesson ran and every visible test passed; the text
    says visible tests, never points."""
    from labkit.course import progress

    records = tmp_path / "records"
    progress.record_lesson("00-start-here", records)
    tasks = cells.tests(made / "exercises" / "00-warmup" / "warmup.ipynb")
    progress.record_visible("00-warmup", "warmup.ipynb", dict.fromkeys(tasks, "pass"), records)
    report = progress.overview(records, root=made)
    step = report.steps[0]
    assert step["exercises"] == f"visible tests pass in {len(tasks)} / {len(tasks)} cells"
    assert step["status"] == "done" and "visible test cells passed" in report.phases[0]
    assert "hidden tests" in report.note
    progress.record_visible("00-warmup", "warmup.ipynb", dict.fromkeys(tasks, "fail"), records)
    assert progress.overview(records, root=made).steps[0]["status"] == "in progress"
    box = [
        line for line in progress.journal(records, made).markdown().splitlines() if "warmup" in line
    ]
    assert box and all("visible tests pass in 0 of" in line for line in box), box


# A representative selection of the edition's suite, one or more from each file it carries
# (the whole suite runs lessons twice: minutes; it was run by hand, see the report).
SELECTION = (
    "tests/test_notebooks.py::test_every_lesson_has_ci_parameters",
    "tests/test_selfcheck_in_notebook.py",
    "tests/test_services.py::test_up_is_idempotent_when_running",
    "tests/test_db.py::test_fresh_database_is_empty_and_isolated",
    "tests/test_data_folder.py::test_checksums_match",
)


def test_make_test_runs_in_the_edition(made):
    """`make test` for real (the edition's Makefile: services up, the git filter, pytest) on
    a selection given as pytest node ids; and every test its suite can collect is, byte for
    byte, a test of this repository's suite: the same files under the same pytest
    configuration (pyproject.toml, conftest.py) collect the same tests (pytest's
    `testpaths` is tests/, so these are all the files it reads)."""
    env = edition_env(made)
    carried = sorted(str(p.relative_to(made)) for p in (made / "tests").rglob("*") if p.is_file())
    assert carried == sorted(edition.TESTS)
    for name in [*carried, "pyproject.toml"]:
        assert (made / name).read_bytes() == (ROOT / name).read_bytes(), name
    for node in SELECTION:
        path, _, name = node.partition("::")
        assert path in carried, node
        assert not name or f"def {name}(" in (made / path).read_text(), node

    proc = subprocess.run(
        ["make", "test", f"LABKIT_VENV={VENV}", f"PYTEST_ARGS=-q -p no:cacheprovider {' '.join(SELECTION)}"],
        cwd=made, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    summary = re.search(r"(\d+) passed", proc.stdout)
    assert summary and int(summary.group(1)) >= len(SELECTION), proc.stdout[-2000:]
    assert " failed" not in proc.stdout and " error" not in proc.stdout
    state = json.loads((made / ".labkit" / "state.json").read_text())  # its own servers
    assert {"postgres", "redis"} <= set(state)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_make_lab_serves_jupyterlab(made):
    """`make lab` in the edition: JupyterLab answers on 127.0.0.1 with the start-here lesson
    and the student copies; then it is stopped (its process group, started here)."""
    port, token = free_port(), "se-edition-test"
    lab = subprocess.Popen(
        ["make", "lab", f"LABKIT_VENV={VENV}",
         f"LAB_ARGS=--no-browser --port {port} --token {token}"],
        cwd=made, env=edition_env(made), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        deadline, answered = time.monotonic() + 120, None
        while time.monotonic() < deadline and lab.poll() is None:
            with contextlib.suppress(OSError):
                url = f"http://127.0.0.1:{port}/api/contents/exercises/00-warmup?token={token}"
                with urllib.request.urlopen(url, timeout=5) as response:
                    answered = json.loads(response.read())
                    break
            time.sleep(0.5)
        assert answered, f"JupyterLab did not answer (exit {lab.poll()})"
        assert [c["name"] for c in answered["content"]] == ["warmup.ipynb"]
        url = f"http://127.0.0.1:{port}/api/contents/notebooks/00-start-here.ipynb?token={token}"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert json.loads(response.read())["type"] == "notebook"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(lab.pid, signal.SIGTERM)
        try:
            lab.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(lab.pid, signal.SIGKILL)
            lab.wait(timeout=10)


# --------------------------------------------------------------------------- 3. Binder


def test_binder_launch_simulated_from_the_edition(made, base, monkeypatch):
    """tests/test_binder.py's simulation, pointed at the edition: pip install -r
    binder/requirements.txt (the edition's own package), postBuild, then start running
    00-start-here with papermill against the servers start launched, as an unprivileged
    user. As root, that user is the course's own `labkit` (which `services up` creates;
    these tests create no Unix user)."""
    import test_binder as binder

    monkeypatch.setattr(binder, "SIM_USER", "labkit")
    # A pip cache of this test's own: test_binder's belongs to its user, and must stay so.
    monkeypatch.setattr(binder, "SIM_PIP_CACHE", base / "sim-cache" / "pip")
    monkeypatch.setattr(binder.SimulatedUser, "_ensure_user", staticmethod(lambda: None))
    sim_base = base / "binder"
    sim_base.mkdir()
    user = binder.SimulatedUser(sim_base)
    state_dir = user.home / ".labkit"
    pids: dict[str, int] = {}
    started = time.monotonic()
    try:
        tracked = subprocess.run(
            ["git", "ls-files", "-z"], cwd=made, capture_output=True, text=True, check=True
        ).stdout.split("\0")
        for name in filter(None, tracked):  # what repo2docker copies: the committed files
            (user.home / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(made / name, user.home / name)
        if user.is_root:
            for folder, _, names in os.walk(user.home):
                user.chown(Path(folder))
                for name in names:
                    user.chown(Path(folder) / name)
        runtime = (made / "binder" / "runtime.txt").read_text().strip().split("-", 1)[1]
        python = user.python_for(runtime)
        binder.check(user.run([python, "-m", "venv", str(user.env_dir)], timeout=120), "venv")
        # The dependencies come from this repository's venv, as repo2docker's base
        # environment brings Jupyter's: a site directory of links to its packages, except
        # the course itself and the build tools (pip's isolated build must get its own
        # setuptools). pip then resolves the edition's requirements for real and installs
        # the edition, in seconds. The full download-and-install of the same binder/ files
        # and pyproject.toml (byte for byte: test_the_makefile_and_binder_files_hold_together)
        # is tests/test_binder.py's, which would take a minute of this file's two.
        deps = sim_base / "deps"
        deps.mkdir()
        left_out = re.compile(
            r"^(labkit|__editable__|pip|setuptools|_distutils_hack|distutils-precedence|wheel)\b"
        )
        for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
            if not left_out.match(entry.name):
                (deps / entry.name).symlink_to(entry)
        site_packages = user.env_dir / "lib" / f"python{runtime}" / "site-packages"
        (site_packages / "zz_course_deps.pth").write_text(
            f"import site; site.addsitedir({str(deps)!r})\n"
        )
        pip = [f"{user.env_dir}/bin/pip", "install", "--quiet", "-r", "binder/requirements.txt"]
        timings = {"copy + venv": time.monotonic() - started}
        binder.check(user.run(pip, timeout=480), "pip install -r binder/requirements.txt")
        timings["pip install"] = time.monotonic() - started - sum(timings.values())
        binder.check(user.run(["./binder/postBuild"], timeout=180), "binder/postBuild")
        timings["postBuild"] = time.monotonic() - started - sum(timings.values())
        executed = user.home / "start-here.executed.ipynb"
        command = (
            "python -c 'import labkit; print(\"PACKAGE\", labkit.__file__)' && "
            f"exec python -m papermill {binder.START_HERE} {executed} -k python3 "
            "--cwd notebooks --no-progress-bar"
        )
        launched = user.run(["binder/start", "bash", "-c", command], timeout=300)
        timings["start + papermill"] = time.monotonic() - started - sum(timings.values())
        print(
            "Binder simulation from the edition (s):", {k: round(v, 1) for k, v in timings.items()}
        )
        pids = binder.server_pids(state_dir)
        binder.check(launched, "binder/start, then papermill on 00-start-here")
        assert f"PACKAGE {user.home}/src/labkit/__init__.py" in launched.stdout, launched.stdout
        ran = [c for c in json.loads(executed.read_text())["cells"] if c["cell_type"] == "code"]
        assert ran and all(c["metadata"]["papermill"]["status"] == "completed" for c in ran)
        assert set(pids) == {"postgres", "redis"}, pids
        import psutil

        for name, pid in pids.items():
            assert psutil.Process(pid).uids().real == user.uid, f"{name} runs as another user"
        down = user.run(["python", "-m", "labkit", "services", "down"], timeout=120,
                        LABKIT_STATE_DIR=str(state_dir))  # fmt: skip
        binder.check(down, "python -m labkit services down")
    finally:
        binder.stop_leftovers(binder.server_pids(state_dir) or pids)


# --------------------------------------------------------------------------- 4. grading


def typed_answers(student_copy: Path, source: Path) -> dict[str, str]:
    """What a student types in each answer cell of their copy: the solution's code where
    the stub stands (the source cell without nbgrader's markers; what a student cannot see
    is the solution, not the code around it, which their copy shows too)."""
    solutions = grading.solution_cells(source)
    answers = {}
    for grade_id, stub in cells.answers(student_copy).items():
        typed = re.sub(
            r"^[ \t]*### (BEGIN|END) SOLUTION[ \t]*\n?", "", solutions[grade_id], flags=re.M
        )
        assert "raise NotImplementedError" in stub and typed != stub, grade_id
        answers[grade_id] = typed
    return answers


def test_submissions_from_the_edition_grade_in_the_full_repository(made, tmp_path, capsys):
    """A student answers the edition's copy of 00-warmup, another hands it in untouched; the
    instructor collects both from a folder and autogrades them with `labkit grade` in (a
    copy of) the full repository: full marks, and zero."""
    assignment, name = "00-warmup", "warmup.ipynb"
    copy = made / "exercises" / assignment / name
    mail = tmp_path / "mail"
    grading.apply_answers(
        copy, typed_answers(copy, ROOT / "grading/source" / assignment / name),
        mail / f"ada__{name}",
    )  # fmt: skip
    shutil.copy(copy, mail / f"bob__{name}")
    with grading.scratch_course(released=assignment) as course:
        where = ["--course-dir", str(course.root)]
        assert labkit(["grade", "collect", assignment, "--folder", str(mail), *where]) == 0
        assert labkit(["grade", "autograde", assignment, *where]) == 0
        scores = course.scores(assignment)
    out = capsys.readouterr().out
    maximum = sum(grading.grade_cells(ROOT / "grading/source" / assignment / name).values())
    assert maximum > 0
    assert (scores["ada"].score, scores["ada"].max_score) == (maximum, maximum), out
    assert scores["bob"].score == 0, out


def test_the_makefile_and_binder_files_hold_together(made):
    """The edition's binder/ is the full repository's (Binder builds it the same way), and
    its Makefile has the targets its README names."""
    for name in ("requirements.txt", "runtime.txt", "postBuild", "start", "apt.txt"):
        assert (made / "binder" / name).read_bytes() == (ROOT / "binder" / name).read_bytes()
    assert os.access(made / "binder" / "start", os.X_OK)
    dry = subprocess.run(
        ["make", "-n", "lab", "test", "check", "A=00-warmup", "down", "lab-containers"],
        cwd=made, capture_output=True, text=True, env=edition_env(made),
    )  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    pyproject = tomllib.loads((made / "pyproject.toml").read_text())
    assert (made / "pyproject.toml").read_bytes() == (ROOT / "pyproject.toml").read_bytes()
    assert pyproject["project"]["name"] == "labkit"
