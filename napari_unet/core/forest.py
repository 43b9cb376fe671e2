"""A random forest on the filter-bank features, stored as tensors inside the model.

Why a forest in a U-Net plugin: from a few strokes, a random forest on
multiscale filter features (ilastik, napari-convpaint, scikit-image's
``fit_segmenter``) gives a good pixel classifier in about a second, while a
U-Net needs many steps to learn the same from scratch. The model therefore
starts from the forest's answer and learns a correction on top of it
(autocontext, see :mod:`napari_unet.core.autocontext`): at step 0 the
prediction *is* the forest's.

The forest is fitted with scikit-learn and then packed into plain arrays
(split feature, threshold, children, leaf class distributions), so that

- a model file holds tensors only and loads with ``torch.load(...,
  weights_only=True)`` (no pickle, no code runs on load);
- prediction runs in PyTorch on the same device as the U-Net, tile by tile,
  on features computed by the same :class:`~napari_unet.core.filters.FilterBank`
  that feeds the U-Net (so tiled and untiled prediction agree, in 2D and 3D);
- the whole model traces as one ``nn.Module`` (TorchScript export).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import nn

# Trees and depth of scikit-image's classic random-forest segmenter (the
# baseline every figure is compared with): enough to match it, small enough
# to fit in about a second on two cores and to evaluate on a GPU or CPU in
# a fraction of the U-Net's own cost.
N_TREES = 50
MAX_DEPTH = 10
# Each tree sees a bootstrap of this share of the labelled pixels, at least
# MIN_SAMPLES of them (a few strokes still give trees with more than a
# handful of samples) and at most MAX_SAMPLES.
# The baseline's 5 % left the forest-first model's first answer on fully
# painted regions (49k-131k pixels) as unsteady as the baseline's own. A
# fifth, capped at 10,000, measured as instance F1 (classes: min of macro
# precision and recall) on the suite's unpainted regions after 1 training
# step, mean over 6 seeds x training seeds 0-2, full masks: generated
# nuclei 0.718 -> 0.745 (seed 3 0.538 -> 0.642), 3D stacks 0.974 -> 0.981,
# EM 0.601 -> 0.607, membranes 0.980 -> 0.983, RGB 0.977 -> 0.979 (the
# real 3D nuclei, 3 runs: 0.843 -> 0.869); no seed lower by more than
# 0.001. After 60 s the suite's figures moved both ways (README). A cap
# of 20,000 scored the same, slower. On 2 CPU cores the forest and its
# three cross-fitting forests (each on two thirds) take 1.8 s instead of
# 0.8 s for 49k pixels, 2.1 s instead of 1.2 s for 131k, and 3.1-9.3 s
# instead of 9.1-14.7 s for 786k (where 5 % drew more than the cap).
# The floor was 2,000 until sparse strokes were measured the same way
# (1,100-2,700 painted pixels, so every tree drew nearly all of them: the
# trees were alike and fitted the strokes' own pixels): a fifth instead,
# first answer minus scikit-image's forest on the same strokes, sparse
# strokes, 6 seeds x training seeds 0/100/200 (18 runs; membranes 6):
# EM mean -0.062 -> +0.026, worst -0.214 -> -0.086 (12 runs up by more
# than 0.03, 2 down); generated nuclei +0.028 -> +0.039, worst -0.091 ->
# 0.000; membranes +0.001 -> +0.005; RGB +0.012 -> +0.011 (no run down by
# more than 0.011). scikit-image's 5 % scored between the two on EM.
SAMPLE_SHARE = 0.2
MIN_SAMPLES = 200
MAX_SAMPLES = 10000
# A leaf's threshold: every finite feature is below it, so the walk stays put.
# Finite (not inf) because model files are checked for non-finite weights.
LEAF_THRESHOLD = float(np.finfo(np.float32).max)
# Fewest pixels per block of the CPU tree walk: smaller blocks cost more in
# thread hand-offs than they gain.
_MIN_BLOCK = 16384


def samples_per_tree(n: int) -> int:
    """Labelled pixels each tree's bootstrap draws from ``n`` (see :data:`SAMPLE_SHARE`)."""
    return min(n, max(MIN_SAMPLES, min(int(SAMPLE_SHARE * n), MAX_SAMPLES)))


def fit_forest(features: np.ndarray, labels: np.ndarray, n_classes: int, seed: int | None = 0, n_jobs: int | None = None, n_trees: int = N_TREES):
    """Fit a random forest on labelled pixels.

    Parameters
    ----------
    features : numpy.ndarray
        ``(N, F)`` float32 features of labelled pixels.
    labels : numpy.ndarray
        ``(N,)`` class indices in ``0..n_classes-1``.
    n_classes : int
        Number of classes of the model (classes without pixels get
        probability 0 everywhere).
    seed : int or None
        Random state (repeatable fits).
    n_jobs : int, optional
        Worker threads (default: all cores, as the fit is short).
    n_trees : int
        Trees in the forest.

    Returns
    -------
    dict of numpy.ndarray
        The packed forest (see :func:`pack_forest`).
    """
    from sklearn.ensemble import RandomForestClassifier

    n = len(labels)
    samples = samples_per_tree(n)
    clf = RandomForestClassifier(
        n_estimators=n_trees,
        max_depth=MAX_DEPTH,
        max_samples=samples if samples < n else None,
        bootstrap=True,
        n_jobs=n_jobs if n_jobs is not None else -1,
        random_state=seed,
    )
    clf.fit(np.asarray(features, dtype=np.float32), np.asarray(labels))
    return pack_forest(clf, n_classes)


