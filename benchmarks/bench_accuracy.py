"""The accuracy suite: napari-unet beside a random forest and Otsu, on many kinds of data.

For every case of :mod:`benchmarks.suite_data` (generated kinds with random
statistics per seed, plus the real EM and 3D nuclei data when present), each
annotation mode (``full``: a region fully painted; ``sparse``: a few strokes
as a person paints), the same strokes train

- napari-unet for 10 s and for 60 s of wall time (separate runs: the
  learning-rate schedule spans the budget), with the engine's defaults, as
  the CLI and widget use them;
- a random forest on multiscale filter features (scikit-image
  ``fit_segmenter``, 50 trees; 3D features for volumes), the classic peer;
- Otsu's threshold (no training).

All three share the project's post-processing (semantic labels, then
instances by the default seeded watershed; 3D objects for ZYX stacks).
Scores are taken where nothing was painted (right of the painted columns;
for stacks, the unpainted planes): instance F1 at IoU 0.5 and foreground IoU
for objects, macro precision / recall and mean IoU for multi-class images.
Each row is one (kind, mode) over seeds, as mean and spread (min-max).

``python -m benchmarks.bench_accuracy`` (about an hour on 2 cores);
``--quick`` (nuclei and RGB, one seed, budgets "2 and 4 s" run as 4 and 8
steps: a smoke test, numbers mean nothing);
``--kinds nuclei,rgb`` and ``--seeds 0,1`` pick cases; ``--steps-per-second``
turns time budgets into step budgets (repeatable on a busy machine).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks._common import base_parser, print_tables, results_dir, save_results, start, table, target
from benchmarks.suite_data import KINDS, Case

NAME = "accuracy"
BUDGETS = (10.0, 60.0)
QUICK_BUDGETS = (2.0, 4.0)
# Quick runs: two generated kinds, one seed (checks the pipeline, not the method).
QUICK_KINDS = "nuclei,rgb"
# Quick runs train for step budgets (2 steps per budget second), not wall
# time: on a slow or busy machine a 4 s budget went entirely to the forest's
# fit, and a smoke test that trains no step checks nothing.
QUICK_STEPS_PER_SECOND = 2.0


# -- scoring ------------------------------------------------------------------
def score(case: Case, mode: str, semantic: np.ndarray, instances: np.ndarray) -> dict[str, float]:
    """Scores of one prediction on the case's unpainted region."""
    from napari_unet.eval.metrics import class_scores, foreground_iou, instance_f1

    keep = case.score_mask(mode)
    if case.task == "classes":
        # Semantic 0 = background = truth class 1.
        return class_scores(semantic[keep] + 1, case.truth[keep])
    if case.axes == "ZYX":
        planes = np.flatnonzero(keep[:, 0, 0])
        pred, truth, sem = instances[planes], case.truth[planes], semantic[planes]
    else:
        cols = np.flatnonzero(keep[0])
        pred, truth, sem = instances[:, cols], case.truth[:, cols], semantic[:, cols]
    s = instance_f1(pred, truth, 0.5)
    return {"f1": s.f1, "iou": foreground_iou(sem, truth), "precision": s.precision, "recall": s.recall, "n_pred": s.n_pred, "n_true": s.n_true}


def headline(case: Case, scores: dict[str, float]) -> float:
    """The one figure a target is judged on: F1 for objects, the lower of macro precision and recall for classes."""
    return min(scores["precision"], scores["recall"]) if case.task == "classes" else scores["f1"]


# -- methods ------------------------------------------------------------------
def _model_image(case: Case) -> np.ndarray:
    """The image as the engine takes it: channels first for RGB."""
    return np.moveaxis(case.image, -1, 0) if case.axes == "YXC" else case.image


