"""Notebook maintenance: strip outputs, generate navigation, and build cells.

    python tools/nbtools.py strip        # clear outputs and execution counts (all notebooks)
    python tools/nbtools.py navigate     # (re)write the navigation cells of notebooks/
    python tools/nbtools.py check        # fail if a notebook *as committed* (git's index) has
                                         # outputs, or its navigation is stale
    python tools/nbtools.py install-filter   # strip outputs on `git add` (make lab/test run it)
    python tools/nbtools.py clean-filter     # the git filter: notebook on stdin, stripped on stdout

Outputs a learner saves (JupyterLab autosaves) stay in the working copy, where they belong:
the ``nbstrip`` git filter (the nbstripout convention, set in ``.gitattributes``) strips
them from what ``git add`` stages, and ``check`` looks at what is staged or committed.

Cell builders for scripts that write notebooks: ``md``, ``code``, ``answer``, ``tests``,
``new_notebook``. The ``.ipynb`` files are the source of truth; scripts that use these
builders are scaffolding, not committed sources.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
LESSONS = ROOT / "notebooks"
NAV_TAG = "navigation"
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


# --------------------------------------------------------------------------- builders


def md(text: str, tags: list[str] | None = None):
    cell = nbformat.v4.new_markdown_cell(text.strip("\n"))
    if tags:
        cell.metadata["tags"] = tags
    return cell


def code(text: str, tags: list[str] | None = None):
    cell = nbformat.v4.new_code_cell(text.strip("\n"))
    if tags:
        cell.metadata["tags"] = tags
    return cell


def answer(grade_id: str, text: str):
    """An nbgrader answer cell (solution region inside ``### BEGIN/END SOLUTION``)."""
    cell = code(text)
    cell.metadata["nbgrader"] = {
        "grade": False, "grade_id": grade_id, "locked": False, "schema_version": 3,
        "solution": True, "task": False,
    }  # fmt: skip
    return cell


def tests(grade_id: str, text: str, points: float):
    """An nbgrader autograded test cell (locked; hidden tests inside BEGIN/END HIDDEN TESTS)."""
    cell = code(text)
    cell.metadata["nbgrader"] = {
        "grade": True, "grade_id": grade_id, "locked": True, "points": points,
        "schema_version": 3, "solution": False, "task": False,
    }  # fmt: skip
    return cell


def readonly(cell, grade_id: str):
    """Lock a markdown or setup cell so that students cannot change it."""
    cell.metadata["nbgrader"] = {
        "grade": False, "grade_id": grade_id, "locked": True, "schema_version": 3,
        "solution": False, "task": False,
    }  # fmt: skip
    return cell


def new_notebook(cells) -> nbformat.NotebookNode:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = list(cells)
    notebook.metadata["kernelspec"] = dict(KERNELSPEC)
    notebook.metadata["language_info"] = {"name": "python"}
    return notebook


# --------------------------------------------------------------------------- maintenance


def all_notebooks() -> list[Path]:
    found = sorted(LESSONS.glob("*.ipynb")) + sorted(
        (ROOT / "grading" / "source").glob("*/*.ipynb")
    )
    found += sorted((ROOT / "exercises").glob("*/*.ipynb")) if (ROOT / "exercises").exists() else []
    return [p for p in found if ".ipynb_checkpoints" not in p.parts]


def strip(notebook) -> bool:
    changed = False
    for cell in notebook.cells:
        if cell.cell_type == "code":
            if cell.outputs or cell.execution_count is not None:
                changed = True
            cell.outputs = []
            cell.execution_count = None
        for key in ("execution", "papermill", "collapsed", "scrolled"):
            if key in cell.metadata:
                del cell.metadata[key]
                changed = True
    for key in ("papermill", "widgets"):
        if key in notebook.metadata:
            del notebook.metadata[key]
            changed = True
    return changed


def _title(path: Path) -> str:
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "markdown" and NAV_TAG not in cell.metadata.get("tags", []):
            match = re.search(r"^#\s+(.+)$", cell.source, re.M)
            if match:
                return match.group(1).strip()
    return path.stem


def navigation_cells(path: Path, lessons: list[Path]):
    index = lessons.index(path)
    parts = []
    if index > 0:
        parts.append(f"[< {_title(lessons[index - 1])}]({lessons[index - 1].name})")
    if path.name != lessons[0].name:
        parts.append(f"[Contents]({lessons[0].name}#Contents)")
    if index + 1 < len(lessons):
        parts.append(f"[{_title(lessons[index + 1])} >]({lessons[index + 1].name})")
    text = "<!-- generated by tools/nbtools.py navigate: do not edit -->\n" + " | ".join(parts)
    return md(text, tags=[NAV_TAG]), md(text, tags=[NAV_TAG])


def navigate(notebook, path: Path, lessons: list[Path]) -> bool:
    body = [c for c in notebook.cells if NAV_TAG not in c.metadata.get("tags", [])]
    top, bottom = navigation_cells(path, lessons)
    new = [top, *body, bottom] if len(lessons) > 1 else body
    old = [(c.cell_type, c.source, c.metadata.get("tags")) for c in notebook.cells]
    if old == [(c.cell_type, c.source, c.metadata.get("tags")) for c in new]:
        return False
    # Keep ids stable so that diffs stay small: the lesson's cells keep theirs, and the
    # new navigation cells take over the ids of the ones they replace.
    old_nav = [c for c in notebook.cells if NAV_TAG in c.metadata.get("tags", [])]
    if len(lessons) > 1 and len(old_nav) == 2:
        for fresh, previous in zip((top, bottom), old_nav, strict=True):
            if "id" in previous:
                fresh["id"] = previous["id"]
    notebook.cells = new
    return True


def clean_filter(stdin=None, stdout=None) -> int:
    """The ``nbstrip`` git filter: a notebook on stdin, the same without outputs on stdout
    (anything that is not a notebook passes through unchanged)."""
    stdin = stdin or sys.stdin.buffer
    stdout = stdout or sys.stdout.buffer
    data = stdin.read()
    try:
        notebook = nbformat.reads(data.decode("utf-8"), as_version=4)
    except Exception:
        stdout.write(data)
        return 0
    if not strip(notebook):
        stdout.write(data)  # already clean: byte for byte, so git sees no change
        return 0
    text = nbformat.writes(notebook)
    stdout.write((text if text.endswith("\n") else text + "\n").encode("utf-8"))
    return 0


def install_filter() -> int:
    """Point this checkout's ``nbstrip`` filter (named in .gitattributes) at this Python."""
    if not (ROOT / ".git").exists():
        print("not a git checkout: no filter to install")
        return 0
    command = f"'{sys.executable}' '{ROOT / 'tools' / 'nbtools.py'}' clean-filter"
    for key, value in (("clean", command), ("smudge", "cat")):
        subprocess.run(["git", "config", f"filter.nbstrip.{key}", value], cwd=ROOT, check=True)
    return 0


def committed_text(path: Path) -> str:
    """The notebook as staged in git's index (what a commit takes; HEAD's version unless
    something is staged); the working copy for files git does not track."""
    relative = path.relative_to(ROOT).as_posix()
    proc = subprocess.run(["git", "show", f":{relative}"], cwd=ROOT, capture_output=True, text=True)
    return proc.stdout if proc.returncode == 0 else path.read_text()


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else "check"
    if command == "clean-filter":
        return clean_filter()
    if command == "install-filter":
        return install_filter()
    if command not in {"strip", "navigate", "check"}:
        print(
            f"unknown command {command!r}: use strip, navigate, check, install-filter or "
            "clean-filter",
            file=sys.stderr,
        )
        return 2
    lessons = sorted(LESSONS.glob("[0-9]*.ipynb"))
    problems = []
    for path in all_notebooks():
        if command == "check":
            notebook = nbformat.reads(committed_text(path), as_version=4)
        else:
            notebook = nbformat.read(path, as_version=4)
        changed = strip(notebook)
        nav_changed = path in lessons and navigate(notebook, path, lessons)
        if command == "check":
            if changed:
                problems.append(
                    f"{path.relative_to(ROOT)}: has outputs in git's index (run tools/nbtools.py "
                    "strip, then git add; or install the filter: tools/nbtools.py install-filter)"
                )
            if nav_changed:
                problems.append(
                    f"{path.relative_to(ROOT)}: navigation is stale in git's index (run tools/nbtools.py navigate, then git add)"
                )
        elif (command == "strip" and changed) or (
            command == "navigate" and (changed or nav_changed)
        ):
            nbformat.write(notebook, path)
            print(f"updated {path.relative_to(ROOT)}")
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
