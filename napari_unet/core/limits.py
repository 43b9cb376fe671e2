"""Bounds on what the engine accepts, checked where user data comes in.

Semantic outputs are uint8 (class 0 background, 1..255 objects), so a model
has at most :data:`MAX_OBJECT_CLASSES` object classes and annotation values
(0 unlabeled, 1 background, 2.. classes) go up to :data:`MAX_ANNOTATION_VALUE`.
Anything larger is almost certainly not annotations at all (an image passed
in their place), and would otherwise ask for a network with that many
outputs.
"""

from __future__ import annotations

import numpy as np

from napari_unet.errors import UserInputError

#: Object classes a model may have (background not counted).
MAX_OBJECT_CLASSES = 255
#: Largest annotation value: 1 is background, 2..256 the object classes.
MAX_ANNOTATION_VALUE = MAX_OBJECT_CLASSES + 1


def check_annotation_values(annotations, where: str = "the annotations") -> int:
    """Refuse annotation values above :data:`MAX_ANNOTATION_VALUE`; return the largest value.

    Parameters
    ----------
    annotations : array-like
        Integer annotations (already checked to be non-negative integers).
    where : str
        What to call them in the message, e.g. a file name.

    Raises
    ------
    UserInputError
        Naming the largest value found and what probably went wrong.
    """
    annotations = np.asarray(annotations)
    top = int(annotations.max()) if annotations.size else 0
    if top > MAX_ANNOTATION_VALUE:
        raise UserInputError(
            f"{where} contain the value {top}, but annotations go up to {MAX_ANNOTATION_VALUE} "
            f"(0 unlabeled, 1 background, 2..{MAX_ANNOTATION_VALUE} for at most {MAX_OBJECT_CLASSES} object classes); "
            "was an image passed as annotations?"
        )
    return top