def pack_forest(clf, n_classes: int) -> dict[str, np.ndarray]:
    """Pack a fitted scikit-learn forest into fixed-size arrays.

    Leaves become self-loops (threshold :data:`LEAF_THRESHOLD`, both children the leaf
    itself), so every tree is walked for exactly ``MAX_DEPTH`` steps with no
    branching, which vectorises on any device.

    Returns
    -------
    dict
        ``feature`` (T, M) int64, ``threshold`` (T, M) float32, ``left`` and
        ``right`` (T, M) int64, ``value`` (T, M, n_classes) float32 class
        distributions, ``depth`` () int64.
    """
    trees = [est.tree_ for est in clf.estimators_]
    nodes = max(t.node_count for t in trees)
    depth = max(int(t.max_depth) for t in trees)
    t_count = len(trees)
    feature = np.zeros((t_count, nodes), dtype=np.int64)
    threshold = np.full((t_count, nodes), LEAF_THRESHOLD, dtype=np.float32)
    idx = np.arange(nodes, dtype=np.int64)
    left = np.tile(idx, (t_count, 1))
    right = left.copy()
    value = np.zeros((t_count, nodes, n_classes), dtype=np.float32)
    classes = np.asarray(clf.classes_, dtype=np.int64)
    for i, tree in enumerate(trees):
        m = tree.node_count
        inner = tree.children_left[:m] >= 0
        feature[i, :m] = np.where(inner, tree.feature[:m], 0)
        threshold[i, :m] = np.where(inner, tree.threshold[:m], LEAF_THRESHOLD).astype(np.float32)
        left[i, :m] = np.where(inner, tree.children_left[:m], np.arange(m))
        right[i, :m] = np.where(inner, tree.children_right[:m], np.arange(m))
        v = tree.value[:m, 0, :].astype(np.float64)
        v /= np.maximum(v.sum(1, keepdims=True), 1e-12)
        value[i, :m][:, classes] = v.astype(np.float32)
    counts = np.asarray([t.node_count for t in trees], dtype=np.int64)
    return {"feature": feature, "threshold": threshold, "left": left, "right": right, "value": value, "depth": np.asarray(depth, dtype=np.int64), "node_count": counts}


def _sklearn_trees(packed: dict[str, np.ndarray]) -> list:
    """scikit-learn ``Tree`` objects rebuilt from packed arrays (no pickle involved).

    scikit-learn's compiled tree walk is several times faster on a CPU than
    any tensor formulation, so CPU prediction uses it; the arrays stay the
    only thing stored.
    """
    from sklearn.tree._tree import NODE_DTYPE, Tree

    trees = []
    n_features = int(packed["feature"].max()) + 1 if packed["feature"].size else 1
    n_classes = packed["value"].shape[-1]
    for i, m in enumerate(packed["node_count"].tolist()):
        nodes = np.zeros(m, dtype=NODE_DTYPE)
        own = np.arange(m)
        leaf = packed["left"][i, :m] == own
        nodes["left_child"] = np.where(leaf, -1, packed["left"][i, :m])
        nodes["right_child"] = np.where(leaf, -1, packed["right"][i, :m])
        nodes["feature"] = np.where(leaf, -2, packed["feature"][i, :m])
        nodes["threshold"] = np.where(leaf, -2.0, packed["threshold"][i, :m].astype(np.float64))
        nodes["n_node_samples"] = 1
        nodes["weighted_n_node_samples"] = 1.0
        tree = Tree(max(n_features, 1), np.array([n_classes], dtype=np.intp), 1)
        values = packed["value"][i, :m].astype(np.float64)[:, None, :]
        tree.__setstate__({"max_depth": int(packed["depth"]), "node_count": m, "nodes": nodes, "values": np.ascontiguousarray(values)})
        trees.append(tree)
    return trees


