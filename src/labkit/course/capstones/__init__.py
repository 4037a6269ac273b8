"""The capstone projects' acceptance suites: ``python -m labkit check capstone-<name>``.

A capstone is a project the learner extends: a Python package in ``capstones/<name>/``
(the starter), described by ``notebooks/05-capstone-<name>.ipynb`` (the brief). Its
acceptance suite (``labkit.course.capstones.<name>``) imports the learner's package from
its folder, drives it against the real servers and checks behaviour and measured
properties (never the learner's file layout). Each check says what it measured, the
threshold it held it to and, when it fails, what to fix. Instructors' reference solutions
live in ``grading/capstones/<name>/`` and pass the same suite (the folder after the name:
``labkit check capstone-<name> grading/capstones/<name>``); a run on anything under
``grading/`` is never recorded as the learner's.

>>> sorted(NAMES)
['analytics', 'collab', 'marketplace']
>>> check = Check("demo", "R1", passed=False, measured="3 oversold", threshold="0 oversold",
...               fix="lock the stock row (SELECT ... FOR UPDATE)")
>>> print(Report("demo", Path("."), "ci", [check]))  # doctest: +NORMALIZE_WHITESPACE
capstone demo (size ci, project .): 0 of 1 checks passed
  FAIL R1 demo: 3 oversold (threshold: 0 oversold)
       what to fix: lock the stock row (SELECT ... FOR UPDATE)
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import shutil
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

NAMES = ("collab", "marketplace", "analytics")
SIZES = ("ci", "default")


@dataclass
class Check:
    """One acceptance check's result."""

    name: str  # short id, e.g. "no-oversell" (``--only`` takes it)
    requirement: str  # the brief's numbered requirement, e.g. "R3"
    passed: bool
    measured: str  # what was measured, in words and numbers
    threshold: str  # what it had to be
    fix: str = ""  # when it failed: what to fix, in the learner's terms
    seconds: float = 0.0
    numbers: dict[str, Any] = field(default_factory=dict)  # for the report and the journal

    def lines(self) -> list[str]:
        status = "ok  " if self.passed else "FAIL"
        out = [f"  {status} {self.requirement} {self.name}: {self.measured} "
               f"(threshold: {self.threshold})"]  # fmt: skip
        if not self.passed and self.fix:
            out.append(f"       what to fix: {self.fix}")
        return out


@dataclass
class Report:
    capstone: str
    project: Path
    size: str
    checks: list[Check]
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    def failed(self) -> list[str]:
        return [c.name for c in self.checks if not c.passed]

    def numbers(self) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for check in self.checks:
            merged.update(check.numbers)
        return merged

    def __str__(self) -> str:
        ok = sum(c.passed for c in self.checks)
        head = (f"capstone {self.capstone} (size {self.size}, project {self.project}): "
                f"{ok} of {len(self.checks)} checks passed")  # fmt: skip
        return "\n".join([head, *(line for c in self.checks for line in c.lines())])

    def as_dict(self) -> dict:
        data = asdict(self)
        data["project"] = str(self.project)
        data["passed"] = self.passed
        return data


class CapstoneError(Exception):
    """The project cannot be checked at all (not found, does not import): says what to do."""


