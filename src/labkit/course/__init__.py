"""The course's machinery: what runs the course around the lessons.

- :mod:`labkit.course.services` — the course's PostgreSQL and Redis (``python -m labkit
  services up|down|status|env``), through :mod:`labkit.supervisor`;
- :mod:`labkit.course.grading` — nbgrader's pipeline and the instructor's workflow;
  :mod:`labkit.course.nbgrader_ext` — its plug-ins (a sandbox per graded notebook, cell
  timeouts, feedback without hidden tests); :mod:`labkit.course.mutation` — mutation
  testing of the hidden tests;
- :mod:`labkit.course.selfcheck` and :mod:`labkit.course.progress` — a learner's own
  check and progress;
- :mod:`labkit.course.labsetup` — JupyterLab's set-up for learners;
  :mod:`labkit.course.bench` — the performance budgets; :mod:`labkit.course.cli` — the
  command line.

For example, what runs where (passwords masked)::

    >>> from labkit.course import services
    >>> services.table().index.tolist()
    ['postgres', 'redis']

These modules may use the teaching helpers (``labkit.<topic>``); the helpers never import
them. Importing starts nothing.
"""
