"""Task 2's answer: fork until the system says no (each child sleeps), then clean up."""

import os
import signal
import time

children = []


def fork_bomb():
    while len(children) < 100_000:
        pid = os.fork()
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        children.append(pid)


attempt("fork_bomb", fork_bomb)  # noqa: F821
results["fork_bomb_children"] = {"failed": True, "outcome": str(len(children))}  # noqa: F821
for pid in children:
    os.kill(pid, signal.SIGKILL)
for pid in children:
    os.waitpid(pid, 0)
report()  # noqa: F821
