"""The live loss plot: coarse axis limits, rate-limited and mostly blitted redraws."""

from __future__ import annotations

import math

import pytest

from napari_unet._qt.loss_plot import LossPlot, nice_ceiling
from napari_unet.core.history import Curves


@pytest.mark.parametrize(
    "value, limit",
    [(0.3, 0.3), (0.31, 0.5), (1.0, 1.0), (1.01, 1.5), (2.5, 3.0), (7.0, 10.0), (120, 150), (0, 1.0), (math.inf, 1.0)],
)
def test_limits_move_in_coarse_steps(value, limit) -> None:
    assert nice_ceiling(value) == pytest.approx(limit)


def _curves(n: int) -> Curves:
    return Curves(list(range(1, n + 1)), [1.0 / (1 + 0.05 * i) for i in range(n)], list(range(10, n + 1, 10)), [0.6] * (n // 10), [0.7] * (n // 10))


@pytest.mark.gui
def test_redraws_are_rate_limited_and_mostly_blitted(qtbot) -> None:
    plot = LossPlot(min_interval_ms=200)
    qtbot.addWidget(plot)
    plot.show()
    qtbot.waitExposed(plot)
    qtbot.wait(250)  # past the interval after the first draw
    start = plot.draw_count
    for n in range(1, 60):
        plot.set_curves(_curves(n), planned_end=100)
    assert plot.draw_count == start + 1  # one now, the rest coalesced
    qtbot.waitUntil(lambda: plot.draw_count == start + 2, timeout=2000)  # ... and one when the interval is over
    assert plot._train_line.get_xdata()[-1] == 59
    full = plot.full_draw_count
    for n in range(60, 100, 5):
        plot.set_curves(_curves(n), planned_end=100)
        qtbot.wait(220)
    assert plot.full_draw_count == full  # same limits: curves blitted over the cached axes
    plot.set_curves(_curves(150), planned_end=None)  # beyond the x limit: axes redrawn
    qtbot.wait(250)
    assert plot.full_draw_count == full + 1 and plot._ax.get_xlim()[1] == 150
    plot.clear()
    qtbot.wait(250)
    assert len(plot._train_line.get_xdata()) == 0
