"""nbgrader configuration of the course (this folder is the nbgrader course directory).

`source/` (instructor notebooks with solutions and hidden tests) is committed;
`release/`, `submitted/`, `autograded/`, `feedback/` and `gradebook.db` are made by
nbgrader and git-ignored.
"""

import os

c = get_config()  # noqa: F821 -- provided by nbgrader when it loads this file

here = os.path.dirname(os.path.abspath(__file__))

c.CourseDirectory.root = here
c.CourseDirectory.course_id = "data-layer-engineering"
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(here, "gradebook.db")

# Setup cells load data: nbgrader's default 30 s per cell is too short for them. Answer and
# test cells get 60 s (labkit.course.nbgrader_ext.cell_timeout; LABKIT_GRADING_CELL_TIMEOUT), so a
# student's endless loop costs at most that per cell, and the feedback says so.
c.Execute.timeout = 300
c.Execute.kernel_name = "python3"

# What a student sees in place of a solution.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# Grade every notebook of every submission in its own sandbox (fresh database names, a
# private Redis), and keep hidden tests out of the feedback students receive
# (src/labkit/course/nbgrader_ext.py explains both).
from labkit.course.nbgrader_ext import configure  # noqa: E402

configure(c)
