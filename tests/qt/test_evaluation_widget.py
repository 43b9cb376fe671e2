"""The widget's Evaluation panel: choose a truth layer, train with live previews, read the scores and the plot."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.eval.evaluate import evaluate
from napari_unet.eval.synthetic import make_nuclei
from tests.qt.test_widget import TRAIN_TIMEOUT_MS, add_painted_sample, dock, errors, fast_settings, predictions_of, wait_idle

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("one_torch_thread")]

STEPS = 60


@pytest.mark.slow
def test_truth_scores_each_prediction_and_the_plot_shows_them(make_napari_viewer, qtbot) -> None:
    notes: list[tuple[str, str]] = []
    viewer = make_napari_viewer()
    widget = dock(viewer, notes)
    sample = make_nuclei((192, 192), seed=0)
    image, annotations = add_painted_sample(viewer, widget, sample)
    truth = viewer.add_labels(sample.instances, name="truth", scale=image.scale, translate=image.translate)
    panel, plot = widget.evaluation_panel, widget.training_panel.loss_plot
    assert [panel.truth_combo.itemText(i) for i in range(panel.truth_combo.count())] == ["none", annotations.name, "truth"]
    assert panel.truth_combo.currentText() == "none" and widget.settings().truth == ""
    legend = plot.legend
    assert "val loss (held-out strokes)" in legend and "truth F1@0.5" in legend

    panel.truth_combo.setCurrentText("truth")
    assert widget.settings().truth == "truth" and panel.scores.text() == ""  # nothing predicted yet
    fast_settings(widget, steps=STEPS)
    widget.preview_timer.setInterval(300)  # instead of every few seconds
    widget.advanced.live_preview.setChecked(True)
    predictions = predictions_of(widget)
    with qtbot.waitSignal(widget.training_finished, timeout=TRAIN_TIMEOUT_MS):
        widget.session.train()
    wait_idle(qtbot, widget)
    qtbot.waitUntil(lambda: not widget.session.runner.is_running("evaluate"), timeout=30_000)  # scores come after the layers
    assert not errors(notes) and len(predictions) >= 2, (notes, len(predictions))

    # The label shows the scores of the last prediction (after training) against the truth.
    expected = evaluate(viewer.layers["nuclei instances"].data, truth.data)
    text = panel.scores.text()
    assert text.startswith(f"F1@0.5 {expected.f1:.2f} · F1 0.5:0.95 {expected.f1_mean:.2f} · missed {expected.missed} · false {expected.false}"), text
    assert text.endswith(f"fg IoU {expected.foreground_iou:.2f}")
    # The plot has a point per scored prediction: live previews at their step, the final one at the end.
    steps, f1 = plot.truth
    assert steps == widget.session.truth_points()[0] and steps[-1] == STEPS and f1[-1] == expected.f1
    assert len(steps) >= 2 and steps[0] < STEPS, steps
    qtbot.waitUntil(lambda: list(plot.shown_truth[0]) == steps, timeout=5_000)  # drawn with the curves (throttled)

    # "none" clears the label and the points; a reset model has no scores.
    panel.truth_combo.setCurrentText("none")
    assert panel.scores.text() == "" and plot.truth == ([], [])
    panel.truth_combo.setCurrentText("truth")
    qtbot.waitUntil(lambda: panel.scores.text().startswith("F1@0.5"), timeout=30_000)
    assert plot.truth[0] == [STEPS]
    widget.session.reset_model()
    assert panel.scores.text() == "" and plot.truth == ([], [])
    # Our prediction layers are never offered as a truth; a removed truth goes back to none.
    assert "nuclei instances" not in [panel.truth_combo.itemText(i) for i in range(panel.truth_combo.count())]
    viewer.layers.remove(truth)
    assert panel.truth_combo.currentText() == "none" and not np.any([level == "error" for level, _ in notes])
