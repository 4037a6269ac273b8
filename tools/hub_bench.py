"""Measure the JupyterHub kit (classroom/one-machine) on this machine: spawn time and memory
per student, idle and while running lesson 01; write classroom/measured.json.

    sudo .venv/bin/python tools/hub_bench.py --users 3

As root (it creates Unix users ``hubt-bench1``..N, and deletes them and their homes at the
end, even on failure). It starts a hub of its own on free loopback ports with a private
state folder, and:

1. spawns each student's server in turn through the REST API (a first spawn: the course is
   copied, a PostgreSQL cluster initialised) and times it until the hub says ready;
2. runs 00-start-here in each student's kernel (through the proxy, with the student's
   token), waits, then samples memory: the *idle* student, who opened and ran a lesson;
3. runs lesson 01 (its CI-size parameters from tests/notebook_params.py) in every kernel at
   once, as a class does, sampling every 0.5 s and keeping each student's peak.

Memory is PSS (``psutil.Process.memory_full_info().pss``: shared pages split between the
processes that share them, so sums over processes and students add up), summed over the
student's processes (PostgreSQL with its workers, Redis, the Jupyter server, the kernel).
The hub's own memory is the hub, the proxy and the idle culler.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import importlib.util
import json
import os
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from tqdm import tqdm

from labkit import config
from labkit.course.hub import Hub, KernelSession, end_processes_of

ROOT = config.project_root()
OUTPUT = ROOT / "classroom" / "measured.json"
START_HERE = "notebooks/00-start-here.ipynb"
LESSON = sorted((ROOT / "notebooks").glob("01-*.ipynb"))[0]
SAMPLE_S = 0.5
MB = 1024 * 1024


def ci_parameters(notebook: Path) -> dict:
    spec = importlib.util.spec_from_file_location(
        "notebook_params", ROOT / "tests" / "notebook_params.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(module.CI_PARAMETERS.get(notebook.name, {}))


def part_of(proc: psutil.Process) -> str:
    """Which part of a student's set-up a process is."""
    name = proc.name()
    cmdline = " ".join(proc.cmdline())
    if name.startswith("postgres") or "/postgres " in cmdline or cmdline.startswith("postgres:"):
        return "postgres"
    if "redis-server" in name or "redis-server" in cmdline:
        return "redis"
    if "jupyterhub-singleuser" in cmdline:
        return "server"
    if "ipykernel" in cmdline:
        return "kernel"
    return "other"


def pss_by_part(uid: int) -> dict[str, float]:
    """PSS in MB of every live process of ``uid``, summed by part."""
    parts: dict[str, float] = {}
    for proc in psutil.process_iter(["uids"]):
        if not proc.info["uids"] or proc.info["uids"].real != uid:
            continue
        with contextlib.suppress(psutil.Error):
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            part = part_of(proc)
            parts[part] = parts.get(part, 0.0) + proc.memory_full_info().pss / MB
    return parts


def cpu_seconds(uid: int) -> float:
    total = 0.0
    for proc in psutil.process_iter(["uids"]):
        if proc.info["uids"] and proc.info["uids"].real == uid:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system + times.children_user + times.children_system
    return total


def hub_and_proxy_pss(hub: Hub) -> float:
    """The hub, the proxy and the culler (the hub's root-owned children), in MB."""
    pids = {hub.pid(), int(hub.proxy_pid_file.read_text())}
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(hub.pid()).children():
            if child.uids().real == 0:
                pids.add(child.pid)
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            total += psutil.Process(pid).memory_full_info().pss / MB
    return total


class Sampler(threading.Thread):
    """Every 0.5 s, each student's total PSS; keeps the peak per student."""

    def __init__(self, uids: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.uids = uids
        self.peak = dict.fromkeys(uids, 0.0)
        self.samples = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for user, uid in self.uids.items():
                self.peak[user] = max(self.peak[user], sum(pss_by_part(uid).values()))
            self.samples += 1
            self.stop.wait(SAMPLE_S)


def summary(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 1), "max": round(max(values), 1)}


async def run_in_kernels(
    hub: Hub, tokens: dict[str, str], path: str, parameters: dict, bar: tqdm, keep: bool = False
) -> dict[str, str]:
    """Run the notebook in each student's kernel at once; returns each one's session id
    (``keep``: the sessions and their kernels stay up)."""

    async def one(user: str) -> str:
        async with KernelSession(hub.url, user, tokens[user], path, keep=keep) as kernel:
            notebook = await asyncio.to_thread(kernel.notebook)
            cells = [c for c in notebook["cells"] if c["cell_type"] == "code"]
            runs = []
            for cell in cells:
                source = (
                    "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
                )
                run = await kernel.execute(source, timeout_s=900)
                runs.append(run)
                bar.update(1)
                if run.status != "ok":
                    raise RuntimeError(f"{user}: a cell of {path} failed: {run.text()[-800:]}")
                if parameters and "parameters" in cell.get("metadata", {}).get("tags", []):
                    injected = "\n".join(f"{k} = {v!r}" for k, v in parameters.items())
                    await kernel.execute(injected)
            return kernel.session_id

    users = list(tokens)
    results = await asyncio.gather(*(one(user) for user in users))
    return dict(zip(users, results, strict=True))


