"""How the session runs its slow work: the :class:`Runner` interface, and a runner without threads.

The session (:mod:`napari_unet.plugin.session`) never creates threads
itself: it hands generator functions (:mod:`napari_unet.core.jobs`) to a
runner with callbacks for what they yield, return and raise. In napari the
runner is :class:`napari_unet._qt.workers.QtRunner` (napari thread workers,
callbacks delivered on the GUI thread); tests and scripts without Qt use
:class:`InlineRunner`, which runs each job to its end at once, on the
caller's thread, so the whole paint -> train -> predict -> correct loop can
be driven without a window.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Handlers:
    """Callbacks of one job, all called on the session's (main) thread.

    Attributes
    ----------
    yielded : callable, optional
        Each item the job yields (throttled progress, snapshots).
    returned : callable, optional
        The job's return value, when it ends normally.
    errored : callable, optional
        The exception, when it fails.
    finished : callable, optional
        Always last, whether it returned, failed or was cancelled.
    """

    yielded: Callable[[Any], None] | None = None
    returned: Callable[[Any], None] | None = None
    errored: Callable[[Exception], None] | None = None
    finished: Callable[[], None] | None = None


class Runner(Protocol):
    """Runs the session's jobs, at most one per key at a time."""

    def start(self, key: str, func: Callable, *args: Any, handlers: Handlers, task: str | None = None, cancel: Callable[[], Any] | None = None, **kwargs: Any) -> None:
        """Run ``func(*args, **kwargs)`` (a function or generator function) as job ``key``.

        ``task`` describes a long job to the application (napari asks before
        closing while it runs, and calls ``cancel`` if the user closes anyway).
        """

    def is_running(self, key: str) -> bool:
        """True while job ``key`` runs (from start until its ``finished`` callback)."""

    def describe(self, key: str, text: str) -> None:
        """A new description of job ``key``'s task (e.g. its progress)."""

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every job to end; False when one is still running."""


class InlineRunner:
    """Runs each job to its end inside :meth:`start`, on the calling thread (no Qt, no threads).

    A job started from another job's callback runs nested, as it would run
    next on a GUI thread. Exceptions go to ``errored`` like a worker's.
    """

    def __init__(self) -> None:
        self._running: set[str] = set()
        #: Last description given to each job's task (what a window would show).
        self.descriptions: dict[str, str] = {}

    def start(self, key: str, func: Callable, *args: Any, handlers: Handlers, task: str | None = None, cancel: Callable[[], Any] | None = None, **kwargs: Any) -> None:
        if key in self._running:
            raise RuntimeError(f"job {key!r} is already running")
        self._running.add(key)
        if task is not None:
            self.descriptions[key] = task
        try:
            result = func(*args, **kwargs)
            if hasattr(result, "__next__"):
                while True:
                    try:
                        item = next(result)
                    except StopIteration as end:
                        result = end.value
                        break
                    if handlers.yielded is not None:
                        handlers.yielded(item)
            if handlers.returned is not None:
                handlers.returned(result)
        except Exception as exc:
            if handlers.errored is None:
                raise
            handlers.errored(exc)
        finally:
            self._running.discard(key)
            if handlers.finished is not None:
                handlers.finished()

    def is_running(self, key: str) -> bool:
        return key in self._running

    def describe(self, key: str, text: str) -> None:
        self.descriptions[key] = text

    def wait(self, timeout: float) -> bool:
        return not self._running
