"""The capstones' acceptance runner (``labkit.course.capstones``) and its command line:
the learner's package imported from its folder, each check's result or the error the
learner's code raised (named by file and line), private databases and Redis keys removed
afterwards, the run recorded for the learning journal, and clear exits for what cannot be
checked."""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest

from labkit import cache, db
from labkit.course import capstones, cli

pytestmark = pytest.mark.capstone


def fake_suite(seen: dict) -> types.ModuleType:
    """A suite of three checks over a project exposing ``answer()``."""

    @capstones.requirement("R1", "answers-42")
    def check_answer(ctx):
        got = ctx.project.answer()
        return capstones.Check(
            "answers-42", "R1", got == 42, f"answer() = {got}", "42",
            fix="make answer() return 42", numbers={"answer": got},
        )  # fmt: skip

    @capstones.requirement("R2", "uses-private-state")
    def check_private(ctx):
        database = ctx.database("state")
        prefix = ctx.redis_prefix("k")
        cache.redis_client().set(f"{prefix}x", "1")
        seen.update(database=database.name, prefix=prefix, workdir=ctx.workdir)
        return capstones.Check("uses-private-state", "R2", True, "made", "made")

    @capstones.requirement("R3", "raises")
    def check_raises(ctx):
        ctx.project.explode()

    return types.SimpleNamespace(
        TITLE="fake", PARAMS={"ci": {}, "default": {}},
        CHECKS=[check_answer, check_private, check_raises],
    )  # fmt: skip


@pytest.fixture
def fake(monkeypatch, tmp_path):
    seen: dict = {}
    suite = fake_suite(seen)
    monkeypatch.setattr(capstones, "suite", lambda name: suite)
    project = tmp_path / "project"
    project.mkdir()
    (project / "helpers.py").write_text(
        "import json\n\ndef explode():\n    json.loads('{')  # raises in the library\n"
    )
    (project / "__init__.py").write_text(
        "from .helpers import explode\n\ndef answer():\n    return 41\n"
    )
    return project, seen


def test_a_run_reports_each_check_and_cleans_up(fake):
    project, seen = fake
    report = capstones.run("collab", project, size="ci", progress=False)
    by_name = {c.name: c for c in report.checks}
    assert [c.passed for c in report.checks] == [False, True, False]
    assert by_name["answers-42"].measured == "answer() = 41"
    assert by_name["answers-42"].fix == "make answer() return 42"
    raised = by_name["raises"]
    # the learner's line, not json's where the error surfaced
    assert "JSONDecodeError" in raised.measured and "helpers.py, line 4" in raised.fix
    assert not report.passed and report.failed() == ["answers-42", "raises"]
    assert report.numbers() == {"answer": 41}
    text = str(report)
    assert "FAIL R1 answers-42" in text and "what to fix: make answer() return 42" in text
    # what the run made is gone: its database, its Redis keys, its folder
    assert not db.database_exists(seen["database"])
    assert not list(cache.redis_client().scan_iter(match=f"{seen['prefix']}*"))
    assert not Path(seen["workdir"]).exists()


def test_only_runs_the_named_checks_and_refuses_unknown_ones(fake):
    project, _ = fake
    report = capstones.run("collab", project, only=["answers-42"], progress=False)
    assert [c.name for c in report.checks] == ["answers-42"]
    with pytest.raises(capstones.CapstoneError, match="no check \\['nope'\\]"):
        capstones.run("collab", project, only=["nope"], progress=False)


def test_a_full_run_is_recorded_for_the_journal(fake, monkeypatch, tmp_path, capsys):
    project, _ = fake
    (project / "__init__.py").write_text(
        "from .helpers import explode\n\ndef answer():\n    return 42\n"
    )
    monkeypatch.setenv("LABKIT_PROGRESS_DIR", str(tmp_path / "progress"))
    assert cli.main(["check", "capstone-collab", str(project), "--size", "ci"]) == 1
    record = json.loads((tmp_path / "progress" / "capstones" / "collab.json").read_text())
    assert record["passed"] is False and record["numbers"] == {"answer": 42}
    assert "FAIL R3 raises" in capsys.readouterr().out


def test_what_cannot_be_checked_exits_2_with_what_to_do(tmp_path, capsys):
    assert cli.main(["check", "capstone-nope"]) == 2
    assert "choose one of collab, marketplace, analytics" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["check", "capstone-collab", str(empty), "--size", "ci"]) == 2
    assert "a capstone project is a folder with an __init__.py" in capsys.readouterr().err
    (empty / "__init__.py").write_text("import not_a_module_anywhere\n")
    assert cli.main(["check", "capstone-collab", str(empty), "--size", "ci"]) == 2
    said = capsys.readouterr().err
    assert "your project does not import: ModuleNotFoundError" in said and "line 1" in said


def test_checking_an_instructors_copy_is_not_the_learners_progress(
    fake, monkeypatch, tmp_path, capsys
):
    """A reference solution or a submission under grading/ passes or fails for the
    instructor: the learner's journal must not tick the capstone for it."""
    from labkit import config

    project, _ = fake
    root = tmp_path / "course"
    inside = root / "grading" / "capstones" / "collab"
    inside.parent.mkdir(parents=True)
    project.rename(inside)
    monkeypatch.setattr(config, "project_root", lambda: root)
    monkeypatch.setenv("LABKIT_PROGRESS_DIR", str(tmp_path / "progress"))
    assert cli.main(["check", "capstone-collab", str(inside), "--size", "ci"]) == 1
    assert not (tmp_path / "progress" / "capstones").exists()
    elsewhere = tmp_path / "mine"
    inside.rename(elsewhere)
    assert cli.main(["check", "capstone-collab", str(elsewhere), "--size", "ci"]) == 1
    record = json.loads((tmp_path / "progress" / "capstones" / "collab.json").read_text())
    assert record["project"] == str(elsewhere.resolve())
    capsys.readouterr()


def test_a_partial_run_does_not_claim_the_whole_suite(fake, capsys):
    project, _ = fake
    (project / "__init__.py").write_text(
        "from .helpers import explode\n\ndef answer():\n    return 42\n"
    )
    argv = ["check", "capstone-collab", str(project), "--size", "ci", "--only", "answers-42"]
    assert cli.main(argv) == 0
    said = capsys.readouterr().out
    assert "The 1 result(s) of the checks you named passed; leave out --only to run all 3" in said
    assert "All acceptance checks" not in said
