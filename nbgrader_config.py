"""Lets nbgrader tools started from the project root (JupyterLab, the CLI) find the course.

The course's real configuration is grading/nbgrader_config.py.
"""

import os

load_subconfig(  # noqa: F821 -- provided by nbgrader when it loads this file
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "grading", "nbgrader_config.py")
)
