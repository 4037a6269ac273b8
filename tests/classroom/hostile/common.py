"""Shared by the hostile answer cells (pasted above each): the targets the test fills in,
and a recorder that keeps what each attempt did. Each cell prints one line
``HOSTILE {json}``: attempt name → {"failed": bool, "error" or "outcome": text}."""

import json

TARGETS: dict = {}  # replaced by the test: paths, database names, ports
results: dict = {}


def attempt(name, action):
    """Run one attack; record whether it failed, and how."""
    try:
        outcome = action()
    except BaseException as exc:  # noqa: BLE001 - every failure is the evidence we want
        results[name] = {"failed": True, "error": f"{type(exc).__name__}: {exc}"[:400]}
    else:
        results[name] = {"failed": False, "outcome": repr(outcome)[:400]}


def report():
    print("HOSTILE " + json.dumps(results))
