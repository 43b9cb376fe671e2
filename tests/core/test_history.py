"""Training history -> plot curves and the model summary line."""

from __future__ import annotations

from napari_unet.core.history import describe_model, history_curves, run_lengths


def _entry(run, step, loss, val=None, iou=None):
    return {"run": run, "step": step, "loss": loss, "val_loss": val, "val_iou": iou, "elapsed": 0.1 * step}


HISTORY = [
    _entry(0, 1, 1.0),
    _entry(0, 2, 0.9, 0.8, 0.5),
    _entry(0, 3, 0.7, 0.8, 0.5),  # validation unchanged: no new point
    _entry(0, 3, 0.75, 0.6, 0.7),  # the "done" report repeats step 3
    _entry(1, 1, 0.5, 0.6, 0.7),
    _entry(1, 2, 0.4, 0.5, 0.8),
]


def test_runs_are_laid_end_to_end() -> None:
    curves = history_curves(HISTORY)
    assert curves.steps == [1, 2, 3, 4, 5]
    assert curves.loss == [1.0, 0.9, 0.7, 0.5, 0.4]
    assert curves.run_starts == [3]
    assert curves.val_steps == [2, 4, 5] and curves.val_iou == [0.5, 0.7, 0.8]


def test_summary_line() -> None:
    assert run_lengths(HISTORY) == [3, 2]
    assert describe_model(["background", "class 1"], HISTORY) == "classes: background, class 1 — trained 2 runs, 5 steps"
    assert describe_model(["background", "nucleus"], HISTORY[:1]).endswith("trained 1 run, 1 steps")
    assert describe_model(["background", "class 1"], []).endswith("not trained yet")


def test_empty_history() -> None:
    curves = history_curves([])
    assert curves.steps == [] and curves.run_starts == []