def run_unet(case: Case, mode: str, budget: float, seed: int, steps_per_second: float | None = None) -> dict:
    """Train the engine's default model on the case's strokes for ``budget`` seconds and score it."""
    from napari_unet.core.segmenter import Segmenter
    from napari_unet.core.training import TrainConfig

    ann = case.annotations[mode]
    image = _model_image(case)
    seg = Segmenter(device="cpu")
    # "whole": the sparse strokes, with the user saying objects were painted whole.
    whole = mode == "whole"
    if steps_per_second:
        config = TrainConfig(steps=max(1, round(steps_per_second * budget)), seed=seed, whole_objects=whole)
    else:
        config = TrainConfig(steps=None, max_time=budget, seed=seed, whole_objects=whole)
    t0 = time.perf_counter()
    if case.axes == "ZYX":
        # The default for a Z stack: a 3D model on the whole volume.
        last = seg.fit(image, ann, config, ndim=3)
    else:
        last = seg.fit(image, ann, config)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    semantic, instances = seg.segment(image, axes=case.axes.replace("C", "") if case.axes != "YXC" else "CYX")
    predict_s = time.perf_counter() - t0
    out = score(case, mode, semantic, instances)
    out.update(steps=last.step, best_step=last.best_step, train_s=round(train_s, 1), predict_s=round(predict_s, 1))
    return out


def run_forest(case: Case, mode: str, seed: int) -> dict:
    """scikit-image's random-forest segmenter on the same strokes (3D features for stacks)."""
    from napari_unet.eval.baselines import random_forest

    t0 = time.perf_counter()
    semantic, instances = random_forest(case.image.astype(np.float32), case.annotations[mode], seed=seed, channel_axis=-1 if case.axes == "YXC" else None)
    out = score(case, mode, semantic, instances)
    out["train_s"] = round(time.perf_counter() - t0, 1)
    return out


def run_otsu(case: Case, mode: str) -> dict | None:
    """Otsu threshold + the same watershed (objects only)."""
    from napari_unet.eval.baselines import otsu_watershed

    if case.task == "classes":
        return None
    semantic, instances = otsu_watershed(case.image, annotations=case.annotations[mode])
    return score(case, mode, semantic, instances)


# -- the run ------------------------------------------------------------------
def _spread(values: list[float]) -> str:
    v = np.asarray(values, dtype=float)
    if len(v) == 1:
        return f"{v[0]:.3f}"
    return f"{v.mean():.3f} ({v.min():.2f}-{v.max():.2f})"


