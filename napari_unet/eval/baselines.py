"""Classic baselines every accuracy figure is compared against.

- Otsu threshold + distance-transform watershed (no training at all).
- Local (adaptive) threshold + the same watershed.
- A random forest on multiscale filter features trained on the same strokes
  (what ilastik and APOC do), via ``skimage.future.fit_segmenter``.

All return ``(semantic, instances)`` in the project's conventions and share
:func:`~napari_unet.core.postprocess.split_instances` with the U-Net, so the
comparison isolates the pixel classifier.
"""

from __future__ import annotations

from functools import partial

import numpy as np
from skimage.feature import multiscale_basic_features
from skimage.filters import gaussian, threshold_local, threshold_otsu
from skimage.future import fit_segmenter
from sklearn.ensemble import RandomForestClassifier

from napari_unet.core.postprocess import InstanceParams, instances_from_semantic, semantic_from_probabilities


def _bright_foreground(image: np.ndarray, mask: np.ndarray, annotations: np.ndarray | None) -> np.ndarray:
    """Flip a threshold mask when strokes say objects are the dark side (e.g. EM membranes vs. cells)."""
    if annotations is None or not np.any(annotations == 1) or not np.any(annotations >= 2):
        return mask
    if image[annotations >= 2].mean() < image[annotations == 1].mean():
        return ~mask
    return mask


def otsu_watershed(image: np.ndarray, params: InstanceParams | None = None, annotations: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Global Otsu threshold of the lightly smoothed image, then watershed splitting.

    ``annotations``, if given, only decide whether objects are brighter or
    darker than background.
    """
    params = params or InstanceParams()
    smooth = gaussian(np.asarray(image, dtype=np.float32), 1.0, preserve_range=True)
    mask = _bright_foreground(smooth, smooth > threshold_otsu(smooth), annotations)
    semantic = mask.astype(np.uint8)
    return semantic, instances_from_semantic(semantic, params)


def local_threshold_watershed(image: np.ndarray, params: InstanceParams | None = None, annotations: np.ndarray | None = None, block_size: int = 51) -> tuple[np.ndarray, np.ndarray]:
    """Adaptive (local mean) threshold, then watershed splitting."""
    params = params or InstanceParams()
    smooth = gaussian(np.asarray(image, dtype=np.float32), 1.0, preserve_range=True)
    mask = _bright_foreground(smooth, smooth > threshold_local(smooth, block_size), annotations)
    semantic = mask.astype(np.uint8)
    return semantic, instances_from_semantic(semantic, params)


def random_forest(
    image: np.ndarray, annotations: np.ndarray, params: InstanceParams | None = None, seed: int = 0, predict_on: np.ndarray | None = None, channel_axis: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Random forest on multiscale intensity/edge/texture features from the same strokes.

    Parameters
    ----------
    image : numpy.ndarray
        2D or 3D training image (with a channel axis if ``channel_axis`` is given);
        3D volumes get 3D features.
    annotations : numpy.ndarray
        Strokes in the project's convention (0 unlabeled, 1 background, 2.. classes).
    params : InstanceParams, optional
        Post-processing parameters.
    seed : int
        Forest seed.
    predict_on : numpy.ndarray, optional
        Image to segment (default: the training image).
    channel_axis : int, optional
        Axis of colour channels (e.g. -1 for RGB).
    """
    params = params or InstanceParams()
    features = partial(multiscale_basic_features, intensity=True, edges=True, texture=True, sigma_min=1, sigma_max=16, channel_axis=channel_axis)
    image = np.asarray(image, dtype=np.float32)
    clf = RandomForestClassifier(n_estimators=50, n_jobs=-1, max_depth=10, max_samples=0.05, random_state=seed)
    clf = fit_segmenter(annotations, features(image), clf)
    target = image if predict_on is None else np.asarray(predict_on, dtype=np.float32)
    feats = features(target)
    shape = feats.shape[:-1]
    proba = clf.predict_proba(feats.reshape(-1, feats.shape[-1])).T.reshape((-1,) + shape)
    # fit_segmenter's classes are the annotation values present (1, 2, ...): column 0 is background.
    semantic = semantic_from_probabilities(proba, params.threshold)
    return semantic, instances_from_semantic(semantic, params)
