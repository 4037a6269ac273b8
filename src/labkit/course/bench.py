"""``python -m labkit bench``: measure the course's performance budgets on this machine.

Prints, and returns as a dict from :func:`measure_all`:
- services cold start (initdb + start PostgreSQL and Redis) and warm start, in a
  throwaway state folder (the course's own servers are not touched);
- loading the blog dataset with COPY vs ``pgbench -i`` on the same server, as rows/s;
- papermill's overhead to execute a one-cell notebook;
- CPU per graded-notebook kernel, plain and forked (:mod:`labkit.course.forkkernel`).

The budgets it checks::

    >>> from labkit.course import bench
    >>> bench.BUDGETS
    {'cold_start_s': 3.0, 'warm_start_s': 1.0, 'load_ratio': 0.5, 'notebook_overhead_s': 2.0}
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

__all__ = ["measure_all", "run_all"]

BUDGETS = {"cold_start_s": 3.0, "warm_start_s": 1.0, "load_ratio": 0.5, "notebook_overhead_s": 2.0}


def bench_services() -> dict[str, float]:
    from labkit.course.services import Services

    folder = Path(tempfile.mkdtemp(prefix="labkit-bench-"))
    os.chmod(folder, 0o755)
    saved = {k: os.environ.pop(k, None) for k in ("DATABASE_URL", "REDIS_URL")}
    try:
        services = Services(folder, quiet=True)
        started = time.perf_counter()
        services.up()
        cold = time.perf_counter() - started
        services.down()
        started = time.perf_counter()
        services.up()
        warm = time.perf_counter() - started
        services.down()
    finally:
        for key, value in saved.items():
            if value is not None:
                os.environ[key] = value
        shutil.rmtree(folder, ignore_errors=True)
    return {"cold_start_s": cold, "warm_start_s": warm}


def bench_load(scale: str = "guide", repeat: int = 3) -> dict[str, float]:
    """Median of ``repeat`` loads of the same generated rows vs median of ``repeat``
    ``pgbench -i`` runs at the scale with the closest row count, on the same server."""
    import statistics

    from labkit import data, db
    from labkit.course.services import postgres_bin_dir

    size = data.SCALES[scale]
    started = time.perf_counter()
    chunks = data.generate_blog(
        users=size.users, posts=size.posts, comments=size.comments, progress=False
    )
    generate_s = time.perf_counter() - started
    load_runs = []
    for _ in range(repeat):
        target = db.fresh_database("labkit_bench_load")
        load_runs.append(data.copy_blog(target, chunks))
    pg_scale = max(1, round(size.rows / 100_011))  # pgbench -i makes 100,011 rows per unit
    pgbench_runs = []
    for _ in range(repeat):
        bench_db = db.fresh_database("labkit_bench_pgbench")
        # The password goes in the environment, not on the command line (which `ps` shows
        # to every user, and a failed run's error message repeats).
        parts = urlsplit(bench_db.url)
        host_port = parts.netloc.rsplit("@", 1)[-1]
        netloc = f"{parts.username}@{host_port}" if parts.username else host_port
        started = time.perf_counter()
        proc = subprocess.run(
            [str(postgres_bin_dir() / "pgbench"), "-i", "-q", "-s", str(pg_scale),
             urlunsplit(parts._replace(netloc=netloc))],
            env={**os.environ, "PGPASSWORD": unquote(parts.password or "")},
            capture_output=True,
            text=True,
        )  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"pgbench -i failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
        pgbench_runs.append(time.perf_counter() - started)
    db.drop_database("labkit_bench_load")
    db.drop_database("labkit_bench_pgbench")
    load_s = statistics.median(load_runs)
    pgbench_s = statistics.median(pgbench_runs)
    pgbench_rows = 100_011 * pg_scale
    return {
        "rows": size.rows,
        "generate_s": generate_s,
        "load_s": load_s,
        "load_rows_per_s": size.rows / load_s,
        "end_to_end_rows_per_s": size.rows / (generate_s + load_s),
        "pgbench_rows": pgbench_rows,
        "pgbench_s": pgbench_s,
        "pgbench_rows_per_s": pgbench_rows / pgbench_s,
        "load_ratio": (size.rows / load_s) / (pgbench_rows / pgbench_s),
    }


def bench_notebook() -> dict[str, float]:
    import nbformat
    import papermill

    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "one.ipynb"
        notebook = nbformat.v4.new_notebook()
        notebook.cells = [nbformat.v4.new_code_cell("1 + 1")]
        notebook.metadata["kernelspec"] = {
            "name": "python3",
            "display_name": "Python 3",
            "language": "python",
        }
        nbformat.write(notebook, source)
        papermill.execute_notebook(
            str(source), str(Path(folder) / "warm.ipynb"), progress_bar=False
        )
        started = time.perf_counter()
        papermill.execute_notebook(str(source), str(Path(folder) / "out.ipynb"), progress_bar=False)
        return {"notebook_overhead_s": time.perf_counter() - started}


KERNEL_PROBE = "import sqlalchemy.orm, psycopg, redis\nfrom labkit import data, db"


def bench_kernels(count: int = 10) -> dict[str, float]:
    """CPU seconds per graded-notebook kernel (start, the imports of a set-up cell, shut
    down), started as ``python -m ipykernel_launcher`` and forked from the template of
    :mod:`labkit.course.forkkernel` (its own start counted in)."""
    import resource

    import nbformat
    from nbclient import NotebookClient

    from labkit.course import forkkernel

    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(KERNEL_PROBE)]

    def children_cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    def run(env: dict[str, str]) -> None:
        saved = dict(os.environ)
        os.environ.update(env)
        try:
            for _ in range(count):
                NotebookClient(notebook, kernel_name="python3",
                               kernel_manager_class=forkkernel.ForkingKernelManager).execute()  # fmt: skip
        finally:
            os.environ.clear()
            os.environ.update(saved)

    before = children_cpu()
    run({forkkernel.SWITCH_ENV: "0"})
    plain = (children_cpu() - before) / count
    before = children_cpu()
    template = forkkernel.KernelForkServer()
    try:
        run(template.env)
    finally:
        template.stop()  # waited for: its CPU time, and its kernels', is counted now
    forked = (children_cpu() - before) / count
    return {"kernel_plain_cpu_s": plain, "kernel_forked_cpu_s": forked}


def measure_all(scale: str = "guide") -> dict[str, float]:
    """Every budget's measurement, by name (the keys of :data:`BUDGETS`, and more)."""
    results: dict[str, float] = {}
    results.update(bench_services())
    results.update(bench_load(scale))
    results.update(bench_notebook())
    results.update(bench_kernels())
    return results


