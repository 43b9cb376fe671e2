"""Paint while it trains, in the widget: a correction painted during a run counts without pressing Train again."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from tests.qt.test_widget import (  # noqa: F401  (fixtures are used by name)
    TRAIN_TIMEOUT_MS,
    add_painted_sample,
    dim_nuclei,
    errors,
    fast_settings,
    notes,
    predictions_of,
    sample,
    train_and_wait,
    viewer_and_widget,
    wait_idle,
)

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("one_torch_thread")]

STEPS = 60


def test_a_correction_painted_while_training_joins_the_run(viewer_and_widget, qtbot, sample, notes) -> None:  # noqa: F811
    viewer, widget = viewer_and_widget
    _, annotations = add_painted_sample(viewer, widget, sample)  # the dim nuclei painted as background: a mistake
    fast_settings(widget, steps=STEPS)
    predictions = predictions_of(widget)
    train_and_wait(qtbot, widget, predictions)
    dim_cores = ndi.binary_erosion(dim_nuclei(sample), iterations=1)
    before = predictions[-1][1][dim_cores].mean()

    # Retrain; once it runs, paint the dim nuclei as objects through the layer's paint API. No second Train.
    painted = []

    def correct(progress) -> None:
        if not painted:
            painted.append(progress.step)
            annotations.data_setitem(np.nonzero(dim_cores), 2)

    widget.session.events.training_progress.connect(correct)
    count = len(predictions)
    with qtbot.waitSignal(widget.training_finished, timeout=TRAIN_TIMEOUT_MS):
        widget.session.train()
    qtbot.waitUntil(lambda: len(predictions) > count, timeout=60_000)
    wait_idle(qtbot, widget)
    assert not errors(notes)
    progress = widget.session.last_progress
    assert painted and progress.strokes >= 1 and progress.stroke_latency is not None
    after = predictions[-1][1][dim_cores].mean()
    print(f"live correction: P(object) on the corrected dim nuclei {before:.3f} -> {after:.3f}")
    assert after > before + 0.1, (before, after)
    # The plot marks where the strokes came in, and the progress line says so.
    curves = widget.training_panel.loss_plot.curves
    assert curves.stroke_steps and curves.run_starts and curves.stroke_steps[0] > curves.run_starts[-1]
    assert widget.session.stroke_watcher is None
