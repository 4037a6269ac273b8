"""nbgrader plug-ins of the course: a sandbox per graded notebook, and feedback without
hidden tests. ``grading/nbgrader_config.py`` switches them on with one call::

    from labkit.course.nbgrader_ext import configure
    configure(c)

- :class:`EnterSandbox` / :class:`LeaveSandbox` wrap nbgrader's ``Execute`` step: every
  notebook of every submission runs with its own ``LABKIT_DB_PREFIX`` (so the databases
  it creates are its own, and are dropped afterwards) and its own private Redis server
  (``REDIS_URL``), so that one student's leftovers never change another student's score.
- :func:`cell_timeout` gives answer and test cells a short timeout (``LABKIT_GRADING_CELL_TIMEOUT``
  seconds, default :data:`GRADED_CELL_TIMEOUT_S`) and the other cells (setup: loading data)
  ``c.Execute.timeout``; a cell that runs past it is interrupted and the notebook goes on, and
  :class:`ExplainTimeouts` replaces nbclient's terse error with "this cell ran past N s",
  which is what the student reads in feedback.
- :class:`HideHiddenTests` runs in ``nbgrader generate_feedback``: it removes the
  ``### BEGIN/END HIDDEN TESTS`` regions from test cells and drops the test cell's own
  frames from error tracebacks (which quote the failing test code), keeping the score,
  the assertion message and the frames of the student's own code.

:class:`Sandbox` is the same isolation as a context manager (``labkit check`` uses it).
This module imports nbgrader: only nbgrader (through the config) and the grading tools
import it.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import re
import threading
from dataclasses import dataclass, field

from nbformat.notebooknode import NotebookNode
from nbgrader import utils
from nbgrader.preprocessors import ClearHiddenTests, Execute, NbGraderPreprocessor

__all__ = [
    "CELL_TIMEOUT_ENV",
    "GRADED_CELL_TIMEOUT_S",
    "EnterSandbox",
    "ExplainTimeouts",
    "HideHiddenTests",
    "LeaveSandbox",
    "Sandbox",
    "cell_timeout",
    "configure",
]

#: Seconds an answer or test cell may run when graded (a student's infinite loop costs at
#: most this per cell); override with the environment variable CELL_TIMEOUT_ENV.
GRADED_CELL_TIMEOUT_S = 60
CELL_TIMEOUT_ENV = "LABKIT_GRADING_CELL_TIMEOUT"
#: Seconds any other cell may run (the setup cell loads data): ``c.Execute.timeout`` of the
#: course's config when it sets one.
SETUP_CELL_TIMEOUT_S = 300
_setup_timeout = [SETUP_CELL_TIMEOUT_S]

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# IPython 8+: "Cell In[3], line 7"; IPython 7: "Input In [3]" / "<ipython-input-3-…>".
_CELL_FRAME = re.compile(
    r"^\s*(?:Cell In ?\[(\d+)\]|Input In ?\[(\d+)\]|File <ipython-input-(\d+)-)"
)


def drop_databases(prefix: str) -> list[str]:
    """Drop every database whose name starts with ``prefix``, together (each DROP DATABASE
    waits for a checkpoint; drops issued at once share one); return their names."""
    from labkit import db

    if not prefix:
        raise ValueError("refusing to drop databases with an empty prefix")
    with db.connect(autocommit=True) as conn:
        names = [
            row[0]
            for row in conn.execute(
                "SELECT datname FROM pg_database WHERE starts_with(datname, %s)", (prefix,)
            )
        ]
    from labkit.course.gradeuser import drop_databases_at_once

    drop_databases_at_once(names)
    return names


def drop_roles(prefix: str) -> list[str]:
    """Drop every role whose name starts with ``prefix`` (those ``db.login_role`` made under
    it); return their names. A role that still owns something elsewhere is left alone."""
    import psycopg
    from psycopg import sql

    from labkit import db

    if not prefix:
        raise ValueError("refusing to drop roles with an empty prefix")
    dropped = []
    with db.connect(autocommit=True) as conn:
        names = [
            row[0]
            for row in conn.execute(
                "SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s)", (prefix,)
            )
        ]
        for name in names:
            try:
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
                dropped.append(name)
            except psycopg.errors.DependentObjectsStillExist:
                pass
    return dropped


class Sandbox:
    """A fresh database-name prefix and a private Redis server for one run of a notebook.

    For example::

        >>> from labkit.course.nbgrader_ext import Sandbox
        >>> with Sandbox("alice/00-warmup/warmup") as env:  # start a kernel with os.environ | env
        ...     sorted(env)
        ['LABKIT_DB_PREFIX', 'REDIS_URL']

    On exit the Redis server is killed and the databases and roles created under the prefix
    are dropped. The prefix extends any ``LABKIT_DB_PREFIX`` already set (test workers)."""

    def __init__(self, tag: str) -> None:
        digest = hashlib.sha1(tag.encode()).hexdigest()[:10]
        self.prefix = f"{os.environ.get('LABKIT_DB_PREFIX', '')}g{digest}_"
        self.redis = None

    def start(self) -> dict[str, str]:
        from labkit.cache import ThrowawayRedis

        drop_databases(self.prefix)  # leftovers of an interrupted earlier run
        drop_roles(self.prefix)
        self.redis = ThrowawayRedis().start()
        return {"LABKIT_DB_PREFIX": self.prefix, "REDIS_URL": self.redis.url}

    def stop(self) -> None:
        self.stop_redis()
        self.drop()

    def stop_redis(self) -> None:
        """Stop the private Redis server (its clients are refused from now on)."""
        if self.redis is not None:
            self.redis.__exit__(None, None, None)
            self.redis = None

    def drop(self) -> None:
        """Drop the databases and roles created under the prefix."""
        drop_databases(self.prefix)
        drop_roles(self.prefix)

    def __enter__(self) -> dict[str, str]:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class UserSandbox:
    """:class:`Sandbox`'s interface for grading as root: the notebook's kernel runs as a
    grading slot's unprivileged user, with its own PostgreSQL role and a Redis running as
    that user (:mod:`labkit.course.gradeuser`). Nothing of it enters this process's
    environment: the kernel manager (:mod:`labkit.course.forkkernel`) adds it to the
    kernel's alone, and runs the kernel in the user's private folder."""

    def __init__(self, tag: str, text: str) -> None:
        from labkit.course import gradeuser

        self.slot = gradeuser.Slot.acquire()
        self.inner = gradeuser.UserSandbox(self.slot, text=text)
        self.prefix = self.inner.prefix

    def start(self) -> dict[str, str]:
        from labkit.course import forkkernel

        try:
            env = self.inner.start()
        except BaseException:
            self.inner.stop()
            raise
        forkkernel.set_sandbox(
            env,
            self.slot.folder / "work",
            (self.slot.uid, self.slot.gid),
            ipc=self.slot.folder / "ipc",
        )
        return {}

    def stop_redis(self) -> None:
        """Kernel, Redis and every other process of the slot's user: killed."""
        from labkit.course import forkkernel

        forkkernel.set_sandbox(None)
        self.inner.stop_processes()

    def drop(self) -> None:
        """The role's databases and roles dropped; the slot wiped and freed."""
        try:
            self.inner.drop()
        finally:
            self.slot.release()

    def stop(self) -> None:
        self.stop_redis()
        self.drop()