def code_cells(path: Path) -> int:
    return sum(c["cell_type"] == "code" for c in json.loads(path.read_text())["cells"])


def remove_users(users: list[str]) -> None:
    for user in users:
        with contextlib.suppress(KeyError):
            end_processes_of(pwd.getpwnam(user).pw_uid)
            subprocess.run(["userdel", "--remove", user], capture_output=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=3, help="students to spawn (default 3)")
    parser.add_argument(
        "--idle-wait", type=float, default=10, help="seconds to settle before the idle sample"
    )
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--lesson-size", choices=["ci", "default"], default="ci",
                        help="lesson 01 with CI's parameters (default) or its own defaults")  # fmt: skip
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("error: the benchmark creates Unix users: run it as root (sudo)", file=sys.stderr)
        return 2
    if args.users < 1:
        print("error: --users must be at least 1", file=sys.stderr)
        return 2
    users = [f"hubt-bench{i}" for i in range(1, args.users + 1)]
    load_at_start = round(os.getloadavg()[0], 2)  # a shared machine: say how busy it was
    state = Path(tempfile.mkdtemp(prefix="labkit-hub-bench-"))
    hub = Hub(state)
    remove_users(users)
    try:
        hub.up(cull_timeout=24 * 3600)  # nobody is culled during the measurement
        for user in users:
            hub.add_user(user)
        uids = {user: pwd.getpwnam(user).pw_uid for user in users}

        spawn = []
        for user in tqdm(users, desc="spawning (one at a time)", unit="user"):
            spawn.append(round(hub.spawn(user), 2))
        tokens = {user: hub.user_token(user) for user in users}

        total = code_cells(ROOT / START_HERE) * len(users)
        with tqdm(total=total, desc="00-start-here in every kernel", unit="cell") as bar:
            sessions = asyncio.run(run_in_kernels(hub, tokens, START_HERE, {}, bar, keep=True))
        time.sleep(args.idle_wait)
        idle_parts = {user: pss_by_part(uid) for user, uid in uids.items()}
        idle = [sum(parts.values()) for parts in idle_parts.values()]
        hub_pss = hub_and_proxy_pss(hub)
        for user, session in sessions.items():  # the lesson gets a fresh kernel, as in class
            KernelSession(hub.url, user, tokens[user], START_HERE).rest(
                "DELETE", f"/sessions/{session}"
            )

        parameters = ci_parameters(LESSON) if args.lesson_size == "ci" else {}
        lesson = f"notebooks/{LESSON.name}"
        cpu_before = {user: cpu_seconds(uid) for user, uid in uids.items()}
        sampler = Sampler(uids)
        sampler.start()
        started = time.monotonic()
        total = code_cells(LESSON) * len(users)
        with tqdm(total=total, desc=f"{LESSON.stem} in every kernel at once", unit="cell") as bar:
            asyncio.run(run_in_kernels(hub, tokens, lesson, parameters, bar))
        lesson_wall = time.monotonic() - started
        sampler.stop.set()
        sampler.join()
        cpu_lesson = [cpu_seconds(uid) - cpu_before[user] for user, uid in uids.items()]
        peak = list(sampler.peak.values())

        for user, parts in idle_parts.items():
            print(
                f"{user} idle PSS (MB): "
                + ", ".join(f"{k} {v:.1f}" for k, v in sorted(parts.items()))
            )
        memory_mb = psutil.virtual_memory().total // MB
        result = {
            "command": f"python tools/hub_bench.py --users {args.users}"
            + (" --lesson-size default" if args.lesson_size == "default" else ""),
            "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": {
                "cores": os.cpu_count(),
                "memory_mb": memory_mb,
                "load_average_1m_at_start": load_at_start,
            },  # fmt: skip
            "users": args.users,
            "spawn_seconds": {**summary(spawn), "samples": spawn},
            "pss_mb_per_user": {"idle": summary(idle), "lesson01_peak": summary(peak)},
            "pss_mb_parts_idle": {
                part: round(statistics.median(p.get(part, 0.0) for p in idle_parts.values()), 1)
                for part in ("postgres", "redis", "server", "kernel")
            },
            "pss_mb_hub_and_proxy": round(hub_pss, 1),
            # Beyond the agreed shape: what the CPU limit of the estimate rests on.
            "lesson01": {
                "parameters": parameters,
                "wall_seconds_all_at_once": round(lesson_wall, 1),
                "cpu_seconds_per_user": summary(cpu_lesson),
                "memory_samples": sampler.samples,
            },
        }
        args.output.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
        print(f"written to {args.output}")
        return 0
    finally:
        with contextlib.suppress(Exception):
            hub.down()
        remove_users(users)
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