class Forest(nn.Module):
    """A packed random forest evaluated per pixel on feature maps.

    Empty (unfitted) until :meth:`set` is called; an empty forest predicts a
    uniform distribution. Its buffers are part of the model's ``state_dict``
    and take whatever size a loaded file has.

    Parameters
    ----------
    n_classes : int
        Classes of the model.
    """

    _KEYS = ("feature", "threshold", "left", "right", "value", "depth", "node_count")

    def __init__(self, n_classes: int) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.register_buffer("feature", torch.zeros((0, 1), dtype=torch.int64))
        self.register_buffer("threshold", torch.zeros((0, 1), dtype=torch.float32))
        self.register_buffer("left", torch.zeros((0, 1), dtype=torch.int64))
        self.register_buffer("right", torch.zeros((0, 1), dtype=torch.int64))
        self.register_buffer("value", torch.zeros((0, 1, n_classes), dtype=torch.float32))
        self.register_buffer("depth", torch.zeros((), dtype=torch.int64))
        self.register_buffer("node_count", torch.zeros((0,), dtype=torch.int64))
        self._cpu_trees: list | None = None

    @property
    def fitted(self) -> bool:
        """True once the forest holds trees."""
        return self.feature.shape[0] > 0

    def set(self, packed: dict[str, np.ndarray]) -> None:
        """Replace the trees by a packed forest (from :func:`fit_forest`)."""
        device = self.feature.device
        for key in self._KEYS:
            setattr(self, key, torch.as_tensor(packed[key]).to(device))
        self._cpu_trees = None

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs) -> None:
        # The trees' sizes depend on the fit: take the file's shapes instead
        # of refusing them as a mismatch.
        for key in self._KEYS:
            if prefix + key in state_dict:
                setattr(self, key, torch.empty_like(state_dict[prefix + key], device=self.feature.device))
        self._cpu_trees = None
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)

    def _predict_cpu(self, x: torch.Tensor) -> torch.Tensor:
        """Probabilities ``(P, n_classes)`` of pixels ``(P, F)`` through scikit-learn's tree walk.

        The pixels are cut into blocks walked on torch's CPU threads at once:
        scikit-learn's ``Tree.apply`` releases the GIL, and a single-threaded
        walk was a quarter of a prediction's time while the U-Net used every
        core (a 576² tile: 0.30 s before, 0.11 s on 2 threads). Each pixel's
        sum runs over the trees in the same order whatever the blocks, so the
        result does not depend on the thread count.
        """
        if self._cpu_trees is None:
            packed = {k: getattr(self, k).cpu().numpy() for k in self._KEYS}
            values = self.value.detach().cpu().float()
            self._cpu_trees = [(tree, values[i, : tree.node_count].contiguous()) for i, tree in enumerate(_sklearn_trees(packed))]
        xs = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        trees = self._cpu_trees

        def walk(block: np.ndarray) -> torch.Tensor:
            # index_select, not numpy fancy indexing: it releases the GIL
            # and was twice as fast on the leaf look-up.
            total = torch.zeros((len(block), self.n_classes))
            for tree, value in trees:
                total += value.index_select(0, torch.from_numpy(tree.apply(block)))
            return total

        threads = max(1, torch.get_num_threads())
        blocks = np.array_split(xs, max(1, min(threads * 4, len(xs) // _MIN_BLOCK)))
        if threads == 1 or len(blocks) == 1:
            parts = [walk(b) for b in blocks]
        else:
            with ThreadPoolExecutor(threads) as pool:
                parts = list(pool.map(walk, blocks))
        return torch.cat(parts) / len(trees)

    def forward(self, features: torch.Tensor, trees_per_chunk: int = 10) -> torch.Tensor:
        """Class probabilities ``(N, n_classes, *spatial)`` of features ``(N, F, *spatial)``."""
        n, f = features.shape[:2]
        spatial = features.shape[2:]
        if not self.fitted:
            return features.new_full((n, self.n_classes, *spatial), 1.0 / self.n_classes)
        if features.device.type == "cpu" and not torch.jit.is_tracing() and not torch.jit.is_scripting():
            probs = self._predict_cpu(features.float().movedim(1, -1).reshape(-1, f))
            return probs.reshape(n, *spatial, self.n_classes).movedim(-1, 1).to(features.device)
        return self.tensor_walk(features, trees_per_chunk)

    def tensor_walk(self, features: torch.Tensor, trees_per_chunk: int = 10) -> torch.Tensor:
        """:meth:`forward` as tensor operations only (GPUs, TorchScript); same result as the CPU path."""
        n, f = features.shape[:2]
        spatial = features.shape[2:]
        # (F, P): one column per pixel, so one gather reads each pixel's split feature.
        x = features.float().movedim(1, 0).reshape(f, -1)
        p = x.shape[1]
        total = x.new_zeros((p, self.n_classes))
        t_count = self.feature.shape[0]
        depth = int(self.depth)
        for t0 in range(0, t_count, trees_per_chunk):
            sl = slice(t0, min(t0 + trees_per_chunk, t_count))
            feat, thr, left, right = self.feature[sl], self.threshold[sl], self.left[sl], self.right[sl]
            node = torch.zeros((feat.shape[0], p), dtype=torch.int64, device=x.device)
            for _ in range(depth):
                xv = x.gather(0, feat.gather(1, node))
                node = torch.where(xv <= thr.gather(1, node), left.gather(1, node), right.gather(1, node))
            for k in range(feat.shape[0]):
                total += self.value[t0 + k][node[k]]
        probs = total / t_count
        return probs.T.reshape(self.n_classes, n, *spatial).movedim(0, 1)
