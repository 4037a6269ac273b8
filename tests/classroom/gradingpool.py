"""The grading pool's users for a test module: its own name prefix, grading as root forced
on, and every user it made deleted afterwards, even on failure."""

from __future__ import annotations

import contextlib
import os
import pwd
from collections.abc import Iterator

from labkit.course import gradeuser


@contextlib.contextmanager
def grading_pool(users: str) -> Iterator[str]:
    assert os.geteuid() == 0, "grading sandboxes switch users: run as root (make test-classroom)"
    saved = {key: os.environ.get(key) for key in (gradeuser.USERS_ENV, gradeuser.MODE_ENV)}
    os.environ[gradeuser.USERS_ENV] = users
    os.environ[gradeuser.MODE_ENV] = "on"
    try:
        yield users
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        gradeuser.remove_users(users)
        assert not [u.pw_name for u in pwd.getpwall() if u.pw_name.startswith(users)]
