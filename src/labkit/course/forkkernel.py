"""IPython kernels forked from a process that imported their modules once: a graded
notebook's kernel starts in a few milliseconds of CPU instead of about a second.

Grading a class starts one kernel per notebook and per student, and most of each start is
the same work: importing ipykernel, IPython, debugpy, SQLAlchemy, psycopg and redis (about
0.5 CPU-s before the notebook's first line, as much again for the imports of its set-up
cell). :class:`KernelForkServer` imports them once, in a process that runs no notebook code
and starts no thread, and forks a child for each kernel. The child becomes exactly what
``python -m ipykernel_launcher`` would have been: the launcher's arguments, environment
(the grading sandbox's database prefix and Redis), working directory, standard streams,
a freshly seeded ``random``, and its own exit handlers.

The kernel manager (:class:`ForkingKernelManager`, set as nbgrader's
``Execute.kernel_manager_class``) runs a small launcher instead of ipykernel's, so that
jupyter_client keeps a process of its own to watch and signal:

- the launcher hands the request and its three standard streams to the server, learns the
  kernel's pid, relays the signals it gets (an interrupt, a terminate) to the kernel, and
  exits with the kernel's exit status;
- when the launcher dies (jupyter_client kills it with SIGKILL when a kernel does not
  answer), the server sees its connection close and kills the kernel too;
- when no server runs (``LABKIT_KERNEL_FORK_SOCKET`` unset, or nothing listening), the
  launcher becomes ``python -m ipykernel_launcher`` itself (``exec``): the usual start.

Linux only (it relies on fork and on passing file descriptors over a Unix socket);
``LABKIT_KERNEL_FORK_SERVER=0`` turns it off. The template never runs notebook code, so no
student's state can reach another's kernel. The grading pipeline starts one per process
(:func:`server`) and hands its socket to nbgrader in the environment::

    >>> from labkit.course import forkkernel
    >>> template = forkkernel.KernelForkServer()  # imports PRELOAD, then waits for launchers
    >>> sorted(template.env)
    ['LABKIT_KERNEL_FORK_SOCKET']
    >>> template.stop()
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager

from labkit.course import _kernel_launcher

SOCKET_ENV = "LABKIT_KERNEL_FORK_SOCKET"
SWITCH_ENV = "LABKIT_KERNEL_FORK_SERVER"
LAUNCHER = Path(__file__).with_name("_kernel_launcher.py")
#: What a fresh kernel and the exercises' set-up cells import (measured in a fresh kernel):
#: imported once in the template, they cost a forked kernel nothing.
PRELOAD = (
    "ipykernel.kernelapp",
    "ipykernel.ipkernel",
    "ipykernel.zmqshell",
    "ipykernel.debugger",
    "IPython",
    "sqlalchemy",
    "sqlalchemy.orm",
    "psycopg",
    "redis",
)
_MAX_REQUEST = 1 << 20


def _recv_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise EOFError("the launcher hung up")
        data += chunk
    return data


def _read_request(conn: socket.socket) -> tuple[dict, list[int]]:
    """The launcher's request (argv, env, cwd) and its three standard streams."""
    conn.settimeout(10)
    header, fds, _, _ = socket.recv_fds(conn, 4, 3)
    header += _recv_exactly(conn, 4 - len(header))
    (size,) = struct.unpack("!I", header)
    if size > _MAX_REQUEST or len(fds) != 3:
        raise ValueError(f"not a launcher's request ({size} bytes, {len(fds)} streams)")
    request = json.loads(_recv_exactly(conn, size))
    conn.settimeout(None)
    return request, fds


def _become_kernel(request: dict, fds: list[int], close: list[socket.socket]):
    """In the forked child: take the launcher's streams, environment and arguments, and run
    ipykernel as ``python -m ipykernel_launcher`` would. Never returns."""
    code = 1
    try:
        os.setsid()  # leads its own process group, as ipykernel started by jupyter_client does
        for sock in close:
            sock.close()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        for number in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP):
            signal.signal(number, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        env = dict(request["env"])
        argv = list(request["argv"])
        spec = env.pop(_kernel_launcher.SANDBOX_ENV, None)
        if spec:  # a graded kernel: the grading slot's user, its rlimits, its folder
            os.closerange(3, 65536)  # whatever else the template held stays with it
            wanted = os.path.realpath(json.loads(spec)["python"])
            if os.path.realpath(sys.executable) != wanted:
                raise RuntimeError(f"this template runs {sys.executable}, not {wanted}")
            argv = _kernel_launcher.become(spec, argv)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(env)
        import importlib.util

        # as `python -m ipykernel_launcher` sets them: argv[0] the module's file, path[0] the cwd
        sys.argv = [importlib.util.find_spec("ipykernel_launcher").origin, *argv]
        if sys.path and sys.path[0] in ("", "."):
            sys.path[0] = os.getcwd()
        parent = request["env"].get("JPY_PARENT_PID")
        if parent:  # ipykernel read it at import, in the template: give this one's
            sys.argv.append(f"--IPKernelApp.parent_handle={int(parent)}")
        import random

        random.seed()  # a fresh process draws a fresh seed; a fork would share one
        from ipykernel import kernelapp

        try:
            kernelapp.launch_new_instance()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        getattr(threading, "_shutdown", lambda: None)()  # as an interpreter's exit does:
        atexit._run_exitfuncs()  # join the threads left, then run its imports' handlers
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)


