"""Capstone: an analytics dashboard (analytics): the reference passes, the starter fails, each wrong design fails
the check that targets it. Real PostgreSQL and Redis; CI size (200,000 events)."""

from __future__ import annotations

from pathlib import Path

import pytest
import wrong_designs

from labkit.course import capstones

pytestmark = pytest.mark.capstone

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "grading" / "capstones" / "analytics"
STARTER = ROOT / "capstones" / "analytics"
WRONG = wrong_designs.load("analytics")

#: Every check the starter must fail, and why (the learner's work).
STARTER_FAILS = {
    "load-copy": "one INSERT per row",
    "rollup-matches-recompute": "no rollup; a re-delivered event raises",
    "rollup-incremental": "no rollup table is written",
    "dashboard-reads-rollup": "reads the raw events",
    "duckdb-matches-postgres": "DuckDB queries are TODO",
    "export-roundtrip": "pandas turns integers with NULLs into floats",
    "real-data-timezones": "Seattle times read in the session's zone",
    "dashboard-widget": "one control only",
}


def test_reference_passes_every_check():
    report = capstones.run("analytics", REFERENCE, size="ci", progress=False)
    assert report.passed, f"the reference solution failed:\n{report}"
    names = {check.name for check in report.checks}
    assert set(capstones.check_names("analytics")) <= names
    assert {"duckdb-speed"} <= names
    print(f"{report}\n({report.seconds} s at CI size; budget 3 min)")


def test_untouched_starter_fails_the_checks_that_need_the_learners_work():
    report = capstones.run("analytics", STARTER, size="ci", progress=False)
    failed = set(report.failed())
    assert set(STARTER_FAILS) <= failed, (
        f"the starter passed {set(STARTER_FAILS) - failed}:\n{report}"
    )


def test_starter_and_reference_have_the_same_interface():
    starter = capstones.load_project(STARTER, "capstone_analytics_starter_iface")
    reference = capstones.load_project(REFERENCE, "capstone_analytics_reference_iface")
    assert sorted(starter.__all__) == sorted(reference.__all__)


def test_every_wrong_design_is_well_formed():
    wrong_designs.check_well_formed("analytics", {"duckdb-speed"})


@pytest.mark.parametrize("wrong", WRONG, ids=wrong_designs.ids("analytics"))
def test_wrong_design_fails_its_check(wrong, tmp_path):
    wrong_designs.assert_caught("analytics", wrong, tmp_path)
