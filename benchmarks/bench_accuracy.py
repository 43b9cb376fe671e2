"""Accuracy on real data: the ISBI 2012 EM stack (cell interiors = instances).

For 1, 2 and 5 training slices (from slices 0-19), annotated either as full
masks or as a few sparse strokes (``benchmarks/strokes.py``), the U-Net is
trained for 30, 60 and 120 s (a separate run per budget: the learning-rate
schedule spans the whole budget, so a long run's state at 30 s is not a 30 s
run). The held-out slices 20-29 are predicted and scored by foreground IoU
and instance F1 at IoU 0.5, against Otsu + watershed and local threshold +
watershed (no training) and a random forest on the same strokes.

Objects are the cell interiors (annotation 2), background the membranes
(annotation 1). Membranes already separate cells, so instances are the
connected components of the foreground (``split_strength=0``), with the same
post-processing for every method.

Run ``python -m benchmarks.bench_accuracy`` (about 30 min on 2 cores) or with
``--quick`` (seconds; numbers mean nothing).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from skimage.measure import label

from benchmarks._common import DataMissing, base_parser, load_em, print_tables, results_dir, save_results, start, table
from benchmarks.strokes import full_mask_annotations, painted_fraction, sparse_strokes

NAME = "accuracy"
# Held-out slices are fixed; training slices are nested (5 includes 2
# includes 1), so more slices only ever add data.
TEST_SLICES = tuple(range(20, 30))
TRAIN_ORDER = (0, 10, 4, 14, 8)
# Membranes separate cells already: no watershed splitting. Same for all methods.
SPLIT_STRENGTH = 0.0
MIN_SIZE = 16
THRESHOLD = 0.5


@dataclass
class Score:
    """Mean scores over the held-out slices."""

    iou: float
    f1: float
    precision: float
    recall: float
    per_slice_f1: list[float]


def score(predictions: list[np.ndarray], semantics: list[np.ndarray], truths: list[np.ndarray]) -> Score:
    """Mean foreground IoU and instance F1 (IoU 0.5) over slices."""
    from napari_unet.core.metrics import foreground_iou, instance_f1

    ious, f1s, ps, rs = [], [], [], []
    for inst, sem, truth in zip(predictions, semantics, truths):
        ious.append(foreground_iou(sem, truth))
        s = instance_f1(inst, truth, 0.5)
        f1s.append(s.f1)
        ps.append(s.precision)
        rs.append(s.recall)
    return Score(float(np.mean(ious)), float(np.mean(f1s)), float(np.mean(ps)), float(np.mean(rs)), [round(f, 4) for f in f1s])


def truth_instances(labels_slice: np.ndarray) -> np.ndarray:
    """Cell instances of one ground-truth slice: connected interiors (255)."""
    return label(labels_slice > 0, connectivity=1).astype(np.int32)


def make_annotations(labels_slice: np.ndarray, mode: str, seed: int) -> np.ndarray:
    """Annotations of one training slice: ``"full"`` masks or ``"sparse"`` strokes."""
    fg = labels_slice > 0
    if mode == "full":
        return full_mask_annotations(fg)
    if mode == "sparse":
        return sparse_strokes(fg, seed=seed)
    raise ValueError(f"unknown annotation mode {mode!r}")


def run_unet(train_images, train_anns, test_images, truths, budget: float, params, device: str, steps_per_second: float | None = None) -> dict:
    """Train a fresh U-Net for ``budget`` seconds, predict and score the test slices.

    With ``steps_per_second`` the budget becomes that many steps per second
    instead of wall time (same schedule, independent of machine load).
    """
    from napari_unet.core.postprocess import postprocess
    from napari_unet.core.segmenter import Segmenter
    from napari_unet.core.training import TrainConfig

    seg = Segmenter(device=device)
    if steps_per_second:
        config = TrainConfig(steps=max(1, round(steps_per_second * budget)), max_time=None, seed=0)
    else:
        config = TrainConfig(steps=None, max_time=budget, seed=0)
    t0 = time.perf_counter()
    last = seg.fit(list(train_images), list(train_anns), config)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    insts, sems = [], []
    for im in test_images:
        sem, inst = postprocess(seg.predict_probabilities(im), params)
        sems.append(sem)
        insts.append(inst)
    predict_s = time.perf_counter() - t0
    s = score(insts, sems, truths)
    return {
        "method": "U-Net",
        "budget_s": budget,
        "steps": last.step,
        "best_step": last.best_step,
        "train_s": round(train_s, 2),
        "predict_s": round(predict_s, 2),
        "iou": s.iou,
        "f1": s.f1,
        "precision": s.precision,
        "recall": s.recall,
        "per_slice_f1": s.per_slice_f1,
    }


def _side_by_side(images: list[np.ndarray], pad: int, mode: str) -> np.ndarray:
    """Pad each image by ``pad`` and put them side by side.

    The padding isolates the images' filter responses from each other (the
    largest Gaussian, sigma 16, reaches 4 sigma = 64 px), so one forest call
    can train on several slices and predict several.
    """
    padded = [np.pad(im, pad, mode=mode) for im in images]
    return np.concatenate(padded, axis=1)


def run_random_forest(train_images, train_anns, test_images, truths, params) -> dict:
    """The ilastik/APOC-style baseline on the same strokes (train + predict timed)."""
    from napari_unet.core.baselines import random_forest
    from napari_unet.core.postprocess import instances_from_semantic

    pad = 64
    t0 = time.perf_counter()
    image = _side_by_side([im.astype(np.float32) for im in train_images], pad, "reflect")
    anns = _side_by_side(list(train_anns), pad, "constant")  # padding stays unlabeled
    target = _side_by_side([im.astype(np.float32) for im in test_images], pad, "reflect")
    semantic, _ = random_forest(image, anns, params, seed=0, predict_on=target)
    elapsed = time.perf_counter() - t0
    h, w = test_images[0].shape
    sems, insts = [], []
    for i in range(len(test_images)):
        x0 = i * (w + 2 * pad) + pad
        sem = semantic[pad : pad + h, x0 : x0 + w]
        sems.append(sem)
        # Re-derive instances per slice: the padded mosaic's components could span padding.
        insts.append(instances_from_semantic(sem, params))
    s = score(insts, sems, truths)
    return {
        "method": "random forest",
        "budget_s": None,
        "steps": None,
        "train_s": round(elapsed, 2),
        "predict_s": None,
        "iou": s.iou,
        "f1": s.f1,
        "precision": s.precision,
        "recall": s.recall,
        "per_slice_f1": s.per_slice_f1,
    }


def run_thresholds(test_images, truths, params, objects_bright: bool) -> list[dict]:
    """Otsu and local threshold + watershed on each test slice (no training)."""
    from napari_unet.core.baselines import local_threshold_watershed, otsu_watershed

    out = []
    for name, fn in (("Otsu + watershed", otsu_watershed), ("local threshold + watershed", local_threshold_watershed)):
        t0 = time.perf_counter()
        sems, insts = [], []
        for im in test_images:
            im = im.astype(np.float32)
            # Objects are taken as the bright side; flip when the strokes say
            # they are dark (decided once, from training strokes).
            sem, inst = fn(im if objects_bright else im.max() + im.min() - im, params)
            sems.append(sem)
            insts.append(inst)
        s = score(insts, sems, truths)
        out.append(
            {"method": name, "train_s": 0.0, "predict_s": round(time.perf_counter() - t0, 2), "iou": s.iou, "f1": s.f1, "precision": s.precision, "recall": s.recall, "per_slice_f1": s.per_slice_f1}
        )
    return out


def _ints(text: str) -> tuple[int, ...]:
    """Parse ``"1,2,5"`` or ``"20-29"``."""
    if "-" in text and "," not in text:
        a, b = text.split("-")
        return tuple(range(int(a), int(b) + 1))
    return tuple(int(t) for t in text.split(",") if t)


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; return the stored result."""
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--slices", type=_ints, default=None, help="training slice counts, e.g. 1,2,5")
    parser.add_argument("--modes", default=None, help="annotation modes: full,sparse")
    parser.add_argument("--times", default=None, help="training budgets in seconds, e.g. 30,60,120")
    parser.add_argument("--test-slices", type=_ints, default=None, help="held-out slices, e.g. 20-29")
    parser.add_argument("--crop", type=int, default=None, help="use only the top-left crop of this size (quick runs)")
    parser.add_argument("--device", default="cpu", help="torch device for the U-Net (the issue's figures are CPU)")
    parser.add_argument(
        "--steps-per-second",
        type=float,
        default=None,
        help="train round(R * budget) steps instead of for the wall-time budget: repeatable on a busy machine (say so when reporting)",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    slices = args.slices or ((1,) if quick else (1, 2, 5))
    modes = tuple((args.modes or "full,sparse").split(","))
    times = tuple(float(t) for t in args.times.split(",")) if args.times else ((3.0,) if quick else (30.0, 60.0, 120.0))
    test_slices = args.test_slices or ((20, 21) if quick else TEST_SLICES)
    crop = args.crop or (128 if quick else None)
    if max(slices) > len(TRAIN_ORDER):
        parser.error(f"at most {len(TRAIN_ORDER)} training slices")

    machine = start(NAME, args)
    try:
        image, labels = load_em()
    except DataMissing as exc:
        print(f"SKIPPED: {exc}")
        return {"skipped": str(exc)}
    if crop:
        image, labels = image[:, :crop, :crop], labels[:, :crop, :crop]
    from napari_unet.core.postprocess import InstanceParams

    params = InstanceParams(threshold=THRESHOLD, min_size=MIN_SIZE, split_strength=SPLIT_STRENGTH)
    test_images = [image[i] for i in test_slices]
    truths = [truth_instances(labels[i]) for i in test_slices]
    began = time.perf_counter()

    # Which side objects are on, from the first training slice's strokes (as a user's would tell).
    first = make_annotations(labels[TRAIN_ORDER[0]], "full", 0)
    objects_bright = bool(image[TRAIN_ORDER[0]][first == 2].mean() > image[TRAIN_ORDER[0]][first == 1].mean())
    baselines = run_thresholds(test_images, truths, params, objects_bright)
    for b in baselines:
        print(f"{b['method']}: IoU {b['iou']:.3f}, F1 {b['f1']:.3f}")

    runs = []
    for n in slices:
        train_idx = TRAIN_ORDER[:n]
        train_images = [image[i] for i in train_idx]
        for mode in modes:
            anns = [make_annotations(labels[i], mode, seed=i) for i in train_idx]
            painted = float(np.mean([painted_fraction(a) for a in anns]))
            setting = {"n_slices": n, "train_slices": list(train_idx), "mode": mode, "painted_pct": round(100 * painted, 3)}
            rf = run_random_forest(train_images, anns, test_images, truths, params)
            runs.append({**setting, **rf})
            print(f"{n} slice(s), {mode} ({100 * painted:.2f} % painted): random forest F1 {rf['f1']:.3f} in {rf['train_s']:.1f} s")
            for budget in times:
                r = run_unet(train_images, anns, test_images, truths, budget, params, args.device, args.steps_per_second)
                runs.append({**setting, **r})
                print(f"{n} slice(s), {mode}: U-Net {budget:.0f} s ({r['steps']} steps): IoU {r['iou']:.3f}, F1 {r['f1']:.3f}")

    rows = [
        [r["n_slices"], r["mode"], r["painted_pct"], r["method"], r["budget_s"], r["steps"], r["train_s"], r["predict_s"], r["iou"], r["f1"], r["precision"], r["recall"]]
        for r in runs
    ]
    rows += [["–", "none", 0.0, b["method"], None, None, 0.0, b["predict_s"], b["iou"], b["f1"], b["precision"], b["recall"]] for b in baselines]
    tables = [
        table(
            f"Accuracy on ISBI 2012 EM, held-out slices {test_slices[0]}–{test_slices[-1]} (mean per slice)",
            ["train slices", "annotation", "painted %", "method", "budget s", "steps", "train s", "predict s", "fg IoU", "F1@0.5", "precision", "recall"],
            rows,
        )
    ]
    payload = {
        "title": "Accuracy on real data (ISBI 2012 EM)",
        "tables": tables,
        "targets": [],
        "settings": {
            "test_slices": list(test_slices),
            "train_order": list(TRAIN_ORDER),
            "slice_counts": list(slices),
            "modes": list(modes),
            "budgets_s": list(times),
            "crop": crop,
            "device": args.device,
            "steps_per_second": args.steps_per_second,
            "instance_params": params.to_dict(),
            "objects_bright": objects_bright,
        },
        "notes": [f"U-Net budgets emulated as {args.steps_per_second:g} training steps per second of budget (not wall time)"] if args.steps_per_second else [],
        "runs": runs,
        "baselines": baselines,
        "total_s": round(time.perf_counter() - began, 1),
    }
    print_tables(tables)
    path = save_results(NAME, payload, results_dir(args), quick, machine)
    print(f"\nTotal {payload['total_s']:.0f} s. Results: {path}")
    return payload


if __name__ == "__main__":
    main()
