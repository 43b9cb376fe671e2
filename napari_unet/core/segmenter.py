"""The engine's front door: a model with its normalisation, classes and history.

The CLI, the napari widget and the benchmarks all go through
:class:`Segmenter`, so they train and predict the same way.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from .checkpoint import load_checkpoint, save_checkpoint
from .device import describe_device, resolve_device
from .errors import ModelFileError, UserInputError
from .inference import TileProgress, iter_predict_tiled
from .model import UNet, UNetConfig, default_config
from .normalize import Normalization, apply_range, fit_normalization, image_range
from .samples import annotations_to_targets, check_annotations
from .training import TrainConfig, TrainProgress, train_model


def as_channels_first(image) -> np.ndarray:
    """View a 2D greyscale image ``(Y, X)`` as ``(1, Y, X)``; pass ``(C, Y, X)`` through."""
    if image.ndim == 2:
        return image[None]
    if image.ndim == 3:
        return image
    raise UserInputError(f"expected a 2D image (Y, X), got shape {tuple(image.shape)}")


def check_image(image) -> None:
    """Refuse images that cannot be used: wrong type, NaNs, empty."""
    if image.dtype.kind not in "uifb":
        raise UserInputError(f"unsupported pixel type {image.dtype}")
    if min(image.shape[-2:]) < 1:
        raise UserInputError(f"image of shape {tuple(image.shape)} is empty")
    if image.dtype.kind == "f" and isinstance(image, np.ndarray) and not np.all(np.isfinite(image)):
        raise UserInputError("the image contains NaN or infinite pixel values")


class Segmenter:
    """A U-Net with everything needed to use it again.

    Parameters
    ----------
    config : UNetConfig, optional
        Architecture; by default chosen for the device at the first training.
    device : str or torch.device
        ``"auto"`` (CUDA, MPS, CPU), or a forced device.
    class_names : list of str, optional
        Names for classes 0..n-1 (0 is background).

    Attributes
    ----------
    history : list of dict
        One entry per reported training step across all runs.
    """

    def __init__(self, config: UNetConfig | None = None, device: str | torch.device = "auto", class_names: Sequence[str] | None = None) -> None:
        self.device = resolve_device(device)
        self.config = config
        self.model: UNet | None = None if config is None else UNet(config).to(self.device).eval()
        self.normalization = Normalization()
        self.class_names = list(class_names) if class_names else None
        self.history: list[dict] = []

    # -- state ---------------------------------------------------------------
    @property
    def is_trained(self) -> bool:
        """True once the model has weights from training or a file."""
        return self.model is not None and bool(self.history or self._loaded)

    _loaded = False

    @property
    def device_label(self) -> str:
        """Human label of the device in use, e.g. ``"CPU (2 threads)"``."""
        return describe_device(self.device)

    def reset(self) -> None:
        """Forget weights and history; the next training starts fresh."""
        self.model = None
        self.config = None
        self.history = []
        self._loaded = False

    def to(self, device: str | torch.device) -> "Segmenter":
        """Move to another device (e.g. after the user changes it)."""
        self.device = resolve_device(device)
        if self.model is not None:
            self.model.to(self.device)
        return self

    def names(self) -> list[str]:
        """Class names, defaulting to background, class 1, class 2, ..."""
        n = self.config.n_classes if self.config else 2
        if self.class_names and len(self.class_names) == n:
            return list(self.class_names)
        return ["background"] + [f"class {i}" for i in range(1, n)]

    # -- training ------------------------------------------------------------
    def train(
        self,
        images: Sequence[np.ndarray] | np.ndarray,
        annotations: Sequence[np.ndarray] | np.ndarray,
        config: TrainConfig | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> Iterator[TrainProgress]:
        """Fine-tune on painted annotations (fresh model if there is none), yielding progress.

        Parameters
        ----------
        images : numpy.ndarray or sequence of them
            2D images (Y, X). Several images train one model.
        annotations : numpy.ndarray or sequence of them
            Matching annotations: 0 unlabeled, 1 background, 2.. classes.
        config : TrainConfig, optional
            Budget and hyper-parameters.
        stop : callable, optional
            Polled between steps; return True to stop (best weights kept).

        Yields
        ------
        TrainProgress

        Raises
        ------
        UserInputError
            For mismatched shapes, no annotations or a single painted class
            (raised when the generator is first advanced).
        """
        config = config or TrainConfig()
        if isinstance(images, np.ndarray) and images.ndim == 2:
            images, annotations = [images], [annotations]
        images = [as_channels_first(np.asarray(im)) for im in images]
        annotations = [np.asarray(a) for a in annotations]
        if len(images) != len(annotations):
            raise UserInputError(f"{len(images)} image(s) but {len(annotations)} annotation layer(s)")
        for im in images:
            check_image(im)
        n_classes = check_annotations(annotations, [im.shape[-2:] for im in images], self.config.n_classes if self.model else None)
        channels = images[0].shape[0]
        if any(im.shape[0] != channels for im in images):
            raise UserInputError("all training images must have the same number of channels")
        if self.model is None:
            self.config = default_config(self.device, channels, n_classes)
            if config.seed is not None:
                torch.manual_seed(config.seed)
            self.model = UNet(self.config).to(self.device)
        elif self.config.in_channels != channels:
            raise UserInputError(f"the model expects {self.config.in_channels} channel(s) but the image has {channels}")
        try:
            self.normalization = fit_normalization(images, self.normalization)
        except ValueError as exc:
            raise UserInputError(f"cannot normalise the image: {exc}") from exc
        normalized = [apply_range(im, *image_range(im, self.normalization)) for im in images]
        targets = [annotations_to_targets(a) for a in annotations]
        run = len({h.get("run", 0) for h in self.history})
        for progress in train_model(self.model, normalized, targets, config, self.device, stop):
            self.history.append(
                {"run": run, "step": progress.step, "loss": progress.loss, "val_loss": progress.val_loss, "val_iou": progress.val_iou, "elapsed": progress.elapsed}
            )
            yield progress

    def fit(self, images, annotations, config: TrainConfig | None = None) -> TrainProgress:
        """Train to the end of the budget and return the last progress report."""
        last = None
        for last in self.train(images, annotations, config):
            pass
        return last

    # -- prediction ----------------------------------------------------------
    def iter_predict(self, image, out=None, tile: int | None = None, overlap: int = 64, batch_size: int | None = None) -> Iterator[TileProgress | np.ndarray]:
        """Predict class probabilities tile by tile, yielding progress, then the result.

        Parameters
        ----------
        image : array-like
            2D image (Y, X) or (C, Y, X); numpy, memmap, dask or zarr.
        out : array-like, optional
            Writable ``(n_classes, Y, X)`` destination (e.g. a memmap or zarr
            array for images larger than memory); float32 numpy by default.
        tile, overlap : int
            Tile side (default 512, 1024 on GPUs) and overlap.
        batch_size : int, optional
            Tiles per forward pass (default 1 on CPU, 4 on GPUs).

        Yields
        ------
        TileProgress, then finally the ``out`` array.
        """
        if self.model is None:
            raise UserInputError("no model yet: train one or load a model file first")
        image = as_channels_first(image)
        check_image(image)
        if image.shape[0] != self.config.in_channels:
            raise UserInputError(f"the model expects {self.config.in_channels} channel(s) but the image has {image.shape[0]}")
        try:
            low, high = image_range(image, self.normalization)
        except ValueError as exc:
            raise UserInputError(f"cannot normalise the image: {exc}") from exc
        gpu = self.device.type != "cpu"
        tile = tile or (1024 if gpu else 512)
        batch_size = batch_size or (4 if gpu else 1)
        if out is None:
            out = np.empty((self.config.n_classes,) + tuple(image.shape[-2:]), dtype=np.float32)
        yield from iter_predict_tiled(self.model, image, low, high, out, self.device, tile, overlap, batch_size)
        yield out

    def predict_probabilities(self, image, **kwargs) -> np.ndarray:
        """Class probabilities ``(n_classes, Y, X)``; see :meth:`iter_predict` for options."""
        for item in self.iter_predict(image, **kwargs):
            pass
        return item

    # -- files ---------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write weights, architecture, normalisation, classes and history to one file."""
        if self.model is None:
            raise UserInputError("no model to save: train one first")
        return save_checkpoint(
            path,
            {
                "state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                "config": self.config.to_dict(),
                "normalization": self.normalization.to_dict(),
                "class_names": self.names(),
                "history": list(self.history),
            },
        )

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "auto") -> "Segmenter":
        """Load a model file written by :meth:`save`.

        Raises
        ------
        ModelFileError
            If the file is not a usable napari-unet model.
        """
        data = load_checkpoint(path)
        try:
            config = UNetConfig.from_dict(data["config"])
            seg = cls(config, device, data.get("class_names"))
            seg.model.load_state_dict(data["state_dict"])
        except (TypeError, ValueError, KeyError, RuntimeError) as exc:
            raise ModelFileError(f"{str(path)!r} does not fit this version's U-Net ({str(exc).splitlines()[0]})") from exc
        seg.model.eval()
        seg.normalization = Normalization.from_dict(data["normalization"])
        seg.history = list(data.get("history", []))
        seg._loaded = True
        return seg
