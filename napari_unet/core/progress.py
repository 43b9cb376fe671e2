"""Progress streams: thin them out before they reach a GUI, and drive them to their end.

Training yields one report per step (tens a second on a GPU) and prediction
one per tile batch; sending each across threads to Qt would flood the event
loop. :func:`forward` passes on at most one item per ``interval`` seconds,
always the latest and always the last one, stops early on a cancel flag and
hands back the generator's return value; :func:`throttled` is the same for a
plain iterable. :func:`drive` runs a generator to its end for callers that
only want a callback per item (the CLI, batch prediction).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def forward(
    steps: Iterator[T],
    interval: float = 0.25,
    is_final: Callable[[T], bool] | None = None,
    cancel: threading.Event | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Generator[T, None, tuple[bool, Any]]:
    """Yield ``steps``' items no more often than every ``interval`` seconds; return (finished, its return value).

    Parameters
    ----------
    steps : iterator
        The source (a generator's return value is passed on; a plain
        iterator's is None).
    interval : float
        Minimum seconds between two yielded items.
    is_final : callable, optional
        Items for which it returns True are always yielded (e.g. ``done``).
    cancel : threading.Event, optional
        Checked after every item: once set, ``steps`` is closed (a generator
        runs its ``finally``) and ``(False, None)`` is returned.
    clock : callable
        Time source (injectable for tests).

    Yields
    ------
    The first item, then the newest item at most every ``interval`` seconds,
    and the last item of the stream.
    """
    last_sent, pending, has_pending = -float("inf"), None, False
    while True:
        try:
            item = next(steps)
        except StopIteration as end:
            if has_pending:
                yield pending
            return True, end.value
        if cancel is not None and cancel.is_set():
            close = getattr(steps, "close", None)
            if close is not None:
                close()
            return False, None
        now = clock()
        if now - last_sent >= interval or (is_final is not None and is_final(item)):
            last_sent, pending, has_pending = now, None, False
            yield item
        else:
            pending, has_pending = item, True


def throttled(items: Iterable[T], interval: float = 0.25, is_final: Callable[[T], bool] | None = None, clock: Callable[[], float] = time.monotonic) -> Iterator[T]:
    """:func:`forward` over any iterable, for callers that need neither cancelling nor the return value."""
    yield from forward(iter(items), interval, is_final, clock=clock)


def drive(steps: Generator[T, Any, R], on_item: Callable[[T], None] | None = None) -> R:
    """Run ``steps`` to its end, passing each item to ``on_item``; return the generator's return value."""
    while True:
        try:
            item = next(steps)
        except StopIteration as end:
            return end.value
        if on_item is not None:
            on_item(item)


def relay(steps: Generator[T, Any, R], wrap: Callable[[T], Any]) -> Generator[Any, None, R]:
    """Yield ``wrap(item)`` for each item of ``steps``; return the generator's return value."""
    while True:
        try:
            item = next(steps)
        except StopIteration as end:
            return end.value
        yield wrap(item)
