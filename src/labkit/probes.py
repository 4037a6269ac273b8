"""Probes that let a test observe an answer from the outside, through public hooks only.

For example, the arguments an answer passed to ``create_engine``::

    >>> from sqlalchemy import create_engine
    >>> from labkit import db, probes
    >>> with probes.engine_arguments(db.database("postgres", qualified=True).sqlalchemy_url) as (
    ...     url, seen
    ... ):
    ...     engine = create_engine(url, pool_size=7, pool_pre_ping=True)  # the learner's code
    >>> seen.kwargs
    {'pool_size': 7, 'pool_pre_ping': True}
    >>> seen.setting("max_overflow")  # left out: SQLAlchemy's default
    10
    >>> dict(engine.url.query)  # the probe's own parameters are gone from the engine's URL
    {}

:func:`engine_arguments` uses SQLAlchemy's documented ``CreateEnginePlugin`` hook (named in
the URL's ``plugin`` query parameter), so a test reads the arguments an engine was created
with instead of the pool's private attributes.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["EngineArguments", "engine_arguments"]

#: SQLAlchemy's defaults for the QueuePool settings a learner may leave out.
POOL_DEFAULTS = {
    "pool_size": 5,
    "max_overflow": 10,
    "pool_timeout": 30,
    "pool_recycle": -1,
    "pool_pre_ping": False,
}
_PLUGIN_NAME = "labkit_engine_arguments"
_active: dict[str, EngineArguments] = {}
_lock = threading.Lock()


@dataclass
class EngineArguments:
    """The keyword arguments ``create_engine`` received, for every engine made with the
    probe's URL (``calls``: one dict per engine; ``kwargs``: the last one)."""

    calls: list[dict[str, Any]] = field(default_factory=list)

    @property
    def kwargs(self) -> dict[str, Any]:
        if not self.calls:
            raise AssertionError(
                "no engine was created with the URL that was passed in: call create_engine(url, ...)"
            )
        return self.calls[-1]

    def setting(self, name: str) -> Any:
        """The value passed for ``name``, or SQLAlchemy's default when it was left out."""
        return self.kwargs.get(name, POOL_DEFAULTS.get(name))


class _Plugin:
    """The ``CreateEnginePlugin``: records the keyword arguments, changes nothing."""

    def __init__(self, url, kwargs) -> None:
        token = url.query.get("labkit_probe")
        with _lock:
            probe = _active.get(token if isinstance(token, str) else "")
        if probe is not None:
            probe.calls.append(dict(kwargs))

    def update_url(self, url):
        return url.difference_update_query(["labkit_probe"])

    def handle_dialect_kwargs(self, dialect_cls, dialect_args) -> None:
        pass

    def handle_pool_kwargs(self, pool_cls, pool_args) -> None:
        pass

    def engine_created(self, engine) -> None:
        pass


def _register() -> None:
    from sqlalchemy.dialects import plugins

    plugins.register(_PLUGIN_NAME, __name__, "_Plugin")


@contextlib.contextmanager
def engine_arguments(url: str) -> Iterator[tuple[str, EngineArguments]]:
    """Yield ``(probe_url, seen)``: engines created from ``probe_url`` inside the block (it is
    ``url`` plus a plugin parameter that SQLAlchemy removes) record their keyword arguments
    in ``seen``."""
    from sqlalchemy.engine import make_url

    _register()
    token = uuid.uuid4().hex
    seen = EngineArguments()
    probe_url = make_url(url).update_query_dict({"plugin": _PLUGIN_NAME, "labkit_probe": token})
    with _lock:
        _active[token] = seen
    try:
        yield probe_url.render_as_string(hide_password=False), seen
    finally:
        with _lock:
            _active.pop(token, None)
