"""Long-running work registered with napari's task manager (napari >= 0.6).

A task registered with the viewer's window makes napari ask before the
window is closed ("napari-unet: Training the U-Net: step 40/200") and call
our cancel callback when the user closes anyway. napari offers this only
through the window's ``_register_task_status`` / ``_update_task_status``
(used by its own thread workers); where they are missing (older napari, no
window) the task is simply not registered.

napari's :func:`napari.qt.threading.create_worker` registers every worker
with the *current* viewer, under the function's repr and with
``worker.quit`` (which a generator worker only sees between yields) as
cancel: :func:`create_quiet_worker` makes the same worker without that, so
the close dialog names our task once, in words.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)
PROVIDER = "napari-unet"


def create_quiet_worker(func: Callable, *args: Any, **kwargs: Any) -> Any:
    """A napari thread worker (not started, errors not raised) that napari does not register as a task."""
    from napari.qt.threading import FunctionWorker, GeneratorWorker
    from superqt.utils import create_worker

    worker_class = GeneratorWorker if inspect.isgeneratorfunction(func) else FunctionWorker
    return create_worker(func, *args, _worker_class=worker_class, _start_thread=False, _ignore_errors=True, **kwargs)


class ViewerTask:
    """A task shown by napari when the window closes while it runs.

    Parameters
    ----------
    viewer : napari.Viewer
        Its window's task manager holds the task.
    description : str
        What runs, as the close dialog shows it.
    cancel : callable, optional
        Called (without arguments) when the window closes anyway.
    """

    def __init__(self, viewer: Any, description: str, cancel: Callable[[], Any] | None = None) -> None:
        self._window = getattr(viewer, "window", None)
        self._id = None
        register = getattr(self._window, "_register_task_status", None)
        if register is None:
            return
        from napari.utils.task_status import Status

        try:
            self._id = register(PROVIDER, Status.BUSY, description, cancel_callback=cancel)
        except Exception:  # a private napari API: never let it break training
            logger.debug("could not register a napari task", exc_info=True)

    @property
    def registered(self) -> bool:
        """True when napari's task manager knows the task."""
        return self._id is not None

    def update(self, description: str) -> None:
        """A new description while the task runs."""
        self._set("BUSY", description)

    def finish(self, failed: bool = False) -> None:
        """The task ended: napari no longer asks before closing."""
        self._set("FAILED" if failed else "COMPLETED", "")

    def _set(self, status: str, description: str) -> None:
        if self._id is None:
            return
        from napari.utils.task_status import Status

        try:
            self._window._update_task_status(self._id, Status[status], description)
        except Exception:
            logger.debug("could not update a napari task", exc_info=True)