def summarise(records: list[dict], budgets: tuple[float, ...]) -> tuple[list[dict], list[dict]]:
    """Tables (mean and spread over seeds per kind and mode) and target checks."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        groups.setdefault((r["kind"], r["mode"]), []).append(r)
    lo, hi = budgets
    rows, targets = [], []
    for (kind, mode), recs in groups.items():
        metric = "min(P,R)" if recs[0]["task"] == "classes" else "F1@0.5"
        u_lo = [r[f"unet_{lo:g}s"]["headline"] for r in recs]
        u_hi = [r[f"unet_{hi:g}s"]["headline"] for r in recs]
        rf = [r["forest"]["headline"] for r in recs]
        ot = [r["otsu"]["headline"] for r in recs if r.get("otsu")]
        u_iou = [r[f"unet_{hi:g}s"]["iou"] for r in recs]
        rf_iou = [r["forest"]["iou"] for r in recs]
        gap_hi = float(np.mean(np.subtract(u_hi, rf)))
        rows.append([kind, mode, len(recs), metric, _spread(u_lo), _spread(u_hi), _spread(rf), _spread(ot) if ot else "-", f"{gap_hi:+.3f}", _spread(u_iou), _spread(rf_iou)])
        worst_lo = min(a - b for a, b in zip(u_lo, rf))
        targets.append(target(f"{kind}/{mode}: U-Net {lo:g} s >= forest (every seed)", ">= 0", round(worst_lo, 3), bool(worst_lo >= -1e-9)))
        goal_hi = all(a >= min(b + 0.05, 0.95) - 1e-9 for a, b in zip(u_hi, rf))
        targets.append(target(f"{kind}/{mode}: U-Net {hi:g} s >= forest + 0.05 or 0.95 (every seed)", "met on every seed", round(gap_hi, 3), goal_hi))
    columns = ["kind", "strokes", "seeds", "metric", f"U-Net {lo:g} s", f"U-Net {hi:g} s", "random forest", "Otsu", f"U-Net {hi:g} s - forest", f"U-Net {hi:g} s IoU", "forest IoU"]
    tables = [table("Accuracy suite: mean (min-max) over seeds, scored where nothing was painted", columns, rows)]
    per_case = []
    for r in records:
        per_case.append([r["kind"], r["mode"], r["seed"], r["info"], round(r[f"unet_{lo:g}s"]["headline"], 3), round(r[f"unet_{hi:g}s"]["headline"], 3), round(r["forest"]["headline"], 3),
                         round(r["otsu"]["headline"], 3) if r.get("otsu") else "-", r[f"unet_{hi:g}s"]["steps"], r[f"unet_{hi:g}s"]["best_step"]])
    tables.append(table("Every case", ["kind", "strokes", "seed", "statistics", f"U-Net {lo:g} s", f"U-Net {hi:g} s", "forest", "Otsu", "steps", "best step"], per_case))
    return tables, targets


def main(argv: list[str] | None = None) -> int:
    """Run the suite and save ``accuracy.json``."""
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--kinds", default=None, help=f"comma-separated subset of {','.join(KINDS)} (default all; {QUICK_KINDS} with --quick)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--modes", default="full,sparse,whole", help="annotation modes (full,sparse,whole: sparse strokes declared as whole objects)")
    parser.add_argument("--steps-per-second", type=float, default=None, help="step budgets instead of wall time (repeatable under load)")
    args = parser.parse_args(argv)
    machine = start(NAME, args)
    budgets = QUICK_BUDGETS if args.quick else BUDGETS
    steps_per_second = args.steps_per_second or (QUICK_STEPS_PER_SECOND if args.quick else None)
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    kinds = [k.strip() for k in (args.kinds or (QUICK_KINDS if args.quick else ",".join(KINDS))).split(",") if k.strip()]
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        parser.error(f"unknown kind(s): {', '.join(unknown)}")
    modes = [m.strip() for m in args.modes.split(",")]
    records = []
    for kind in kinds:
        for seed in seeds:
            case = KINDS[kind](seed)
            if case is None:
                print(f"{kind}: SKIPPED: data not found (see benchmarks/suite_data.py)", flush=True)
                break
            for mode in modes:
                if mode not in case.annotations:
                    continue
                rec = {"kind": kind, "mode": mode, "seed": seed, "task": case.task, "info": case.info}
                rec["forest"] = run_forest(case, mode, seed)
                rec["otsu"] = run_otsu(case, mode)
                for budget in budgets:
                    rec[f"unet_{budget:g}s"] = run_unet(case, mode, budget, seed, steps_per_second)
                for key in ["forest", "otsu"] + [f"unet_{b:g}s" for b in budgets]:
                    if rec.get(key):
                        rec[key]["headline"] = headline(case, rec[key])
                records.append(rec)
                print(
                    f"{kind:14s} {mode:6s} seed {seed}: U-Net {budgets[0]:g} s {rec[f'unet_{budgets[0]:g}s']['headline']:.3f}, "
                    f"{budgets[1]:g} s {rec[f'unet_{budgets[1]:g}s']['headline']:.3f} ({rec[f'unet_{budgets[1]:g}s']['steps']} steps), "
                    f"forest {rec['forest']['headline']:.3f}" + (f", Otsu {rec['otsu']['headline']:.3f}" if rec["otsu"] else ""),
                    flush=True,
                )
    if not records:
        print("no case ran: nothing saved")
        return 0
    tables, targets = summarise(records, budgets)
    print_tables(tables, targets)
    payload = {"title": "Accuracy suite", "budgets_s": list(budgets), "steps_per_second": steps_per_second, "tables": tables, "targets": targets, "records": records}
    path = save_results(NAME, payload, results_dir(args), args.quick, machine)
    print(f"\nSaved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
