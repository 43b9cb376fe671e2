"""Live plot of training loss, validation loss and IoU on held-out strokes, and F1 against a truth (matplotlib in Qt).

The validation figures are measured on strokes held out of training, which
flatter the model (they sit where the user chose to paint); the legend
says so. Where a truth layer is chosen, the F1 of each prediction against
it is plotted at the training step of its weights.

Cheap on the GUI thread, which must stay responsive while training:

- new data only marks the plot dirty; a single-shot timer redraws at most
  every ``min_interval_ms``;
- axes limits move in coarse steps (1-2-5 ticks), so most redraws only
  *blit* the three curves over a cached background (a few ms) instead of
  re-rendering axes, ticks and labels (tens to hundreds of ms);
- margins are fixed rather than recomputed by a layout engine each draw.
"""

from __future__ import annotations

import math
import time

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QSizePolicy, QVBoxLayout, QWidget

from napari_unet.core.history import Curves

TRAIN_COLOR = "#8fa3bf"
VAL_COLOR = "#ffa41b"
IOU_COLOR = "#2ee6a8"
TRUTH_COLOR = "#ffe14d"
STROKE_COLOR = "#ff6ec7"


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 1.5, 2, 3, 5 × 10^k that is >= ``value`` (axis limits that rarely move)."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    exponent = math.floor(math.log10(value))
    for mantissa in (1, 1.5, 2, 3, 5, 10):
        limit = mantissa * 10**exponent
        if limit >= value * (1 - 1e-9):
            return float(limit)
    return float(10 ** (exponent + 1))


