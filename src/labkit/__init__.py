"""labkit — the helper package of the production data-layer engineering course.

Two layers, visible in the tree:

- **teaching helpers**, one module per topic, are what the lessons and exercises import:
  :mod:`labkit.db` (engines, isolated databases, the query recorder, EXPLAIN as data),
  :mod:`labkit.data` (the demo dataset) and :mod:`labkit.blog` (its ORM models),
  :mod:`labkit.datasets` (the fixed files in ``data/``, checked against their checksums),
  :mod:`labkit.measure` (timings and tables), :mod:`labkit.explain_tools` (plan
  comparisons), :mod:`labkit.practice` (the practice run), :mod:`labkit.cache` (Redis, and
  a Redis you may kill), :mod:`labkit.caching` (codec, hit counters, Zipf workloads,
  stampede lock), :mod:`labkit.controls` (widgets that executors cannot hang),
  :mod:`labkit.exercises` and :mod:`labkit.probes` (what the exercises and their tests
  use), :mod:`labkit.estimates`, :mod:`labkit.hot_updates`, :mod:`labkit.index_misses`,
  :mod:`labkit.online_ddl`, :mod:`labkit.write_cost`, :mod:`labkit.plancache` and
  :mod:`labkit.contention` (lesson 01's planner, index, write and lock measurements), :mod:`labkit.supervisor` (the life cycle of every server a lesson starts), with
  :mod:`labkit.config` (which servers) and :mod:`labkit.errors` (one error hierarchy);
- **the course's machinery**, in :mod:`labkit.course`: the course's own servers
  (``services``), nbgrader's pipeline and its plug-ins (``grading``, ``nbgrader_ext``),
  mutation testing of the hidden tests (``mutation``), the learner's self-check and
  progress and learning journal (``selfcheck``, ``progress``), the capstones' acceptance suites
  (``capstones``), JupyterLab's set-up (``labsetup``), the budgets
  (``bench``) and the command line (``cli``, ``python -m labkit``).

Helpers never import the machinery; the machinery uses the helpers
(``tests/test_layers.py`` checks it, and that no two modules import each other in a cycle).

For example::

    >>> from labkit import data, db
    >>> demo = data.blog_database("doctest_package", scale="tiny")  # a fresh copy: ~0.1 s
    >>> with demo.connect() as conn:
    ...     conn.execute("SELECT count(*) FROM users").fetchone()[0]
    200
    >>> db.drop_database("doctest_package")

Importing starts nothing.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
