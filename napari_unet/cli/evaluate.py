"""``napari-unet evaluate``: a prediction scored against a ground truth (writes nothing)."""

from __future__ import annotations

import argparse
import json


def add_parser(sub, common: argparse.ArgumentParser) -> None:
    """The ``evaluate`` subcommand and its options."""
    parser = sub.add_parser(
        "evaluate",
        help="score predicted labels against a ground truth (instance F1, IoU, missed/false/split/merged objects)",
        description="Score PREDICTED labels against TRUTH (TIFFs of the same shape). Instance F1 at IoU 0.5 is the "
        "benchmarks' own metric. With --json, one JSON object on stdout; its keys: f1, precision, recall, f1_mean "
        "(over IoU 0.5:0.95), n_true, n_pred, matched, missed, false, split, merged, foreground_iou, class_iou "
        "(class -> IoU), mean_iou.",
        parents=[common],
    )
    parser.add_argument("predicted", help="predicted labels (instances, or classes with --semantic)")
    parser.add_argument("truth", help="ground-truth labels of the same shape")
    parser.add_argument("--semantic", action="store_true", help="the images hold classes: IoU per class value")
    parser.add_argument("--json", action="store_true", help="print the scores as one JSON object")
    parser.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``napari-unet evaluate``: print the scores; 0 once printed."""
    from napari_unet.eval.evaluate import evaluate
    from napari_unet.io.tiff import read_labels

    scores = evaluate(read_labels(args.predicted), read_labels(args.truth), semantic=args.semantic)
    if args.json:
        print(json.dumps(scores.as_dict()))
        return 0
    s = scores
    print(f"instances: F1 {s.f1:.3f} at IoU 0.5 (precision {s.precision:.3f}, recall {s.recall:.3f}); F1 {s.f1_mean:.3f} averaged over IoU 0.5:0.95")
    print(f"objects: {s.n_true} true, {s.n_pred} predicted, {s.matched} matched; {s.missed} missed, {s.false} false, {s.split} split, {s.merged} merged")
    classes = ", ".join(f"{c}: {v:.3f}" for c, v in s.class_iou.items())
    print(f"IoU: foreground {s.foreground_iou:.3f}; per class {classes}; mean {s.mean_iou:.3f}")
    return 0
