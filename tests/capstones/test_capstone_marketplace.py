"""Capstone: the marketplace: the reference solution passes every acceptance check at CI
size, the untouched starter fails the checks that need the learner's work, and each wrong
design (tests/capstones/wrong_marketplace.toml) fails the check that should catch it."""

from __future__ import annotations

from pathlib import Path

import pytest
import wrong_designs

from labkit.course import capstones

pytestmark = pytest.mark.capstone

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "grading" / "capstones" / "marketplace"
STARTER = ROOT / "capstones" / "marketplace"
WRONG = wrong_designs.load("marketplace")
# What the starter already does (one order end to end), and what it leaves to the learner.
STARTER_PASSES = {"order-flow"}
STARTER_FAILS = {"no-oversell", "payment-compensates", "no-lost-events", "graphql-statements"}


def _run(project: Path, only: list[str] | None = None) -> capstones.Report:
    return capstones.run("marketplace", project, size="ci", only=only, progress=False)


def test_reference_passes_every_check():
    report = _run(REFERENCE)
    assert report.passed, f"the reference solution failed:\n{report}"
    assert {c.name for c in report.checks} == set(capstones.check_names("marketplace"))
    numbers = report.numbers()
    assert numbers["oversold"] == 0 and numbers["events_lost"] == 0, report
    assert numbers["events_applied_twice"] == 0, report
    assert numbers["statements_per_request"] <= 6, report
    print(report)


def test_starter_fails_what_the_learner_must_build():
    report = _run(STARTER)
    passed = {c.name for c in report.checks if c.passed}
    assert passed == STARTER_PASSES, f"the starter passed {passed}:\n{report}"
    assert set(report.failed()) == STARTER_FAILS, report
    fixes = {c.name: c.fix for c in report.checks if not c.passed}
    assert all(fixes.values()), f"a failing check says nothing about what to fix: {fixes}"


def test_check_names_match_the_requirements():
    suite = capstones.suite("marketplace")
    assert [fn.requirement for fn in suite.CHECKS] == ["R1", "R2", "R3", "R4", "R5"]
    assert set(suite.PARAMS) == {"ci", "default"}


def test_wrong_designs_are_listed():
    wrong_designs.check_well_formed("marketplace")


@pytest.mark.parametrize("wrong", WRONG, ids=wrong_designs.ids("marketplace"))
def test_wrong_design_fails_its_check(wrong, tmp_path):
    wrong_designs.assert_caught("marketplace", wrong, tmp_path)
