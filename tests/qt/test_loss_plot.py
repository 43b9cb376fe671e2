"""The live loss plot: coarse axis limits, rate-limited redraws that cost milliseconds."""

from __future__ import annotations

import math

import pytest
from qtpy.QtGui import QColor

from napari_unet._qt.loss_plot import _MARGINS, TRAIN_COLOR, VAL_COLOR, LossPlot, nice_ceiling, nice_ticks
from napari_unet.core.history import Curves


@pytest.mark.parametrize(
    "value, limit",
    [(0.3, 0.3), (0.31, 0.5), (1.0, 1.0), (1.01, 1.5), (2.5, 3.0), (7.0, 10.0), (120, 150), (0, 1.0), (math.inf, 1.0)],
)
def test_limits_move_in_coarse_steps(value, limit) -> None:
    assert nice_ceiling(value) == pytest.approx(limit)


def _curves(n: int) -> Curves:
    return Curves(list(range(1, n + 1)), [1.0 / (1 + 0.05 * i) for i in range(n)], list(range(10, n + 1, 10)), [0.6] * (n // 10), [0.7] * (n // 10))


def test_ticks_span_the_axis_at_a_round_spacing() -> None:
    assert nice_ticks(1.0) == pytest.approx([0, 0.25, 0.5, 0.75, 1.0])
    assert nice_ticks(150) == pytest.approx([0, 50, 100, 150])
    assert nice_ticks(0.3) == pytest.approx([0, 0.1, 0.2, 0.3])
    assert all(len(nice_ticks(v)) <= 5 for v in (0.3, 1.0, 1.5, 2, 3, 5, 10, 150, 2000))
    assert nice_ticks(0) == [0.0]


def _pixels_of(plot: LossPlot, color: str) -> int:
    """How many pixels of the plot area (legend left out) have about ``color`` (antialiased lines blend at their edges)."""
    image = plot.grab().toImage()
    target = QColor(color)
    left, right, top, bottom = _MARGINS
    near = 0
    for x in range(left, image.width() - right):
        for y in range(top, image.height() - bottom):
            c = image.pixelColor(x, y)
            near += abs(c.red() - target.red()) + abs(c.green() - target.green()) + abs(c.blue() - target.blue()) < 30
    return near


@pytest.mark.gui
def test_redraws_are_rate_limited_and_paint_the_curves(qtbot) -> None:
    plot = LossPlot(min_interval_ms=200)
    qtbot.addWidget(plot)
    plot.resize(400, 220)  # its cost per redraw is measured by benchmarks/bench_responsiveness.py
    plot.show()
    qtbot.waitExposed(plot)
    qtbot.wait(250)  # past the interval after the first draw
    assert _pixels_of(plot, TRAIN_COLOR) == 0
    start = plot.draw_count
    for n in range(1, 60):
        plot.set_curves(_curves(n), planned_end=100)
    assert plot.draw_count == start + 1  # one now, the rest coalesced
    qtbot.waitUntil(lambda: plot.draw_count == start + 2, timeout=2000)  # ... and one when the interval is over
    assert plot.shown.steps[-1] == 59
    assert plot.limits[:2] == (100, 1.5)  # the planned end, and the first loss (1.0) with headroom
    assert _pixels_of(plot, TRAIN_COLOR) > 10 and _pixels_of(plot, VAL_COLOR) > 10
    plot.set_curves(_curves(150), planned_end=None)  # beyond the x limit: the axis grows
    qtbot.wait(250)
    assert plot.limits[0] == 150
    plot.clear()
    qtbot.wait(250)
    assert not plot.shown.steps
    assert _pixels_of(plot, TRAIN_COLOR) == 0