class Context:
    """What a check gets: the learner's package (``project``), the size's parameters, a
    private folder, and databases and Redis keys private to this run (removed at the end)."""

    def __init__(self, name: str, project: Path, size: str, params: dict[str, Any]):
        self.name = name
        self.project_dir = project
        self.size = size
        self.params = params
        self.run_id = uuid.uuid4().hex[:8]
        self.workdir = Path(tempfile.mkdtemp(prefix=f"labkit-capstone-{name}-"))
        self._databases: list[str] = []
        self._redis_prefixes: list[str] = []
        self._cleanups: list[Callable[[], Any]] = []
        self._module = None

    @property
    def project(self):
        """The learner's package, imported once per run under a name of its own."""
        if self._module is None:
            self._module = load_project(self.project_dir, f"capstone_{self.name}_{self.run_id}")
        return self._module

    def reload(self):
        """A fresh import of the learner's package (for a check that restarts "the server")."""
        self._module = None
        return self.project

    def database(self, suffix: str = "db", *, template: str | None = None):
        """A fresh database for this run (``labkit.db.Database``), dropped at the end."""
        from labkit import db

        name = f"cap_{self.name}_{self.run_id}_{suffix}"
        self._databases.append(name)
        return db.fresh_database(name, template=template)

    def redis_prefix(self, suffix: str = "") -> str:
        """A Redis key prefix for this run; its keys are deleted at the end."""
        prefix = f"capstone:{self.name}:{self.run_id}:{suffix}"
        self._redis_prefixes.append(prefix)
        return prefix

    def on_close(self, fn: Callable[[], Any]) -> None:
        self._cleanups.append(fn)

    def close(self) -> None:
        for fn in reversed(self._cleanups):
            with contextlib.suppress(Exception):
                fn()
        if self._redis_prefixes:
            with contextlib.suppress(Exception):
                from labkit import cache

                client = cache.redis_client()
                for prefix in self._redis_prefixes:
                    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
                    for start in range(0, len(keys), 500):
                        client.delete(*keys[start : start + 500])
        if self._databases:
            with contextlib.suppress(Exception):
                from labkit import db

                db.drop_databases(self._databases)
        shutil.rmtree(self.workdir, ignore_errors=True)
        for key in [k for k in sys.modules if k.startswith(f"capstone_{self.name}_{self.run_id}")]:
            del sys.modules[key]