def _source_text(config, assignment: str, notebook: str) -> str:
    """The instructor's version of the notebook being graded (what it needs is decided from
    it, never from the submission), as text; empty if not found."""
    root = config.CourseDirectory.get("root") or os.getcwd()
    source = config.CourseDirectory.get("source_directory") or "source"
    path = os.path.join(str(root), source, assignment, f"{notebook}.ipynb")
    try:
        import nbformat

        notebook = nbformat.read(path, as_version=4)
    except (OSError, ValueError):
        return ""
    return "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")


@dataclass
class _Active:
    """The sandbox of the notebook being graded. nbgrader makes a new instance of each
    preprocessor, so EnterSandbox and LeaveSandbox share it through the module; the exit
    hook that tears it down is registered when the first sandbox starts, not at import.

    ``drops``: the threads dropping the databases and roles of notebooks already graded.
    A DROP DATABASE waits for a checkpoint (a second or more while other tests write), so
    the next notebook starts meanwhile: its prefix is a different one. The process waits
    for every drop before it exits, and fails if one failed (``failures``)."""

    sandbox: Sandbox | None = None
    saved_env: dict[str, str | None] = field(default_factory=dict)
    exit_hook: bool = False
    drops: list[threading.Thread] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


_active = _Active()


def _drop(sandbox: Sandbox) -> None:
    try:
        sandbox.drop()
    except Exception as exc:  # reported, and the process fails, at exit (_finish)
        _active.failures.append(f"{sandbox.prefix}*: {exc!r}")


