"""Kernels forked from a template (labkit.course.forkkernel) behave as kernels started by
``python -m ipykernel_launcher``: the launcher's environment, folder and arguments, a
seed of their own, an interrupt that interrupts, a kill that kills; and without a
template, the launcher is the plain kernel."""

from __future__ import annotations

import os
import time

import nbformat
import pytest
from nbclient import NotebookClient

from labkit.course import forkkernel

pytestmark = pytest.mark.skipif(not forkkernel.enabled(), reason="fork kernels: Linux only")


@pytest.fixture(scope="module")
def template():
    server = forkkernel.KernelForkServer()
    yield server
    server.stop()


def run(cells, *, env, cwd, **options):
    """Run code cells in a kernel started through ForkingKernelManager; the notebook."""
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        client = NotebookClient(
            notebook,
            kernel_name="python3",
            kernel_manager_class=forkkernel.ForkingKernelManager,
            resources={"metadata": {"path": str(cwd)}},
            **options,
        )
        client.execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return notebook


def text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


PROBE = """import os, random, sys
print(os.getpid(), os.getppid(), os.environ.get("LABKIT_PROBE"), os.getcwd(), sys.path[0],
      "sqlalchemy" in sys.modules, random.random(), os.getpgid(0) == os.getpid())"""


def test_a_forked_kernel_is_the_launchers_kernel(template, tmp_path):
    """The launcher's environment and folder, sys.path[0] the folder (as `-m` sets it), its
    own process group, SQLAlchemy already imported, and a random seed of its own."""
    seen = []
    for _ in range(2):
        notebook = run([PROBE], env={**template.env, "LABKIT_PROBE": "sandbox-7"}, cwd=tmp_path)
        seen.append(text(notebook.cells[0]).split())
    for _, ppid, probe, cwd, path0, preloaded, _, leader in seen:
        assert int(ppid) == template.proc.pid, "not forked from the template"
        assert (probe, cwd, path0) == ("sandbox-7", str(tmp_path), str(tmp_path))
        assert (preloaded, leader) == ("True", "True")
    assert seen[0][0] != seen[1][0] and seen[0][6] != seen[1][6], "the same pid, or seed"


def test_without_a_template_the_launcher_is_the_plain_kernel(tmp_path):
    """No LABKIT_KERNEL_FORK_SOCKET (or nothing listening): python -m ipykernel_launcher,
    as jupyter_client starts it (nothing imported ahead)."""
    for env in ({}, {forkkernel.SOCKET_ENV: str(tmp_path / "nobody.sock")}):
        notebook = run([PROBE], env={**env, "LABKIT_PROBE": "plain"}, cwd=tmp_path)
        _, _, probe, cwd, _, preloaded, _, _ = text(notebook.cells[0]).split()
        assert (probe, cwd, preloaded) == ("plain", str(tmp_path), "False")


def test_an_endless_cell_is_interrupted_and_the_next_cell_runs(template, tmp_path):
    """The interrupt reaches the forked kernel through its launcher: KeyboardInterrupt."""
    started = time.perf_counter()
    notebook = run(
        ["while True:\n    pass", "print('after')"],
        env=template.env,
        cwd=tmp_path,
        timeout=2,
        interrupt_on_timeout=True,
        allow_errors=True,
    )
    errors = [o.ename for o in notebook.cells[0].outputs if o.output_type == "error"]
    assert errors == ["KeyboardInterrupt"], notebook.cells[0].outputs
    assert text(notebook.cells[1]).strip() == "after"
    assert time.perf_counter() - started < 30


def test_a_kernel_that_ignores_the_interrupt_dies_with_its_launcher(template, tmp_path):
    """A cell that ignores SIGINT: nbclient gives up and kills the launcher; the template
    then kills the kernel (no orphan left running)."""
    cells = [
        "import os, signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nprint(os.getpid())",
        "while True:\n    pass",
    ]
    notebook = run(
        cells, env=template.env, cwd=tmp_path, timeout=2, interrupt_on_timeout=True,
        allow_errors=True, shutdown_kernel="immediate",
    )  # fmt: skip
    pid = int(text(notebook.cells[0]))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        with open(f"/proc/{pid}/stat") as stat:
            if stat.read().split()[2] == "Z":  # exited, not yet reaped by the template
                break
        time.sleep(0.05)
    else:
        pytest.fail(f"the kernel {pid} outlived its launcher")
