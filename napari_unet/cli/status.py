"""Exit statuses of ``napari-unet``, and SIGTERM handled like Ctrl-C.

A batch scheduler ends a job with SIGTERM; turning it into a
KeyboardInterrupt lets everything that stops cleanly on Ctrl-C (training
keeping its best weights, temporaries being removed) do so on SIGTERM too.
The lowest module of :mod:`napari_unet.cli`: every command may import it.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

#: An error, printed as one line.
EXIT_USER_ERROR = 1
#: Ctrl-C.
EXIT_INTERRUPTED = 130
#: 128 + SIGTERM, what a shell reports for a job ended by SIGTERM.
EXIT_TERMINATED = 128 + signal.SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread where Ctrl-C would raise KeyboardInterrupt.

    A KeyboardInterrupt so that everything that stops cleanly on Ctrl-C
    (training keeping its best weights, temporaries being removed) does so
    on SIGTERM too.
    """


class _Signals:
    terminated = False  # set once SIGTERM arrived during the current command


_SIGNALS = _Signals()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` for the duration of a command (main thread only)."""
    _SIGNALS.terminated = False

    def handler(signum, frame) -> None:
        if _SIGNALS.terminated:
            return  # a second SIGTERM while the model is being written: let it finish
        _SIGNALS.terminated = True
        raise Terminated()

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def interrupt_status() -> int:
    """The exit status of an interrupted command: 143 after SIGTERM, else 130 (Ctrl-C)."""
    return EXIT_TERMINATED if _SIGNALS.terminated else EXIT_INTERRUPTED
