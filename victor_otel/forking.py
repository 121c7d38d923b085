"""Fork safety in one place: each module registers what it does around ``os.fork()``.

A lock that another thread holds at the moment of a fork stays held for ever in the child, whose only
thread is the one that forked. Every lock victor_otel owns is therefore either renewed in the child
(``after_in_child``) or held by the forking thread across the fork (``before``, released in both
processes), so that nothing is half-way through in the child: a module calls :func:`on_fork` once, at
import or when it installs the thing to protect.

>>> import os
>>> from victor_otel import forking
>>> forking.on_fork(after_in_child=lambda: None)   # e.g. a new lock for the child
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

_logger = logging.getLogger("victor_otel")

#: A fork waits at most this long for a lock a thread holds (a write or a collection in progress).
FORK_WAIT = 5.0

Hook = Callable[[], None]
_before: list[Hook] = []
_after_in_parent: list[Hook] = []
_after_in_child: list[Hook] = []
_registered = False
_lock = threading.Lock()


def on_fork(
    *, before: Hook | None = None, after_in_parent: Hook | None = None, after_in_child: Hook | None = None
) -> None:
    """Run ``before`` in the forking thread before every fork, then ``after_in_parent`` in the parent or
    ``after_in_child`` in the child. Hooks run ``before`` in reverse registration order and the others in
    registration order (as ``os.register_at_fork`` does); one that raises is logged and skipped."""
    global _registered
    with _lock:
        if before is not None:
            _before.append(before)
        if after_in_parent is not None:
            _after_in_parent.append(after_in_parent)
        if after_in_child is not None:
            _after_in_child.append(after_in_child)
        if not _registered and hasattr(os, "register_at_fork"):
            os.register_at_fork(before=_run_before, after_in_parent=_run_parent, after_in_child=_run_child)
            _registered = True


def _run(hooks: list[Hook]) -> None:
    for hook in hooks:
        try:
            hook()
        except Exception:  # never let telemetry break a fork
            _logger.exception("victor_otel: a fork hook failed")


def _run_before() -> None:
    _run(list(reversed(_before)))


def _run_parent() -> None:
    _run(list(_after_in_parent))


def _run_child() -> None:
    global _lock
    _lock = threading.Lock()
    _run(list(_after_in_child))


__all__ = ["FORK_WAIT", "on_fork"]
