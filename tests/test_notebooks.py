"""Every lesson notebook runs top to bottom against the real servers — twice in a row,
as a learner who re-runs it would — with plain papermill, in this process (no CLI start-up),
and no client-side workaround: the widgets are built so that executors cannot hang on them
(``labkit.controls``), and a stress test runs the widget cells 30 times under plain nbclient.
Lesson 01's second run goes section by section (imports, then that section alone, in a fresh
kernel), and its generated contents link every section."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from notebook_params import CI_PARAMETERS

ROOT = Path(__file__).resolve().parents[1]
LESSONS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
CELL_TIMEOUT_S = 300


def execute(path: Path, output: Path, parameters: dict) -> float:
    import papermill
    from papermill.exceptions import PapermillExecutionError

    started = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(path),
            str(output),
            parameters=parameters,
            kernel_name="python3",
            cwd=str(path.parent),
            progress_bar=False,
            request_save_on_cell_execute=False,
            # A stuck cell (a lock never released, a server that stopped answering) must
            # fail the run with its cell named, not hang CI.
            execution_timeout=CELL_TIMEOUT_S,
            start_timeout=120,
        )
    except PapermillExecutionError as exc:
        pytest.fail(
            f"{path.name}: cell {exc.exec_count} raised {exc.ename}: {exc.evalue}\n"
            f"(executed copy: {output})",
            pytrace=False,
        )
    return time.perf_counter() - started


def test_every_lesson_has_ci_parameters():
    """A new lesson must say what CI passes to it (even `{}`), so sizes are a decision."""
    missing = [p.name for p in LESSONS if p.name not in CI_PARAMETERS]
    assert not missing, f"add these to tests/notebook_params.py: {missing}"


SET_UP = "**Set-up.**"  # the Markdown cell before a part's set-up cell starts with this


def set_up_parts(notebook) -> list[list]:
    """A lesson's self-contained parts: each from a Markdown cell starting with
    ``**Set-up.**`` (before the part's set-up cell) to the next one (or the end)."""
    parts: list[list] = []
    for cell in notebook.cells:
        if "navigation" in cell.metadata.get("tags", []):
            continue
        if cell.cell_type == "markdown" and cell.source.startswith(SET_UP):
            parts.append([])
        if parts:
            parts[-1].append(cell)
    return parts


@pytest.mark.parametrize("path", LESSONS, ids=[p.stem for p in LESSONS])
def test_lesson_runs_twice(path: Path, tmp_path: Path):
    """The notebook executes without error, and again on a second run (idempotent). A
    lesson made of self-contained parts (lessons 02 and 03: each step, or each part of a
    step, starts with a set-up cell) runs the second time part by part, each in a fresh
    kernel after the parameters — a learner who enters at any part after a kernel restart.
    Lesson 01 runs the second time section by section: each `##` section in a fresh kernel
    after the parameters and the imports (its sections set themselves up through
    `labkit.sections`), so that "run from here" works for every section."""
    import copy

    import nbformat

    parameters = CI_PARAMETERS.get(path.name, {})
    first = execute(path, tmp_path / f"1-{path.name}", parameters)
    notebook = nbformat.read(path, as_version=4)
    parts = set_up_parts(notebook)
    if path == RUN_FROM_HERE:  # the second run: each `##` section from its start
        times, failed = run_sections(path, parameters)
        print(f"{path.name}: {first:.1f} s, then section by section: {', '.join(times)}")
        assert not failed, "sections that fail when run from their start:\n" + "\n".join(failed)
        return
    if not parts:
        second = execute(path, tmp_path / f"2-{path.name}", parameters)
        print(f"{path.name}: {first:.1f} s, then {second:.1f} s")
        return
    head = [
        next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])),
        nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in parameters.items())),
    ]
    failed, times = [], []
    for cells in parts:
        seconds, error = run_section([*copy.deepcopy(head), *copy.deepcopy(cells)])
        title = next((c.source.splitlines()[0] for c in cells if c.cell_type == "code"), "?")
        times.append(f"{seconds:.1f} s")
        if error:
            failed.append(f"the part whose set-up starts with {title!r}: {error}")
    print(f"{path.name}: {first:.1f} s, then part by part: {', '.join(times)}")
    assert not failed, "parts that fail when entered after a kernel restart:\n" + "\n".join(failed)