def _leave() -> None:
    sandbox, _active.sandbox = _active.sandbox, None
    for key, value in _active.saved_env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    _active.saved_env = {}
    if sandbox is not None:
        sandbox.stop_redis()
        thread = threading.Thread(target=_drop, args=(sandbox,), name=f"drop {sandbox.prefix}")
        thread.start()
        _active.drops = [t for t in _active.drops if t.is_alive()] + [thread]


def _finish() -> None:
    """At exit: leave the last sandbox, wait for every drop; exit 1 if one failed (its
    databases are left behind: the next run with the same prefix drops them first)."""
    _leave()
    for thread in _active.drops:
        thread.join()
    if _active.failures:
        import sys

        for failure in _active.failures:
            print(f"[LeaveSandbox | ERROR] could not drop {failure}", file=sys.stderr)
        sys.stderr.flush()
        os._exit(1)


class EnterSandbox(NbGraderPreprocessor):
    """Before ``Execute``: give this notebook of this student a fresh sandbox. The kernel
    that ``Execute`` starts next inherits the sandbox's environment variables."""

    def preprocess(self, nb, resources):
        _leave()  # a previous notebook whose LeaveSandbox did not run (kernel died)
        info = resources.get("nbgrader", {})
        tag = "/".join(str(info.get(k, "")) for k in ("student", "assignment", "notebook"))
        # The course folder is part of the name: two courses graded at the same time on one
        # server (scratch courses, a self-check beside an instructor) with the same student
        # names must never share, or drop, each other's databases.
        from labkit.course import gradeuser

        if gradeuser.wanted():  # root: the kernel runs as an unprivileged grading user
            text = _source_text(self.config, str(info.get("assignment", "")),
                                str(info.get("notebook", "")))  # fmt: skip
            sandbox = UserSandbox(tag, text)
        else:
            sandbox = Sandbox(f"{os.getcwd()}:{tag}")
        env = sandbox.start()
        if not _active.exit_hook:  # an interrupted nbgrader still stops the private Redis
            atexit.register(_finish)
            _active.exit_hook = True
        _active.saved_env = {key: os.environ.get(key) for key in env}
        _active.sandbox = sandbox
        os.environ.update(env)
        who = f", user {sandbox.slot.user}" if isinstance(sandbox, UserSandbox) else ""
        self.log.info("sandbox for %s: databases %s*, private Redis%s", tag, sandbox.prefix, who)
        return nb, resources


class LeaveSandbox(NbGraderPreprocessor):
    """After ``Execute``: stop the private Redis; drop the notebook's databases and roles
    (in the background, while the next notebook runs; nbgrader exits when all are gone)."""

    def preprocess(self, nb, resources):
        _leave()
        return nb, resources


def scrub_traceback(traceback: list[str], execution_count: int | None) -> list[str]:
    """``traceback`` without the frames of the cell executed as ``execution_count``."""
    if execution_count is None:
        return list(traceback)
    kept, hidden = [], False
    for entry in traceback:
        match = _CELL_FRAME.match(_ANSI.sub("", entry))
        if match and int(next(g for g in match.groups() if g)) == execution_count:
            if not hidden:
                kept.append("(the test code is not shown in feedback)")
                hidden = True
            continue
        kept.append(entry)
    return kept


