"""A model's training history as plot curves and a one-line summary (no Qt)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class Curves:
    """Loss and IoU curves over steps counted across all training runs.

    Attributes
    ----------
    steps, loss : list
        Training loss at each step.
    val_steps, val_loss, val_iou : list
        Validation figures where they changed (every few steps).
    run_starts : list of int
        Cumulative step at which each run after the first began.
    stroke_steps : list of int
        Cumulative steps at which strokes painted during a run were taken in.
    """

    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    val_steps: list[int] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_iou: list[float] = field(default_factory=list)
    run_starts: list[int] = field(default_factory=list)
    stroke_steps: list[int] = field(default_factory=list)


def history_curves(history: Sequence[dict]) -> Curves:
    """Turn :attr:`Segmenter.history` entries into plottable curves.

    Each run restarts its step count at 1; runs are laid end to end. The
    final report of a run repeats its last step (with a smoothed loss) and
    is skipped, and validation points are kept only where they changed.
    """
    curves = Curves()
    offset = 0
    run = None
    last_step = 0
    last_val = None
    strokes = 0
    for entry in history:
        if entry.get("run") != run:
            if run is not None:
                offset += last_step
                curves.run_starts.append(offset)
            run, last_step, last_val, strokes = entry.get("run"), 0, None, 0
        if entry.get("strokes", 0) > strokes:  # strokes painted during the run were taken in before this step
            strokes = entry["strokes"]
            curves.stroke_steps.append(offset + int(entry.get("step", 0)))
        step = int(entry.get("step", 0))
        if step <= last_step:
            continue  # the "done" report repeats the last step
        last_step = step
        x = offset + step
        curves.steps.append(x)
        curves.loss.append(float(entry["loss"]))
        val = (entry.get("val_loss"), entry.get("val_iou"))
        if val[0] is not None and val != last_val:
            last_val = val
            curves.val_steps.append(x)
            curves.val_loss.append(float(val[0]))
            curves.val_iou.append(float("nan") if val[1] is None else float(val[1]))
    return curves


def run_lengths(history: Sequence[dict]) -> list[int]:
    """Steps trained in each run, in order."""
    lengths: dict = {}
    for entry in history:
        run = entry.get("run")
        lengths[run] = max(lengths.get(run, 0), int(entry.get("step", 0)))
    return list(lengths.values())


def describe_model(class_names: Sequence[str], history: Sequence[dict]) -> str:
    """One line such as ``"classes: background, class 1 — trained 3 runs, 450 steps"``."""
    lengths = run_lengths(history)
    if lengths:
        runs = f"{len(lengths)} run" + ("s" if len(lengths) != 1 else "")
        trained = f"trained {runs}, {sum(lengths)} steps"
    else:
        trained = "not trained yet"
    return f"classes: {', '.join(class_names)} — {trained}"
