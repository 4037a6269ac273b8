"""The JupyterLab that ``make lab`` opens, configured for a learner (or an instructor).

``python -m labkit lab`` adds :func:`prepare`'s options to JupyterLab's command line and
:func:`environment` to its environment, and signs the notebooks (:func:`trust_notebooks`):

>>> from labkit.course import labsetup
>>> options = labsetup.prepare(instructor=False)   # writes .labkit/lab/student/
>>> [option.split("=")[0] for option in options]
['--config', '--LabApp.app_settings_dir']
>>> "@jupyter/nbgrader" in labsetup.STUDENT_DISABLED
True

What a learner gets, and why (each is configured, not filtered):

- **a terminal with the course's Python**: the terminal runs ``bash --rcfile <ours>``;
  ours sources the learner's ``~/.bashrc`` first, then puts this environment's ``bin/``
  first on ``PATH`` — whatever pyenv, conda or the rc files did — so ``python -m labkit
  check 00-warmup`` works there;
- **no instructor tools**: nbgrader's lab extension (Formgrader, Create Assignment, the
  Assignment and Course lists, Validate) and its server extensions are off, so no
  "Error fetching courses!" banner and no ``grading/gradebook.db`` created by a click. A
  learner checks an exercise with its last cell (``selfcheck.check``), which reports
  unanswered tasks as "not answered yet". ``LABKIT_INSTRUCTOR=1`` (``make lab-instructor``)
  turns them all back on;
- **a quiet terminal**: kernels talk over IPC sockets, not TCP (no "running over TCP
  without encryption" warning) where the socket path fits; the server does not ping
  browser tabs on loopback (no "WebSocket ping timeout" when a tab sleeps); the course's
  notebooks are trusted (signed) when JupyterLab starts (no "Notebook … is not trusted");
  ``XDG_RUNTIME_DIR`` points at a private folder when unset or unusable; and the
  "get notified about Jupyter news" popup is off.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

from labkit import config

__all__ = [
    "INSTRUCTOR_ENV",
    "STUDENT_DISABLED",
    "environment",
    "instructor_mode",
    "prepare",
    "trust_notebooks",
]

#: Set to 1 for the instructor's JupyterLab (nbgrader's Formgrader and friends visible).
INSTRUCTOR_ENV = "LABKIT_INSTRUCTOR"

#: Lab extensions and plugins a learner does not see.
STUDENT_DISABLED = ["@jupyter/nbgrader"]
#: Off for everyone: the news popup.
ALWAYS_DISABLED = ["@jupyterlab/apputils-extension:announcements"]
NBGRADER_SERVER_EXTENSIONS = [
    "nbgrader.server_extensions.formgrader",
    "nbgrader.server_extensions.validate_assignment",
    "nbgrader.server_extensions.assignment_list",
    "nbgrader.server_extensions.course_list",
]
# A Unix socket path is at most 107 bytes; IPC kernel sockets are "<runtime>/kernel-<uuid>-ipc-N".
_IPC_PATH_ROOM = 107 - len("/kernel-00000000-0000-0000-0000-000000000000-ipc-10")


def instructor_mode() -> bool:
    """True when ``LABKIT_INSTRUCTOR`` is set to 1/true/yes."""
    return os.environ.get(INSTRUCTOR_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def _lab_dir(instructor: bool) -> Path:
    return config.state_dir() / "lab" / ("instructor" if instructor else "student")


def _bashrc(bin_dir: Path) -> str:
    venv = Path(sys.prefix) if sys.prefix != sys.base_prefix else None
    lines = [
        "# Written by `python -m labkit lab`: the course terminal's start-up file.",
        "# Your own ~/.bashrc runs first; then the course's Python comes first on PATH.",
        'if [ -f "$HOME/.bashrc" ]; then . "$HOME/.bashrc"; fi',
    ]
    if venv is not None:
        lines.append(f"export VIRTUAL_ENV={shlex.quote(str(venv))}")
    lines += [
        f'export PATH={shlex.quote(str(bin_dir))}:"$PATH"',
        "unset PYTHONHOME",
        "hash -r",
        'PS1="(course) ${PS1:-\\w \\$ }"',
        "echo \"course terminal: $(python -c 'import sys; print(sys.executable)') — try "
        "'make check A=00-warmup' or 'python -m labkit progress'\"",
    ]
    return "\n".join(lines) + "\n"


def kernel_dir() -> Path | None:
    """A short private runtime folder for the server: its kernels' connection files and IPC
    sockets live there (JupyterLab puts them in its runtime folder).

    A Unix socket path has at most 107 bytes, and Jupyter's usual runtime folder can be
    longer (a deep home, a test's temporary folder). The server gets ``<state dir>/kernels``
    when that is short enough, else ``<tmp>/labkit-kernels-<uid>-<hash of the state
    folder>`` — made 0700 and owned by us — or ``None`` if neither can be had (kernels then
    use TCP)."""
    import hashlib
    import tempfile

    digest = hashlib.sha256(str(config.state_dir()).encode()).hexdigest()[:8]
    uid = os.geteuid() if hasattr(os, "geteuid") else 0
    candidates = [
        config.state_dir() / "kernels",
        Path(tempfile.gettempdir()) / f"labkit-kernels-{uid}-{digest}",
    ]
    for folder in candidates:
        if len(str(folder)) > _IPC_PATH_ROOM:
            continue
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            info = folder.stat()
        except OSError:
            continue
        if info.st_uid == uid and not info.st_mode & 0o077:
            return folder
    return None


def server_config(instructor: bool, folder: Path) -> dict:
    """The jupyter_server configuration ``prepare`` writes (see the module docstring)."""
    rcfile = folder / "bashrc"
    cfg: dict = {
        "ServerApp": {
            "terminado_settings": {"shell_command": ["bash", "--rcfile", str(rcfile), "-i"]},
            # Loopback only: the browser is on this machine; no keep-alive pings to time out.
            "tornado_settings": {"ws_ping_interval": 0},
        },
    }
    if kernel_dir() is not None:  # environment() makes it the server's runtime folder
        cfg["KernelManager"] = {"transport": "ipc"}
    if not instructor:
        cfg["ServerApp"]["jpserver_extensions"] = dict.fromkeys(NBGRADER_SERVER_EXTENSIONS, False)
    return cfg


def prepare(instructor: bool | None = None) -> list[str]:
    """Write the configuration of the learner's (or instructor's) JupyterLab under
    ``.labkit/lab/`` and return the JupyterLab options that use it."""
    instructor = instructor_mode() if instructor is None else instructor
    folder = _lab_dir(instructor)
    settings = folder / "app-settings"
    settings.mkdir(parents=True, exist_ok=True)
    (folder / "bashrc").write_text(_bashrc(Path(sys.executable).parent))
    disabled = ALWAYS_DISABLED + ([] if instructor else STUDENT_DISABLED)
    _write_json(settings / "page_config.json", {"disabledExtensions": disabled})
    # Keep the defaults an installation may ship in its own app settings folder.
    shipped = Path(sys.prefix) / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    overrides = json.loads(shipped.read_text()) if shipped.is_file() else {}
    overrides.setdefault("@jupyterlab/apputils-extension:notification", {})["fetchNews"] = "false"
    _write_json(settings / "overrides.json", overrides)
    server = folder / "jupyter_server_config.json"
    _write_json(server, server_config(instructor, folder))
    return [f"--config={server}", f"--LabApp.app_settings_dir={settings}"]


def config_path(instructor: bool | None = None) -> Path:
    """The same configuration as a folder for ``JUPYTER_CONFIG_PATH``, for a JupyterLab that
    the course does not start itself (Binder's, a hub's): its ``jupyter_server_config.json``
    (terminal, IPC kernels, nbgrader's server extensions) and ``labconfig/page_config.json``
    (nbgrader's lab extension and the news popup off). Returns the folder."""
    instructor = instructor_mode() if instructor is None else instructor
    folder = _lab_dir(instructor)
    prepare(instructor)  # the terminal's start-up file and the app settings
    target = folder / "config-path"
    (target / "labconfig").mkdir(parents=True, exist_ok=True)
    _write_json(target / "jupyter_server_config.json", server_config(instructor, folder))
    disabled = ALWAYS_DISABLED + ([] if instructor else STUDENT_DISABLED)
    _write_json(target / "labconfig" / "page_config.json",
                {"disabledExtensions": dict.fromkeys(disabled, True)})  # fmt: skip
    return target


def shell_exports(instructor: bool | None = None) -> str:
    """``export`` lines that give a JupyterLab started by someone else the course's set-up:
    ``JUPYTER_CONFIG_PATH`` (put first), and :func:`environment`'s variables."""
    current = os.environ.get("JUPYTER_CONFIG_PATH", "")
    paths = os.pathsep.join(p for p in (str(config_path(instructor)), current) if p)
    values = {"JUPYTER_CONFIG_PATH": paths, **environment()}
    return "".join(f"export {key}={shlex.quote(value)}\n" for key, value in values.items())


def environment() -> dict[str, str]:
    """Environment variables for the JupyterLab server (its kernels and terminals inherit
    them): a usable private ``XDG_RUNTIME_DIR``, and a runtime folder short enough for IPC
    sockets (:func:`kernel_dir`)."""
    found: dict[str, str] = {}
    if (kernels := kernel_dir()) is not None:
        found["JUPYTER_RUNTIME_DIR"] = str(kernels)
    current = os.environ.get("XDG_RUNTIME_DIR")
    if current and _usable_runtime_dir(Path(current)):
        return found
    private = config.state_dir() / "xdg-runtime"
    private.mkdir(parents=True, exist_ok=True)
    private.chmod(0o700)
    return {**found, "XDG_RUNTIME_DIR": str(private)}


def _usable_runtime_dir(path: Path) -> bool:
    try:
        info = path.stat()
    except OSError:
        return False
    owner_ok = not hasattr(os, "geteuid") or info.st_uid == os.geteuid()
    return path.is_dir() and owner_ok and (info.st_mode & 0o077) == 0


def trust_notebooks(root: Path | None = None) -> int:
    """Sign the course's notebooks (lessons and exercises) as trusted, as ``jupyter trust``
    does: the signature goes to Jupyter's database, the files are not changed. Returns the
    number signed; a notebook that cannot be read is skipped."""
    import nbformat
    from nbformat.sign import NotebookNotary

    root = root or config.project_root()
    notary = NotebookNotary()
    signed = 0
    for path in sorted([*root.glob("notebooks/*.ipynb"), *root.glob("exercises/*/*.ipynb")]):
        try:
            notebook = nbformat.read(path, as_version=4)
        except Exception:
            continue
        if not notary.check_signature(notebook):
            notary.sign(notebook)
        signed += 1
    return signed


def _write_json(path: Path, data: dict) -> None:
    text = json.dumps(data, indent=2) + "\n"
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
