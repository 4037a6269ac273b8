"""``python -m labkit`` — see :mod:`labkit.course.cli`."""

from labkit.course.cli import main

raise SystemExit(main())