class HideHiddenTests(ClearHiddenTests):
    """Feedback preprocessor: hidden test regions out of test cells, and the test cells'
    own frames out of their error tracebacks (the message and the score stay)."""

    def preprocess_cell(self, cell, resources, cell_index):
        cell, resources = super().preprocess_cell(cell, resources, cell_index)
        if cell.cell_type == "code" and utils.is_grade(cell):
            for output in cell.get("outputs", []):
                if output.get("output_type") == "error":
                    output["traceback"] = scrub_traceback(
                        output.get("traceback", []), cell.get("execution_count")
                    )
        return cell, resources


def graded_cell_timeout() -> int:
    """The timeout of answer and test cells, in seconds (see :data:`CELL_TIMEOUT_ENV`)."""
    value = os.environ.get(CELL_TIMEOUT_ENV, "")
    try:
        return int(value) if value else GRADED_CELL_TIMEOUT_S
    except ValueError:
        raise ValueError(f"{CELL_TIMEOUT_ENV}={value!r}: give a whole number of seconds") from None


def cell_timeout(cell) -> int:
    """nbclient's ``timeout_func``: answer and test cells get :func:`graded_cell_timeout`
    seconds, other cells (setup, instructions) :data:`SETUP_CELL_TIMEOUT_S`."""
    from labkit.course import cells

    if cells.kind(cell) in ("answer", "test"):
        return graded_cell_timeout()
    return _setup_timeout[0]


TIMEOUT_ERROR = "CellTimeoutError"


def timeout_message(seconds: int) -> str:
    return (
        f"this cell ran past {seconds} s and was stopped: an endless loop, or a wait that never "
        "ends (a lock, a blocking read without a timeout)? The other tasks were graded as usual."
    )


class ExplainTimeouts(NbGraderPreprocessor):
    """After ``Execute``: a cell stopped by the timeout shows one clear error ("this cell ran
    past N s ...") instead of nbclient's "No reply from kernel" and the KeyboardInterrupt
    traceback of the interrupt. The cell still counts as failed."""

    def preprocess_cell(self, cell, resources, cell_index):
        if cell.cell_type != "code":
            return cell, resources
        outputs = cell.get("outputs", [])
        if not any(o.get("output_type") == "error" and o.get("ename") == TIMEOUT_ERROR
                   for o in outputs):  # fmt: skip
            return cell, resources
        kept = [
            o for o in outputs
            if not (o.get("output_type") == "error"
                    and o.get("ename") in (TIMEOUT_ERROR, "KeyboardInterrupt"))
        ]  # fmt: skip
        message = timeout_message(cell_timeout(cell))
        kept.append(
            NotebookNode(
                output_type="error",
                ename="TimeoutError",
                evalue=message,
                traceback=[f"TimeoutError: {message}"],
            )
        )
        cell["outputs"] = kept
        return cell, resources


#: A line Python's ``warnings`` module writes: ``<file>:<line>: <Category>: <message>``.
_WARNING_LINE = re.compile(r"^\S.*:\d+: \w*Warning: ", re.M)


def only_warnings(text: str) -> bool:
    """Whether ``text`` (a cell's stderr) holds Python warnings and nothing worse.

    >>> only_warnings("<ipython-input>:3: DeprecationWarning: Redis.setex() is deprecated\\n"
    ...               "  r.setex(key, 60, value)\\n")
    True
    >>> only_warnings("Traceback (most recent call last):\\n  ...\\nValueError: no\\n")
    False
    """
    return bool(_WARNING_LINE.search(text)) and "Traceback (most recent call last)" not in text


