"""Start an IPython kernel forked from labkit's kernel template (see labkit.course.forkkernel).

Run by jupyter_client in place of ``python -m ipykernel_launcher`` with the same arguments.
It imports nothing but the standard library: it hands its arguments, environment, working
folder and standard streams to the template named by LABKIT_KERNEL_FORK_SOCKET, relays
the signals it receives to the kernel's process group, and exits as the kernel did. When
no template listens, it becomes ``python -m ipykernel_launcher`` (exec). A graded kernel
(``LABKIT_KERNEL_SANDBOX`` set: see labkit.course.gradeuser) runs as the grading slot's
user: the template's child, or this launcher before its exec, drops privileges with
:func:`become` first. What it relays::

    >>> from labkit.course import _kernel_launcher
    >>> [number.name for number in _kernel_launcher.CAUGHT]
    ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2']
"""

import json
import os
import signal
import socket
import struct
import sys

CAUGHT = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
          signal.SIGUSR2)  # fmt: skip


SANDBOX_ENV = "LABKIT_KERNEL_SANDBOX"
_PR_SET_DUMPABLE = 4


def _connection_file(argv: list[str]) -> int | None:
    """The index of the connection file's path in ipykernel's arguments (``-f PATH``)."""
    for index, arg in enumerate(argv[:-1]):
        if arg in ("-f", "--f"):
            return index + 1
    return None


def become(spec_text: str, argv: list[str]) -> list[str]:
    """As root, in the process about to be the kernel: become the sandbox's user, with its
    rlimits, in its folder. The connection file (in the grader's private runtime folder) is
    copied into the user's folder first; returns ``argv`` pointing at the copy. Never
    returns on failure: a kernel must not run as root by mistake."""
    try:
        spec = json.loads(spec_text)
        uid, gid, folder = int(spec["uid"]), int(spec["gid"]), spec["folder"]
        if uid == 0 or gid == 0:
            raise ValueError("a sandboxed kernel cannot run as root")
        argv = list(argv)
        index = _connection_file(argv)
        if index is not None:
            with open(argv[index], "rb") as source:
                data = source.read()
            copy = os.path.join(os.path.dirname(folder), f"kernel-{os.getpid()}.json")
            fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as target:
                target.write(data)
            os.chown(copy, uid, gid)
            argv[index] = copy
        import resource

        for name, value in spec.get("rlimits", {}).items():
            number = getattr(resource, name)
            resource.setrlimit(number, (value, value))
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
        if os.getuid() != uid or os.geteuid() != uid or os.getegid() != gid:
            raise PermissionError("the privilege drop did not take")
        try:  # its /proc files owned by its own uid (a setuid makes them root's)
            import ctypes

            ctypes.CDLL(None).prctl(_PR_SET_DUMPABLE, 1, 0, 0, 0)
        except (ImportError, OSError, AttributeError):  # no ctypes: it still runs, as root's
            pass
        os.chdir(folder)
        return argv
    except BaseException as exc:  # noqa: BLE001 - whatever it was, the kernel must not start
        print(f"labkit: could not start the kernel as the grading user: {exc!r}", file=sys.stderr)
        sys.stderr.flush()
        os._exit(70)


def plain_kernel() -> None:
    argv = sys.argv[1:]
    python = sys.executable
    spec = os.environ.pop(SANDBOX_ENV, None)
    if spec:  # the shared interpreter: the venv's own may sit in a folder the user cannot read
        python = json.loads(spec)["python"]
        argv = become(spec, argv)
    os.execv(python, [python, "-m", "ipykernel_launcher", *argv])


def main() -> None:
    path = os.environ.get("LABKIT_KERNEL_FORK_SOCKET")
    if not path or os.environ.get("LABKIT_KERNEL_FORK_SERVER", "1") == "0":
        plain_kernel()
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
    except OSError:
        plain_kernel()
    signal.pthread_sigmask(signal.SIG_BLOCK, CAUGHT)  # until the kernel's pid is known
    request = json.dumps(
        {"argv": sys.argv[1:], "env": dict(os.environ), "cwd": os.getcwd()}
    ).encode()
    socket.send_fds(conn, [struct.pack("!I", len(request))], [0, 1, 2])
    conn.sendall(request)
    reader = conn.makefile("r")
    kernel = int(reader.readline())

    def relay(number, _frame):
        try:
            os.killpg(kernel, number)
        except (ProcessLookupError, PermissionError):
            pass

    for number in CAUGHT:
        signal.signal(number, relay)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, CAUGHT)
    status = reader.readline().strip()  # the kernel's exit status, when it ends
    code = int(status) if status else 1
    if code < 0:  # ended by a signal: end the same way
        if -code not in (signal.SIGKILL, signal.SIGSTOP):  # these two cannot be caught
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    sys.exit(code)


if __name__ == "__main__":
    main()
