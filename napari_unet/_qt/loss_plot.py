"""Live plot of training loss, validation loss and IoU on held-out strokes, and F1 against a truth (painted with QPainter).

The validation figures are measured on strokes held out of training, which
flatter the model (they sit where the user chose to paint); the legend
says so. Where a truth layer is chosen, the F1 of each prediction against
it is plotted at the training step of its weights.

Cheap on the GUI thread, which must stay responsive while training:

- new data only marks the plot dirty; a single-shot timer redraws at most
  every ``min_interval_ms``, and the redraw is one Qt paint (joined with the
  window's other repaints);
- everything is drawn with ``QPainter``: a whole redraw, axes and text
  included, takes a few milliseconds. The matplotlib figure this replaces
  re-rendered axes, ticks and legend whenever a limit moved, 75-130 ms each
  on 2 CPU cores under Xvfb: three such redraws in the first seconds of
  every training were the GUI's longest stalls (132-230 ms in
  ``python -m benchmarks.bench_responsiveness``);
- axes limits move in coarse steps (1-1.5-2-3-5 × 10^k), so the picture does
  not jump at every step.
"""

from __future__ import annotations

import math
import time

from qtpy.QtCore import QPointF, QRectF, Qt, QTimer
from qtpy.QtGui import QColor, QFont, QPainter, QPainterPath, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget

from napari_unet.core.history import Curves

TRAIN_COLOR = "#8fa3bf"
VAL_COLOR = "#ffa41b"
IOU_COLOR = "#2ee6a8"
TRUTH_COLOR = "#ffe14d"
STROKE_COLOR = "#ff6ec7"
# Plot area margins in pixels: left/right hold the two axes' tick labels,
# the top the legend, the bottom the step axis.
_MARGINS = (44, 40, 34, 30)  # left, right, top, bottom
_LEGEND = (
    ("train loss", TRAIN_COLOR, Qt.PenStyle.SolidLine),
    ("val loss (held-out strokes)", VAL_COLOR, Qt.PenStyle.SolidLine),
    ("truth F1@0.5", TRUTH_COLOR, Qt.PenStyle.SolidLine),
    ("val IoU (held-out strokes)", IOU_COLOR, Qt.PenStyle.DashLine),
)


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


def nice_ticks(limit: float, most: int = 5) -> list[float]:
    """Ticks from 0 to ``limit`` at a 1-2-5 × 10^k spacing, at most ``most`` of them."""
    if limit <= 0 or not math.isfinite(limit):
        return [0.0]
    for exponent in range(math.floor(math.log10(limit)) - 1, math.floor(math.log10(limit)) + 2):
        for mantissa in (1, 2, 2.5, 5):
            step = mantissa * 10**exponent
            if limit / step + 1 <= most + 1e-9:
                count = int(math.floor(limit / step + 1e-9))
                return [i * step for i in range(count + 1)]
    return [0.0, limit]


def _label(value: float) -> str:
    return f"{value:g}"


