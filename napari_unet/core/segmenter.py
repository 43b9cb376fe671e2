"""The engine's front door: a model with its normalisation, classes and history.

The CLI, the napari widget and the benchmarks all go through
:class:`Segmenter`, so they train and predict the same way.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_unet.core.checkpoint import load_checkpoint, save_checkpoint
from napari_unet.core.device import describe_device, resolve_device
from napari_unet.core.implied import MIN_OBJECT_SHARE, whole_object_min_size
from napari_unet.core.inference import TileProgress, default_tiling, iter_predict_tiled
from napari_unet.core.live import StrokeFeed
from napari_unet.core.model import UNet, UNetConfig, channel_mismatch, default_config, model_ndim
from napari_unet.core.normalize import Normalization, apply_range, fit_normalization, image_range
from napari_unet.core.postprocess import InstanceParams
from napari_unet.core.samples import annotations_to_targets, check_annotations
from napari_unet.core.training import TrainConfig, TrainProgress, train_model
from napari_unet.errors import ModelFileError, UserInputError


def as_channels_first(image, ndim: int = 2):
    """View a single-channel image ``(*spatial)`` as ``(1, *spatial)``; pass ``(C, *spatial)`` through.

    Parameters
    ----------
    image : array-like
        ``(Y, X)`` or ``(C, Y, X)`` for ``ndim=2``; ``(Z, Y, X)`` or
        ``(C, Z, Y, X)`` for ``ndim=3``.
    ndim : int
        Spatial dimensions the model works on.
    """
    if image.ndim == ndim:
        return image[None]
    if image.ndim == ndim + 1:
        return image
    if ndim == 3:
        raise UserInputError(f"expected a 3D volume (Z, Y, X) or (C, Z, Y, X), got shape {tuple(image.shape)}")
    raise UserInputError(f"expected a 2D image (Y, X) or (C, Y, X), got shape {tuple(image.shape)}")


def check_image(image) -> None:
    """Refuse ``(C, *spatial)`` images that cannot be used: wrong type, NaNs, empty."""
    if image.dtype.kind not in "uifb":
        raise UserInputError(f"unsupported pixel type {image.dtype}")
    if min(image.shape[1:]) < 1:
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
        #: Smallest object the instances keep, learned from objects painted whole (None: the default).
        self.min_object_size: int | None = None
        #: The objects tile the image (the forest's answer on the training images; see InstanceParams.tiled).
        self.tiled = False
        #: Object edges are placed at half contrast (strokes left them untaught; see core/half_contrast.py).
        self.half_contrast = False
        self._loaded = False  # weights came from a file (a loaded model may have no history)

    # -- state ---------------------------------------------------------------
    @property
    def is_trained(self) -> bool:
        """True once the model has weights from training or a file."""
        return self.model is not None and bool(self.history or self._loaded)

    @property
    def device_label(self) -> str:
        """Human label of the device in use, e.g. ``"CPU (2 threads)"``."""
        return describe_device(self.device)

    def reset(self) -> None:
        """Forget weights and history; the next training starts fresh."""
        self.model = None
        self.config = None
        self.history = []
        self.min_object_size = None
        self.tiled = False
        self.half_contrast = False
        self._loaded = False

    def to(self, device: str | torch.device) -> Segmenter:
        """Move to another device (e.g. after the user changes it)."""
        self.device = resolve_device(device)
        if self.model is not None:
            self.model.to(self.device)
        return self

    def instance_params(self, min_size: int | None = None) -> InstanceParams:
        """The default post-processing for this model: :class:`~napari_unet.core.postprocess.InstanceParams`.

        Its minimum object size is raised to :attr:`min_object_size` when the
        model was trained on objects painted whole
        (:func:`~napari_unet.core.implied.whole_object_min_size`);
        ``min_size``, when given, replaces it (the user's own choice). A
        model whose objects tile the image (:attr:`tiled`) seeds every
        mask by its cores.
        """
        params = InstanceParams(tiled=self.tiled)
        if min_size is not None:
            return replace(params, min_size=int(min_size))
        if self.min_object_size is not None and self.min_object_size > params.min_size:
            params = replace(params, min_size=self.min_object_size)
        return params

    def min_object_note(self) -> str | None:
        """What :attr:`min_object_size` does, in words (None when the model has none)."""
        if self.min_object_size is None:
            return None
        return (
            f"instances drop objects under {self.min_object_size} px "
            f"({MIN_OBJECT_SHARE:g} of the median area of the objects painted whole); the model file keeps this size"
        )

    def tiled_note(self) -> str | None:
        """What :attr:`tiled` does, in words (None when the model's objects do not tile the image)."""
        if not self.tiled:
            return None
        return "the objects tile the image (cells between membranes, in the forest's answer on the training images): instances are seeded by each cell's core"

    def half_contrast_note(self) -> str | None:
        """What :attr:`half_contrast` does, in words (None when the model does not use it)."""
        if not self.half_contrast:
            return None
        return (
            "no stroke showed where objects end (no painted background next to a painted object), "
            "so object edges are placed where the contrast falls to half of the object's own peak"
        )

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
        ndim: int = 2,
        strokes: StrokeFeed | None = None,
    ) -> Iterator[TrainProgress]:
        """Fine-tune on painted annotations (fresh model if there is none), yielding progress.

        Parameters
        ----------
        images : numpy.ndarray or sequence of them
            Images ``(Y, X)`` / ``(C, Y, X)`` for a 2D model, volumes
            ``(Z, Y, X)`` / ``(C, Z, Y, X)`` for a 3D one (a single numpy
            array of ``ndim`` dimensions, or ``ndim + 1`` for a 3D model, is
            one image). Several images train one model.
        annotations : numpy.ndarray or sequence of them
            Matching annotations ``(*spatial)``: 0 unlabeled, 1 background,
            2.. classes.
        config : TrainConfig, optional
            Budget and hyper-parameters.
        stop : callable, optional
            Polled between steps; return True to stop (best weights kept).
        ndim : int
            Spatial dimensions (2 or 3) of a fresh model; an existing model
            keeps its own.
        strokes : StrokeFeed, optional
            Strokes painted while this runs, taken in between two steps
            (:mod:`napari_unet.core.live`); images that join through it are
            normalised like the others.

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
        ndim = model_ndim(self.config) if self.model is not None else int(ndim)
        if ndim not in (2, 3):
            raise UserInputError(f"a model works on 2 or 3 spatial dimensions, not {ndim}")
        single = isinstance(annotations, np.ndarray) and annotations.ndim == ndim
        if isinstance(images, np.ndarray) and (images.ndim == ndim or images.ndim == ndim + 1 and single):
            images, annotations = [images], [annotations]
        images = [as_channels_first(np.asarray(im), ndim) for im in images]
        annotations = [np.asarray(a) for a in annotations]
        if len(images) != len(annotations):
            raise UserInputError(f"{len(images)} image(s) but {len(annotations)} annotation layer(s)")
        for im in images:
            check_image(im)
        n_classes = check_annotations(annotations, [im.shape[1:] for im in images], self.config.n_classes if self.model else None)
        channels = images[0].shape[0]
        if any(im.shape[0] != channels for im in images):
            counts = ", ".join(str(im.shape[0]) for im in images)
            raise UserInputError(f"all training images must have the same number of channels (they have {counts})")
        if self.model is None:
            # Only pass ndim for 3D, so 2D works with model.py before and after it learns ndim.
            extra = {"ndim": ndim} if ndim != 2 else {}
            self.config = default_config(self.device, channels, n_classes, **extra)
            if config.seed is not None:
                torch.manual_seed(config.seed)
            self.model = UNet(self.config).to(self.device)
        elif self.config.in_channels != channels:
            raise channel_mismatch(self.config.in_channels, channels)
        try:
            self.normalization = fit_normalization(images, self.normalization)
        except ValueError as exc:
            raise UserInputError(f"cannot normalise the image: {exc}") from exc
        normalized = [apply_range(im, *image_range(im, self.normalization)) for im in images]
        targets = [annotations_to_targets(a) for a in annotations]
        # Objects painted whole say how large objects are (one object class only, as for the rings).
        self.min_object_size = whole_object_min_size(targets) if config.whole_objects and n_classes == 2 else None
        run = len({h.get("run", 0) for h in self.history})
        def normalize(image: np.ndarray) -> np.ndarray:
            return apply_range(image, *image_range(image, self.normalization))

        for progress in train_model(self.model, normalized, targets, config, self.device, stop, strokes, normalize):
            entry = {"run": run, "step": progress.step, "loss": progress.loss, "val_loss": progress.val_loss, "val_iou": progress.val_iou, "elapsed": progress.elapsed}
            if progress.strokes:
                entry["strokes"] = progress.strokes  # a plot marks where strokes painted during the run came in
            self.history.append(entry)
            self.tiled = progress.tiled
            self.half_contrast = progress.half_contrast
            yield progress

    def fit(self, images, annotations, config: TrainConfig | None = None, ndim: int = 2) -> TrainProgress:
        """Train to the end of the budget and return the last progress report (see :meth:`train`)."""
        last = None
        for last in self.train(images, annotations, config, ndim=ndim):
            pass
        return last

    # -- prediction ----------------------------------------------------------
    def iter_predict(
        self, image, out=None, tile: int | None = None, overlap: int | None = None, batch_size: int | None = None, axes: str | None = None
    ) -> Iterator[TileProgress | np.ndarray]:
        """Predict class probabilities tile by tile, yielding progress, then the result.

        Parameters
        ----------
        image : array-like
            ``(*spatial)`` or ``(C, *spatial)`` with the model's spatial
            dimensions (Y, X or Z, Y, X); numpy, memmap, dask, zarr or a
            lazy plane view (:class:`napari_unet.io.axes.Planes`).
        out : array-like, optional
            Writable ``(n_classes, *spatial)`` destination (e.g. a memmap or
            zarr array for images larger than memory); float32 numpy by default.
        tile, overlap : int
            Tile side and overlap; by default 512 / 64 for 2D (1024 on GPUs)
            and 96 / 32 voxels for 3D (160 on GPUs), see
            :func:`~napari_unet.core.inference.default_tiling`.
        batch_size : int, optional
            Tiles per forward pass (default 1 on CPU, 4 on GPUs).
        axes : str, optional
            The source image's axes, named in error messages.

        Yields
        ------
        TileProgress, then finally the ``out`` array.
        """
        if self.model is None:
            raise UserInputError("no model yet: train one or load a model file first")
        image = as_channels_first(image, model_ndim(self.config))
        check_image(image)
        if image.shape[0] != self.config.in_channels:
            raise channel_mismatch(self.config.in_channels, image.shape[0], axes)
        try:
            low, high = image_range(image, self.normalization)
        except ValueError as exc:
            raise UserInputError(f"cannot normalise the image: {exc}") from exc
        gpu = self.device.type != "cpu"
        default_tile, default_overlap = default_tiling(model_ndim(self.config), gpu)
        tile = tile or default_tile
        overlap = default_overlap if overlap is None else overlap
        batch_size = batch_size or (4 if gpu else 1)
        if out is None:
            out = np.empty((self.config.n_classes,) + tuple(image.shape[1:]), dtype=np.float32)
        elif tuple(out.shape) != (self.config.n_classes,) + tuple(image.shape[1:]):
            raise UserInputError(f"the output of shape {tuple(out.shape)} does not fit {self.config.n_classes} classes of an image of shape {tuple(image.shape[1:])}")
        yield from iter_predict_tiled(self.model, image, low, high, out, self.device, tile, overlap, batch_size, half_contrast=self.half_contrast)
        yield out

    def predict_plane(self, image, semantic_out, instances_out, params=None, **kwargs) -> Generator[TileProgress, None, int]:
        """Labels of one plane (or volume) of any size, written block by block into the outputs.

        See :func:`napari_unet.core.blockwise.predict_plane` (``probabilities_out``,
        ``tile``, ``id_offset``, ``block``); yields :class:`TileProgress`
        and returns the largest instance id written.
        """
        from napari_unet.core.blockwise import predict_plane

        return (yield from predict_plane(self, image, semantic_out, instances_out, params or self.instance_params(), **kwargs))

    def predict_stack(self, planes, semantic_out, instances_out, params=None, **kwargs) -> Generator[Any, None, int]:
        """Labels of an N-D image (every plane, or ``indices``) written into label-shaped outputs.

        See :func:`napari_unet.core.stack.iter_predict_stack` (``indices``,
        ``probabilities_out``, ``tile``, ``plane_done``, ``objects_3d``);
        yields :class:`~napari_unet.core.stack.StackProgress` and returns the
        largest instance id written.
        """
        from napari_unet.core.stack import iter_predict_stack

        return (yield from iter_predict_stack(self, planes, semantic_out, instances_out, params or self.instance_params(), **kwargs))

    def predict_probabilities(self, image, **kwargs) -> np.ndarray:
        """Class probabilities ``(n_classes, *spatial)``; see :meth:`iter_predict` for options."""
        for item in self.iter_predict(image, **kwargs):
            pass
        return item

    def segment(self, image, axes: str | None = None, params=None) -> tuple[np.ndarray, np.ndarray]:
        """Semantic labels and instances of an in-memory image, plane by plane where the model is 2D.

        Parameters
        ----------
        image : numpy.ndarray
            ``(Y, X)``, ``(C, Y, X)``, a stack ``(Z|T, Y, X)`` or ``(C, Z|T, Y, X)``
            for a 2D model, a volume for a 3D one.
        axes : str, optional
            Axes of ``image`` (``YX``, ``CYX``, ``ZYX``, ``TYX``, ``CZYX``...).
            Default: ``YX``/``CYX`` as the model's channels say, and for a 3D
            model its volume. ``Z`` makes instances 3D objects (one id per
            object across planes); ``T`` numbers them per frame, ids unique
            over the stack.
        params : InstanceParams, optional
            Post-processing parameters.

        Returns
        -------
        semantic, instances : numpy.ndarray
            Label-shaped (``image`` without its channel axis).
        """
        from napari_unet.core.postprocess import instances_from_semantic, semantic_from_probabilities

        params = params or self.instance_params()
        if self.model is None:
            raise UserInputError("no model yet: train one or load a model file first")
        image = np.asarray(image)
        channels = self.config.in_channels
        ndim = model_ndim(self.config)
        if axes is None:
            spatial = image.ndim - (1 if channels > 1 or image.ndim > ndim + (ndim == 2) else 0)
            axes = ("C" if image.ndim > spatial else "") + ("ZYX" if spatial == 3 else "YX")
        axes = axes.upper()
        if "C" in axes:
            image = np.moveaxis(image, axes.index("C"), 0)
            axes = "C" + axes.replace("C", "")
        stack_axis = next((a for a in axes.replace("C", "")[:-2] if a in "ZT"), None)
        if ndim == 3 or stack_axis is None:
            probs = self.predict_probabilities(image)
        else:
            # A 2D model on a stack: predict plane by plane.
            planes = image if "C" not in axes else np.moveaxis(image, 1, 0)
            probs = np.stack([self.predict_probabilities(p) for p in planes], axis=1)
        semantic = semantic_from_probabilities(probs, params.threshold)
        if stack_axis == "T" and ndim == 2:
            instances = np.zeros(semantic.shape, dtype=np.int32)
            for t in range(semantic.shape[0]):
                objs = instances_from_semantic(semantic[t], params)
                instances[t] = np.where(objs > 0, objs + instances[:t].max(initial=0), 0)
        else:
            instances = instances_from_semantic(semantic, params)
        return semantic, instances

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
                **({"min_object_size": self.min_object_size} if self.min_object_size is not None else {}),
                **({"tiled": True} if self.tiled else {}),
                **({"half_contrast": True} if self.half_contrast else {}),
            },
        )

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "auto") -> Segmenter:
        """Load a model file written by :meth:`save`.

        Raises
        ------
        ModelFileError
            If the file is not a usable napari-unet model.
        """
        data = load_checkpoint(path)  # checks every field (core/checkpoint.py)
        device = resolve_device(device)  # an unavailable device is not the file's fault: its own message
        try:
            config = UNetConfig.from_dict(data["config"])
            seg = cls(config, device, data.get("class_names"))
            seg.model.load_state_dict(data["state_dict"])
        except (TypeError, ValueError, KeyError, RuntimeError) as exc:
            raise ModelFileError(f"{str(path)!r} does not fit this version's U-Net ({str(exc).splitlines()[0]})") from exc
        seg.model.eval()
        seg.normalization = Normalization.from_dict(data["normalization"])
        seg.history = list(data.get("history", []))
        seg.min_object_size = data.get("min_object_size")
        seg.tiled = bool(data.get("tiled", False))
        seg.half_contrast = bool(data.get("half_contrast", False))
        seg._loaded = True
        return seg
