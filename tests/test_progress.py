"""Progress is computed from the learner's own results — lessons that ran to their last
cell, and the latest check of each exercise notebook — per step and per phase, in the
notebook and on the command line. Nothing to tick by hand. The learning journal ticks the
guide's weekly checklists from the same records, and carries the numbers lessons measured."""

from __future__ import annotations

import ast
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import nbformat

from labkit import sections
from labkit.course import grading, progress

ROOT = Path(__file__).resolve().parents[1]
LESSONS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))


def step(report: progress.Progress, number: int) -> dict:
    return next(row for row in report.steps if row["step"] == number)


def phase(report: progress.Progress, number: int) -> dict:
    return next(row for row in report.phases if row["phase"] == number)


def warmup_points() -> float:
    return sum(
        grading.grade_cells(ROOT / "grading" / "source" / "00-warmup" / "warmup.ipynb").values()
    )


def test_every_exercise_notebook_belongs_to_exactly_one_step():
    """The declarative table covers every notebook under grading/source, once."""
    import fnmatch

    from labkit.course import grading

    by_hand = []
    for path in sorted((ROOT / "grading" / "source").glob("*/*.ipynb")):
        key = f"{path.parent.name}/{path.name}"
        if not grading.is_autograded(path.parent):  # graded in the instructor's gradebook:
            by_hand.append(key)  # a capstone step is done when its acceptance suite passed
            continue
        steps = [
            s.step for s in progress.STEPS if any(fnmatch.fnmatch(key, p) for p in s.exercises)
        ]
        assert len(steps) == 1, f"{key} belongs to steps {steps}: fix labkit.course.progress.STEPS"
    assert all(key.startswith("05-capstones/") for key in by_hand), by_hand


def test_every_lesson_records_that_it_ran_to_the_end():
    """The last code cell of every lesson calls progress.record_lesson('<its own name>')."""
    for path in LESSONS:
        cells = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
        expected = f'progress.record_lesson("{path.stem}")'
        assert cells and expected in cells[-1].source, (
            f"{path.name}: make its last code cell `from labkit.course import progress` + `{expected}`"
        )


def test_empty_state(tmp_path):
    """No results yet: nothing is done, the points available come from the exercises."""
    report = progress.overview(tmp_path)
    assert report.evidence == 0 and "Nothing recorded yet" in report.note
    assert {row["status"] for row in report.steps} <= {"not started", "coming soon"}
    assert step(report, 0)["exercises"] == f"0 / {warmup_points():g} (not checked yet)"
    assert step(report, 0)["lesson"] == "not run yet"
    assert phase(report, 0)["steps done"] == "0 / 1"
    assert phase(report, 2)["status"] == "not started"  # its lesson and exercises are in
    assert phase(report, 3)["status"] == "not started"  # its exercises are in
    assert phase(report, 4)["status"] == "not started"  # its exercises are in
    html = report._repr_html_()
    assert "Per phase" in html and "Start here and warm-up" in html


def test_results_make_progress(tmp_path):
    """A lesson run and a partial check → in progress; full marks → done (step and phase)."""
    total = warmup_points()
    progress.record_lesson("00-start-here", tmp_path)
    report = progress.overview(tmp_path)
    assert step(report, 0)["status"] == "in progress"
    assert step(report, 0)["lesson"].startswith("ran ")

    progress.record_exercise("00-warmup", "warmup.ipynb", 2, total, directory=tmp_path)
    report = progress.overview(tmp_path)
    assert step(report, 0)["exercises"] == f"2 / {total:g}"
    assert step(report, 0)["status"] == "in progress"

    progress.record_exercise("00-warmup", "warmup.ipynb", total, total, directory=tmp_path)
    report = progress.overview(tmp_path)
    assert step(report, 0)["status"] == "done"
    assert phase(report, 0)["status"] == "done" and phase(report, 0)["steps done"] == "1 / 1"
    assert phase(report, 1)["status"] in {"not started", "coming soon"}
    assert report.evidence == 2


def test_lessons_run_by_the_tests_do_not_count_as_the_learners(tmp_path):
    """The test run records lessons in its own folder, never in the learner's .labkit/."""
    assert os.environ.get("LABKIT_PROGRESS_DIR"), "tests/conftest.py must set LABKIT_PROGRESS_DIR"
    assert Path(os.environ["LABKIT_PROGRESS_DIR"]) != ROOT / ".labkit" / "progress"


