"""Command line: ``python -m labkit <command>`` (also installed as ``labkit``).

Usage::

    python -m labkit services up        # start PostgreSQL and Redis (idempotent)
    python -m labkit services status    # what runs where
    python -m labkit services down      # stop them
    python -m labkit services env       # print `export DATABASE_URL=... REDIS_URL=...`
    python -m labkit bench              # measure the performance budgets
    python -m labkit lab                # JupyterLab on the course (what `make lab` runs)
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys

__all__ = ["main"]


def _services(args: argparse.Namespace) -> int:
    from labkit import config
    from labkit.services import Services

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
    from labkit.bench import run_all

    return run_all(scale=args.scale)


def lab_command(
    port: int | None = None,
    open_browser: bool = True,
    token: str | None = None,
    extra: list[str] | None = None,
) -> list[str]:
    """The JupyterLab command line `make lab` runs: loopback only, the course folder as root,
    opening on 00-start-here; ``--allow-root`` only when we are root."""
    import os

    from labkit import config

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
    return argv + list(extra or [])


def _lab(args: argparse.Namespace) -> int:
    import os

    from labkit import config

    argv = lab_command(args.port, not args.no_browser, args.token, args.extra)
    os.chdir(config.project_root())
    os.execv(argv[0], argv)
    return 0  # not reached


def main(argv: list[str] | None = None) -> int:
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
    lab.add_argument("extra", nargs="*", help="more JupyterLab options (after --)")
    lab.set_defaults(func=_lab)

    args = parser.parse_args(argv)
    from labkit.services import ServiceError

    try:
        return args.func(args)
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
