"""Annotations layers: which image each annotates, what the next training learns from, a new layer to paint.

An annotations layer belongs to an image when it was made for it (New:
``metadata["napari_unet_image"]``) or is called ``"<image> annotations"``.
Training copies only the painted planes of each pair, on the main thread,
so painting can go on while the copy trains.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from napari.layers import Image, Labels

from napari_unet.core.jobs import TrainingSet, painted_planes
from napari_unet.core.stack import painted_indices
from napari_unet.errors import UserInputError
from napari_unet.io.axes import Planes
from napari_unet.plugin.colormaps import annotation_colormap
from napari_unet.plugin.result_layers import IMAGE_KEY, Target, find_layer, is_lazy

#: Suffix of the name of an image's annotations layer.
SUFFIX = " annotations"


def paired_name(viewer: Any, image: str, is_ours: Callable[[Any], bool]) -> str:
    """The annotations layer of ``image``: one made for it by New, else ``"<image> annotations"``."""
    for layer in viewer.layers:
        if isinstance(layer, Labels) and layer.metadata.get(IMAGE_KEY) == image and not is_ours(layer):
            return layer.name
    return f"{image}{SUFFIX}"


def annotation_pairs(viewer: Any, image: Image | None, annotations: Labels | None, is_ours: Callable[[Any], bool]) -> list[tuple[Image, Labels]]:
    """The chosen (image, annotations) pair first, then every other image layer with an annotations layer of its own."""
    pairs: list[tuple[Image, Labels]] = []
    if image is not None and annotations is not None and not is_ours(annotations):
        pairs.append((image, annotations))
    used = {id(layer) for pair in pairs for layer in pair}
    for labels in viewer.layers:
        if not isinstance(labels, Labels) or is_ours(labels) or id(labels) in used:
            continue
        name = labels.metadata.get(IMAGE_KEY)
        if name is None and labels.name.endswith(SUFFIX):
            name = labels.name[: -len(SUFFIX)]
        other = find_layer(viewer, name, Image) if name else None
        if other is not None and id(other) not in used and not is_ours(other):
            pairs.append((other, labels))
            used.update((id(other), id(labels)))
    return pairs


def check_pair(image: Image, annotations: Labels, planes: Planes) -> None:
    """Refuse annotations whose shape is not the image's label shape."""
    if tuple(annotations.data.shape) != tuple(planes.label_shape):
        raise UserInputError(
            f"the annotations '{annotations.name}' have shape {tuple(annotations.data.shape)} but the image "
            f"'{image.name}' needs shape {tuple(planes.label_shape)} (axes '{planes.axes}' without C): they do not match"
        )


def training_set(pairs: list[tuple[Image, Labels]], planes_of: Callable[[Image], Planes], count_only: bool = False, warn: Callable[[str], None] | None = None) -> TrainingSet:
    """The painted planes of each pair (copies; lazy image planes stay lazy until the worker reads them).

    Parameters
    ----------
    pairs : list of (Image, Labels)
        The chosen pair first: its problems raise, the others' are skipped.
    planes_of : callable
        The image layer as :class:`~napari_unet.io.axes.Planes` for the model.
    count_only : bool
        Count the painted planes without copying them (the status line).
    warn : callable, optional
        Told why a further pair is skipped.

    Raises
    ------
    UserInputError
        When the chosen pair does not fit.
    """
    images, labels, sources, origins = [], [], [], []
    for number, (image_layer, annotations_layer) in enumerate(pairs):
        try:
            planes = planes_of(image_layer)
            check_pair(image_layer, annotations_layer, planes)
        except UserInputError as exc:
            if number == 0:
                raise
            if warn is not None:
                warn(f"Not training on '{image_layer.name}': {exc}")
            continue
        indices = painted_indices(planes, annotations_layer.data)
        count = len(indices)
        if count_only:
            images += [None] * count
            labels += [None] * count
        else:
            found, painted = painted_planes(planes, annotations_layer.data, copy_images=not is_lazy(planes.data), indices=indices)
            images += found
            labels += painted
        origins += [(image_layer.name, index) for index in indices]
        if count:
            sources.append((image_layer.name, count))
    return TrainingSet(images, labels, sources, origins)


def add_annotations_layer(viewer: Any, image: Image, target: Target, warn_large: Callable[[str], None] | None = None) -> tuple[Labels, bool]:
    """The image's annotations layer, made empty when missing; returns (layer, existed).

    The layer has the image's label shape, scale and translate, the legend's
    colours, and remembers its image in ``metadata["napari_unet_image"]``;
    ``warn_large`` is told the memory a new layer takes (for large images).
    """
    name = f"{image.name}{SUFFIX}"
    layer = find_layer(viewer, name, Labels)
    if layer is not None and layer.data.shape == target.label_shape:
        # e.g. the sample's strokes: give them the legend's colours.
        layer.colormap = annotation_colormap()
        layer.metadata[IMAGE_KEY] = image.name
        return layer, True
    shape = target.label_shape
    if warn_large is not None:
        warn_large(f"'{image.name}' is large: its annotations layer takes {target.voxels / 2**30:.1f} GB of memory.")
    layer = viewer.add_labels(
        np.zeros(shape, dtype=np.uint8),
        name=name if layer is None else f"{name} {len(viewer.layers)}",
        scale=target.scale,
        translate=target.translate,
        colormap=annotation_colormap(),
        opacity=0.8,
        metadata={IMAGE_KEY: image.name},
    )
    layer.brush_size = max(3, min(shape[-2:]) // 64)
    return layer, False