def test_progress_command(tmp_path):
    """`python -m labkit progress` shows the same, as text or JSON."""
    progress.record_exercise("00-warmup", "warmup.ipynb", 4, warmup_points(), directory=tmp_path)
    env = {**os.environ, "LABKIT_PROGRESS_DIR": str(tmp_path)}
    text = subprocess.run(
        [sys.executable, "-m", "labkit", "progress"], capture_output=True, text=True, env=env
    )
    assert text.returncode == 0, text.stderr
    assert "Start here and warm-up" in text.stdout and f"4 / {warmup_points():g}" in text.stdout
    as_json = subprocess.run(
        [sys.executable, "-m", "labkit", "progress", "--json"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert json.loads(as_json.stdout) == progress.overview(tmp_path).as_dict()


# --- The learning journal -----------------------------------------------------------------

L01 = "01-performance-and-optimization"
L01_KEYS = [k for k, n in progress.NUMBERS.items() if n.lesson == L01]


def points_of(pattern: str) -> dict[str, float]:
    (path,) = (ROOT / "grading" / "source").glob(pattern + ".ipynb")
    return grading.grade_cells(path)


def line(text: str, item: str) -> str:
    """The journal's line for the box ``item``."""
    (found,) = [row for row in text.splitlines() if row.startswith("- [") and f"] {item} — " in row]
    return found


def ticked(text: str, item: str) -> bool:
    return line(text, item).startswith("- [x]")


def test_empty_journal(tmp_path):
    """No results: every box of every week is empty, and each says what would tick it."""
    journal = progress.journal(tmp_path)
    text = journal.markdown()
    assert journal.ticked == 0 and journal.total == text.count("\n- [ ] ") > 20
    assert [line[3:] for line in text.splitlines() if line.startswith("## ")] == [
        week.title for week in progress.JOURNAL
    ]
    assert "python -m labkit check 01-performance" in line(text, "Implemented Redis caching")
    assert "My numbers" not in text


def test_boxes_are_ticked_exactly_as_the_evidence_says(tmp_path):
    """Synthetic records: each box is ticked when (and only when) its evidence holds, with
    the evidence beside it; the numbers show with what they are and where they come from."""
    progress.record_lesson("00-start-here", tmp_path)
    progress.record_exercise("00-warmup", "warmup.ipynb", 4, 6, directory=tmp_path)
    caching = points_of("01-performance/step07-*")
    progress.record_exercise(
        "01-performance",
        "step07-caching.ipynb",
        sum(caching.values()),
        sum(caching.values()),
        {task: (top, top) for task, top in caching.items()},
        directory=tmp_path,
    )
    graphql = points_of("02-graphql/step08-*")
    progress.record_exercise(
        "02-graphql",
        "step08-graphql.ipynb",
        2,
        sum(graphql.values()),
        {task: (2 if task == "test_post_created" else 0, top) for task, top in graphql.items()},
        directory=tmp_path,
    )
    progress.record_numbers("03-security-and-scale", {"duckdb_speedup": 12.345}, tmp_path)
    progress.record_capstone("marketplace", True, {"orders_per_s": 412.0}, directory=tmp_path)
    progress.record_capstone("collab", False, directory=tmp_path)

    text = progress.journal(tmp_path).markdown()
    assert ticked(text, "Ran the start-here notebook")
    assert "lesson 00-start-here ran to the end" in line(text, "Ran the start-here notebook")
    assert not ticked(text, "Completed the warm-up exercises")
    assert "warmup.ipynb: 4 / 6 points" in line(text, "Completed the warm-up exercises")
    assert ticked(text, "Implemented Redis caching")
    assert f"16 / {sum(caching.values()):g} points" in line(text, "Implemented Redis caching")
    assert not ticked(text, "Completed query optimization exercises")
    assert ticked(text, "Added subscriptions")
    assert "test_post_created 2/2" in line(text, "Added subscriptions")
    assert not ticked(text, "Implemented DataLoader")
    assert "test_load_posts_by_author 0/2" in line(text, "Implemented DataLoader")
    # DuckDB: the number alone is not enough, the task must have full marks too
    duck = line(text, "Ran the heavy analytics on a Parquet copy with DuckDB")
    assert duck.startswith("- [ ]") and "measured 12.3×" in duck
    assert (
        "| DuckDB's speed-up over PostgreSQL on that report (13.9) | 12.3× "
        "| lesson 03-security-and-scale, Step 13 |" in text
    )
    assert ticked(text, "E-commerce marketplace: acceptance suite passed")
    assert "passed at size ci" in line(text, "E-commerce marketplace: acceptance suite passed")
    collab = line(text, "Real-time collaboration platform: acceptance suite passed")
    assert collab.startswith("- [ ]") and "failed" in collab
    assert "| orders_per_s | 412 | capstone marketplace (size ci) |" in text
    assert progress.journal(tmp_path).ticked == 4

    # Measured performance improvements: lesson 01 ran AND recorded its numbers
    progress.record_numbers(L01, dict.fromkeys(L01_KEYS, "10 → 1"), tmp_path)
    assert not ticked(progress.journal(tmp_path).markdown(), "Measured performance improvements")
    progress.record_lesson(L01, tmp_path)
    text = progress.journal(tmp_path).markdown()
    assert ticked(text, "Measured performance improvements")
    assert f"| {L01_KEYS[0]} | 10 → 1 | lesson {L01}, Step 6 |" in text


def test_record_numbers(tmp_path):
    """Only measured values are kept (not None, NaN or a note in parentheses); a later run
    replaces a value and keeps the others; a name the journal does not know is refused."""
    import numpy as np

    first = {L01_KEYS[0]: "1,204 → 12", L01_KEYS[1]: "(section not run in this kernel)"}
    path = progress.record_numbers(L01, first, tmp_path)
    progress.record_numbers(
        "03-security-and-scale",
        {"rls_attacks_tried": np.int64(14), "duckdb_speedup": math.nan, "postgres_report_ms": None},
        tmp_path,
    )
    progress.record_numbers(L01, {L01_KEYS[1]: "0.52 → 0.03"}, tmp_path)
    kept = json.loads(path.read_text())["numbers"]
    assert {k: v["value"] for k, v in kept.items()} == {
        L01_KEYS[0]: "1,204 → 12",
        L01_KEYS[1]: "0.52 → 0.03",
    }
    other = json.loads((tmp_path / "numbers" / "03-security-and-scale.json").read_text())
    assert other["numbers"]["rls_attacks_tried"]["value"] == 14 and len(other["numbers"]) == 1
    # lesson 01's cell passes its table's column (a pandas Series): sections not run are skipped
    not_run = sections.numbers({})["this run"]
    assert not_run.str.startswith("(").all()
    progress.record_numbers(L01, not_run, tmp_path)
    assert json.loads(path.read_text())["numbers"] == kept
    try:
        progress.record_numbers(L01, {"speed-up": 3}, tmp_path)
    except ValueError as error:
        assert "NUMBERS" in str(error)
    else:
        raise AssertionError("an unknown name was recorded")


def test_a_damaged_record_is_ignored(tmp_path):
    """Half-written or foreign JSON counts as no record: the journal still renders."""
    progress.record_lesson("00-start-here", tmp_path)
    progress.record_numbers("03-security-and-scale", {"rls_attacks_tried": 14}, tmp_path)
    before = progress.journal(tmp_path).markdown()
    (tmp_path / "exercises" / "01-performance").mkdir(parents=True)
    (tmp_path / "exercises" / "01-performance" / "step07-caching.json").write_text('{"assig')
    (tmp_path / "numbers" / "01-performance-and-optimization.json").write_text("[1, 2]")
    (tmp_path / "capstones").mkdir()
    (tmp_path / "capstones" / "collab.json").write_text('{"capstone": "collab", "passed": "yes"}')
    (tmp_path / "lessons" / "01-performance-and-optimization.json").write_text("")
    after = progress.journal(tmp_path)
    assert after.ticked == 1
    strip = [row for row in after.markdown().splitlines() if not row.startswith("Written")]
    assert [row for row in strip if "collab" not in row.lower()] == [
        row
        for row in before.splitlines()
        if not row.startswith("Written") and "collab" not in row.lower()
    ]
    # a damaged numbers record is started afresh by the next run
    (tmp_path / "numbers" / "03-security-and-scale.json").write_text("{")
    progress.record_numbers("03-security-and-scale", {"rls_attacks_leaking": 6}, tmp_path)
    assert "| RLS: attacks tried (11.6) |" not in progress.journal(tmp_path).markdown()


def test_journal_command(tmp_path, monkeypatch, capsys):
    """`python -m labkit progress --journal` writes the journal (default: journal.md in the
    progress folder; --output elsewhere, or - to print it) and says where."""
    from labkit.course.cli import main

    progress.record_lesson("00-start-here", tmp_path)
    monkeypatch.setenv("LABKIT_PROGRESS_DIR", str(tmp_path))
    default = subprocess.run(
        [sys.executable, "-m", "labkit", "progress", "--journal"],
        capture_output=True,
        text=True,
        env=os.environ,
    )
    assert default.returncode == 0, default.stderr
    written = tmp_path / "journal.md"
    assert str(written) in default.stdout and "1 of " in default.stdout
    assert ticked(written.read_text(), "Ran the start-here notebook")

    capsys.readouterr()
    elsewhere = tmp_path / "out" / "my-journal.md"
    assert main(["progress", "--journal", "--output", str(elsewhere)]) == 0
    assert str(elsewhere) in capsys.readouterr().out
    assert elsewhere.read_text().startswith("# My learning journal")
    assert main(["progress", "--journal", "--output", "-"]) == 0
    assert capsys.readouterr().out.startswith("# My learning journal")
    assert main(["progress", "--output", str(elsewhere)]) == 2  # --output needs --journal


def record_numbers_calls(path: Path) -> list[ast.Call]:
    calls = []
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type != "code" or "record_numbers" not in cell.source:
            continue
        source = "\n".join(
            "" if row.lstrip().startswith(("%", "!")) else row for row in cell.source.splitlines()
        )
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "record_numbers":
                calls.append(node)
    return calls


def test_every_number_a_lesson_records_is_one_the_journal_knows():
    """Each record_numbers call in the lessons names its own lesson and keys of
    progress.NUMBERS for that lesson (lesson 01 records its 'Your numbers' table,
    labkit.sections.numbers); and every key of NUMBERS is recorded by some lesson."""
    recorded = set()
    for path in LESSONS:
        for call in record_numbers_calls(path):
            lesson, numbers = call.args[:2]
            assert ast.literal_eval(lesson) == path.stem, f"{path.name}: name the lesson itself"
            if isinstance(numbers, ast.Dict):
                keys = [ast.literal_eval(key) for key in numbers.keys]
            else:  # lesson 01's table: its labels, whatever sections ran
                assert path.stem == L01, f"{path.name}: pass a dict with literal keys"
                keys = list(sections.numbers({}).index)
            for key in keys:
                assert key in progress.NUMBERS, f"{path.name}: add {key!r} to progress.NUMBERS"
                assert progress.NUMBERS[key].lesson == path.stem, (path.name, key)
            recorded.update(keys)
    assert recorded == set(progress.NUMBERS), set(progress.NUMBERS) - recorded


def test_journal_evidence_names_what_exists():
    """Every piece of evidence in the journal points at a real lesson, exercise task or
    number, so that each box can be ticked."""
    import fnmatch

    lessons = [p.stem for p in (ROOT / "notebooks").glob("*.ipynb")]
    for week in progress.JOURNAL:
        for item in week.items:
            for evidence in item.evidence:
                if isinstance(evidence, progress.Lesson):
                    assert fnmatch.filter(lessons, evidence.lesson), item.text
                elif isinstance(evidence, progress.Tasks):
                    points = points_of(evidence.notebook)
                    assert set(evidence.tasks) <= set(points), (item.text, evidence.tasks)
                elif isinstance(evidence, progress.Measured):
                    assert set(evidence.numbers) <= set(progress.NUMBERS), item.text
                else:
                    assert evidence.name in progress.CAPSTONES, item.text
    steps = {s for week in progress.JOURNAL for s in week.steps}
    assert steps == {s.step for s in progress.STEPS}  # the whole syllabus


def test_start_here_shows_the_journal():
    """00-start-here renders the journal, after the progress table."""
    cells = [
        c.source
        for c in nbformat.read(ROOT / "notebooks" / "00-start-here.ipynb", as_version=4).cells
        if c.cell_type == "code"
    ]
    shown = [i for i, source in enumerate(cells) if "progress.journal()" in source]
    table = [i for i, source in enumerate(cells) if "progress.overview()" in source]
    assert shown and table and shown[0] > table[0]


def test_a_capstone_step_is_done_when_its_acceptance_suite_passed(tmp_path):
    """The capstones' steps follow their acceptance runs (`labkit check capstone-<name>`),
    not their briefs: a failed run is work in progress, a passed one is done."""
    report = progress.overview(tmp_path)
    assert step(report, 17)["status"] == "not started"
    assert "acceptance not run yet" in step(report, 17)["exercises"]
    progress.record_capstone("marketplace", False, {"orders_per_s": 10.0}, "ci", tmp_path)
    report = progress.overview(tmp_path)
    assert step(report, 17)["status"] == "in progress"
    assert step(report, 17)["exercises"].startswith("acceptance failed ")
    progress.record_capstone("marketplace", True, {}, "default", tmp_path)
    report = progress.overview(tmp_path)
    assert step(report, 17)["status"] == "done"
    assert (
        "acceptance passed" in step(report, 17)["exercises"]
        and "size default" in (step(report, 17)["exercises"])
    )
    assert step(report, 16)["status"] == step(report, 18)["status"] == "not started"
    assert phase(report, 5)["status"] == "in progress"


def test_numbers_of_a_failed_capstone_run_say_so(tmp_path):
    """A starter's figures (13 oversold) are shown as what a failed run measured."""
    progress.record_capstone("marketplace", False, {"oversold": 13}, "ci", tmp_path)
    text = progress.journal(tmp_path).markdown()
    row = next(line for line in text.splitlines() if line.startswith("| oversold"))
    assert "capstone marketplace (size ci, a failed run)" in row
    progress.record_capstone("marketplace", True, {"oversold": 0}, "default", tmp_path)
    text = progress.journal(tmp_path).markdown()
    row = next(line for line in text.splitlines() if line.startswith("| oversold"))
    assert "capstone marketplace (size default)" in row and "failed" not in row
