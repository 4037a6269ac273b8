"""The capstones' wrong designs (``tests/capstones/wrong_<name>.toml``), shared by their tests.

Each entry is a text replacement applied to a copy of the reference solution (``old``
occurs exactly once in ``file``), or several (``[[wrong.edit]]`` tables, each with its
``file``, ``old`` and ``new``), the acceptance checks it must fail (``fails``), and why.
A wrong design must fail on the check's own measure: a check that failed only because the
changed code raised would prove nothing about the check (a typo in ``new`` would do it).
An entry whose failure is an error by design says so with ``raises = "<ExceptionName>"``.
"""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

from labkit.course import capstones

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def load(name: str) -> list[dict]:
    return tomllib.loads((HERE / f"wrong_{name}.toml").read_text())["wrong"]


def edits(wrong: dict) -> list[dict]:
    """The replacements of a wrong design: its ``edit`` tables, or the entry itself."""
    return wrong.get("edit") or [wrong]


def ids(name: str) -> list[str]:
    return [wrong["id"] for wrong in load(name)]


def check_well_formed(name: str, extra_checks: set[str] = frozenset()) -> None:
    """At least 3 designs, unique ids, known checks, and each ``old`` found exactly once."""
    wrongs = load(name)
    reference = capstones.reference_project(name, ROOT)
    known = set(capstones.check_names(name)) | set(extra_checks)
    assert len(wrongs) >= 3, f"{name}: {len(wrongs)} wrong designs (at least 3)"
    assert len({w["id"] for w in wrongs}) == len(wrongs), "duplicate ids"
    for wrong in wrongs:
        assert wrong.get("why"), f"{wrong['id']}: say why it is wrong"
        assert set(wrong["fails"]) <= known, f"{wrong['id']}: unknown checks {wrong['fails']}"
        for edit in edits(wrong):
            found = (reference / edit["file"]).read_text().count(edit["old"])
            assert found == 1, (
                f"{wrong['id']}: its `old` text occurs {found} times in {edit['file']} "
                f"(must be once): update wrong_{name}.toml to the reference"
            )


def project_with(name: str, wrong: dict, folder: Path) -> Path:
    """A copy of the reference solution in ``folder`` with the wrong design applied."""
    project = folder / name
    shutil.copytree(
        capstones.reference_project(name, ROOT), project,
        ignore=shutil.ignore_patterns("__pycache__"),
    )  # fmt: skip
    for edit in edits(wrong):
        target = project / edit["file"]
        text = target.read_text()
        assert text.count(edit["old"]) == 1, f"{wrong['id']}: `old` must occur once"
        target.write_text(text.replace(edit["old"], edit["new"]))
    return project


def assert_caught(name: str, wrong: dict, folder: Path) -> capstones.Report:
    """Run the checks the wrong design must fail; each fails, on its measure (or with the
    error the entry names)."""
    project = project_with(name, wrong, folder)
    report = capstones.run(name, project, size="ci", only=wrong["fails"], progress=False)
    failed = {c.name: c for c in report.checks if not c.passed}
    missed = set(wrong["fails"]) - set(failed)
    assert not missed, f"{wrong['id']} ({wrong['why']}) passed {sorted(missed)}:\n{report}"
    expected_error = wrong.get("raises")
    for check in failed.values():
        raised = check.measured.startswith("raised ")
        if expected_error:
            assert raised and expected_error in check.measured, (
                f"{wrong['id']}: {check.name} should fail with {expected_error}:\n{report}"
            )
        else:
            assert not raised, (
                f"{wrong['id']}: {check.name} failed because the code raised, not on its "
                f"measure:\n{report}"
            )
    return report
