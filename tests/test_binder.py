"""Binder: what repo2docker reads in binder/, the README's launch links, and a simulated
Binder build and launch.

repo2docker itself needs a container engine, which this machine does not have. The
simulation runs the steps repo2docker runs, in its order, the way it runs them: as an
unprivileged user (created when the tests run as root) whose home holds the repository, in
a fresh virtual environment with the Python that binder/runtime.txt names:

1. ``pip install -r binder/requirements.txt`` from the repository root (repo2docker's
   environment step; its WORKDIR is the repository);
2. ``./binder/postBuild`` from the repository root;
3. ``binder/start <command>``, where the command executes notebooks/00-start-here.ipynb
   with papermill against the servers that ``start`` launched and exported.

What it cannot show: the image itself (base image, repo2docker's own pre-installed
environment, Binder's resource limits and network), and repo2docker's ``--no-cache-dir``
(the simulation reuses a pip cache to stay fast; what is installed is the same).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import psutil
import pytest
from packaging.specifiers import SpecifierSet

from labkit import config

ROOT = Path(__file__).resolve().parents[1]
BINDER = ROOT / "binder"
# The files repo2docker reads from binder/ for this course. A Dockerfile there would make
# repo2docker ignore all the others; an environment.yml would switch it to conda.
BINDER_FILES = {"apt.txt", "requirements.txt", "runtime.txt", "postBuild", "start"}
# The README's badge uses this placeholder until the course has a GitHub remote.
PLACEHOLDER_REPO = "OWNER/REPO"
START_HERE = "notebooks/00-start-here.ipynb"
SIM_USER = "labkit-binder"
SIM_PIP_CACHE = Path("/var/cache/labkit-binder-sim/pip")  # kept between runs, when root
# Environment the simulated user gets from this machine: how pip reaches the registry.
PASSED_THROUGH = re.compile(r"^(PIP_(?!CACHE_DIR)\w+|https?_proxy|no_proxy|SSL_CERT_\w+)$", re.I)


def readme() -> str:
    return (ROOT / "README.md").read_text()


def tracked_files() -> list[str]:
    proc = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, f"the course must be a git checkout: {proc.stderr}"
    return [name for name in proc.stdout.split("\0") if name]


# --------------------------------------------------------------------------- binder/


def test_binder_folder_holds_what_repo2docker_reads():
    """binder/ has apt.txt, requirements.txt, runtime.txt, postBuild and start, and nothing that
    would change how repo2docker builds (a Dockerfile, environment.yml, ...)."""
    present = {p.name for p in BINDER.iterdir()}
    assert present == BINDER_FILES, (
        f"binder/ holds {sorted(present)}, expected {sorted(BINDER_FILES)}"
    )
    tracked = {name for name in tracked_files() if name.startswith("binder/")}
    assert tracked == {f"binder/{name}" for name in BINDER_FILES}, f"commit binder/: {tracked}"


def test_apt_txt_brings_pgbouncer():
    """binder/apt.txt installs the OS packages the lessons use that PyPI has not: PgBouncer
    (Step 10's transaction-mode pooler)."""
    packages = (BINDER / "apt.txt").read_text().split()
    assert packages == ["pgbouncer"], f"binder/apt.txt lists {packages}"


def test_requirements_install_the_project_itself():
    """binder/requirements.txt installs the course with its `lab` extra and lists nothing
    else: the dependencies live in pyproject.toml only."""
    lines = [
        line.split("#", 1)[0].strip()
        for line in (BINDER / "requirements.txt").read_text().splitlines()
    ]
    requirements = [line for line in lines if line]
    assert requirements == ["-e .[lab]"], (
        f"binder/requirements.txt must be just `-e .[lab]` (got {requirements}); "
        "add dependencies to pyproject.toml instead"
    )
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert "lab" in extras, "pyproject.toml has no `lab` extra for binder/requirements.txt"


def test_runtime_python_is_one_the_course_supports():
    """binder/runtime.txt picks a Python the project supports (repo2docker's default, 3.10,
    is not) and the same one environment.yml pins."""
    runtime = (BINDER / "runtime.txt").read_text().strip()
    match = re.fullmatch(r"python-(3\.\d+)", runtime)
    assert match, f"binder/runtime.txt must read `python-3.X`, not {runtime!r}"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert SpecifierSet(project["requires-python"]).contains(f"{match.group(1)}.0"), (
        f"binder/runtime.txt asks for Python {match.group(1)}, outside {project['requires-python']}"
    )
    conda = re.search(
        r"^\s*-\s*python\s*=\s*(3\.\d+)\s*$", (ROOT / "environment.yml").read_text(), re.M
    )
    assert conda and conda.group(1) == match.group(1), (
        "binder/runtime.txt and environment.yml must name the same Python"
    )


@pytest.mark.parametrize("name", ["postBuild", "start"])
def test_scripts_are_executable_bash_without_tmp(name):
    """postBuild and start are executable bash scripts (also in git) that keep nothing in
    /tmp; start ends by handing over to the command it was given."""
    path = BINDER / name
    text = path.read_text()
    assert text.startswith("#!/usr/bin/env bash\n"), f"binder/{name} must start with a bash shebang"
    assert os.access(path, os.X_OK), f"chmod +x binder/{name}"
    staged = subprocess.run(
        ["git", "ls-files", "-s", f"binder/{name}"], cwd=ROOT, capture_output=True, text=True
    ).stdout
    assert staged.startswith("100755"), f"binder/{name} must be executable in git (got {staged!r})"
    code = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert not [line for line in code if "/tmp" in line], f"binder/{name} must keep nothing in /tmp"
    if name == "start":
        assert code[-1] == 'exec "$@"', 'binder/start must end with exec "$@"'


# --------------------------------------------------------------------------- README links


def launch_links(text: str) -> list[str]:
    """Every Binder launch URL in the README (markdown links and HTML anchors)."""
    return re.findall(r"(https?://mybinder\.org/v2/[^\s)\"'>]+)", text)


def launch_target(url: str) -> tuple[str, str]:
    """(owner/repo, file in the repository) that a mybinder.org launch URL opens."""
    parts = urlsplit(url)
    segments = parts.path.split("/")  # ['', 'v2', 'gh', owner, repo, ref]
    assert segments[1:3] == ["v2", "gh"] and len(segments) >= 6, f"not a GitHub Binder URL: {url}"
    query = parse_qs(parts.query)
    if "labpath" in query:
        target = query["labpath"][0]
    elif "urlpath" in query:
        urlpath = unquote(query["urlpath"][0])
        found = re.fullmatch(r"/?(?:lab/tree|tree|notebooks|doc/tree)/(.+)", urlpath)
        assert found, f"{url}: urlpath={urlpath!r} does not open a file"
        target = found.group(1)
    else:
        raise AssertionError(f"{url} opens no file (no urlpath= or labpath=)")
    return f"{segments[3]}/{segments[4]}", unquote(target).split("?")[0]


def github_remote() -> str | None:
    """owner/repo of the `origin` remote when it is on GitHub, else None."""
    proc = subprocess.run(
        ["git", "remote", "get-url", "origin"], cwd=ROOT, capture_output=True, text=True
    )
    found = re.search(r"github\.com[:/]([^/]+/[^/]+?)(?:\.git)?/?$", proc.stdout.strip())
    return found.group(1) if proc.returncode == 0 and found else None


def test_readme_launch_links_open_files_that_exist():
    """Every Binder link in the README opens a file that exists and is committed, and one of
    them opens 00-start-here in JupyterLab."""
    links = launch_links(readme())
    assert links, "the README must have a Binder launch badge"
    tracked = set(tracked_files())
    for url in links:
        _, target = launch_target(url)
        assert (ROOT / target).is_file(), f"README launch link opens {target}, which does not exist"
        assert target in tracked, f"README launch link opens {target}, which is not committed"
    assert any(
        "urlpath=lab/tree/" + START_HERE in url or "labpath=" + START_HERE in url for url in links
    ), f"no README launch link opens {START_HERE} in JupyterLab"


def test_readme_badge_names_the_published_repository():
    """The badge names the GitHub repository in `git remote get-url origin`, or, until there
    is one, the placeholder OWNER/REPO (never a guessed name)."""
    expected = github_remote() or PLACEHOLDER_REPO
    links = launch_links(readme())
    assert links, "the README must have a Binder launch badge"
    for url in links:
        repo, _ = launch_target(url)
        assert repo == expected, (
            f"README launch link points at {repo}; expected {expected} "
            "(the GitHub remote, or the placeholder while there is none)"
        )


# --------------------------------------------------------------------------- simulation


class SimulatedUser:
    """Runs commands as the notebook user: `labkit-binder` when we are root (created if
    missing), else the current user, always with a minimal environment of our making."""

    def __init__(self, base: Path) -> None:
        self.is_root = os.geteuid() == 0
        if self.is_root:
            self._ensure_user()
        import pwd

        entry = pwd.getpwnam(SIM_USER) if self.is_root else pwd.getpwuid(os.geteuid())
        self.name, self.uid, self.gid = entry.pw_name, entry.pw_uid, entry.pw_gid
        self.base = base
        self.home = base / "home"  # like /home/jovyan: the repository is checked out here
        self.env_dir = base / "env"  # like ${NB_PYTHON_PREFIX}: the environment
        self.home.mkdir(parents=True)
        self.chown(base)
        self.chown(self.home)
        self.pip_cache: Path | None = None
        if self.is_root:
            SIM_PIP_CACHE.mkdir(parents=True, exist_ok=True)
            for folder in (SIM_PIP_CACHE.parent, SIM_PIP_CACHE):
                self.chown(folder)
            self.pip_cache = SIM_PIP_CACHE

    @staticmethod
    def _ensure_user() -> None:
        if subprocess.run(["id", "-u", SIM_USER], capture_output=True).returncode == 0:
            return
        useradd = shutil.which("useradd")
        assert useradd, f"running as root, the simulation needs `useradd` to create {SIM_USER}"
        subprocess.run(
            [useradd, "--system", "--no-create-home", "--home-dir", "/nonexistent",
             "--shell", "/usr/sbin/nologin", SIM_USER],
            check=True, capture_output=True,
        )  # fmt: skip

    def chown(self, path: Path) -> None:
        if self.is_root:
            os.chown(path, self.uid, self.gid)

    def environment(self) -> dict[str, str]:
        env = {
            "HOME": str(self.home),
            "USER": self.name,
            "LOGNAME": self.name,
            "SHELL": "/bin/bash",
            "LANG": "C.UTF-8",
            "PATH": f"{self.env_dir}/bin:/usr/local/bin:/usr/bin:/bin",
        }
        env.update({k: v for k, v in os.environ.items() if PASSED_THROUGH.match(k)})
        if self.pip_cache:
            env["PIP_CACHE_DIR"] = str(self.pip_cache)
        return env

    def run(self, argv: list[str], timeout: float, **extra_env: str) -> subprocess.CompletedProcess:
        env = {**self.environment(), **extra_env}
        if self.is_root:
            argv = ["runuser", "-u", self.name, "--", "env", "-i",
                    *[f"{k}={v}" for k, v in env.items()], *argv]  # fmt: skip
            env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        return subprocess.run(
            argv, cwd=self.home, env=env, capture_output=True, text=True, timeout=timeout,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def python_for(self, version: str) -> str:
        """An interpreter for `version` (binder/runtime.txt) that this user can run."""
        candidates = [shutil.which(f"python{version}", path="/usr/local/bin:/usr/bin:/bin")]
        if not self.is_root:
            candidates += [shutil.which(f"python{version}"), getattr(sys, "_base_executable", None)]
        for candidate in filter(None, candidates):
            probe = self.run(
                [candidate, "-c", "import sys, venv, ensurepip; print('%d.%d' % sys.version_info[:2])"],
                timeout=60,
            )  # fmt: skip
            if probe.returncode == 0 and probe.stdout.strip() == version:
                return candidate
        raise AssertionError(
            f"no Python {version} with venv/ensurepip that {self.name} can run "
            f"(binder/runtime.txt asks for it): install python{version} and python{version}-venv"
        )


def copy_checkout(destination: Path, user: SimulatedUser) -> None:
    """The committed files, as they are in the working tree (what repo2docker copies)."""
    for name in tracked_files():
        source = ROOT / name
        if not source.is_file():
            continue  # deleted in the working tree
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    if user.is_root:
        for folder, _, files in os.walk(destination):
            user.chown(Path(folder))
            for file in files:
                user.chown(Path(folder) / file)


def check(proc: subprocess.CompletedProcess, step: str) -> None:
    assert proc.returncode == 0, (
        f"{step} failed (exit {proc.returncode}).\n--- stdout\n{proc.stdout[-4000:]}\n"
        f"--- stderr\n{proc.stderr[-4000:]}"
    )


def server_pids(state_dir: Path) -> dict[str, int]:
    pids = {}
    with contextlib.suppress(OSError, ValueError, IndexError):
        pids["postgres"] = int((state_dir / "postgres/data/postmaster.pid").read_text().split()[0])
    with contextlib.suppress(OSError, ValueError):
        pids["redis"] = int((state_dir / "redis/redis.pid").read_text().strip())
    return {name: pid for name, pid in pids.items() if psutil.pid_exists(pid)}


def stop_leftovers(pids: dict[str, int]) -> None:
    """Last resort, by pid, for servers `services down` did not stop."""
    for pid in pids.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(psutil.pid_exists(p) for p in pids.values()):
        time.sleep(0.1)


# In the "services" group: the servers `start` launches pick free ports the way the
# throwaway servers of test_services.py do, so they must not pick them at the same moment.
@pytest.mark.slow
@pytest.mark.xdist_group("services")
def test_binder_build_and_launch_simulated():
    """postBuild and start, run as repo2docker runs them, as an unprivileged user in a fresh
    environment: 00-start-here executes against the PostgreSQL and Redis that start
    launched, as that user, on 127.0.0.1 only, with their state in the user's home."""
    parent = Path("/home") if os.geteuid() == 0 and Path("/home").is_dir() else None
    base = Path(tempfile.mkdtemp(prefix="labkit-binder-", dir=parent))
    os.chmod(base, 0o755)
    user = SimulatedUser(base)
    state_dir = user.home / ".labkit"  # what binder/start uses: $HOME/.labkit
    pids: dict[str, int] = {}
    timings: dict[str, float] = {}
    try:
        copy_checkout(user.home, user)
        python = user.python_for((BINDER / "runtime.txt").read_text().strip().split("-", 1)[1])

        build_started = time.monotonic()
        check(user.run([python, "-m", "venv", str(user.env_dir)], timeout=120), "python -m venv")
        timings["venv"] = time.monotonic() - build_started

        step = time.monotonic()
        pip = [f"{user.env_dir}/bin/pip", "install", "--quiet", "-r", "binder/requirements.txt"]
        check(user.run(pip, timeout=480), "pip install -r binder/requirements.txt")
        timings["pip install -r binder/requirements.txt"] = time.monotonic() - step

        postbuild_started = time.monotonic()
        postbuild_wall = dt.datetime.now(dt.UTC)
        check(user.run(["./binder/postBuild"], timeout=180), "binder/postBuild")
        timings["postBuild"] = time.monotonic() - postbuild_started

        # What JupyterLab would be: a command that reports the URLs it was given (masked),
        # then executes the start-here notebook against them.
        executed = user.home / "00-start-here.executed.ipynb"
        command = (
            "python -c 'import os; from labkit.course.services import mask_url; "
            'print("DATABASE_URL", mask_url(os.environ["DATABASE_URL"])); '
            'print("REDIS_URL", mask_url(os.environ["REDIS_URL"]))\' && '
            f"exec python -m papermill {START_HERE} {executed} -k python3 --cwd notebooks "
            "--no-progress-bar"
        )
        start_started = time.monotonic()
        start_wall = dt.datetime.now(dt.UTC)
        launched = user.run(["binder/start", "bash", "-c", command], timeout=300)
        timings["start + papermill"] = time.monotonic() - start_started
        pids = server_pids(state_dir)
        check(launched, "binder/start, then papermill on 00-start-here")

        cells = [c for c in json.loads(executed.read_text())["cells"] if c["cell_type"] == "code"]
        first = dt.datetime.fromisoformat(cells[0]["metadata"]["papermill"]["start_time"])
        if first.tzinfo is None:
            first = first.replace(tzinfo=dt.UTC)
        to_first_cell = (first - postbuild_wall).total_seconds()
        launch_to_first_cell = (first - start_wall).total_seconds()
        assert all(c["metadata"]["papermill"]["status"] == "completed" for c in cells)

        # The command saw the URLs of the servers that start launched, not the project's.
        exported = dict(re.findall(r"^(DATABASE_URL|REDIS_URL) (\S+)$", launched.stdout, re.M))
        state = json.loads((state_dir / "state.json").read_text())
        assert exported.get("DATABASE_URL", "").endswith(
            f"@127.0.0.1:{state['postgres']['port']}/postgres"
        )
        assert exported.get("REDIS_URL", "").endswith(f"@127.0.0.1:{state['redis']['port']}/0")
        project = config.read_env_file(config.state_dir() / config.ENV_FILE_NAME)
        for key, url in exported.items():
            assert urlsplit(url).port != urlsplit(project.get(key, "redis://x:1")).port, (
                f"the simulation's {key} is the project's own server"
            )

        # Both servers run as the notebook user, listen on 127.0.0.1 only, on the exported
        # ports, and keep their data in the user's home (not /tmp).
        assert set(pids) == {"postgres", "redis"}, f"servers running after start: {pids}"
        listening: dict[str, set] = {name: set() for name in pids}
        for conn in psutil.net_connections(kind="inet"):
            for name, pid in pids.items():
                if conn.pid == pid and conn.status == psutil.CONN_LISTEN:
                    listening[name].add((conn.laddr.ip, conn.laddr.port))
        for name, pid in pids.items():
            assert psutil.Process(pid).uids().real == user.uid, (
                f"{name} does not run as {user.name}"
            )
            assert listening[name] == {("127.0.0.1", state[name]["port"])}, (
                f"{name} listens on {listening[name]}, expected 127.0.0.1:{state[name]['port']} only"
            )
        data_dir = (state_dir / "postgres/data/postmaster.pid").read_text().splitlines()[1]
        assert Path(data_dir).is_relative_to(user.home), f"PostgreSQL data in {data_dir}"

        # A container restart: every process dies at once, the home directory stays. The
        # next launch says it found stale pid files, and brings back the same cluster (the
        # notebook's database is still there) on the same port.
        doomed = [psutil.Process(pid) for pid in pids.values()]
        doomed += [child for proc in doomed for child in proc.children(recursive=True)]
        for proc in doomed:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        psutil.wait_procs(doomed, timeout=15)
        check_survivors = (
            "python -c 'import os, psycopg; "
            'names = psycopg.connect(os.environ["DATABASE_URL"]).execute('
            '"SELECT datname FROM pg_database").fetchall(); '
            "print(sorted(n for (n,) in names))'"
        )
        restart_started = time.monotonic()
        relaunched = user.run(["binder/start", "bash", "-c", check_survivors], timeout=120)
        timings["relaunch after a restart"] = time.monotonic() - restart_started
        pids = server_pids(state_dir)
        check(relaunched, "binder/start after a simulated container restart")
        assert "stale postmaster.pid" in relaunched.stderr, relaunched.stderr
        assert "stale pid file" in relaunched.stderr, relaunched.stderr
        assert "start_here" in relaunched.stdout, (
            f"the notebook's database is gone: {relaunched.stdout}"
        )
        assert json.loads((state_dir / "state.json").read_text()) == state, (
            "ports or passwords changed"
        )

        down = user.run(["python", "-m", "labkit", "services", "down"], timeout=120,
                        LABKIT_STATE_DIR=str(state_dir))  # fmt: skip
        check(down, "python -m labkit services down")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(psutil.pid_exists(p) for p in pids.values()):
            time.sleep(0.1)
        assert not [p for p in pids.values() if psutil.pid_exists(p)], "servers still running"
        if user.is_root:  # the user is ours alone: nothing of theirs may be left in /tmp
            left = [
                entry.path
                for folder in ("/tmp", "/var/tmp")
                for entry in os.scandir(folder)
                if entry.stat(follow_symlinks=False).st_uid == user.uid
            ]
            assert not left, f"the simulated user left files in /tmp: {left}"

        total = time.monotonic() - build_started
        report = {name: round(seconds, 1) for name, seconds in timings.items()}
        report["postBuild start -> first executed cell"] = round(to_first_cell, 1)
        report["build start (venv) -> first executed cell"] = round(
            to_first_cell + (postbuild_started - build_started), 1
        )
        report["start -> first executed cell"] = round(launch_to_first_cell, 1)
        report["simulation total"] = round(total, 1)
        print("Binder simulation (seconds):", json.dumps(report, indent=2))
        # A classroom waits for this part at every launch (the build happens once).
        assert timings["start + papermill"] < 120, (
            f"launch took {timings['start + papermill']:.0f} s"
        )
    finally:
        stop_leftovers(server_pids(state_dir) or pids)
        shutil.rmtree(base, ignore_errors=True)