# The lessons' widget cells, as a learner's kernel runs them: a plan viewer (dropdown) and
# sliders over a model. Built with ipywidgets.interactive (an Output widget capturing
# prints), cells like these stalled nbclient until the cell timeout about once in 70 runs
# (jupyter/nbclient#312); built with labkit.controls, they never did in 1,000.
WIDGET_CELLS = [
    """
import ipywidgets as widgets
from labkit import controls, explain_tools
from labkit.db import Plan

def plan(node_type, buffers):
    return Plan({"Plan": {"Node Type": node_type, "Relation Name": "posts",
                          "Shared Hit Blocks": buffers, "Plan Rows": 10, "Actual Rows": 10}})

plans = {f"plan {i}": plan("Seq Scan" if i % 2 else "Index Scan", 100 + i) for i in range(6)}
""",
    "explain_tools.plan_viewer(plans)",
    """
def explore(skew=1.2, warm_percent=20, ttl_seconds=0):
    print("printed, not captured")
    return f"skew {skew:.1f}, {warm_percent}% warmed, TTL {ttl_seconds or 'none'}"

controls.live(
    explore,
    skew=widgets.FloatSlider(value=1.2, min=0.6, max=1.6, step=0.1),
    warm_percent=widgets.IntSlider(value=20, min=0, max=50, step=5, description="warmed (%)"),
    ttl_seconds=widgets.IntSlider(value=0, min=0, max=600, step=30, description="TTL (s)"),
)
""",
]
STRESS_RUNS = 30
STRESS_CELL_LIMIT_S = 10  # a widget cell takes ~0.01-0.1 s; a stall waits for the timeout


def test_widget_cells_never_stall_plain_nbclient():
    """The widget cells, as a small notebook, run STRESS_RUNS times under plain nbclient
    (no workaround): every cell completes well inside its timeout, and every widget view is
    saved in the notebook's widget state (so it renders in a saved notebook too)."""
    import nbformat
    from nbclient import NotebookClient

    cells = [nbformat.v4.new_code_cell(source.strip()) for source in WIDGET_CELLS]
    notebook = nbformat.v4.new_notebook(cells=cells)
    client = NotebookClient(notebook, timeout=3 * STRESS_CELL_LIMIT_S, kernel_name="python3")
    slowest = 0.0
    with client.setup_kernel():
        for run in range(STRESS_RUNS):
            for index, cell in enumerate(notebook.cells):
                started = time.perf_counter()
                client.execute_cell(cell, index)
                seconds = time.perf_counter() - started
                slowest = max(slowest, seconds)
                assert seconds < STRESS_CELL_LIMIT_S, (
                    f"run {run + 1}: widget cell {index} took {seconds:.1f} s (nbclient#312?)"
                )
        for cell in notebook.cells[1:]:
            views = [
                o
                for o in cell.outputs
                if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
            ]
            assert views, f"no widget view in the outputs of {cell.source[:40]!r}"
    print(f"{STRESS_RUNS} runs of {len(cells)} widget cells; slowest cell {slowest:.2f} s")


