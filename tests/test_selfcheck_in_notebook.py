"""The self-check as the last cell of the exercise it checks: it checks the notebook it is
called from (in JupyterLab), and a check inside a running check returns at once."""

from __future__ import annotations

import shutil
from pathlib import Path

from labkit.course import selfcheck

ROOT = Path(__file__).resolve().parents[1]


def test_check_inside_a_check_is_skipped(monkeypatch):
    """The check executes the notebook, its last cell included: that cell must not check
    again (it would recurse, each level starting kernels and nbgrader)."""
    monkeypatch.setenv(selfcheck.RUNNING_ENV, "00-warmup")
    result = selfcheck.check("00-warmup", "no/such/notebook.ipynb", echo=None)
    assert result.skipped and not result.tasks
    assert "skipped" in str(result) and "skipped" in result._repr_html_()


def test_check_from_a_cell_checks_that_notebook(tmp_path, monkeypatch):
    """In JupyterLab the kernel knows its notebook (JPY_SESSION_NAME): a copy of the
    warm-up anywhere is checked in place, not exercises/00-warmup/."""
    copy = tmp_path / "warmup.ipynb"
    shutil.copy(ROOT / "exercises" / "00-warmup" / "warmup.ipynb", copy)
    monkeypatch.setenv("JPY_SESSION_NAME", str(copy))
    assert selfcheck.learner_notebooks("00-warmup") == {"warmup.ipynb": copy.resolve()}
    monkeypatch.setenv("JPY_SESSION_NAME", str(tmp_path / "other.ipynb"))
    default = selfcheck.learner_notebooks("00-warmup")
    assert default["warmup.ipynb"].parent.name == "00-warmup"


def test_executors_skip_the_check_cell():
    """papermill, nbconvert and nbgrader's autograde run the exercise's last cell in a kernel
    that no front end started: it must not start a check (an autograde inside an autograde).
    JupyterLab's kernels (JPY_SESSION_NAME), VS Code's, terminals and scripts do check."""

    class Kernel:
        kernel = object()
        user_ns: dict = {}

    assert selfcheck._run_by_an_executor(Kernel(), {})
    assert not selfcheck._run_by_an_executor(Kernel(), {"JPY_SESSION_NAME": "/x/warmup.ipynb"})
    vscode = Kernel()
    vscode.user_ns = {"__vsc_ipynb_file__": "/x/warmup.ipynb"}
    assert not selfcheck._run_by_an_executor(vscode, {})
    assert not selfcheck._run_by_an_executor(None, {})  # no IPython: a terminal or a script


def test_a_note_when_cells_ran_that_the_saved_file_does_not_hold(tmp_path, monkeypatch):
    """The check reads the saved file: answers typed and run but not saved get a note."""
    import IPython
    import nbformat

    path = tmp_path / "warmup.ipynb"
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    nbformat.write(notebook, path)

    class History:
        input_hist_raw = ["", "x = 1", "%%time\nx = 1", "selfcheck.check('00-warmup')"]

    class Shell:
        history_manager = History()

    monkeypatch.setattr(IPython, "get_ipython", lambda: Shell())
    assert "save" in selfcheck._unsaved_warning({"warmup.ipynb": path})
    History.input_hist_raw = ["", "x = 1  ", "selfcheck.check('00-warmup')"]
    assert selfcheck._unsaved_warning({"warmup.ipynb": path}) == ""