class LossPlot(QWidget):
    """Training loss, validation loss (left axis), validation IoU and truth F1 (right axis).

    Parameters
    ----------
    background, foreground : str
        Plot and text colours (taken from the napari theme).
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
        self._shown = (Curves(), ([], []))  # what the last redraw put on screen
        self._limits = self._wanted_limits()
        self._background, self._foreground = QColor(background), QColor(foreground)
        self.draw_count = 0  # redraws; for tests and the benchmark
        self.setMinimumHeight(170)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._draw)
        self._draw()

    @property
    def curves(self) -> Curves:
        """The curves currently shown (or about to be)."""
        return self._curves

    @property
    def shown(self) -> Curves:
        """The curves the last redraw put on screen."""
        return self._shown[0]

    @property
    def shown_truth(self) -> tuple[list, list]:
        """The (steps, F1) against the truth that the last redraw put on screen."""
        return self._shown[1]

    @property
    def legend(self) -> list[str]:
        """The legend's entries, in order."""
        return [text for text, _, _ in _LEGEND]

    @property
    def limits(self) -> tuple:
        """``(step axis end, loss axis end, run starts, stroke steps)`` of the last redraw."""
        return self._limits

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
        self._shown = (self._curves, self._truth)
        self._limits = self._wanted_limits()
        self._last_draw = time.monotonic()
        self.draw_count += 1
        # update(), not repaint(): Qt paints together with everything else that changed.
        self.update()

    # -- painting ---------------------------------------------------------------
    def paintEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        painter = QPainter(self)
        try:
            painter.setRenderHint(QPainter.RenderHint.Antialiasing)
            painter.fillRect(self.rect(), self._background)
            font = QFont(self.font())
            font.setPointSizeF(7.5)
            painter.setFont(font)
            left, right, top, bottom = _MARGINS
            area = QRectF(left, top, max(10, self.width() - left - right), max(10, self.height() - top - bottom))
            self._paint_axes(painter, area)
            self._paint_curves(painter, area)
            self._paint_legend(painter)
        finally:
            painter.end()

    def _point(self, area: QRectF, x: float, y: float, ymax: float) -> QPointF:
        xmax = self._limits[0]
        y = min(max(y, 0.0), ymax)
        return QPointF(area.left() + area.width() * x / xmax, area.bottom() - area.height() * y / ymax)

    def _paint_axes(self, painter: QPainter, area: QRectF) -> None:
        xmax, ymax, run_starts, stroke_steps = self._limits
        faint = QColor(self._foreground)
        faint.setAlphaF(0.4)
        painter.setPen(QPen(faint, 1))
        painter.drawRect(area)
        metrics = painter.fontMetrics()
        text_pen = QPen(self._foreground)
        for x in nice_ticks(xmax):
            p = self._point(area, x, 0, ymax)
            painter.setPen(QPen(faint, 1))
            painter.drawLine(p, QPointF(p.x(), p.y() + 3))
            painter.setPen(text_pen)
            label = _label(x)
            painter.drawText(QPointF(p.x() - metrics.horizontalAdvance(label) / 2, p.y() + 4 + metrics.ascent()), label)
        for y in nice_ticks(ymax):
            p = self._point(area, 0, y, ymax)
            painter.setPen(QPen(faint, 1))
            painter.drawLine(p, QPointF(p.x() - 3, p.y()))
            painter.setPen(text_pen)
            label = _label(y)
            painter.drawText(QPointF(p.x() - 5 - metrics.horizontalAdvance(label), p.y() + metrics.ascent() / 2 - 1), label)
        for y in (0.0, 0.5, 1.0):
            p = self._point(area, xmax, y, 1.0)
            painter.setPen(QPen(faint, 1))
            painter.drawLine(p, QPointF(p.x() + 3, p.y()))
            painter.setPen(QPen(QColor(IOU_COLOR)))
            painter.drawText(QPointF(p.x() + 5, p.y() + metrics.ascent() / 2 - 1), _label(y))
        painter.setPen(text_pen)
        painter.drawText(QPointF(area.center().x() - metrics.horizontalAdvance("step") / 2, area.bottom() + 6 + 2 * metrics.ascent()), "step")
        self._vertical_text(painter, "loss", QPointF(area.left() - 32, area.center().y()), text_pen)
        self._vertical_text(painter, "IoU · F1", QPointF(area.right() + 30, area.center().y()), QPen(QColor(IOU_COLOR)))
        # A dotted line where each retraining ("fine-tune") began ...
        painter.setPen(QPen(faint, 1, Qt.PenStyle.DotLine))
        for x in run_starts:
            painter.drawLine(self._point(area, x, 0, ymax), self._point(area, x, ymax, ymax))
        # ... and a short tick at the top where strokes painted during training were taken in.
        painter.setPen(QPen(QColor(STROKE_COLOR), 1))
        for x in stroke_steps:
            p = self._point(area, x, ymax, ymax)
            painter.drawLine(p, QPointF(p.x(), p.y() + area.height() * 0.1))

    def _vertical_text(self, painter: QPainter, text: str, centre: QPointF, pen: QPen) -> None:
        painter.save()
        painter.setPen(pen)
        painter.translate(centre)
        painter.rotate(-90)
        painter.drawText(QPointF(-painter.fontMetrics().horizontalAdvance(text) / 2, 0), text)
        painter.restore()

    def _paint_curves(self, painter: QPainter, area: QRectF) -> None:
        curves, (truth_steps, truth_f1) = self._shown
        ymax = self._limits[1]
        painter.save()
        painter.setClipRect(area.adjusted(-4, -4, 4, 4))
        self._polyline(painter, area, curves.steps, curves.loss, ymax, TRAIN_COLOR, 1.0)
        self._polyline(painter, area, curves.val_steps, curves.val_loss, ymax, VAL_COLOR, 1.6, marker="o")
        self._polyline(painter, area, curves.val_steps, curves.val_iou, 1.0, IOU_COLOR, 1.3, marker="s", style=Qt.PenStyle.DashLine)
        self._polyline(painter, area, truth_steps, truth_f1, 1.0, TRUTH_COLOR, 1.0, marker="D")
        painter.restore()

    def _polyline(self, painter: QPainter, area: QRectF, xs: list, ys: list, ymax: float, color: str, width: float, marker: str | None = None, style: Qt.PenStyle = Qt.PenStyle.SolidLine) -> None:
        points = [self._point(area, x, y, ymax) for x, y in zip(xs, ys) if math.isfinite(y)]
        if not points:
            return
        painter.setPen(QPen(QColor(color), width, style))
        painter.drawPolyline(QPolygonF(points))
        if marker is None:
            return
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor(color))
        path = QPainterPath()
        for p in points:
            if marker == "o":
                path.addEllipse(p, 2.2, 2.2)
            elif marker == "s":
                path.addRect(QRectF(p.x() - 2, p.y() - 2, 4, 4))
            else:  # diamond
                path.addPolygon(QPolygonF([QPointF(p.x(), p.y() - 3), QPointF(p.x() + 3, p.y()), QPointF(p.x(), p.y() + 3), QPointF(p.x() - 3, p.y()), QPointF(p.x(), p.y() - 3)]))
        painter.drawPath(path)
        painter.setBrush(Qt.BrushStyle.NoBrush)

    def _paint_legend(self, painter: QPainter) -> None:
        metrics = painter.fontMetrics()
        column = self.width() / 2
        for i, (text, color, style) in enumerate(_LEGEND):
            x = 8 + (i % 2) * column
            y = 4 + (i // 2) * (metrics.height() + 1) + metrics.ascent()
            painter.setPen(QPen(QColor(color), 1.5, style))
            painter.drawLine(QPointF(x, y - metrics.ascent() / 2 + 1), QPointF(x + 16, y - metrics.ascent() / 2 + 1))
            painter.setPen(QPen(self._foreground))
            painter.drawText(QPointF(x + 20, y), metrics.elidedText(text, Qt.TextElideMode.ElideRight, int(column - 30)))
