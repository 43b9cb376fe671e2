"""Next region: does painting where the widget suggests improve the result faster than painting anywhere?

A scripted user, on the accuracy suite's 2D cases with sparse strokes
(generated nuclei, membranes and RGB classes; seeds 0, 1, 2):

1. trains the U-Net on the sparse strokes for a fixed number of steps
   (repeatable on a busy machine, unlike a time budget);
2. then, for 3 rounds: predicts, paints the truth over one region (every
   pixel of it: 1 background, 2 objects, or the true class), and trains
   again from the current weights for the same number of steps.

Two users start from the same trained model and differ only in where they
paint: **next region** paints the top region of
:func:`~napari_unet.core.suggest.suggest_regions` (what the widget's Next
region button shows: the most uncertain window, painted ones ranked lower);
**random** paints a window of the same grid and size drawn at random among
those at most half painted (the same rule that makes painted windows rank
lower). The random user's draws come from a fixed seed per case.

Scoring, the same for both users: the accuracy suite's score region
(:meth:`Case.score_mask` of the sparse strokes, the columns right of the
strokes) and metric (instance F1 at IoU 0.5; for RGB classes the lower of
macro precision and recall). Both users may paint inside that region, so
it includes pixels a user painted; the figure "unpainted pixel score"
checks this does not decide the result: pixel IoU (foreground, or mean over
classes) on the score region's pixels that *neither* user ever painted.

Target (issue 13): after 3 rounds, next region beats random by >= 0.03 on
average over the cases and seeds.

``python -m benchmarks.bench_next_region`` (30-60 minutes on 2 cores: 7 trainings per case), or
``--quick`` (one case, a few steps, one round; numbers mean nothing).
"""

from __future__ import annotations

import copy
import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks._common import base_parser, print_tables, results_dir, save_results, start, table, target

NAME = "next_region"
TARGET = 0.03
KINDS = ("nuclei", "membranes", "rgb")
STRATEGIES = ("next region", "random")


def paint_region(strokes: np.ndarray, case, region) -> np.ndarray:
    """``strokes`` with every pixel of ``region`` painted with the truth, as the annotations take it."""
    out = strokes.copy()
    window = (slice(region.y0, region.y1), slice(region.x0, region.x1))
    truth = case.truth[window]
    # Classes are already 1 = background, 2.. = classes; instances become 1 background / 2 objects.
    out[window] = truth if case.task == "classes" else np.where(truth > 0, 2, 1)
    return out


def random_region(rng: np.random.Generator, strokes: np.ndarray, like):
    """A window of the suggestion grid, the size of ``like``, drawn among those at most half painted."""
    from napari_unet.core.suggest import Region, window_side

    side = window_side(strokes.shape)
    windows = []
    for y0 in range(0, strokes.shape[0], side):
        for x0 in range(0, strokes.shape[1], side):
            if np.count_nonzero(strokes[y0 : y0 + side, x0 : x0 + side]) <= 0.5 * strokes[y0 : y0 + side, x0 : x0 + side].size:
                windows.append(Region(y0, min(y0 + side, strokes.shape[0]), x0, min(x0 + side, strokes.shape[1]), 0.0))
    return windows[int(rng.integers(len(windows)))] if windows else like


