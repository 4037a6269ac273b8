"""The course's errors: one hierarchy, caught by type.

For example:

    >>> from labkit.errors import LabkitError, ServiceError
    >>> issubclass(ServiceError, LabkitError)
    True

Every error here carries a message that says what happened and what to do, so the command
line prints it without a traceback (``python -m labkit ...`` exits 2). Anything else that
reaches the command line is a bug, and shows its traceback.
"""

from __future__ import annotations

__all__ = ["CheckError", "GradingError", "LabkitError", "ServiceError", "ServicesNotRunning"]


class LabkitError(RuntimeError):
    """An error whose message says what to do."""


class ServicesNotRunning(LabkitError):
    """No server is configured or started."""


class ServiceError(LabkitError):
    """A server could not be started, stopped or reached."""


class GradingError(LabkitError):
    """An nbgrader step or the instructor's workflow could not go on."""


class CheckError(LabkitError):
    """A learner's self-check cannot run (unknown assignment, no notebook)."""