class LossPlot(QWidget):
    """Training loss, validation loss (left axis), validation IoU and truth F1 (right axis).

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
        self._planned_end: int | None = None
        self._truth: tuple[list, list] = ([], [])  # (steps, F1 at IoU 0.5) against the truth layer
        self._limits: tuple | None = None  # (xmax, ymax, run_starts, stroke_steps) of the cached background
        self._background = None
        self.draw_count = 0  # redraws (full or blitted); for tests and the benchmark
        self.full_draw_count = 0

        self.figure = Figure(figsize=(3.4, 2.1), dpi=90, facecolor=background)
        # Fixed margins: a layout engine would re-measure every tick label on every draw.
        self.figure.subplots_adjust(left=0.14, right=0.86, bottom=0.2, top=0.8)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(170)
        self.canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas)

        ax = self.figure.add_subplot(111)
        iou_ax = ax.twinx()
        for a in (ax, iou_ax):
            # Few ticks: text is most of the cost of a full redraw.
            a.xaxis.set_major_locator(MaxNLocator(4))
            a.yaxis.set_major_locator(MaxNLocator(4))
            a.set_facecolor(background)
            a.tick_params(colors=foreground, labelsize=7)
            for spine in a.spines.values():
                spine.set_color(foreground)
                spine.set_alpha(0.4)
        ax.set_xlabel("step", color=foreground, fontsize=8, labelpad=1)
        ax.set_ylabel("loss", color=foreground, fontsize=8, labelpad=2)
        iou_ax.set_ylabel("IoU · F1", color=IOU_COLOR, fontsize=8, labelpad=2)
        iou_ax.set_ylim(0, 1)
        # Animated artists are left out of full draws and blitted on top.
        (self._train_line,) = ax.plot([], [], color=TRAIN_COLOR, lw=0.8, label="train loss", animated=True)
        (self._val_line,) = ax.plot([], [], color=VAL_COLOR, lw=1.4, marker="o", ms=2.5, label="val loss (held-out strokes)", animated=True)
        (self._iou_line,) = iou_ax.plot([], [], color=IOU_COLOR, lw=1.2, ls="--", marker="s", ms=2.5, label="val IoU (held-out strokes)", animated=True)
        (self._truth_line,) = iou_ax.plot([], [], color=TRUTH_COLOR, lw=0.8, marker="D", ms=3.5, label="truth F1@0.5", animated=True)
        self._run_lines: list = []
        self.figure.legend(
            handles=[self._train_line, self._val_line, self._truth_line, self._iou_line],
            loc="upper center", fontsize=7, frameon=False, ncol=2, labelcolor=foreground, bbox_to_anchor=(0.5, 1.0),
            columnspacing=1.0, handlelength=1.6, borderaxespad=0.2, labelspacing=0.2,
        )
        self._ax, self._iou_ax, self._foreground = ax, iou_ax, foreground
        self.canvas.mpl_connect("draw_event", self._on_full_draw)

        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._draw)
        self._draw()

    @property
    def curves(self) -> Curves:
        """The curves currently shown (or about to be)."""
        return self._curves

    def set_curves(self, curves: Curves, planned_end: int | None = None) -> None:
        """Show new curves; the redraw happens now or within ``min_interval_ms``.

        Parameters
        ----------
        curves : Curves
            What to show.
        planned_end : int, optional
            Cumulative step where the running training will end: the x axis
            is sized for it at once instead of growing step by step.
        """
        self._curves = curves
        self._planned_end = planned_end
        if self._timer.isActive():
            return
        wait = self._min_interval - (time.monotonic() - self._last_draw)
        if wait <= 0:
            # Now, so this redraw shares one window repaint with the caller's
            # other updates (progress bar): each repaint of a napari window
            # composites the whole OpenGL canvas.
            self._draw()
        else:
            self._timer.start(int(wait * 1000))

    @property
    def truth(self) -> tuple[list, list]:
        """The (steps, F1) against the truth shown (or about to be)."""
        return self._truth

    def set_truth(self, steps: list[int], f1: list[float]) -> None:
        """Show the F1 at IoU 0.5 against the truth layer at these training steps (empty lists: none)."""
        self._truth = (list(steps), list(f1))
        self.set_curves(self._curves, self._planned_end)

    def clear(self) -> None:
        """Empty the plot (after a model reset)."""
        self._truth = ([], [])
        self.set_curves(Curves())

    def _wanted_limits(self) -> tuple:
        c = self._curves
        last = max(c.steps[-1] if c.steps else 0, max(self._truth[0], default=0), self._planned_end or 0, 10)
        finite = [v for v in c.loss + c.val_loss if math.isfinite(v)]
        ymax = nice_ceiling(max(finite) * 1.05) if finite else 1.0
        return nice_ceiling(last), ymax, tuple(c.run_starts), tuple(c.stroke_steps)

    def _draw(self) -> None:
        c = self._curves
        self._train_line.set_data(c.steps, c.loss)
        self._val_line.set_data(c.val_steps, c.val_loss)
        self._iou_line.set_data(c.val_steps, c.val_iou)
        self._truth_line.set_data(*self._truth)
        limits = self._wanted_limits()
        if limits != self._limits or self._background is None:
            xmax, ymax, run_starts, stroke_steps = limits
            self._ax.set_xlim(0, xmax)
            self._ax.set_ylim(0, ymax)
            for line in self._run_lines:
                line.remove()
            # A dotted line where each retraining ("fine-tune") began.
            self._run_lines = [self._ax.axvline(x, color=self._foreground, alpha=0.35, lw=0.8, ls=":") for x in run_starts]
            # A short tick at the top where strokes painted during training were taken in.
            self._run_lines += [self._ax.axvline(x, ymin=0.9, color=STROKE_COLOR, alpha=0.8, lw=1.0) for x in stroke_steps]
            self._limits = limits
            self.canvas.draw()  # full render; _on_full_draw caches it and blits the curves
            self.full_draw_count += 1
        else:
            self.canvas.restore_region(self._background)
            self._blit_curves()
        self._last_draw = time.monotonic()
        self.draw_count += 1

    def _on_full_draw(self, event) -> None:
        # Also runs when Qt repaints after a resize: re-take the background,
        # then draw the curves into the buffer about to be shown.
        self._background = self.canvas.copy_from_bbox(self.figure.bbox)
        self._draw_curves()

    def _draw_curves(self) -> None:
        self._ax.draw_artist(self._train_line)
        self._ax.draw_artist(self._val_line)
        self._iou_ax.draw_artist(self._iou_line)
        self._iou_ax.draw_artist(self._truth_line)

    def _blit_curves(self) -> None:
        self._draw_curves()
        # update(), not blit(): blit repaints synchronously, update() lets Qt
        # paint the buffer together with everything else that changed.
        self.canvas.update()