def _kill_kernel(pid: int) -> None:
    """SIGKILL the kernel's process group (it leads one), or the kernel alone if it has not
    called setsid yet."""
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
            return
        except (ProcessLookupError, PermissionError):
            continue


def serve(path: str) -> None:
    """The template: import PRELOAD, then fork a kernel for each launcher that connects."""
    import importlib
    import selectors

    saved = os.dup(2)
    quiet = os.open(os.devnull, os.O_WRONLY)
    os.dup2(quiet, 2)  # debugpy warns about frozen modules at import, as no kernel shows
    try:
        for name in PRELOAD:
            importlib.import_module(name)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(quiet)
    if threading.active_count() != 1:
        raise SystemExit(f"the kernel template's imports started a thread: cannot fork ({path})")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the grading terminal's Ctrl+C is not ours
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    os.chmod(path, 0o600)
    listener.listen(64)
    print("ready", flush=True)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    kernels: dict[int, socket.socket] = {}  # kernel pid → its launcher's connection
    conns: dict[socket.socket, int] = {}
    parent = os.getppid()
    while True:
        for key, _ in selector.select(timeout=0.05):
            if key.fileobj is listener:
                conn, _ = listener.accept()
                try:
                    request, fds = _read_request(conn)
                except (OSError, ValueError, EOFError) as exc:
                    print(f"kernel fork server: a bad request ({exc})", file=sys.stderr)
                    conn.close()
                    continue
                pid = os.fork()
                if pid == 0:
                    selector.close()
                    _become_kernel(request, fds, [listener, conn, *conns])
                for fd in fds:
                    os.close(fd)
                conn.sendall(f"{pid}\n".encode())
                kernels[pid], conns[conn] = conn, pid
                selector.register(conn, selectors.EVENT_READ)
            else:  # the launcher sends nothing more: readable means it hung up (killed)
                conn = key.fileobj
                if conn.recv(64):
                    continue
                selector.unregister(conn)
                pid = conns.pop(conn)
                kernels.pop(pid, None)
                conn.close()
                _kill_kernel(pid)  # its kernel goes with it
        while True:  # reap ended kernels and tell their launchers how they ended
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            conn = kernels.pop(pid, None)
            if conn is not None:
                conns.pop(conn, None)
                selector.unregister(conn)
                try:
                    conn.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
                except OSError:
                    pass
                conn.close()
        if os.getppid() != parent:  # the grading process is gone: so are we
            for pid in kernels:
                _kill_kernel(pid)
            os._exit(0)


class KernelForkServer:
    """A template process (see the module's doc) listening on a socket in a private folder;
    :attr:`env` holds what kernels launched by :class:`ForkingKernelManager` need to find it.

    ``python``: the interpreter the template (and so every kernel) runs, by default this
    one. Graded kernels that drop privileges need one their user can run, and a template
    started with a clean environment: a forked child's ``/proc/self/environ`` is the
    template's, so the grader's variables (a superuser's ``DATABASE_URL``) must not be in it."""

    def __init__(self, python: str | None = None, *, clean_env: bool = False) -> None:
        self.folder = tempfile.TemporaryDirectory(prefix="labkit-kernels-")
        self.path = os.path.join(self.folder.name, "fork.sock")
        code = "import sys\nfrom labkit.course.forkkernel import serve\nserve(sys.argv[1])\n"
        env = None
        if clean_env:
            env = {key: os.environ[key] for key in _CLEAN_ENV if key in os.environ}
            env["PATH"] = os.pathsep.join(
                [os.path.dirname(python or sys.executable), "/usr/bin:/bin"]
            )
        self.proc = subprocess.Popen(
            [python or sys.executable, "-c", code, self.path],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
            env=env,
            cwd="/",
        )
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            self.proc.kill()
            raise RuntimeError(f"the kernel fork server did not start (said {line!r})")
        atexit.register(self.stop)

    @property
    def env(self) -> dict[str, str]:
        return {SOCKET_ENV: self.path}

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.folder.cleanup()


