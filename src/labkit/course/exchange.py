"""nbgrader's exchange shared by several Unix users: keeping each student's work private.

nbgrader's exchange is a folder every user can write to. Its ``inbound/`` folder cannot be
listed by students (mode 0733), but nbgrader's ``submit`` makes each submission's folder
0777 and its files 0644: a student who learns another's folder name (``nbgrader submit``
prints it; a shared screen or a pasted log shows it) can read that submission, and its
``submission_secret.txt``, which names the student's feedback in the exchange. Feedback
files are released world-readable too. Names that are hard to guess are not permissions.

:class:`PrivateSubmit` is nbgrader's ``submit`` with the submission closed to other users:
the folder 0770 and its files 0640, so that only the student and the group of ``inbound/``
(which the folder inherits through inbound's setgid bit: the instructor's group, ``root``
when the instructor is root) can read it. Students' nbgrader loads it through the config
:func:`student_config` writes (e.g. as ``/etc/jupyter/nbgrader_config.py`` on a hub).
:func:`restrict_feedback` gives each released feedback file to its student, mode 0600
(as root; an instructor who is not root cannot give files away, and nbgrader's
unguessable names are then the only protection). :func:`protect_root` sets the sticky bit
on the exchange's root, so that no student can move the course's folder aside.

>>> print(student_config("/srv/nbgrader/exchange", "data-layer-engineering"))
c = get_config()  # noqa: F821 -- provided by nbgrader
c.CourseDirectory.course_id = 'data-layer-engineering'
c.Exchange.root = '/srv/nbgrader/exchange'
c.ExchangeFactory.submit = 'labkit.course.exchange.PrivateSubmit'
"""

from __future__ import annotations

import os
import pwd
import stat
from collections.abc import Mapping
from pathlib import Path

from nbgrader.exchange.default.submit import ExchangeSubmit

__all__ = [
    "PrivateSubmit",
    "protect_root",
    "released_feedback",
    "restrict_feedback",
    "student_config",
]

#: A submission's folders: the student and inbound's group (the instructors) only.
SUBMISSION_DIR_MODE = 0o770
#: A submission's files: the student writes, the instructors' group reads.
SUBMISSION_FILE_MODE = 0o640
#: A released feedback page, once it belongs to its student.
FEEDBACK_FILE_MODE = 0o600


class PrivateSubmit(ExchangeSubmit):
    """``nbgrader submit``, with the submission readable by its student and the group of the
    exchange's ``inbound/`` folder only (nbgrader leaves it readable by everyone)."""

    def do_copy(self, src: str, dest: str, log=None) -> None:
        """nbgrader's copy, made so that every file of the submission gets the group of
        ``inbound/``. A folder made in ``inbound/`` inherits its group and setgid bit, and so
        do the files made in it, until a chmod by the student (who is not in that group)
        drops the bit: nbgrader's copy (``copytree``) chmods the folder before nbgrader
        writes ``timestamp.txt`` and ``submission_secret.txt``, which would then get the
        student's own group, unreadable to an instructor who is not root. So the copy goes
        to a staging folder inside, and is moved up: the submission's own folder keeps
        the bit until nbgrader has written everything."""
        if not str(dest).startswith(os.path.join(self.inbound_path, "")):
            return super().do_copy(src, dest, log=log)  # the student's own cache
        os.mkdir(dest)
        staging = os.path.join(dest, ".labkit-staging")
        super().do_copy(src, staging, log=log)
        for name in os.listdir(staging):
            os.rename(os.path.join(staging, name), os.path.join(dest, name))
        os.rmdir(staging)

    def copy_files(self) -> None:
        super().copy_files()
        submission = Path(self.inbound_path) / self.assignment_filename
        for folder, _, files in os.walk(submission):
            os.chmod(folder, SUBMISSION_DIR_MODE)
            for name in files:
                os.chmod(os.path.join(folder, name), SUBMISSION_FILE_MODE)
        self.log.info("Submission readable by you and the instructors only: %s", submission)


def protect_root(exchange: Path | str) -> bool:
    """Set the sticky bit on the exchange's root (as its owner or root), as on ``/tmp``.

    nbgrader makes the root 0777 so that anyone can create a course folder in it; without
    the sticky bit any user can also rename another's: a student could move the course's
    folder aside and put a folder of their own, with another "released" assignment, in its
    place. nbgrader accepts 1777 (it only compares the permission bits). Returns whether
    the bit is set."""
    root = Path(exchange)
    if not root.is_dir():
        return False
    mode = root.stat().st_mode
    if not mode & stat.S_ISVTX and os.geteuid() in (0, root.stat().st_uid):
        root.chmod(stat.S_IMODE(mode) | stat.S_ISVTX)
    return bool(root.stat().st_mode & stat.S_ISVTX)


def student_config(exchange: Path | str, course_id: str) -> str:
    """The nbgrader config students need to fetch, submit and fetch feedback through the
    exchange ``exchange`` (the same course id and root as the instructor's), with
    :class:`PrivateSubmit` as their ``submit``."""
    return (
        "c = get_config()  # noqa: F821 -- provided by nbgrader\n"
        f"c.CourseDirectory.course_id = {course_id!r}\n"
        f"c.Exchange.root = {str(exchange)!r}\n"
        "c.ExchangeFactory.submit = 'labkit.course.exchange.PrivateSubmit'\n"
    )


def released_feedback(
    exchange: Path | str, course_id: str, feedback_dirs: Mapping[str, Path]
) -> dict[str, list[Path]]:
    """Student → their feedback pages in the exchange, found as nbgrader's ``release_feedback``
    names them (a hash of the submission's secret and the notebook's name).
    ``feedback_dirs``: student → the course's ``feedback/<student>/<assignment>/`` folder."""
    from nbgrader.utils import notebook_hash

    outbound = Path(exchange) / course_id / "feedback"
    found: dict[str, list[Path]] = {}
    for student, folder in feedback_dirs.items():
        secret_file = folder / "submission_secret.txt"
        if not secret_file.is_file():
            continue  # not submitted through the exchange: no feedback released there
        secret = secret_file.read_text()
        pages = [
            outbound / f"{notebook_hash(secret=secret, notebook_id=page.stem)}.html"
            for page in sorted(folder.glob("*.html"))
        ]
        found[student] = [page for page in pages if page.is_file()]
    return found


def restrict_feedback(
    exchange: Path | str, course_id: str, feedback_dirs: Mapping[str, Path]
) -> dict[str, list[Path]]:
    """As root: give each student's released feedback pages to the Unix user of that name,
    readable by them only. Students with no Unix account of their name (ids that are not
    user names) and instructors who are not root keep nbgrader's modes. Returns what was
    restricted."""
    if os.geteuid() != 0:
        return {}
    restricted: dict[str, list[Path]] = {}
    for student, pages in released_feedback(exchange, course_id, feedback_dirs).items():
        try:
            uid = pwd.getpwnam(student).pw_uid
        except KeyError:
            continue
        for page in pages:
            os.chown(page, uid, -1)
            os.chmod(page, FEEDBACK_FILE_MODE)
        restricted[student] = pages
    return restricted
