"""Capstone collab: the reference solution passes every acceptance check at size ci, the
untouched starter fails the checks that need the learner's work, and each wrong design
(tests/capstones/wrong_collab.toml) fails the check that should catch it."""

from __future__ import annotations

from pathlib import Path

import pytest
import wrong_designs

from labkit.course import capstones

pytestmark = pytest.mark.capstone

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "grading" / "capstones" / "collab"
STARTER = ROOT / "capstones" / "collab"
WRONG = wrong_designs.load("collab")


def test_reference_passes_every_check():
    report = capstones.run("collab", REFERENCE, size="ci", progress=False)
    assert report.passed, str(report)
    assert [c.name for c in report.checks] == capstones.check_names("collab")
    numbers = report.numbers()
    assert numbers["acked_edits_lost_on_kill"] == 0
    assert numbers["ws_clients"] >= 20 and numbers["deliveries_per_s"] > 0, numbers


def test_untouched_starter_fails():
    report = capstones.run("collab", STARTER, size="ci", progress=False)
    assert set(report.failed()) == {
        "converge",
        "no-cross-tenant-messages",
        "no-cross-tenant-rows",
        "restart-loses-nothing",
        "concurrency",
        "survives-listen-loss",
    }, str(report)
    failed = {c.name: c for c in report.checks}
    assert "forged tokens refused" in failed["no-cross-tenant-messages"].measured
    assert all(c.fix for c in report.checks), "every failed check says what to fix"


def test_wrong_designs_are_listed():
    wrong_designs.check_well_formed("collab")


@pytest.mark.parametrize("wrong", WRONG, ids=wrong_designs.ids("collab"))
def test_wrong_design_fails_its_check(wrong, tmp_path):
    wrong_designs.assert_caught("collab", wrong, tmp_path)
