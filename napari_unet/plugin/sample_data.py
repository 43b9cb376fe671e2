"""napari sample-data contribution: synthetic nuclei with touching pairs.

The arrays are generated in memory from :data:`SAMPLE_PARAMS`, the same
parameters that wrote ``sample_data/*.tif``, so the menu entry works offline
from an installed wheel and matches the bundled files.  napari itself is not
imported: LayerData tuples are plain tuples.
"""

from __future__ import annotations

from typing import Any

from napari_unet.eval.synthetic import SAMPLE_PARAMS, make_nuclei


def make_sample_nuclei() -> list[tuple[Any, dict[str, Any], str]]:
    """Return the synthetic nuclei sample as napari LayerData tuples.

    Returns
    -------
    list of tuple
        ``(image, {"name": "nuclei", ...}, "image")``, the partial
        annotation ``(annotations, {"name": "nuclei annotations"}, "labels")``
        (0 unlabeled, 1 background, 2 nucleus) and the hidden instance ground
        truth ``"nuclei ground truth"``.
    """
    sample = make_nuclei(**SAMPLE_PARAMS)
    return [
        (sample.image, {"name": "nuclei", "colormap": "gray"}, "image"),
        (sample.annotations, {"name": "nuclei annotations"}, "labels"),
        (sample.instances, {"name": "nuclei ground truth", "visible": False}, "labels"),
    ]