#: What a template started with ``clean_env`` keeps of the environment.
_CLEAN_ENV = ("LANG", "LC_ALL", "LC_CTYPE", "TZ", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
_servers: dict[tuple[int, bool], KernelForkServer] = {}
_lock = threading.Lock()


def enabled() -> bool:
    return sys.platform.startswith("linux") and os.environ.get(SWITCH_ENV, "1") != "0"


def server(*, sandboxed: bool = False) -> KernelForkServer | None:
    """This process's kernel fork server (started on first use), or None when turned off.
    ``sandboxed``: the template of graded kernels that run as other users (the shared
    interpreter, a clean environment; see :mod:`labkit.course.gradeuser`)."""
    if not enabled():
        return None
    with _lock:
        key = (os.getpid(), sandboxed)  # not one inherited through a fork
        found = _servers.get(key)
        if found is None or not found.alive():
            if sandboxed:
                from labkit.course.sharedenv import shared_python

                found = KernelForkServer(str(shared_python().python), clean_env=True)
            else:
                found = KernelForkServer()
            _servers[key] = found
        return found


@dataclass
class _Launch:
    """Set by the grading sandbox (labkit.course.nbgrader_ext) for the next kernels: what
    their environment gains, and the private folder they run in (the files of the
    notebook's folder that are not notebooks are copied there)."""

    env: dict[str, str] | None = None
    folder: Path | None = None
    owner: tuple[int, int] | None = None
    ipc: Path | None = None  # a folder of the kernel's user for its sockets (IPC transport)


_launch = _Launch()


def set_sandbox(
    env: dict[str, str] | None,
    folder: Path | None = None,
    owner: tuple[int, int] | None = None,
    ipc: Path | None = None,
) -> None:
    """Kernels started from now on get ``env`` and run in ``folder`` (None: as usual); with
    ``ipc``, they talk over Unix sockets made there instead of TCP ports."""
    _launch.env, _launch.folder, _launch.owner, _launch.ipc = env, folder, owner, ipc


#: What a graded kernel keeps of the grader's environment (the rest, tokens and URLs with
#: passwords among it, is not the student's to read).
_KEPT_PREFIXES = ("LANG", "LC_", "TZ", "TERM", "JPY_", "PYDEVD_", "OPENBLAS_", "LABKIT_")
_KEPT = ("PYTHONHASHSEED", "PYTHONWARNINGS")


def _kept(env: dict[str, str]) -> dict[str, str]:
    kept = {k: v for k, v in env.items() if k.startswith(_KEPT_PREFIXES) or k in _KEPT}
    python = json.loads(_launch.env[_kernel_launcher.SANDBOX_ENV])["python"]
    kept["PATH"] = os.pathsep.join([os.path.dirname(python), "/usr/local/bin:/usr/bin:/bin"])
    return kept


def _copy_inputs(source: Path, target: Path, owner: tuple[int, int] | None) -> None:
    """The notebook folder's other files (data an assignment ships), not its notebooks."""
    if not source.is_dir() or source.resolve() == target.resolve():
        return
    for path in source.iterdir():
        if path.suffix == ".ipynb" or path.name == "timestamp.txt" or path.is_symlink():
            continue
        destination = target / path.name
        if path.is_dir():
            shutil.copytree(path, destination, symlinks=False, dirs_exist_ok=True)
        elif path.is_file():
            shutil.copyfile(path, destination)
        else:
            continue
        if owner:
            for item in [destination, *(destination.rglob("*") if path.is_dir() else [])]:
                os.chown(item, *owner)


class ForkingKernelManager(AsyncKernelManager):
    """jupyter_client's AsyncKernelManager (nbclient's default), whose ipykernel is started
    by the fork launcher (``_kernel_launcher.py``): forked from the server named by
    ``LABKIT_KERNEL_FORK_SOCKET`` when one listens, else ``python -m ipykernel_launcher``."""

    async def _async_pre_start_kernel(self, **kw):
        # A graded kernel talks over Unix sockets in its user's private folder, not TCP: no
        # port to lose between jupyter_client choosing it and the kernel binding it (another
        # process took one in a CI run, and nbgrader failed the student), and no other local
        # user can connect to its channels (TCP messages are signed, not encrypted).
        if _launch.ipc is not None:
            self.transport = "ipc"
            self.ip = str(_launch.ipc / "kernel")
        return await super()._async_pre_start_kernel(**kw)

    async def _async_launch_kernel(self, kernel_cmd: list[str], **kw) -> None:
        if _launch.env is not None:
            kw["env"] = {**_kept(kw.get("env", os.environ)), **_launch.env}
        if _launch.folder is not None:
            _copy_inputs(Path(kw.get("cwd") or os.getcwd()), _launch.folder, _launch.owner)
            kw["cwd"] = str(_launch.folder)
        return await super()._async_launch_kernel(kernel_cmd, **kw)

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        cmd = super().format_kernel_cmd(extra_arguments)
        # A graded kernel always goes through the launcher: it drops privileges even when
        # no template runs.
        sandboxed = _launch.env is not None and _kernel_launcher.SANDBOX_ENV in _launch.env
        if (enabled() or sandboxed) and len(cmd) > 2 and cmd[1:3] == ["-m", "ipykernel_launcher"]:
            return [cmd[0], str(LAUNCHER), *cmd[3:]]
        return cmd