def run_all(scale: str = "guide") -> int:
    """``python -m labkit bench``: measure, print each figure beside its budget, and return
    0 if every budget is met, else 1."""
    results = measure_all(scale)
    r = results
    print(
        f"services cold start (initdb + start both): {r['cold_start_s']:.2f} s "
        f"(budget {BUDGETS['cold_start_s']} s)"
    )
    print(
        f"services warm start:                       {r['warm_start_s']:.2f} s "
        f"(budget {BUDGETS['warm_start_s']} s)"
    )
    print(
        f"blog load, {r['rows']:,} rows (median of 3): generate {r['generate_s']:.2f} s, "
        f"COPY+keys+analyze {r['load_s']:.2f} s = {r['load_rows_per_s']:,.0f} rows/s "
        f"({r['end_to_end_rows_per_s']:,.0f} rows/s with generation)"
    )
    print(
        f"pgbench -i, {r['pgbench_rows']:,} rows (median of 3): {r['pgbench_s']:.2f} s = "
        f"{r['pgbench_rows_per_s']:,.0f} rows/s"
    )
    print(
        f"ratio (load / pgbench):                    {r['load_ratio']:.2f} "
        f"(budget >= {BUDGETS['load_ratio']})"
    )
    print(
        f"papermill, one-cell notebook:              {r['notebook_overhead_s']:.2f} s "
        f"(budget {BUDGETS['notebook_overhead_s']} s)"
    )
    print(
        f"graded-notebook kernel, CPU per kernel:   {r['kernel_plain_cpu_s']:.2f} s plain, "
        f"{r['kernel_forked_cpu_s']:.2f} s forked from the template (start, set-up imports, "
        "shut down)"
    )
    failed = [
        name
        for name, limit in BUDGETS.items()
        if (results[name] < limit if name == "load_ratio" else results[name] > limit)
    ]
    print("all budgets met" if not failed else f"over budget: {', '.join(failed)}")
    return 1 if failed else 0
