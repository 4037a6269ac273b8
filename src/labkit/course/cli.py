"""Command line: ``python -m labkit <command>`` (also installed as ``labkit``).

The commands (a terminal, from the course folder)::

    python -m labkit services up        # start PostgreSQL and Redis (idempotent)
    python -m labkit services status    # what runs where
    python -m labkit services down      # stop them
    python -m labkit services env       # print `export DATABASE_URL=... REDIS_URL=...`
    python -m labkit bench              # measure the performance budgets
    python -m labkit lab                # JupyterLab on the course (what `make lab` runs)
    python -m labkit check 00-warmup    # check your exercise: visible tests, then your score
    python -m labkit check capstone-marketplace [DIR] [--size ci] [--only CHECK]
                                        # a capstone's acceptance suite (collab, marketplace,
                                        # analytics) on your project (default capstones/<name>)
    python -m labkit progress           # your progress per phase and step
    python -m labkit progress --journal # your learning journal (Markdown), ticked from results
    python -m labkit hub up|down|status # a JupyterHub for a class on this machine (as root)
    python -m labkit hub add-user NAME  # a student: Unix user (home 0700) allowed on the hub
    python -m labkit grade release|collect|autograde|feedback|export|student-copies|mutants ...
    python -m labkit grade student-edition DIR   # a repository for students (no solutions)
                                        # the instructor's workflow (grading/INSTRUCTORS.md)

The same from Python, with the exit code returned::

    >>> from labkit.course.cli import main
    >>> main(["services", "status"])
    postgres   running ...
    redis      running ...
    0
    >>> main(["grade", "autograde", "00-warmpu"])
    2
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys

__all__ = ["main"]


def _services(args: argparse.Namespace) -> int:
    from labkit import config
    from labkit.course.services import Services

    services = Services(args.state_dir)
    if args.action == "up":
        for status in services.up().values():
            print(status.line())
        print(f"URLs written to {services.env_file}")
        return 0
    if args.action == "down":
        stopped = services.down()
        for name, was_running in stopped.items():
            print(f"{name:<10} {'stopped' if was_running else 'was not running'}")
        return 0
    if args.action == "env":
        values = config.read_env_file(services.env_file)
        if not values:
            print("services are not running: run `python -m labkit services up`", file=sys.stderr)
            return 1
        for key, value in values.items():
            print(f"export {key}={shlex.quote(value)}")
        return 0
    statuses = services.status()
    if args.json:
        print(json.dumps(services.as_dict(), indent=2))
    else:
        for status in statuses.values():
            print(status.line())
    return 0 if all(s.running for s in statuses.values()) else 3


def _bench(args: argparse.Namespace) -> int:
    from labkit.course.bench import run_all

    return run_all(scale=args.scale)


def lab_command(
    port: int | None = None,
    open_browser: bool = True,
    token: str | None = None,
    extra: list[str] | None = None,
    instructor: bool | None = None,
) -> list[str]:
    """The JupyterLab command line `make lab` runs: loopback only, the course folder as root,
    opening on 00-start-here; ``--allow-root`` only when we are root; configured for a
    learner, or for an instructor (``instructor``, default: ``LABKIT_INSTRUCTOR``) — see
    :mod:`labkit.course.labsetup`."""
    import os

    from labkit import config
    from labkit.course import labsetup

    root = config.project_root()
    argv = [
        sys.executable, "-m", "jupyter", "lab",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.ip=127.0.0.1",
        "--LabApp.default_url=/lab/tree/notebooks/00-start-here.ipynb",
    ]  # fmt: skip
    if port:
        argv.append(f"--ServerApp.port={port}")
    if not open_browser:
        argv.append("--no-browser")
    if token is not None:
        argv.append(f"--IdentityProvider.token={token}")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        argv.append("--allow-root")
    argv += labsetup.prepare(instructor)
    return argv + list(extra or [])


def _lab(args: argparse.Namespace) -> int:
    import os

    from labkit import config
    from labkit.course import labsetup

    instructor = True if args.instructor else None
    if args.env:  # for a JupyterLab started by someone else (binder/start)
        print(labsetup.shell_exports(instructor), end="")
        labsetup.trust_notebooks()
        return 0
    argv = lab_command(args.port, not args.no_browser, args.token, args.extra, instructor)
    os.environ.update(labsetup.environment())
    labsetup.trust_notebooks()
    os.chdir(config.project_root())
    os.execv(argv[0], argv)
    return 0  # not reached


def _grade(args: argparse.Namespace) -> int:
    from pathlib import Path

    from labkit.course import edition, grading

    action = args.action
    if action == "student-edition":
        if not args.assignment:
            print("error: `grade student-edition DIR` needs the folder to write", file=sys.stderr)
            return 2
        written = edition.write(Path(args.assignment))
        print(f"student edition written to {written} (a git repository, one commit)")
        print("push it as the class's repository, then put its owner/name in README.md's badge")
        return 0
    if not args.course_dir:  # the instructor's tools need grading/, which the edition lacks
        edition.require_full_repository(f"grade {action}")
    course = grading.Course(Path(args.course_dir) if args.course_dir else grading.course_dir())
    if action == "mutants":
        return _mutants(args, course)
    if action == "student-copies":
        written = grading.student_copies(
            Path(args.to) if args.to else None, args.assignments or None, force=args.force
        )
        for path in written:
            print(f"wrote {path}")
        print(f"{len(written)} file(s) written; the others were already current")
        return 0
    if action == "export":
        to = course.export(Path(args.to) if args.to else None, args.assignment)
        rows = grading.read_grades_csv(to)
        print(f"{len(rows)} row(s) written to {to}")
        return 0
    assignment = args.assignment
    if not assignment:
        print(f"error: `grade {action}` needs an assignment name", file=sys.stderr)
        return 2
    if action == "release":
        release = course.release(assignment, exchange=args.exchange)
        where = " and to the exchange" if args.exchange is not None else ""
        print(f"released {assignment}: student version in {release}{where}")
        if args.exchange is not None:
            from labkit.course.exchange import student_config

            root = Path(args.exchange).resolve() if args.exchange else course.exchange_root()
            print(
                "students need this nbgrader config (on a shared server or hub: "
                "/etc/jupyter/nbgrader_config.py); it keeps each submission readable by its "
                "student and the instructors only (grading/INSTRUCTORS.md):"
            )
            print(student_config(root, course.course_id), end="")
    elif action == "collect":
        if (args.folder is None) == (args.exchange is None):
            print("error: collect from --exchange [DIR] or from --folder DIR", file=sys.stderr)
            return 2
        if args.folder is not None:
            report = course.collect_folder(assignment, Path(args.folder))
        else:
            report = course.collect_exchange(assignment, args.exchange)
        print(report)
        print(f"every file collected is archived in {course.archive_dir(assignment)}")
        if report.skipped:
            print(
                f"error: {len(report.skipped)} file(s) skipped, neither collected nor archived "
                "(the reason is above, per file): rename or move them, then collect again",
                file=sys.stderr,
            )
            return 1
    elif action == "autograde":
        print(course.autograde(assignment, args.student))
        for student, score in sorted(course.scores(assignment).items()):
            if args.student in (None, student):
                print(f"  {student:<24} {score.score:g} / {score.max_score:g}")
        if waiting := course.awaiting_hand_grades(assignment):
            answers = sum(len(cells) for cells in waiting.values())
            print(
                f"{answers} written answer(s) of {len(waiting)} student(s) wait for your grade "
                "by hand in formgrader (`make lab-instructor`, Formgrader, Gradebook); feedback "
                "and export wait for them"
            )
    elif action == "feedback":
        files = course.feedback(assignment, exchange=args.exchange)
        print(f"{len(files)} feedback file(s) in {course.root / 'feedback'}")
        if ungraded := course.ungraded(assignment):
            print(
                f"error: no current feedback for {', '.join(ungraded)}: not graded, or "
                f"collected again since; run `grade autograde {assignment}`, then feedback again",
                file=sys.stderr,
            )
            return 1
    return 0


def _mutants(args: argparse.Namespace, course) -> int:
    """``grade mutants [A]``: the mutation pass; exit 1 if a mutant survived."""
    from labkit.course import grading, mutation

    everything = grading.assignments(course.root, autograded=True)  # a write-up has no code
    names = [args.assignment] if args.assignment else everything
    reports = [
        mutation.run(
            name,
            root=course.root,
            workers=args.workers,
            cell_timeout=args.cell_timeout,
            per_operator=args.per_operator,
            solo=args.solo,
        )
        for name in names
    ]
    print()
    print(mutation.summary_table([r.row() for r in reports]))
    survived = sum(len(r.survived) for r in reports)
    if survived:
        print(
            f"{survived} mutant(s) survived: each is a hole in the hidden tests (add a test that "
            f"fails on it), or behaves exactly as the solution (list it, with the reason, in "
            f"{mutation.equivalents_file(course.root)})"
        )
    return 1 if survived else 0


def _hub(args: argparse.Namespace) -> int:
    """``hub up|down|status|add-user|remove-user``: the JupyterHub kit (classroom/one-machine)."""
    from labkit.course.hub import Hub

    hub = Hub(args.state_dir)
    if args.action in ("add-user", "remove-user"):
        if not args.name:
            print(f"error: `hub {args.action}` needs a user name, e.g. `hub {args.action} ada`",
                  file=sys.stderr)  # fmt: skip
            return 2
        if args.action == "remove-user":
            hub.remove_user(args.name, delete_unix_user=args.delete_home)
            deleted = " and deleted" if args.delete_home else ""
            print(f"{args.name} removed from the hub{deleted}")
            return 0
        created = hub.add_user(args.name, admin=args.admin)
        role = "an admin" if args.admin else "allowed"
        print(f"{args.name}: Unix user {'created' if created else 'exists'} (home 0700), "
              f"{role} on the hub")  # fmt: skip
        if created:
            print(f"set their password with `passwd {args.name}` (they log in with it)")
        return 0
    if args.action == "up":
        status = hub.up(args.port, cull_timeout=args.cull_timeout)
    elif args.action == "down":
        print("hub stopped" if hub.down() else "hub was not running")
        return 0
    else:
        status = hub.status()
    print("\n".join(status.lines()))
    return 0 if status.running else 3


def _check(args: argparse.Namespace) -> int:
    if args.assignment.startswith("capstone-"):  # a capstone project's acceptance suite
        from labkit.course import capstones

        name = args.assignment.removeprefix("capstone-")
        return capstones.main(name, args.notebook, args.size, args.only)
    from labkit.course import selfcheck

    return selfcheck.main(args.assignment, args.notebook, args.quick)


def _progress(args: argparse.Namespace) -> int:
    from labkit.course import progress

    if args.journal:
        if args.output == "-":
            print(progress.journal().markdown(), end="")
            return 0
        journal = progress.write_journal(args.output)
        print(
            f"Journal written to {journal.path} ({journal.ticked} of {journal.total} boxes ticked)"
        )
        return 0
    if args.output:
        print(
            "--output goes with --journal: `python -m labkit progress --journal --output FILE`",
            file=sys.stderr,
        )
        return 2
    report = progress.overview()
    print(json.dumps(report.as_dict(), indent=2) if args.json else report)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), run the command, return its exit code.
    A failure whose message says what to do is printed without a traceback (exit 2)."""
    parser = argparse.ArgumentParser(prog="labkit", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    services = commands.add_parser("services", help="start, stop or inspect the servers")
    services.add_argument("action", choices=["up", "down", "status", "env"])
    services.add_argument("--state-dir", default=None, help="default: the project's .labkit/")
    services.add_argument("--json", action="store_true", help="status as JSON")
    services.set_defaults(func=_services)

    bench = commands.add_parser("bench", help="measure start-up and data-load budgets")
    bench.add_argument("--scale", default="guide", help="dataset scale (default: guide)")
    bench.set_defaults(func=_bench)

    lab = commands.add_parser("lab", help="open JupyterLab on the course (servers must be up)")
    lab.add_argument("--port", type=int, default=None)
    lab.add_argument("--no-browser", action="store_true")
    lab.add_argument("--token", default=None, help="default: JupyterLab generates one")
    lab.add_argument(
        "--instructor",
        action="store_true",
        help="show nbgrader's instructor tools (also: LABKIT_INSTRUCTOR=1)",
    )
    lab.add_argument(
        "--env",
        action="store_true",
        help="print the `export` lines that give another JupyterLab the course's set-up",
    )
    lab.add_argument("extra", nargs="*", help="more JupyterLab options (after --)")
    lab.set_defaults(func=_lab)

    check = commands.add_parser(
        "check", help="check your exercise: visible tests, then the full autograde"
    )
    check.add_argument(
        "assignment", help="e.g. 00-warmup, or capstone-<name> (collab, marketplace, analytics)"
    )
    check.add_argument(
        "notebook",
        nargs="?",
        help="default: exercises/<assignment>/*.ipynb (a capstone: its project folder, "
        "default capstones/<name>/)",
    )
    check.add_argument("--quick", action="store_true", help="visible tests only")
    check.add_argument(
        "--size", choices=["ci", "default"], default="default", help="capstones: data size"
    )
    check.add_argument(
        "--only", action="append", metavar="CHECK", help="capstones: run this check only"
    )
    check.set_defaults(func=_check)

    progress = commands.add_parser("progress", help="your progress per phase and step")
    progress.add_argument("--json", action="store_true")
    progress.add_argument(
        "--journal",
        action="store_true",
        help="write your learning journal (Markdown checklists ticked from your results)",
    )
    progress.add_argument(
        "--output",
        metavar="FILE",
        default=None,
        help="with --journal: where to write it (default: .labkit/progress/journal.md, "
        "or $LABKIT_PROGRESS_DIR/journal.md; - prints it)",
    )
    progress.set_defaults(func=_progress)

    hub = commands.add_parser("hub", help="a JupyterHub for a class on this machine (root)")
    hub.add_argument("action", choices=["up", "down", "status", "add-user", "remove-user"])
    hub.add_argument("name", nargs="?", help="add-user/remove-user: the Unix user name")
    hub.add_argument("--port", type=int, default=None,
                     help="up: the address's port on 127.0.0.1 (default: the last one, else free)")  # fmt: skip
    hub.add_argument("--cull-timeout", type=int, default=None,
                     help="up: stop servers idle this many seconds (default 3600)")  # fmt: skip
    hub.add_argument("--admin", action="store_true",
                     help="add-user: a hub admin (the instructor), after `hub up`")  # fmt: skip
    hub.add_argument("--delete-home", action="store_true",
                     help="remove-user: also delete the Unix user and their home")  # fmt: skip
    hub.add_argument("--state-dir", default=None, help="default: /var/lib/labkit/hub")
    hub.set_defaults(func=_hub)

    grade = commands.add_parser("grade", help="the instructor's workflow (nbgrader)")
    grade.add_argument(
        "action",
        choices=[
            "release",
            "collect",
            "autograde",
            "feedback",
            "export",
            "student-copies",
            "student-edition",
            "mutants",
        ],  # fmt: skip
    )
    grade.add_argument("assignment", nargs="?",
                       help="e.g. 00-warmup (export: optional filter; student-edition: DIR)")  # fmt: skip
    grade.add_argument(
        "--exchange",
        nargs="?",
        const="",
        default=None,
        metavar="DIR",
        help="use nbgrader's exchange (DIR, or the one nbgrader's config names)",
    )
    grade.add_argument("--folder", help="collect: a folder of received notebooks")
    grade.add_argument("--student", help="autograde: only this student")
    grade.add_argument("--to", help="export: the CSV file (default <course>/exports/, "
                       "git-ignored); student-copies: the folder (default exercises/)")  # fmt: skip
    grade.add_argument("--force", action="store_true", help="student-copies: replace edited copies")
    grade.add_argument("--course-dir", help="default: the checkout's grading/")
    grade.add_argument(
        "--workers",
        type=int,
        default=None,
        help="mutants: parallel scratch courses (default: CPUs, at most 4)",
    )
    grade.add_argument(
        "--cell-timeout",
        type=int,
        default=30,
        help="mutants: seconds an answer or test cell may run (default 30)",
    )
    grade.add_argument(
        "--per-operator",
        type=int,
        default=None,
        help="mutants: sample at most N per cell and operator (default: all)",
    )
    grade.add_argument("--solo", action="store_true",
                       help="mutants: grade every mutant alone (slower; checks the first pass)")  # fmt: skip
    grade.set_defaults(func=_grade)

    args = parser.parse_args(argv)
    if args.command == "grade" and args.action == "student-copies":
        args.assignments = [args.assignment] if args.assignment else []
    from labkit.errors import LabkitError

    try:
        return args.func(args)
    except LabkitError as exc:  # the message says what to do; anything else is a bug
        print(f"error: {exc}", file=sys.stderr)
        return 2