def load_project(folder: Path, module_name: str):
    """Import the package in ``folder`` (its ``__init__.py``) as ``module_name``; its own
    modules import each other relatively (``from . import store``)."""
    folder = Path(folder).resolve()
    init = folder / "__init__.py"
    if not init.is_file():
        raise CapstoneError(
            f"no project at {folder}: a capstone project is a folder with an __init__.py "
            f"(start from the starter in capstones/, or give your project's folder after the "
            f"capstone's name: labkit check capstone-<name> DIR)"
        )
    spec = importlib.util.spec_from_file_location(
        module_name, init, submodule_search_locations=[str(folder)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        where = traceback.extract_tb(exc.__traceback__)[-1]
        raise CapstoneError(
            f"your project does not import: {type(exc).__name__}: {exc} "
            f"({where.filename}, line {where.lineno})"
        ) from exc
    return module


def suite(name: str):
    """The acceptance module of capstone ``name``: ``TITLE``, ``PARAMS`` (size → dict) and
    ``CHECKS`` (functions ``ctx -> Check | list[Check]``, run in order)."""
    if name not in NAMES:
        raise CapstoneError(f"no capstone {name!r}: choose one of {', '.join(NAMES)}")
    return importlib.import_module(f"labkit.course.capstones.{name}")


def default_project(name: str, root: Path | None = None) -> Path:
    from labkit import config

    return (root or config.project_root()) / "capstones" / name


def reference_project(name: str, root: Path | None = None) -> Path:
    from labkit import config

    return (root or config.project_root()) / "grading" / "capstones" / name


def _check_name(fn: Callable) -> str:
    return getattr(fn, "check_name", fn.__name__.removeprefix("check_").replace("_", "-"))


def check_names(name: str) -> list[str]:
    return [_check_name(fn) for fn in suite(name).CHECKS]


def run(
    name: str,
    project: Path | str | None = None,
    *,
    size: str = "ci",
    only: list[str] | None = None,
    progress: bool = True,
    record: bool = False,
) -> Report:
    """Run capstone ``name``'s acceptance checks against ``project`` (default: the learner's
    ``capstones/<name>/``). ``only``: check names to run (``check_names(name)``)."""
    module = suite(name)
    if size not in SIZES:
        raise CapstoneError(f"no size {size!r}: choose one of {', '.join(SIZES)}")
    folder = Path(project).resolve() if project else default_project(name)
    checks = list(module.CHECKS)
    if only:
        known = {_check_name(fn): fn for fn in checks}
        known |= {alias: fn for fn in checks for alias in getattr(fn, "results", ())}
        unknown = [o for o in only if o not in known]
        if unknown:
            raise CapstoneError(f"no check {unknown} in capstone {name}: choose from {list(known)}")
        checks = list(dict.fromkeys(known[o] for o in only))  # a check once, in order
    params = dict(module.PARAMS[size])
    ctx = Context(name, folder, size, params)
    results: list[Check] = []
    started = time.perf_counter()
    bar = _progress(len(checks), name) if progress else None
    try:
        ctx.project  # noqa: B018  (import errors stop the run with their message)
        for fn in checks:
            t0 = time.perf_counter()
            try:
                got = fn(ctx)
            except CapstoneError:
                raise
            except Exception as exc:  # the learner's code raised: a failed check, named
                frame = _where(exc, folder)
                got = Check(
                    _check_name(fn),
                    getattr(fn, "requirement", "?"),
                    passed=False,
                    measured=f"raised {type(exc).__name__}: {exc}",
                    threshold="runs without an error",
                    fix=f"see {Path(frame.filename).name}, line {frame.lineno} ({frame.name})",
                )
            for one in got if isinstance(got, list) else [got]:
                one.seconds = round(time.perf_counter() - t0, 2)
                results.append(one)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        ctx.close()
    report = Report(name, folder, size, results, round(time.perf_counter() - started, 1))
    if record and not _instructors(folder):
        from labkit.course import progress as course_progress

        course_progress.record_capstone(
            name, report.passed, report.numbers(), size=size, project=str(folder)
        )
    return report


def _instructors(folder: Path) -> bool:
    """Whether ``folder`` is in the course's ``grading/`` (a reference solution, a
    submission being graded): checking it says nothing about the learner's own project."""
    from labkit import config

    return folder.resolve().is_relative_to((config.project_root() / "grading").resolve())


def _where(exc: BaseException, folder: Path) -> traceback.FrameSummary:
    """The innermost frame of the traceback in the learner's project (their line, not the
    library's where the error surfaced), else the innermost of all."""
    frames = traceback.extract_tb(exc.__traceback__)
    mine = [f for f in frames if Path(f.filename).resolve().is_relative_to(folder)]
    return (mine or frames)[-1]


def _progress(total: int, name: str):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        return None
    return tqdm(total=total, desc=f"capstone {name}", unit="check", leave=False)


def requirement(req: str, check_name: str | None = None, *, results: tuple[str, ...] = ()):
    """Decorator for a check function: its brief requirement, its name for ``--only``, and
    the names of the other results it reports (``--only`` takes those too)."""

    def mark(fn):
        fn.requirement = req
        fn.check_name = check_name or fn.__name__.removeprefix("check_").replace("_", "-")
        fn.results = tuple(results)
        return fn

    return mark


@contextlib.contextmanager
def timed() -> Iterator[dict]:
    box: dict = {}
    t0 = time.perf_counter()
    try:
        yield box
    finally:
        box["seconds"] = time.perf_counter() - t0


def main(name: str, project: str | None, size: str, only: list[str] | None) -> int:
    """``labkit check capstone-<name> [DIR] [--size] [--only]``: prints the report; exit
    0 when every check passed, 1 when one failed, 2 when the project cannot be checked."""
    try:
        report = run(name, project, size=size, only=only, record=not only)
    except CapstoneError as exc:
        print(f"capstone {name}: {exc}", file=sys.stderr)
        return 2
    print(report)
    print(f"({report.seconds:.1f} s)")
    if report.passed and only:
        print(f"The {len(report.checks)} result(s) of the checks you named passed; leave out "
              f"--only to run all {len(check_names(name))} checks.")  # fmt: skip
    elif report.passed:
        print(f"All acceptance checks of capstone {name} passed.")
    return 0 if report.passed else 1
