"""One error hierarchy: every error class of the package is a LabkitError, and the command
line catches that type (its message says what to do) while any other exception — a bug —
keeps its traceback."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import labkit
from labkit.course import cli
from labkit.errors import LabkitError


def package_modules():
    return [
        importlib.import_module(f"labkit.{info.name}")
        for info in pkgutil.iter_modules(labkit.__path__)
        if info.name not in {"__main__", "nbgrader_ext"}  # nbgrader_ext: loaded by nbgrader
    ]


def test_every_error_class_is_a_labkit_error():
    """No module defines an exception outside the hierarchy."""
    outside = [
        f"{module.__name__}.{name}"
        for module in package_modules()
        for name, value in vars(module).items()
        if inspect.isclass(value)
        and issubclass(value, BaseException)
        and value.__module__ == module.__name__
        and not issubclass(value, LabkitError)
    ]
    assert not outside, f"error classes outside labkit.errors.LabkitError: {outside}"


class Broken(LabkitError):
    """A made-up error that says what to do."""


def test_cli_prints_labkit_errors_and_lets_bugs_through(monkeypatch, capsys):
    """A LabkitError (any subclass) → its message and exit 2; anything else propagates."""

    def fails_politely(args):
        raise Broken("the thing is off: run `make up`")

    def has_a_bug(args):
        raise KeyError("bug")

    monkeypatch.setattr(cli, "_progress", fails_politely)
    assert cli.main(["progress"]) == 2
    assert "error: the thing is off: run `make up`" in capsys.readouterr().err
    monkeypatch.setattr(cli, "_progress", has_a_bug)
    with pytest.raises(KeyError):
        cli.main(["progress"])


def test_nbgrader_failures_name_their_first_traceback():
    """A failed nbgrader run logs its cause where it happens and a summary at the end: the
    GradingError quotes the first traceback as well as the tail (CI once showed only the
    summary: "There was an error processing assignment ... see the above traceback"), and
    quotes it last (CI's log viewer once kept only the start and the end of a report)."""
    from labkit.course.grading import _first_failure

    cause = "Traceback (most recent call last):\n  RuntimeError: kernel died\n"
    log = "[AutogradeApp | INFO] fine\n" * 200 + cause + "[AutogradeApp | INFO] more\n" * 200
    quoted = _first_failure(log)
    assert quoted.endswith("the first error in nbgrader's log:\n" + cause), "the cause, alone"
    logged = "[AutogradeApp | ERROR] There was an error processing assignment: a\n" + cause
    quoted = _first_failure("[AutogradeApp | INFO] fine\n" * 200 + logged + "[A | INFO] b\n" * 400)
    assert quoted.endswith(logged), "nbgrader's ERROR record and its traceback, up to the next"
    assert _first_failure("short log") == ""
    assert _first_failure("x" * 5000) == "", "no traceback: the tail says it all"
