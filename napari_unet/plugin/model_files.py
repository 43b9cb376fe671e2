"""The session's file actions: open images, save and load the model, export labels and bioimage.io packages.

:class:`ModelFiles` is a part of :class:`~napari_unet.plugin.session.Session`
(its base class), kept in its own module so each file stays short; it uses
the session's ``viewer``, ``segmenter``, ``runner``, ``options``,
``events`` and ``notify``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from napari.layers import Image

from napari_unet.core.device import resolve_device
from napari_unet.core.history import describe_model
from napari_unet.core.jobs import snapshot
from napari_unet.core.segmenter import Segmenter
from napari_unet.errors import UserInputError
from napari_unet.plugin import files
from napari_unet.plugin.runner import Handlers


class ModelFiles:
    """Open, save, load and export, as :class:`~napari_unet.plugin.session.Session` methods."""

    def open_images(self, paths: Iterable[str | Path]) -> list[Image]:
        """Add TIFF images (files, or every TIFF in a folder) as image layers; unreadable files are reported and skipped."""
        return files.open_images(self.viewer, paths, self.notify)

    def save_model(self, path: str | Path) -> Path | None:
        """Write the model (weights, normalisation, classes, history); the file, or None after a notification."""
        if self.is_training:
            self.notify("warning", "Training is running: stop it (or let it finish) before saving the model.")
            return None
        try:
            written = self.segmenter.save(path)
        except (UserInputError, OSError) as exc:
            self.notify("error", f"Could not save the model: {exc}")
            return None
        self.notify("info", f"Saved model to {written}")
        return written

    def load_model(self, path: str | Path) -> bool:
        """Replace the model by the one in ``path``; False after an error notification."""
        if self.is_training:
            self.notify("warning", "Training is running: stop it before loading another model.")
            return False
        try:
            segmenter = Segmenter.load(path, device=resolve_device(self.options.device))
        except UserInputError as exc:  # ModelFileError included
            self.notify("error", str(exc))
            return False
        except OSError as exc:
            self.notify("error", f"Could not read the model file: {exc}")
            return False
        self._set_segmenter(segmenter)
        self.notify("info", f"Loaded model: {self.describe_model()}")
        self.suggest_min_size()
        return True

    def export_labels(self, path: str | Path, which: str = "instances", measurements: bool | None = None) -> list[str]:
        """Write the chosen image's ``"instances"`` or ``"semantic"`` labels as TIFF (see :func:`~napari_unet.plugin.files.export_labels`)."""
        if measurements is None:
            measurements = self.options.export_measurements
        return files.export_labels(self.viewer, self.options.image, path, which, measurements, self.notify)

    def export_bioimageio(self, path: str | Path, test: bool = True) -> bool:
        """Write the model as a bioimage.io package in a background job; True when it started.

        The plane shown of the chosen image (if the model fits it) becomes
        the package's test input and cover; the package is checked with
        bioimageio.core before it is moved into place (``test``).
        """
        if self.is_training:
            self.notify("warning", "Training is running: stop it (or let it finish) before exporting the model.")
            return False
        if self.runner.is_running("export"):
            self.notify("warning", "An export is already running.")
            return False
        if not self.segmenter.is_trained:
            self.notify("error", "No model yet: train one (Train) or load a model file (Load model…) first.")
            return False
        from napari_unet.bioimage_io import export_model

        sample = files.export_sample(self.image_layer(), self.spatial_ndim(), self.segmenter.config.in_channels, self.current_index)
        self.events.export_started.emit()
        self.notify("info", f"Exporting the model to {path} (checked with bioimageio.core; this takes a minute)…")
        handlers = Handlers(returned=self._on_exported, errored=self._on_export_error)
        self.runner.start("export", export_model, snapshot(self.segmenter), str(path), sample=sample, name=Path(path).stem, test=test, handlers=handlers)
        return True

    def _on_exported(self, path: Path) -> None:
        self.notify("info", f"Exported the model to bioimage.io: {path}")
        if not self.closing:
            self.events.export_finished.emit(str(path))

    def _on_export_error(self, exc: Exception) -> None:
        self.report_error("Export to bioimage.io", exc)
        if not self.closing:
            self.events.export_finished.emit("")

    def describe_model(self) -> str:
        """The model in a line: size, classes and training so far."""
        seg = self.segmenter
        if seg.model is None and not seg.history:
            return "none yet (Train creates one)"
        size = f"depth {seg.config.depth}, width {seg.config.width}; " if seg.config else ""
        return f"{size}{describe_model(seg.names(), seg.history)}"
