"""The usage examples in the package's docstrings run, against the course's real servers,
so that documentation cannot drift from the code (as SQLAlchemy tests its tutorial text).

Modules still being rewritten elsewhere (grading, cli, selfcheck, nbgrader_ext,
explain_tools, measure, practice, progress) are not listed yet."""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil

import pytest

import labkit

pytestmark = pytest.mark.xdist_group("services")

#: Every module of the package; the usage in its docstring runs as a doctest.
MODULES = ["labkit"] + sorted(
    info.name
    for info in pkgutil.walk_packages(labkit.__path__, "labkit.")
    if info.name != "labkit.__main__"  # `python -m labkit`: nothing to import and run
)
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name, capsys):
    """Every `>>>` example of the module gives the output its docstring shows."""
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=FLAGS, report=False)
    report = capsys.readouterr().out
    assert result.failed == 0, f"{result.failed} example(s) of {name} failed:\n{report}"
    assert result.attempted > 0, f"{name} has no examples"


@pytest.mark.parametrize("name", MODULES)
def test_no_untested_usage_blocks(name):
    """Usage is written as `>>>` examples, not as a `Usage::` block that nothing runs."""
    source = inspect.getsource(importlib.import_module(name))
    assert "Usage::" not in source, f"{name}: turn its Usage:: block into >>> examples"
