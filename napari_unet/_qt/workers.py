"""The session's jobs as napari thread workers: :class:`QtRunner`.

Each job runs in a napari worker thread; what it yields, returns and
raises reaches the session's callbacks through Qt signals, on the GUI
thread, where layers may be written. Long jobs (training) are registered
with napari's task manager (:class:`~napari_unet._qt.tasks.ViewerTask`), so
closing the window asks first and then cancels them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from qtpy.QtCore import Qt

from napari_unet._qt.tasks import ViewerTask, create_quiet_worker
from napari_unet.plugin.runner import Handlers


class QtRunner:
    """Runs jobs in napari thread workers, at most one per key.

    Parameters
    ----------
    viewer : napari.Viewer
        Its window's task manager holds the long jobs' tasks.
    before_start : callable, optional
        Called before each worker starts (the widget makes sure it watches
        its main window by then, to stop workers when it closes).
    """

    def __init__(self, viewer: Any, before_start: Callable[[], None] | None = None) -> None:
        self._viewer = viewer
        self._before_start = before_start
        self._workers: dict[str, tuple[Any, threading.Event]] = {}
        self._tasks: dict[str, ViewerTask] = {}
        self._failed: set[str] = set()

    def start(self, key: str, func: Callable, *args: Any, handlers: Handlers, task: str | None = None, cancel: Callable[[], Any] | None = None, **kwargs: Any) -> None:
        if key in self._workers:
            raise RuntimeError(f"job {key!r} is already running")
        # Not napari's create_worker: it would register every worker as a task
        # under the function's repr, and relay errors as traceback
        # notifications; the session says what went wrong in words instead.
        worker = create_quiet_worker(func, *args, **kwargs)
        relay = getattr(worker, "_relay_error", None)
        if relay is not None:  # napari's worker mixin, where its __init__ ran
            try:
                worker.errored.disconnect(relay)
            except TypeError:
                pass  # not connected
        if handlers.yielded is not None and hasattr(worker, "yielded"):
            worker.yielded.connect(handlers.yielded)
        if handlers.returned is not None:
            worker.returned.connect(handlers.returned)
        worker.errored.connect(lambda exc: self._failed.add(key))
        if handlers.errored is not None:
            worker.errored.connect(handlers.errored)
        worker.finished.connect(lambda: self._finished(key, handlers))
        done = threading.Event()
        # Set from the worker thread itself, so closing can wait for it
        # without the GUI event loop running.
        worker.finished.connect(done.set, Qt.ConnectionType.DirectConnection)
        self._workers[key] = (worker, done)
        self._failed.discard(key)
        if task is not None:
            self._tasks[key] = ViewerTask(self._viewer, task, cancel=cancel)
        if self._before_start is not None:
            self._before_start()
        worker.start()

    def _finished(self, key: str, handlers: Handlers) -> None:
        self._workers.pop(key, None)
        task = self._tasks.pop(key, None)
        if task is not None:
            task.finish(failed=key in self._failed)
        if handlers.finished is not None:
            handlers.finished()

    def is_running(self, key: str) -> bool:
        return key in self._workers

    def describe(self, key: str, text: str) -> None:
        task = self._tasks.get(key)
        if task is not None:
            task.update(text)

    def wait(self, timeout: float) -> bool:
        stopped = True
        for worker, done in list(self._workers.values()):
            # A worker queued but not yet started sees the session's stop flags at once.
            if worker.is_running and not done.wait(timeout):
                stopped = False
        return stopped
