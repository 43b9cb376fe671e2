"""Live plot of training loss, validation loss and validation IoU (matplotlib in Qt).

Redraws are rate-limited: new data only marks the plot dirty, and a
single-shot timer draws at most every ``min_interval_ms`` so the GUI thread
spends a few milliseconds a second on it however fast training reports.
"""

from __future__ import annotations

import math
import time

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QSizePolicy, QVBoxLayout, QWidget

from ._history import Curves

TRAIN_COLOR = "#8fa3bf"
VAL_COLOR = "#ffa41b"
IOU_COLOR = "#2ee6a8"


class LossPlot(QWidget):
    """Training loss, validation loss (left axis) and validation IoU (right axis).

    Parameters
    ----------
    background, foreground : str
        Figure and text colours (taken from the napari theme).
    min_interval_ms : int
        Minimum time between two redraws.
    """

    def __init__(self, parent: QWidget | None = None, background: str = "#262930", foreground: str = "#f0f1f2", min_interval_ms: int = 300) -> None:
        super().__init__(parent)
        self._min_interval = min_interval_ms / 1000
        self._last_draw = -math.inf
        self._curves = Curves()
        self.draw_count = 0  # for tests and the benchmark

        self.figure = Figure(figsize=(3.4, 2.1), dpi=90, facecolor=background, layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(170)
        self.canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas)

        ax = self.figure.add_subplot(111)
        iou_ax = ax.twinx()
        for a in (ax, iou_ax):
            a.set_facecolor(background)
            a.tick_params(colors=foreground, labelsize=7)
            for spine in a.spines.values():
                spine.set_color(foreground)
                spine.set_alpha(0.4)
        ax.set_xlabel("step", color=foreground, fontsize=8)
        ax.set_ylabel("loss", color=foreground, fontsize=8)
        iou_ax.set_ylabel("val IoU", color=IOU_COLOR, fontsize=8)
        iou_ax.set_ylim(0, 1)
        (self._train_line,) = ax.plot([], [], color=TRAIN_COLOR, lw=0.8, label="train loss")
        (self._val_line,) = ax.plot([], [], color=VAL_COLOR, lw=1.4, marker="o", ms=2.5, label="val loss")
        (self._iou_line,) = iou_ax.plot([], [], color=IOU_COLOR, lw=1.2, ls="--", marker="s", ms=2.5, label="val IoU")
        self._run_lines: list = []
        handles = [self._train_line, self._val_line, self._iou_line]
        legend = ax.legend(handles=handles, loc="upper center", fontsize=7, frameon=False, ncol=3, labelcolor=foreground, bbox_to_anchor=(0.5, 1.16))
        legend.set_in_layout(True)
        self._ax, self._iou_ax, self._foreground = ax, iou_ax, foreground

        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._draw)
        self._draw()

    @property
    def curves(self) -> Curves:
        """The curves currently shown (or about to be)."""
        return self._curves

    def set_curves(self, curves: Curves) -> None:
        """Show new curves; the redraw happens now or within ``min_interval_ms``."""
        self._curves = curves
        if self._timer.isActive():
            return
        wait = self._min_interval - (time.monotonic() - self._last_draw)
        self._timer.start(max(0, int(wait * 1000)))

    def clear(self) -> None:
        """Empty the plot (after a model reset)."""
        self.set_curves(Curves())

    def _draw(self) -> None:
        c = self._curves
        self._train_line.set_data(c.steps, c.loss)
        self._val_line.set_data(c.val_steps, c.val_loss)
        self._iou_line.set_data(c.val_steps, c.val_iou)
        for line in self._run_lines:
            line.remove()
        # A dotted line where each retraining ("fine-tune") began.
        self._run_lines = [self._ax.axvline(x, color=self._foreground, alpha=0.35, lw=0.8, ls=":") for x in c.run_starts]
        if c.steps:
            self._ax.set_xlim(0, max(c.steps[-1], 10) * 1.02)
            finite = [v for v in c.loss + c.val_loss if math.isfinite(v)]
            if finite:
                self._ax.set_ylim(0, max(finite) * 1.08 or 1.0)
        else:
            self._ax.set_xlim(0, 10)
            self._ax.set_ylim(0, 1)
        self.canvas.draw_idle()
        self._last_draw = time.monotonic()
        self.draw_count += 1