def test_saved_outputs_never_reach_the_hygiene_check(tmp_path):
    """A learner's saved outputs stay in the working copy: `nbtools check` reads git's index,
    and the nbstrip filter (`nbtools install-filter`, run by make lab/test) keeps them out of
    it on `git add`; without the filter, staged outputs fail the check."""
    import shutil
    import subprocess
    import sys

    import nbformat

    repo = tmp_path / "course"
    (repo / "tools").mkdir(parents=True)
    (repo / "notebooks").mkdir()
    shutil.copy(ROOT / "tools" / "nbtools.py", repo / "tools")
    shutil.copy(ROOT / ".gitattributes", repo)
    path = repo / "notebooks" / "00-lesson.ipynb"
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1")])
    nbformat.write(notebook, path)

    def run(*argv, ok=True):
        proc = subprocess.run(argv, cwd=repo, capture_output=True, text=True)
        assert (proc.returncode == 0) == ok, f"{argv}: {proc.stdout}{proc.stderr}"
        return proc

    check = (sys.executable, "tools/nbtools.py", "check")
    run("git", "init", "-q")
    run("git", "add", ".")
    run("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "lesson")
    notebook.cells[0].outputs = [nbformat.v4.new_output("execute_result", {"text/plain": "2"})]
    notebook.cells[0].execution_count = 1
    nbformat.write(notebook, path)  # what JupyterLab's autosave does
    run(*check)  # the working copy has outputs; what is committed has none
    run(sys.executable, "tools/nbtools.py", "install-filter")
    run("git", "add", str(path))
    run(*check)  # the filter staged the notebook without its outputs
    assert nbformat.read(path, as_version=4).cells[0].outputs, "the working copy keeps them"
    run("git", "config", "--unset", "filter.nbstrip.clean")
    run("git", "add", "--renormalize", str(path))
    assert "has outputs" in run(*check, ok=False).stderr


def test_check_fails_when_the_contents_are_stale(tmp_path):
    """`nbtools navigate` writes a lesson's contents from its `##` headings; a heading added
    without re-running it fails `nbtools check` (which reads git's index) until it runs."""
    import shutil
    import subprocess
    import sys

    import nbformat

    repo = tmp_path / "course"
    (repo / "tools").mkdir(parents=True)
    (repo / "notebooks").mkdir()
    shutil.copy(ROOT / "tools" / "nbtools.py", repo / "tools")
    path = repo / "notebooks" / "01-lesson.ipynb"
    cells = [
        nbformat.v4.new_markdown_cell("# A lesson"),
        nbformat.v4.new_markdown_cell("## 1. One"),
    ]
    nbformat.write(nbformat.v4.new_notebook(cells=cells), path)

    def run(*argv, ok=True):
        proc = subprocess.run(argv, cwd=repo, capture_output=True, text=True)
        assert (proc.returncode == 0) == ok, f"{argv}: {proc.stdout}{proc.stderr}"
        return proc

    tool = (sys.executable, "tools/nbtools.py")
    run("git", "init", "-q")
    run(*tool, "navigate")
    run("git", "add", ".")
    run(*tool, "check")
    toc = nbformat.read(path, as_version=4).cells[1]
    assert toc.metadata["tags"] == ["toc"] and "[1. One](#1.-One)" in toc.source
    notebook = nbformat.read(path, as_version=4)
    notebook.cells.append(nbformat.v4.new_markdown_cell("## 2. Reading `EXPLAIN (ANALYZE)`"))
    nbformat.write(notebook, path)
    run("git", "add", ".")
    assert "stale" in run(*tool, "check", ok=False).stderr
    run(*tool, "navigate")
    run("git", "add", ".")
    run(*tool, "check")
    toc = nbformat.read(path, as_version=4).cells[1].source
    assert "[2. Reading `EXPLAIN (ANALYZE)`](#2.-Reading-EXPLAIN-(ANALYZE))" in toc


def test_lesson_links_resolve():
    """Every relative link in a lesson's Markdown opens a file of the course (and, with a
    `#fragment`, a heading of it): the contents, the navigation, the exercises, and each
    lesson's generated table of contents, which links every `##` step."""
    import re

    import nbformat

    def headings(path: Path) -> set[str]:
        cells = nbformat.read(path, as_version=4).cells
        found = re.findall(
            r"^#+\s+(.+)$", "\n".join(c.source for c in cells if c.cell_type == "markdown"), re.M
        )
        # JupyterLab's heading ids: the rendered text, spaces replaced by "-"
        return {re.sub(r"[`*]", "", h).strip().replace(" ", "-") for h in found}

    broken = []
    for lesson in LESSONS:
        for cell in nbformat.read(lesson, as_version=4).cells:
            if cell.cell_type != "markdown":
                continue
            # a link's target may hold balanced parentheses: #3.-Reading-EXPLAIN-(ANALYZE,-BUFFERS)
            for target in re.findall(r"\]\(((?:[^()\s]|\([^()\s]*\))+)\)", cell.source):
                if re.match(r"[a-z]+:", target):
                    continue  # https:, mailto:
                file, _, fragment = target.partition("#")
                path = (lesson.parent / file).resolve() if file else lesson
                if not path.is_file():
                    broken.append(f"{lesson.name}: {target} (no such file)")
                elif fragment and fragment not in headings(path):
                    broken.append(f"{lesson.name}: {target} (no heading {fragment!r})")
    assert not broken, "\n".join(broken)
    for lesson in LESSONS:
        cells = nbformat.read(lesson, as_version=4).cells
        toc = [c.source for c in cells if "toc" in c.metadata.get("tags", [])]
        assert len(toc) == 1, f"{lesson.name}: run tools/nbtools.py navigate (one contents cell)"
        steps = re.findall(
            r"^##\s+(.+)$", "\n".join(c.source for c in cells if c.cell_type == "markdown"), re.M
        )
        unlisted = [step for step in steps if f"[{step.strip()}](#" not in toc[0]]
        assert not unlisted, f"{lesson.name}: steps missing from its contents: {unlisted}"
    start = nbformat.read(LESSONS[0], as_version=4)
    text = "\n".join(c.source for c in start.cells)
    for exercise in sorted((ROOT / "exercises").glob("*/*.ipynb")):
        assert f"../exercises/{exercise.parent.name}/{exercise.name}" in text, (
            f"00-start-here's contents do not link {exercise.relative_to(ROOT)}"
        )


def test_start_here_runs_under_plain_nbconvert(tmp_path):
    """`jupyter nbconvert --to notebook --execute`, as an instructor would type it, with no
    option but a timeout (lesson 01 needs parameters nbconvert cannot pass: it runs under
    plain papermill above, and its widget cells under plain nbclient, nbconvert's engine)."""
    import subprocess
    import sys

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "jupyter",
            "nbconvert",
            "--to",
            "notebook",
            "--execute",
            f"--ExecutePreprocessor.timeout={CELL_TIMEOUT_S}",
            "--output-dir",
            str(tmp_path),
            str(LESSONS[0]),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / LESSONS[0].name).is_file()


