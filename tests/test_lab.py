"""Smoke test: the JupyterLab that `make lab` starts really serves the course on loopback,
with the nbgrader extension, and stops cleanly."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

from labkit.cli import lab_command


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read()


@pytest.mark.slow
def test_lab_serves_the_course_with_nbgrader(tmp_path):
    port, token = free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"))
    log = open(tmp_path / "lab.log", "wb")
    process = subprocess.Popen(
        lab_command(port, open_browser=False, token=token),
        stdout=log,
        stderr=log,
        env=env,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                status, _ = get(f"{base}/api/status?token={token}")
                break
            except OSError:
                assert process.poll() is None, (tmp_path / "lab.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "JupyterLab did not answer within 60 s"
                time.sleep(0.3)
        assert status == 200
        _, body = get(f"{base}/lab/api/extensions?token={token}")
        names = {ext["name"] for ext in json.loads(body)}
        assert any("nbgrader" in name for name in names), f"nbgrader not in {sorted(names)}"
        _, body = get(f"{base}/api/contents/notebooks?token={token}")
        files = {item["name"] for item in json.loads(body)["content"]}
        assert "00-start-here.ipynb" in files
        # Loopback only: every listening socket on that port is bound to 127.0.0.1.
        import psutil

        listening = {
            c.laddr.ip
            for c in psutil.net_connections(kind="inet")
            if c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN
        }
        assert listening == {"127.0.0.1"}, f"JupyterLab listens on {listening}"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise
        log.close()
    assert code == 0, f"JupyterLab exited with {code}: {(tmp_path / 'lab.log').read_text()[-2000:]}"
