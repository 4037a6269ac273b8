"""The JupyterLab that `make lab` starts: serves the course on loopback, configured for a
learner (no nbgrader instructor tools or error banners, a terminal that finds the course's
Python whatever the shell's rc files do, a quiet log), and stops cleanly."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from labkit import config
from labkit.course import labsetup
from labkit.course.cli import lab_command

ROOT = Path(__file__).resolve().parents[1]
# Lines of the server's log that a learner must not see (issue 9, "Noise").
NOISE = [
    "without encryption",
    "is not trusted",
    "ping timeout",
    "XDG_RUNTIME_DIR",
    "Error fetching",
    "exchange directory",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Lab:
    def __init__(self, base: str, token: str) -> None:
        self.base, self.token = base, token

    def request(self, path: str, body: dict | None = None, method: str | None = None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            error.msg = f"{error.msg} ({method or 'GET'} {path})"
            raise

    def json(self, path: str, body: dict | None = None, method: str | None = None):
        return json.loads(self.request(path, body, method)[1] or b"null")


def start_lab(tmp_path: Path, env: dict, instructor: bool = False):
    port, token = free_port(), secrets.token_hex(16)
    log = open(tmp_path / "lab.log", "wb")
    process = subprocess.Popen(
        lab_command(port, open_browser=False, token=token, instructor=instructor),
        stdout=log,
        stderr=log,
        env={**env, **labsetup.environment()},
        cwd=ROOT,
        start_new_session=True,
    )
    lab = Lab(f"http://127.0.0.1:{port}", token)
    deadline = time.monotonic() + 60
    while True:
        try:
            lab.request("/api/status")
            return process, lab, port, log
        except OSError:
            assert process.poll() is None, (tmp_path / "lab.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "JupyterLab did not answer within 60 s"
            time.sleep(0.3)


def stop_lab(process, log, tmp_path: Path) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise
    finally:
        log.close()
    assert code == 0, f"JupyterLab exited with {code}: {(tmp_path / 'lab.log').read_text()[-2000:]}"


def page_config(lab: Lab) -> dict:
    _, body = lab.request("/lab")
    found = re.search(
        rb'<script id="jupyter-config-data" type="application/json">(.*?)</script>', body, re.S
    )
    assert found, "no page config in /lab"
    return json.loads(found.group(1))


async def terminal_output(lab: Lab, port: int, command: str, marker: str, seconds: float = 20):
    """Open a JupyterLab terminal, type ``command``, return what it printed once a whole
    line holding ``marker`` appeared (or the deadline passed)."""
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    name = lab.json("/api/terminals", {}, "POST")["name"]
    request = HTTPRequest(
        f"ws://127.0.0.1:{port}/terminals/websocket/{name}",
        headers={"Authorization": f"token {lab.token}"},
    )
    connection = await websocket_connect(request)
    seen, sent = "", False
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            try:
                message = await asyncio.wait_for(connection.read_message(), timeout=1.0)
            except TimeoutError:
                message = None
            if message is None and connection.protocol is None:
                break
            if message:
                kind, *payload = json.loads(message)
                if kind == "stdout":
                    seen += "".join(payload)
            if not sent and (
                "$" in seen or "#" in seen or time.monotonic() > deadline - seconds + 3
            ):
                connection.write_message(json.dumps(["stdin", command + "\r"]))
                sent = True
            after = seen.split(command, 1)[-1]
            if marker in after and "\n" in after.split(marker, 1)[1]:
                break
    finally:
        connection.close()
        lab.request(f"/api/terminals/{name}", method="DELETE")
    return seen


@pytest.mark.slow
def test_lab_serves_the_course_for_a_learner(tmp_path):
    """Loopback only; nbgrader's instructor tools off (no banner, no gradebook created); a
    kernel starts over IPC; opening notebooks logs no trust warning; the terminal runs the
    course's Python although the learner's ~/.bashrc puts another `python` first."""
    home = tmp_path / "home"
    fake_bin = home / "other-python" / "bin"
    fake_bin.mkdir(parents=True)
    (fake_bin / "python").write_text("#!/bin/sh\necho 'No module named labkit (another Python)'\n")
    (fake_bin / "python").chmod(0o755)
    (home / ".bashrc").write_text(f'export PATH="{fake_bin}:$PATH"\n')
    env = dict(os.environ, HOME=str(home), JUPYTER_RUNTIME_DIR=str(tmp_path / "rt"))
    env.pop(labsetup.INSTRUCTOR_ENV, None)
    gradebook = ROOT / "grading" / "gradebook.db"
    gradebook_before = gradebook.exists()
    # What `python -m labkit lab` does before it starts JupyterLab, for this learner's HOME.
    subprocess.run(
        [sys.executable, "-c", "from labkit.course import labsetup; labsetup.trust_notebooks()"],
        env=env,
        check=True,
    )
    process, lab, port, log = start_lab(tmp_path, env)
    try:
        assert lab.request("/api/status")[0] == 200
        disabled = page_config(lab).get("disabledExtensions", [])
        assert "@jupyter/nbgrader" in disabled, disabled
        assert "@jupyterlab/apputils-extension:announcements" in disabled, disabled
        for path in ("/formgrader", "/assignments", "/courses"):
            with pytest.raises(urllib.error.HTTPError) as error:
                lab.request(path)
            assert error.value.code == 404, path
        for notebook in ("notebooks/00-start-here.ipynb", "exercises/00-warmup/warmup.ipynb"):
            assert lab.json(f"/api/contents/{notebook}")["type"] == "notebook"
        kernel = lab.json("/api/kernels", {"name": "python3"}, "POST")
        shown = asyncio.run(
            terminal_output(
                lab,
                port,
                'python -c \'import labkit, sys; print("LABKIT", "OK", sys.prefix)\'',
                "LABKIT OK",
            )
        )
        assert "LABKIT OK" in shown, (
            f"the terminal did not run the course's Python:\n{shown[-1500:]}"
        )
        assert sys.prefix in shown.split("LABKIT OK", 1)[1]
        lab.request(f"/api/kernels/{kernel['id']}", method="DELETE")
        # Loopback only: every listening socket on that port is bound to 127.0.0.1.
        import psutil

        listening = {
            c.laddr.ip
            for c in psutil.net_connections(kind="inet")
            if c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN
        }
        assert listening == {"127.0.0.1"}, f"JupyterLab listens on {listening}"
    finally:
        stop_lab(process, log, tmp_path)
    text = (tmp_path / "lab.log").read_text()
    noisy = [line for line in text.splitlines() if any(n in line for n in NOISE)]
    assert not noisy, "the learner's terminal shows:\n" + "\n".join(noisy)
    assert gradebook.exists() == gradebook_before, "the learner's lab created grading/gradebook.db"


def test_instructor_mode_keeps_nbgrader():
    """`LABKIT_INSTRUCTOR=1` (make lab-instructor) leaves nbgrader's tools on; the learner's
    configuration turns its lab extension and server extensions off."""
    student = labsetup.server_config(False, config.state_dir() / "lab" / "student")
    instructor = labsetup.server_config(True, config.state_dir() / "lab" / "instructor")
    assert not any(student["ServerApp"]["jpserver_extensions"].values())
    assert "jpserver_extensions" not in instructor["ServerApp"]
    argv = labsetup.prepare(instructor=True)
    settings = Path(argv[1].split("=", 1)[1])
    disabled = json.loads((settings / "page_config.json").read_text())["disabledExtensions"]
    assert "@jupyter/nbgrader" not in disabled
    argv = labsetup.prepare(instructor=False)
    settings = Path(argv[1].split("=", 1)[1])
    disabled = json.loads((settings / "page_config.json").read_text())["disabledExtensions"]
    assert "@jupyter/nbgrader" in disabled


def test_make_check_uses_the_course_python():
    """`make check A=...` runs the course's own Python (not whatever `python` PATH finds),
    and says how to call it when A is missing."""
    dry = subprocess.run(
        ["make", "-n", "check", "A=00-warmup"], cwd=ROOT, capture_output=True, text=True
    )
    assert dry.returncode == 0, dry.stderr
    assert ".venv/bin/python -m labkit check 00-warmup" in dry.stdout
    missing = subprocess.run(
        ["make", "-s", "check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=dict(os.environ, MAKEFLAGS=""),
    )
    assert missing.returncode != 0 and "usage: make check A=00-warmup" in missing.stderr


def test_kernel_sockets_fit_whatever_the_runtime_folder(monkeypatch, tmp_path):
    """A Unix socket path has at most 107 bytes: the server gets a short private runtime
    folder for its kernels' IPC sockets, however deep JUPYTER_RUNTIME_DIR is (a deep test
    folder once made every kernel start fail with HTTP 500)."""
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / ("deep-folder-" * 12)))
    runtime = Path(labsetup.environment()["JUPYTER_RUNTIME_DIR"])
    socket = runtime / "kernel-00000000-0000-0000-0000-000000000000-ipc-10"
    assert len(str(socket).encode()) <= 107, socket
    assert runtime.stat().st_mode & 0o777 == 0o700 and runtime.stat().st_uid == os.geteuid()
    assert labsetup.server_config(False, tmp_path)["KernelManager"] == {"transport": "ipc"}


@pytest.mark.slow
def test_a_jupyterlab_started_by_binder_gets_the_learners_setup(tmp_path):
    """binder/start evals `python -m labkit lab --env` before Binder's own `jupyter lab`: that
    JupyterLab, started without any course option, hides nbgrader's tools and starts
    kernels over IPC, as `make lab`'s does."""
    exports = subprocess.run(
        [sys.executable, "-m", "labkit", "lab", "--env"], capture_output=True, text=True, check=True
    ).stdout
    assert "labkit lab --env" in (ROOT / "binder" / "start").read_text()
    env = dict(os.environ)
    env.pop(labsetup.INSTRUCTOR_ENV, None)
    for line in exports.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = shlex.split(value)[0]
    assert env["JUPYTER_CONFIG_PATH"].startswith(str(ROOT / ".labkit"))
    port, token = free_port(), secrets.token_hex(16)
    argv = [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--ServerApp.port={port}",
            f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={ROOT}"]  # fmt: skip
    if os.geteuid() == 0:
        argv.append("--allow-root")
    log = open(tmp_path / "lab.log", "wb")
    process = subprocess.Popen(
        argv, stdout=log, stderr=log, env=env, cwd=ROOT, start_new_session=True
    )
    lab = Lab(f"http://127.0.0.1:{port}", token)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                lab.request("/api/status")
                break
            except OSError:
                assert process.poll() is None, (tmp_path / "lab.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "JupyterLab did not answer within 60 s"
                time.sleep(0.3)
        assert "@jupyter/nbgrader" in page_config(lab).get("disabledExtensions", [])
        with pytest.raises(urllib.error.HTTPError) as error:
            lab.request("/formgrader")
        assert error.value.code == 404
        kernel = lab.json("/api/kernels", {"name": "python3"}, "POST")
        lab.request(f"/api/kernels/{kernel['id']}", method="DELETE")
    finally:
        stop_lab(process, log, tmp_path)
    assert "running over TCP" not in (tmp_path / "lab.log").read_text()