class WarningsAreNotFailures(NbGraderPreprocessor):
    """After ``Execute``: nbgrader gives 0 to a test cell that wrote anything to stderr, so a
    right answer that calls a deprecated function (redis-py's ``setex``) lost its task to the
    ``DeprecationWarning`` printed in the test cell. A test cell that raised nothing and
    whose stderr holds only warnings has them shown as ordinary output: the test decides."""

    def preprocess_cell(self, cell, resources, cell_index):
        if cell.cell_type != "code" or not utils.is_grade(cell) or utils.is_solution(cell):
            return cell, resources
        outputs = cell.get("outputs", [])
        if any(o.get("output_type") == "error" for o in outputs):
            return cell, resources
        for output in outputs:
            if (output.get("output_type") == "stream" and output.get("name") == "stderr"
                    and only_warnings(output.get("text", ""))):  # fmt: skip
                output["name"] = "stdout"
        return cell, resources


class SandboxedExecute(Execute):
    """nbgrader's ``Execute``, for notebooks whose kernel the grading sandbox may kill (past
    its wall-clock or memory limit: :mod:`labkit.course.gradeuser`). nbclient then raises
    ``DeadKernelError`` and nbgrader would leave the whole submission ungraded and fail the
    command; instead the cell that was running records why it was stopped, the cells after
    it stay unexecuted (their tests score 0), and grading goes on."""

    def preprocess(self, nb, resources=None, km=None):
        from nbclient.exceptions import DeadKernelError

        try:
            return super().preprocess(nb, resources, km)
        except DeadKernelError:
            sandbox = _active.sandbox
            reason = getattr(getattr(sandbox, "inner", None), "killed", None)
            if not reason:
                raise
            code = [c for c in nb.cells if c.cell_type == "code"]
            ran = [i for i, c in enumerate(code) if c.get("execution_count")]
            stopped = ran[-1] if ran else 0
            message = (
                f"this notebook {reason} and was stopped here: the cells below did not run. "
                "An endless loop, a process left running, or data far larger than the task's?"
            )
            # nbgrader counts a test cell without an error as passed: every cell that did
            # not run gets one.
            for index, cell in enumerate(code[stopped:]):
                text = message if index == 0 else f"not run: the notebook {reason} above"
                cell.setdefault("outputs", []).append(
                    NotebookNode(output_type="error", ename="ResourceLimitError", evalue=text,
                                 traceback=[f"ResourceLimitError: {text}"])
                )  # fmt: skip
            self.log.warning("kernel stopped by the grading sandbox: %s", reason)
            return nb, resources


def _default(klass, name: str) -> list:
    return list(klass.class_traits()[name].default())


def configure(c) -> None:
    """Switch the plug-ins on in an nbgrader config object ``c``."""
    from nbgrader.converters import Autograde, GenerateFeedback

    here = __name__
    if isinstance(c.Execute.get("timeout"), int):
        _setup_timeout[0] = c.Execute.timeout
    c.Execute.timeout_func = cell_timeout
    # Kernels forked from a template that imported ipykernel, SQLAlchemy, psycopg and redis
    # once (labkit.course.forkkernel); a plain ipykernel when no template runs.
    c.Execute.kernel_manager_class = "labkit.course.forkkernel.ForkingKernelManager"
    # A kernel that does not answer the interrupt must not fail the whole class: nbclient
    # then warns and goes on with the next cell (which waits, at most its own timeout).
    c.Execute.raise_on_iopub_timeout = False
    c.Execute.error_on_timeout = {
        "ename": TIMEOUT_ERROR,
        "evalue": "",
        "traceback": [f"{TIMEOUT_ERROR}: no reply from the kernel before the timeout"],
    }
    preprocessors = _default(Autograde, "autograde_preprocessors")
    execute = next(i for i, p in enumerate(preprocessors) if getattr(p, "__name__", p) == "Execute")
    c.Autograde.autograde_preprocessors = [
        f"{here}.EnterSandbox",
        *preprocessors[:execute],
        f"{here}.SandboxedExecute",
        f"{here}.ExplainTimeouts",
        f"{here}.WarningsAreNotFailures",
        *preprocessors[execute + 1 :],
        f"{here}.LeaveSandbox",
    ]
    feedback = _default(GenerateFeedback, "preprocessors")
    # After GetGrades (which reads the gradebook), before the HTML is rendered.
    c.GenerateFeedback.preprocessors = [feedback[0], f"{here}.HideHiddenTests", *feedback[1:]]