# "Run from here": a learner who runs the imports, then jumps to any `##` section of lesson
# 01 and runs it, must succeed — each section's first code cell sets up what it needs
# (labkit.sections). Each section runs alone in a fresh kernel, after the parameters (at CI
# size) and the imports, one kernel at a time (two at once, from threads of this process,
# saved ~15 s but made libzmq abort now and then: its sockets are not thread-safe).
RUN_FROM_HERE = LESSONS[1] if len(LESSONS) > 1 else None


def lesson_sections(notebook) -> dict[str, list]:
    """The cells of each `##` section: from the cell holding its heading to the next one
    (the generated navigation left out)."""
    import re

    found: dict[str, list] = {}
    current = None
    for cell in notebook.cells:
        if "navigation" in cell.metadata.get("tags", []):
            continue
        if cell.cell_type == "markdown":
            headings = re.findall(r"^##\s+(.+)$", cell.source, re.M)
            if headings:
                current = found.setdefault(headings[-1].strip(), [])
        if current is not None:
            current.append(cell)
    return found


def run_section(cells: list) -> tuple[float, str]:
    """Execute ``cells`` in a fresh kernel; returns the seconds and the error (or "").

    The kernel is forked from a template that imported ipykernel, SQLAlchemy, psycopg and
    redis once (``labkit.course.forkkernel``, as grading does): a fresh process with fresh
    state, started without the ~0.5 s of imports each of the lessons' ~40 parts and
    sections would repeat. The lessons' first run is plain papermill, as a learner's is."""
    import os

    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    from labkit.course import forkkernel

    notebook = nbformat.v4.new_notebook(cells=cells)
    template = forkkernel.server()
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {}},
        kernel_manager_class=forkkernel.ForkingKernelManager,
    )
    environment = {**os.environ, **(template.env if template else {})}
    started = time.perf_counter()
    try:
        client.execute(cwd=str(ROOT / "notebooks"), env=environment)
        error = ""
    except CellExecutionError as exc:
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        error = "\n    ".join(lines[-6:])
    return time.perf_counter() - started, error


def run_sections(path: Path, parameters: dict) -> tuple[list[str], list[str]]:
    """For every `##` section of lesson 01 with code: the parameters cell (at CI size), the
    imports cell, then only that section, in a fresh kernel. Returns (times, failures)."""
    import copy

    import nbformat

    notebook = nbformat.read(path, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    params = next(c for c in code if "parameters" in c.metadata.get("tags", []))
    imports = next(c for c in code if "from labkit import" in c.source)
    injected = nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in parameters.items()))
    sections = {
        title: cells
        for title, cells in lesson_sections(notebook).items()
        if any(c.cell_type == "code" for c in cells)
    }
    assert len(sections) >= 18, list(sections)
    times, failed = [], []
    for title, cells in sections.items():
        head = [copy.deepcopy(c) for c in (params, injected, imports)]
        seconds, error = run_section([*head, *copy.deepcopy(cells)])
        times.append(f"{seconds:.1f} s")
        if error:
            failed.append(f"the section {title!r}: {error}")
    return times, failed


def test_section_set_up_defines_the_lessons_own_functions():
    """The functions `labkit.sections` gives a section started in the middle are the ones
    lesson 01 defines (same code once the lesson's constants are named as in the helper),
    so "run from here" runs what the lesson teaches, and the two cannot drift apart."""
    import ast

    import nbformat

    renamed = {
        "PREFIX": "prefix", "PROFILE_TTL": "profile_ttl", "MISSING_TTL": "missing_ttl",
        "TOP_AUTHORS_KEY": "top_authors_key", "DASHBOARD_KEY": "dashboard_key",
        "DASHBOARD_TTL": "dashboard_ttl",
    }  # fmt: skip

    class Rename(ast.NodeTransformer):
        def visit_Name(self, node):
            node.id = renamed.get(node.id, node.id)
            return node

    def functions(tree) -> dict[str, str]:
        return {
            node.name: ast.dump(Rename().visit(node))
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef)
        }

    helper = ast.parse((ROOT / "src" / "labkit" / "sections.py").read_text())
    kit = next(n for n in ast.walk(helper) if getattr(n, "name", "") == "_cache_kit")
    given = {name: dump for name, dump in functions(kit).items() if name != "_cache_kit"}
    cells = nbformat.read(RUN_FROM_HERE, as_version=4).cells
    source = "\n".join(c.source for c in cells if c.cell_type == "code" and "def " in c.source)
    taught = functions(ast.parse(source))
    assert len(given) >= 10
    missing = sorted(set(given) - set(taught))
    assert not missing, f"labkit.sections defines functions the lesson does not: {missing}"
    differ = sorted(name for name in given if given[name] != taught[name])
    assert not differ, f"labkit.sections and lesson 01 define these differently: {differ}"
