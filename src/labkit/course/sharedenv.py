"""A Python, with the course installed, that every Unix user of the machine can run.

Three things run the course's code as a Unix user other than the one who installed it:
a JupyterHub's single-user servers (one Unix user per student), the nbgrader exchange
tested with several Unix users, and grading, whose kernels run as throwaway unprivileged
users. Each needs an interpreter those users can execute and a ``site-packages`` they can
read.

Usually the course's own venv is that Python (a venv made from ``/usr/bin/python3`` or a
conda in ``/opt``). It is not when the venv was made from a Python under a private home,
e.g. pyenv's in the root user's home (mode 700): other users get "Permission denied". Then
:func:`shared_python` builds an *overlay* venv in ``/var/lib/labkit`` from a system Python
of the same major.minor version. The overlay reuses the course venv's ``site-packages``
(a ``.pth`` file adds it as a site directory, so the editable install of ``labkit`` works)
and pip installs only what that interpreter needs on top: packages whose environment
markers differ between patch versions (e.g. ``async-timeout`` for ``redis`` before
3.11.3). Its ``bin/`` has the course venv's console scripts (``jupyter``, ``nbgrader``,
``alembic``, ``jupyterhub-singleuser``...), re-pointed at the overlay's interpreter.

Building it takes about 10 s, once per course venv install; afterwards it is a stamp check.
The overlay has no Jupyter data of its own, so :meth:`SharedPython.env` points Jupyter at the
course venv's (``share/jupyter``, ``etc/jupyter``): without them JupyterLab answers 404.

>>> env = shared_python()
>>> env.python.is_file(), env.env()["PATH"].startswith(str(env.bin))
(True, True)
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from labkit.supervisor import ServiceError, is_root, locked

__all__ = ["SharedPython", "shared_python", "usable_by_others"]

_SHARED = Path("/var/lib/labkit")
#: The user that proves a path is usable by "anyone": it owns nothing and is in no group.
_PROBE_USER = "nobody"
#: The extras whose requirements the overlay must satisfy.
_EXTRAS = ("lab", "hub")


@dataclass(frozen=True)
class SharedPython:
    """An interpreter every user can run. ``bin`` goes first on their ``PATH``."""

    python: Path
    bin: Path
    overlay: bool  # True when this is an overlay venv, not the course's own venv

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: ``os.environ``) with ``bin`` first on ``PATH`` and, for an
        overlay, Jupyter's data and config paths at the course venv's."""
        env = dict(os.environ if base is None else base)
        env["PATH"] = os.pathsep.join([str(self.bin), env.get("PATH", "/usr/bin:/bin")])
        env.pop("VIRTUAL_ENV", None)
        if self.overlay:
            env.setdefault("JUPYTER_PATH", str(Path(sys.prefix) / "share" / "jupyter"))
            env.setdefault("JUPYTER_CONFIG_PATH", str(Path(sys.prefix) / "etc" / "jupyter"))
            env.setdefault("JUPYTERLAB_DIR", str(Path(sys.prefix) / "share" / "jupyter" / "lab"))
        return env


