"""A progress bar that never repaints synchronously.

``QProgressBar.setValue`` repaints at once when its text changes. In a
napari window every repaint composites the whole OpenGL canvas (tens of
milliseconds with software rendering), so a few updates a second would
stall the viewer; here all changes of one update share a single,
asynchronous repaint.
"""

from __future__ import annotations

from qtpy.QtWidgets import QProgressBar


class ProgressBar(QProgressBar):
    """``QProgressBar`` with :meth:`show_progress`, which changes everything in one paint."""

    def show_progress(self, value: int, maximum: int, text: str | None = None) -> None:
        """Set range ``0..maximum`` (0 means busy), value and optionally the text."""
        self.setUpdatesEnabled(False)
        try:
            if self.minimum() != 0 or self.maximum() != maximum:
                self.setRange(0, maximum)
            self.setValue(value)
            if text is not None:
                self.setFormat(text)
        finally:
            self.setUpdatesEnabled(True)  # schedules one repaint with the rest of the window
