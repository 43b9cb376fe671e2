"""Thin out a stream of progress reports before it reaches a GUI.

Training yields one report per step (tens a second on a GPU); sending each
across threads to Qt would flood the event loop. :func:`throttled` passes
on at most one item per ``interval`` seconds, always the latest, and
always the last one of the stream.
"""

from __future__ import annotations

import time
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")


def throttled(items: Iterable[T], interval: float = 0.25, is_final: Callable[[T], bool] | None = None, clock: Callable[[], float] = time.monotonic) -> Iterator[T]:
    """Yield items no more often than every ``interval`` seconds.

    Parameters
    ----------
    items : iterable
        The source stream (e.g. training progress).
    interval : float
        Minimum seconds between two yielded items.
    is_final : callable, optional
        Items for which it returns True are always yielded (e.g. ``done``).
    clock : callable
        Time source (injectable for tests).

    Yields
    ------
    The first item, then the newest item at most every ``interval`` seconds,
    and the last item of the stream.
    """
    last_sent = -float("inf")
    pending: list[T] = []
    for item in items:
        now = clock()
        if now - last_sent >= interval or (is_final is not None and is_final(item)):
            pending.clear()
            last_sent = now
            yield item
        else:
            pending[:] = [item]
    if pending:
        yield pending[0]
