"""Instance splitting on the suite's true masks: the project's split beside the standard seeded watershed.

The accuracy suite scores whole pipelines; this isolates the last step.
Every case of :mod:`benchmarks.suite_data` gives its *true* foreground to

- connected components (no split);
- the standard seeded watershed: seeds from ``peak_local_max`` on the
  distance map smoothed with sigma 1, ``min_distance=4`` (what the issue's
  comparison used, and a common default);
- the project's :func:`~napari_unet.core.postprocess.split_instances` at
  its default strength (seed spacing scaled to the objects' size; where
  cells tile the image, seeds from the mask's cores instead),

and each result is scored against the true instances by instance F1 at
IoU 0.5 where the suite scores (the unpainted region of the ``full``
annotation). No training: deterministic, a few seconds per case.

True masks are cleaner than any prediction: a predicted membrane has gaps
and fragments, a predicted nucleus a ragged outline. So the kinds whose
cells tile the image and the Z stacks (``PREDICTED_KINDS``; the stacks'
seed spacing was chosen on predicted masks) are scored a second time on
*predicted* foreground: scikit-image's random
forest (:func:`napari_unet.eval.baselines.random_forest`) trained on the
suite's full and sparse strokes of each seed.

``python -m benchmarks.bench_split`` (seeds 0,1,2; ``--quick``: seed 0 of
the generated kinds only).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks._common import base_parser, print_tables, results_dir, save_results, start, table, target
from benchmarks.suite_data import KINDS

NAME = "split"
QUICK_KINDS = ("nuclei", "membranes", "stack")
# Kinds also scored on a forest's predicted foreground (cells tiling the image, Z stacks).
PREDICTED_KINDS = ("em", "membranes", "stack", "nuclei3d-real")


def standard_watershed(mask: np.ndarray, min_distance: int = 4) -> np.ndarray:
    """Seeded watershed as commonly written: maxima of the sigma-1 smoothed distance map."""
    from scipy import ndimage as ndi
    from skimage.feature import peak_local_max
    from skimage.measure import label
    from skimage.segmentation import watershed

    distance = ndi.gaussian_filter(ndi.distance_transform_edt(mask), 1.0)
    peaks = peak_local_max(distance, min_distance=min_distance, labels=label(mask), exclude_border=False)
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return watershed(-distance, markers, mask=mask)


def scored_region(case, mode: str | None = None) -> tuple:
    """Index of the scored region (unpainted planes or columns of ``mode``'s strokes, default ``full``)."""
    keep = case.score_mask(mode or ("full" if "full" in case.annotations else next(iter(case.annotations))))
    if case.axes == "ZYX":
        return (np.flatnonzero(keep[:, 0, 0]),)
    return (slice(None), np.flatnonzero(keep[0]))


def main(argv: list[str] | None = None) -> int:
    """Score the three splits on every instance case and save ``split.json``."""
    from skimage.measure import label

    from napari_unet.core.postprocess import InstanceParams, split_instances
    from napari_unet.eval.baselines import random_forest
    from napari_unet.eval.metrics import instance_f1

    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    args = parser.parse_args(argv)
    machine = start(NAME, args)
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    kinds = QUICK_KINDS if args.quick else tuple(KINDS)
    params = InstanceParams()
    methods = {
        "connected components": lambda m: label(m, connectivity=1),
        "standard watershed": standard_watershed,
        "napari-unet split": lambda m: split_instances(m, params.split_strength, params.min_size),
    }

    def scores_of(mask: np.ndarray, truth: np.ndarray, region: tuple) -> dict[str, float]:
        """Instance F1 of each method's split of ``mask`` where the suite scores."""
        return {name: instance_f1(fn(mask)[region], truth[region]).f1 for name, fn in methods.items()}

    def means(groups: dict) -> list[list]:
        """One row per group: its key, its number of cases and each method's mean F1."""
        return [[*(key if isinstance(key, tuple) else (key,)), len(s), *(round(float(np.mean([x[m] for x in s])), 3) for m in methods)] for key, s in groups.items()]

    rows, per_kind = [], {}
    for kind in kinds:
        for seed in seeds:
            case = KINDS[kind](seed)
            if case is None:
                print(f"{kind}: SKIPPED: data not found", flush=True)
                break
            if case.task != "instances":
                break
            region = scored_region(case)
            mask = case.truth > 0
            scores = scores_of(mask, case.truth, region)
            per_kind.setdefault(kind, []).append(scores)
            rows.append([kind, seed, *(round(v, 3) for v in scores.values())])
            print(f"{kind:14s} seed {seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()), flush=True)
    predicted_rows, per_mode = [], {}
    for kind in PREDICTED_KINDS if not args.quick else ("membranes",):
        for seed in seeds:
            case = KINDS[kind](seed)
            if case is None:
                print(f"{kind}: SKIPPED: data not found", flush=True)
                break
            for mode, strokes in case.annotations.items():
                region = scored_region(case, mode)
                semantic, _ = random_forest(case.image.astype(np.float32), strokes, seed=seed)
                scores = scores_of(semantic > 0, case.truth, region)
                per_mode.setdefault((kind, mode), []).append(scores)
                predicted_rows.append([kind, mode, seed, *(round(v, 3) for v in scores.values())])
                print(f"{kind:14s} {mode:6s} seed {seed} (forest's foreground): " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()), flush=True)
    columns = ["kind", "seed", *methods]
    tables = [
        table("Instance F1@0.5 of each split on the true foreground (mean over seeds)", ["kind", "seeds", *methods], means(per_kind)),
        table("Instance F1@0.5 of each split on a random forest's foreground, cells tiling the image and Z stacks (mean over seeds)", ["kind", "strokes", "seeds", *methods], means(per_mode)),
        table("Every case", columns, rows),
        table("Every case, forest's foreground", ["kind", "strokes", "seed", *methods], predicted_rows),
    ]
    worst = min((x["napari-unet split"] - x["standard watershed"] for s in per_kind.values() for x in s), default=float("nan"))
    targets = [target("split on true masks >= standard seeded watershed (every case)", ">= 0", round(worst, 3), bool(worst >= -1e-9))]
    print_tables(tables, targets)
    payload = {"title": "Instance split on true masks", "tables": tables, "targets": targets}
    path = save_results(NAME, payload, results_dir(args), args.quick, machine)
    print(f"\nSaved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
