"""Autocontext: fit the model's forest, then give the U-Net honest forest inputs.

The U-Net sees the image's filter features *and* the forest's class
probabilities, and its output is a correction added to the forest's
log-probabilities (:class:`~napari_unet.core.model.UNet`). For it to learn
where the forest goes wrong, the forest probabilities it trains on must be
as wrong as they will be on unpainted pixels. A forest evaluated on the
pixels it was fitted on is nearly always right there, so on painted pixels
the training input comes from forests fitted *without* those pixels
(cross-fitting: painted pixels are split into folds by spatial block, one
forest per fold is fitted on the other folds). Unpainted pixels, which only
give context, get the forest fitted on everything, which is also the forest
stored in the model and used at prediction.

Blocks rather than single pixels go to a fold because neighbouring pixels of
one stroke are nearly identical: a forest that saw the neighbour would be
as confident as an in-sample one.
"""

from __future__ import annotations

import numpy as np
import torch

from napari_unet.core.forest import Forest, fit_forest

FOLDS = 3
# Trees of each cross-fitting forest: their probabilities only need to be
# as wrong as the full forest's on unseen pixels, not as smooth; fewer trees
# keep the three extra fits to about a second.
FOLD_TREES = 20
# Side of the blocks assigned to folds (pixels; Z blocks in 3D are as deep as
# the volume's painted planes usually are apart, so whole planes go together).
FOLD_BLOCK = 32


def image_features(model, image: np.ndarray, device: torch.device) -> np.ndarray:
    """Filter-bank features ``(F, *spatial)`` of one normalised image ``(C, *spatial)``."""
    with torch.inference_mode():
        x = torch.as_tensor(image, device=device)[None]
        return model.features(x)[0].float().cpu().numpy()


def forest_probabilities(model, features: np.ndarray, device: torch.device) -> np.ndarray:
    """The model's forest's class probabilities ``(n_classes, *spatial)`` from features ``(F, *spatial)``.

    Honest only on pixels the forest was not fitted on (unpainted ones, or
    strokes painted after the fit).
    """
    with torch.inference_mode():
        return model.forest(torch.as_tensor(features[None], device=device))[0].cpu().numpy()


def _folds(target: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Fold index (0..FOLDS-1) of each labelled pixel, by spatial block; -1 elsewhere."""
    labelled = target >= 0
    coords = np.nonzero(labelled)
    block = [1 if (target.ndim == 3 and i == 0) else FOLD_BLOCK for i in range(target.ndim)]
    grid = tuple((n + b - 1) // b for n, b in zip(target.shape, block))
    ids = np.ravel_multi_index(tuple(c // b for c, b in zip(coords, block)), grid)
    blocks = np.unique(ids)
    fold_of = dict(zip(blocks.tolist(), rng.permutation(len(blocks)) % FOLDS))
    folds = np.full(target.shape, -1, dtype=np.int8)
    folds[coords] = np.fromiter((fold_of[i] for i in ids.tolist()), dtype=np.int8, count=len(ids))
    return folds


def _predict_pixels(packed: dict, features: np.ndarray, n_classes: int) -> np.ndarray:
    """Forest probabilities ``(N, n_classes)`` of pixel features ``(N, F)``."""
    forest = Forest(n_classes)
    forest.set(packed)
    with torch.inference_mode():
        x = torch.as_tensor(features.T[None])  # (1, F, N): pixels as one spatial axis
        return forest(x)[0].T.numpy()


def add_forest_inputs(
    model, images: list[np.ndarray], feats: list[np.ndarray], targets: list[np.ndarray], device: torch.device, seed: int | None
) -> list[np.ndarray]:
    """Fit ``model.forest`` on all painted pixels and append forest probabilities to each image.

    Parameters
    ----------
    model : UNet
        A model with a forest (``model.forest`` not None); its forest is replaced.
    images : list of numpy.ndarray
        Normalised images ``(C, *spatial)``.
    feats : list of numpy.ndarray
        Their filter-bank features (:func:`image_features`).
    targets : list of numpy.ndarray
        Targets ``(*spatial)``, -1 unlabeled.
    device : torch.device
        Where features are computed.
    seed : int or None
        Makes folds and forests repeatable.

    Returns
    -------
    list of numpy.ndarray
        ``(C + n_classes, *spatial)`` float32 per image: the image, then the
        forest's class probabilities (out-of-fold on painted pixels).
    """
    n_classes = model.config.n_classes
    rng = np.random.default_rng(seed)
    forest_seed = int(rng.integers(2**31)) if seed is not None else None
    folds = [_folds(target, rng) for target in targets]
    # Labelled pixels of all images, in one table.
    xs, ys, fs = [], [], []
    for f, t, fold in zip(feats, targets, folds):
        mask = t >= 0
        xs.append(f[:, mask].T)
        ys.append(t[mask].astype(np.int64))
        fs.append(fold[mask])
    x_all, y_all, fold_all = np.concatenate(xs), np.concatenate(ys), np.concatenate(fs)
    packed = fit_forest(x_all, y_all, n_classes, forest_seed)
    model.forest.set(packed)
    oof = np.empty((len(y_all), n_classes), dtype=np.float32)
    present = np.unique(fold_all)
    for k in present:
        held = fold_all == k
        if len(present) == 1:
            # One block painted: nothing to hold out, in-sample is all there is.
            oof[held] = _predict_pixels(packed, x_all[held], n_classes)
            continue
        fold_forest = fit_forest(x_all[~held], y_all[~held], n_classes, forest_seed, n_trees=FOLD_TREES)
        oof[held] = _predict_pixels(fold_forest, x_all[held], n_classes)
    out, offset = [], 0
    for image, f, t in zip(images, feats, targets):
        probs = forest_probabilities(model, f, device)
        mask = t >= 0
        n = int(mask.sum())
        probs[:, mask] = oof[offset : offset + n].T
        offset += n
        out.append(np.concatenate([image.astype(np.float32), probs], axis=0))
    return out