def _drop_to(user: str) -> list[str]:
    if runuser := shutil.which("runuser"):
        return [runuser, "-u", user, "--"]
    if setpriv := shutil.which("setpriv"):
        import pwd

        entry = pwd.getpwnam(user)
        return [setpriv, f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups"]
    raise ServiceError("running code as another user needs `runuser` or `setpriv`.")


def usable_by_others(python: Path | str, *, user: str = _PROBE_USER) -> bool:
    """Can ``user`` (default ``nobody``) run ``python`` and import the course with it?
    Only meaningful as root; otherwise we cannot switch users and say True."""
    if not is_root():
        return True
    probe = "import labkit, sqlalchemy, psycopg, redis, ipykernel"
    try:
        proc = subprocess.run(
            [*_drop_to(user), str(python), "-c", probe],
            capture_output=True, cwd="/", timeout=120,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return False
    return proc.returncode == 0


def _system_candidates() -> list[Path]:
    """System interpreters of this Python's major.minor, outside any home folder."""
    name = f"python{sys.version_info.major}.{sys.version_info.minor}"
    found: list[Path] = []
    if env := os.environ.get("LABKIT_SHARED_PYTHON"):
        found.append(Path(env))
    for folder in ("/usr/local/bin", "/usr/bin", "/opt/python/bin", "/bin"):
        candidate = Path(folder) / name
        if candidate.is_file() and candidate not in found:
            found.append(candidate)
    return found


def _requirements() -> list[str]:
    """The course's requirements with the extras the overlay serves (markers kept: pip
    evaluates them for the overlay's own interpreter)."""
    requirements = []
    for line in importlib.metadata.requires("labkit") or []:
        requirement, _, marker = line.partition(";")
        marker = marker.strip()
        if "extra ==" in marker:
            extra = marker.split("extra ==", 1)[1].strip().strip("'\"")
            if extra not in _EXTRAS:
                continue
            marker = ""
        if requirement.strip().startswith("labkit"):
            continue
        requirements.append(requirement.strip() + (f"; {marker}" if marker else ""))
    return requirements


def _fingerprint(site_packages: Path) -> str:
    """Changes whenever the course venv's installed distributions change."""
    digest = hashlib.sha256(str(site_packages).encode())
    for entry in sorted(site_packages.glob("*.dist-info")):
        digest.update(entry.name.encode())
    return digest.hexdigest()[:12]


def _say(message: str) -> None:
    print(f"labkit: {message}", file=sys.stderr, flush=True)


def shared_python(*, base: Path | None = None) -> SharedPython:
    """The course's Python if every user can run it, else an overlay venv (built once).

    Raises :class:`ServiceError`, saying what to do, when no interpreter usable by other
    users can be found."""
    own = Path(sys.executable)
    venv_bin = own.parent
    if usable_by_others(own):
        return SharedPython(python=own, bin=venv_bin, overlay=False)
    site_packages = Path(sysconfig.get_paths()["purelib"])
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    base = base or Path(os.environ.get("LABKIT_SHARED_DIR", _SHARED))
    target = base / f"python-{version}-{_fingerprint(site_packages)}"
    stamp = target / ".complete"
    python = target / "bin" / "python"
    if stamp.exists():
        return SharedPython(python=python, bin=target / "bin", overlay=True)
    base.mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o755)
    with locked(base / f".python-{version}.lock"):
        if stamp.exists():
            return SharedPython(python=python, bin=target / "bin", overlay=True)
        candidates = [c for c in _system_candidates() if c.resolve() != own.resolve()]
        system = next((c for c in candidates if _runs_for_others(c)), None)
        if system is None:
            raise ServiceError(
                f"other Unix users cannot run the course's Python ({own.resolve()}: a "
                f"folder on its path is private), and no system python{version} that they "
                f"can run was found (looked for: {', '.join(map(str, candidates)) or 'none'}). "
                f"Install python{version} system-wide (e.g. `apt-get install python{version}"
                f"-venv`), or set LABKIT_SHARED_PYTHON to one, or make the course's venv from "
                "a Python every user can read."
            )
        _say(f"building a Python every user can run in {target} (from {system}; once)")
        shutil.rmtree(target, ignore_errors=True)
        subprocess.run([str(system), "-m", "venv", str(target)], check=True, capture_output=True)
        overlay_site = Path(
            subprocess.run(
                [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                check=True, capture_output=True, text=True,
            ).stdout.strip()
        )  # fmt: skip
        # Last in sorted order, so the overlay's own packages (pip's fixes) come first.
        (overlay_site / "zz_labkit_course_venv.pth").write_text(
            f"import site; site.addsitedir({str(site_packages)!r})\n"
        )
        proc = subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             *_requirements()],
            capture_output=True, text=True,
        )  # fmt: skip
        if proc.returncode != 0:
            raise ServiceError(
                f"pip could not complete the shared Python in {target}:\n{proc.stderr[-2000:]}"
            )
        _copy_scripts(venv_bin, target / "bin", python)
        subprocess.run(["chmod", "-R", "a+rX", str(target)], check=True)
        if not usable_by_others(python):
            raise ServiceError(f"{python} was built but '{_PROBE_USER}' still cannot use it.")
        stamp.touch()
    return SharedPython(python=python, bin=target / "bin", overlay=True)


def _runs_for_others(python: Path) -> bool:
    """Can ``nobody`` run ``python`` with its standard library (to build a venv from it)?"""
    if not is_root():
        return True
    argv = [*_drop_to(_PROBE_USER), str(python), "-c", "import venv"]
    try:
        proc = subprocess.run(argv, capture_output=True, cwd="/", timeout=60)
    except (OSError, subprocess.SubprocessError):
        return False
    return proc.returncode == 0


def _copy_scripts(source: Path, target: Path, python: Path) -> None:
    """The course venv's console scripts, with their ``#!`` line pointed at ``python``."""
    for script in sorted(source.iterdir()):
        destination = target / script.name
        if destination.exists() or not script.is_file():
            continue
        try:
            head, _, rest = script.read_bytes().partition(b"\n")
        except OSError:
            continue
        if not head.startswith(b"#!") or b"python" not in head:
            continue
        destination.write_bytes(b"#!" + str(python).encode() + b"\n" + rest)
        destination.chmod(0o755)
