"""Start an IPython kernel forked from labkit's kernel template (see labkit.course.forkkernel).

Run by jupyter_client in place of ``python -m ipykernel_launcher`` with the same arguments.
It imports nothing but the standard library: it hands its arguments, environment, working
folder and standard streams to the template named by LABKIT_KERNEL_FORK_SOCKET, relays
the signals it receives to the kernel's process group, and exits as the kernel did. When
no template listens, it becomes ``python -m ipykernel_launcher`` (exec). What it relays::

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


def plain_kernel() -> None:
    os.execv(sys.executable, [sys.executable, "-m", "ipykernel_launcher", *sys.argv[1:]])


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
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    sys.exit(code)


if __name__ == "__main__":
    main()
