"""Where the course keeps its state, and which servers it talks to.

>>> from labkit import config
>>> config.database_url()                 # DATABASE_URL, else <state dir>/services.env
'postgresql://postgres:...@127.0.0.1:.../postgres'
>>> config.redis_url()
'redis://:...@127.0.0.1:.../0'
>>> config.state_dir() == config.project_root() / ".labkit" or "LABKIT_STATE_DIR" in os.environ
True

The services contract: ``DATABASE_URL`` and ``REDIS_URL`` win when they are set
(containers, Binder, a hub). Otherwise the URLs written by
``python -m labkit services up`` into ``<state dir>/services.env`` are used.
Nothing here starts a server or creates a folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from labkit.errors import ServicesNotRunning

__all__ = [
    "ServicesNotRunning",
    "database_url",
    "project_root",
    "read_env_file",
    "redis_url",
    "state_dir",
]

ENV_FILE_NAME = "services.env"


def project_root() -> Path:
    """The course checkout: ``LABKIT_HOME``, else the checkout this package was installed from,
    else the nearest parent of the working directory that holds ``pyproject.toml``."""
    if env := os.environ.get("LABKIT_HOME"):
        return Path(env).resolve()
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file() and (parent / "src" / "labkit").is_dir():
            return parent
    cwd = Path.cwd().resolve()
    for parent in (cwd, *cwd.parents):
        if (parent / "pyproject.toml").is_file():
            return parent
    return Path.home() / "labkit-course"


def state_dir() -> Path:
    """The git-ignored folder with the embedded servers' data, logs and resolved URLs."""
    if env := os.environ.get("LABKIT_STATE_DIR"):
        return Path(env).resolve()
    return project_root() / ".labkit"


def read_env_file(path: Path | None = None) -> dict[str, str]:
    """Parse ``KEY=value`` lines of the services env file (missing file → empty dict)."""
    path = path or state_dir() / ENV_FILE_NAME
    values: dict[str, str] = {}
    try:
        text = path.read_text()
    except FileNotFoundError:
        return values
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def _resolve(name: str, what: str) -> str:
    if value := os.environ.get(name):
        return value
    if value := read_env_file().get(name):
        return value
    raise ServicesNotRunning(
        f"{what} is not running (no {name} and no {state_dir() / ENV_FILE_NAME}). "
        "Run `make lab` or `python -m labkit services up`, or set "
        f"{name} to a server you already have."
    )


def database_url() -> str:
    """The PostgreSQL URL (``postgresql://...``) the course uses."""
    return _resolve("DATABASE_URL", "PostgreSQL")


def redis_url() -> str:
    """The Redis URL (``redis://...``) the course uses."""
    return _resolve("REDIS_URL", "Redis")