def predict(segmenter, case, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(probabilities, semantic, instances) of the whole image."""
    from napari_unet.core.postprocess import InstanceParams, postprocess

    probs = segmenter.predict_probabilities(image)
    semantic, instances = postprocess(probs, InstanceParams())
    return probs, semantic, instances


def pixel_score(case, semantic: np.ndarray, keep: np.ndarray) -> float:
    """Foreground IoU (objects) or mean class IoU (classes) over the pixels ``keep``."""
    from napari_unet.eval.metrics import class_scores, foreground_iou

    if case.task == "classes":
        return class_scores(semantic[keep] + 1, case.truth[keep])["iou"]
    return foreground_iou(semantic[keep], case.truth[keep])


def run_case(case, steps: int, rounds: int, seed: int) -> dict:
    """Both users on one case: the headline score (and semantic map) after each round."""
    from benchmarks.bench_accuracy import _model_image, headline, score
    from napari_unet.core.postprocess import uncertainty_from_probabilities
    from napari_unet.core.segmenter import Segmenter
    from napari_unet.core.suggest import suggest_regions
    from napari_unet.core.training import TrainConfig

    image = _model_image(case)
    start_strokes = case.annotations["sparse"]
    first = Segmenter(device="cpu")
    first.fit([image], [start_strokes], TrainConfig(steps=steps, seed=seed))
    result = {}
    for strategy in STRATEGIES:
        segmenter, strokes = copy.deepcopy(first), start_strokes.copy()
        rng = np.random.default_rng(1000 + seed)
        scores, semantics, regions = [], [], []
        for r in range(rounds + 1):
            probs, semantic, instances = predict(segmenter, case, image)
            scores.append(headline(case, score(case, "sparse", semantic, instances)))
            semantics.append(semantic)
            if r == rounds:
                break
            suggested = suggest_regions(uncertainty_from_probabilities(probs), strokes)
            region = suggested[0] if strategy == "next region" else random_region(rng, strokes, suggested[0])
            regions.append([region.y0, region.y1, region.x0, region.x1])
            strokes = paint_region(strokes, case, region)
            segmenter.fit([image], [strokes], TrainConfig(steps=steps, seed=seed + 1 + r))
        result[strategy] = {"scores": scores, "regions": regions, "semantics": semantics, "painted": strokes != start_strokes}
    # The check: pixels of the score region that neither user painted.
    keep = case.score_mask("sparse") & ~result["next region"]["painted"] & ~result["random"]["painted"]
    for strategy in STRATEGIES:
        data = result[strategy]
        data["unpainted_pixel_score"] = [pixel_score(case, s, keep) for s in data.pop("semantics")]
        data.pop("painted")
    return result


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; return the stored result."""
    from benchmarks.suite_data import KINDS as CASES

    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--steps", type=int, default=60, help="training steps at first and after each round (default 60)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of painting (default 3)")
    args = parser.parse_args(argv)
    machine = start(NAME, args)
    if args.quick:
        kinds, seeds, steps, rounds = ("nuclei",), [0], 3, 1
    else:
        kinds, seeds, steps, rounds = KINDS, [int(s) for s in args.seeds.split(",")], args.steps, args.rounds
    records = []
    for kind in kinds:
        for seed in seeds:
            case = CASES[kind](seed)
            result = run_case(case, steps, rounds, seed)
            nxt, rnd = result["next region"], result["random"]
            records.append({"kind": kind, "seed": seed, "metric": "min(P,R)" if case.task == "classes" else "F1@0.5", **result})
            print(
                f"{kind:10s} seed {seed}: next region " + " → ".join(f"{v:.3f}" for v in nxt["scores"])
                + "; random " + " → ".join(f"{v:.3f}" for v in rnd["scores"])
                + f"; unpainted pixels {nxt['unpainted_pixel_score'][-1]:.3f} vs {rnd['unpainted_pixel_score'][-1]:.3f}",
                flush=True,
            )
    diffs = [r["next region"]["scores"][-1] - r["random"]["scores"][-1] for r in records]
    pixel_diffs = [r["next region"]["unpainted_pixel_score"][-1] - r["random"]["unpainted_pixel_score"][-1] for r in records]
    per_kind = []
    for kind in kinds:
        recs = [r for r in records if r["kind"] == kind]
        d = [r["next region"]["scores"][-1] - r["random"]["scores"][-1] for r in recs]
        mean = lambda key, i: round(statistics.mean(r[key]["scores"][i] for r in recs), 3)  # noqa: E731
        per_kind.append([kind, recs[0]["metric"], len(recs), mean("next region", 0), mean("next region", -1), mean("random", -1), round(statistics.mean(d), 3), round(min(d), 3), round(max(d), 3)])
    per_kind.append(["all", "", len(records), "", "", "", round(statistics.mean(diffs), 3), round(min(diffs), 3), round(max(diffs), 3)])
    rows = [
        [r["kind"], r["seed"], *(round(v, 3) for v in r["next region"]["scores"]), *(round(v, 3) for v in r["random"]["scores"][1:]),
         round(r["next region"]["unpainted_pixel_score"][-1], 3), round(r["random"]["unpainted_pixel_score"][-1], 3)]
        for r in records
    ]
    rounds_cols = [f"next {i}" if i else "start" for i in range(rounds + 1)] + [f"random {i}" for i in range(1, rounds + 1)]
    tables = [
        table(
            f"Score after {rounds} rounds ({steps} steps at first and after each round; mean over seeds, difference min-max over seeds)",
            ["kind", "metric", "seeds", "start", "next region", "random", "next - random", "min", "max"], per_kind,
        ),
        table("Every case: score after each round (round 0: the sparse strokes), and pixel IoU on the pixels neither user painted",
              ["kind", "seed", *rounds_cols, "unpainted px: next", "unpainted px: random"], rows),
    ]
    mean_diff = statistics.mean(diffs)
    targets = [
        target(f"next region beats random after {rounds} rounds: mean score difference (sparse cases, seeds)", f"≥ {TARGET}", round(mean_diff, 3), mean_diff >= TARGET),
    ]
    print_tables(tables, targets)
    print(f"\nPixel IoU on pixels neither user painted, next - random after {rounds} rounds: mean {statistics.mean(pixel_diffs):+.3f} (min {min(pixel_diffs):+.3f}, max {max(pixel_diffs):+.3f})")
    payload = {
        "title": "Next region against painting at random",
        "steps": steps, "rounds": rounds,
        "tables": tables, "targets": targets, "records": records,
        "pixel_difference": {"mean": statistics.mean(pixel_diffs), "min": min(pixel_diffs), "max": max(pixel_diffs)},
    }
    path = save_results(NAME, payload, results_dir(args), args.quick, machine)
    print(f"\nResults: {path}")
    return payload


if __name__ == "__main__":
    main()
