"""Uncertainty: does the per-pixel uncertainty find the model's mistakes?

On the accuracy suite's 2D cases with sparse strokes (generated nuclei,
membranes and RGB classes; seeds 0, 1, 2), the U-Net trains a fixed number
of steps; each unpainted scored pixel is then wrong or right (its class
against the truth), and the uncertainty is used as a detector of wrong
pixels: ROC AUC (1 = every wrong pixel more uncertain than every right one,
0.5 = no better than chance). Four uncertainties are compared: the
package's (1 - the margin between the two most probable classes, spread
into its neighbourhood: see
:func:`~napari_unet.core.postprocess.uncertainty_from_probabilities`), the
same margin per pixel alone, the normalised predictive entropy, and 1 - the
highest probability.

Target (the uncertainty issue): mean ROC AUC >= 0.85 over the cases.

``python -m benchmarks.bench_uncertainty`` (a few minutes on 2 cores), or
``--quick`` (one case, a few steps; numbers mean nothing).
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks._common import base_parser, print_tables, results_dir, save_results, start, table, target

NAME = "uncertainty"
TARGET = 0.85
KINDS = ("nuclei", "membranes", "rgb")


def roc_auc(wrong: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC of ``score`` as a detector of ``wrong`` (rank formula; NaN when one class is absent)."""
    from scipy.stats import rankdata

    wrong = wrong.ravel().astype(bool)
    n_pos, n_neg = int(wrong.sum()), int((~wrong).sum())
    if not n_pos or not n_neg:
        return float("nan")
    ranks = rankdata(score.ravel())
    return float((ranks[wrong].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def uncertainties(probs: np.ndarray) -> dict[str, np.ndarray]:
    """The compared uncertainties of ``(n_classes, ...)`` probabilities."""
    from napari_unet.core.postprocess import uncertainty_from_probabilities

    entropy = -(probs * np.log(np.clip(probs, 1e-8, 1))).sum(0) / np.log(probs.shape[0])
    top = np.sort(probs, axis=0)
    return {
        "1 - margin, spread (napari-unet)": uncertainty_from_probabilities(probs),
        "1 - margin, per pixel": 1 - (top[-1] - top[-2]),
        "entropy": entropy,
        "1 - max probability": 1 - probs.max(0),
    }


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; return the stored result."""
    from benchmarks.suite_data import KINDS as CASES
    from napari_unet import Segmenter, TrainConfig

    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--steps", type=int, default=80, help="training steps per case (default 80)")
    args = parser.parse_args(argv)
    machine = start(NAME, args)
    kinds, seeds, steps = (("nuclei",), [0], 5) if args.quick else (KINDS, [int(s) for s in args.seeds.split(",")], args.steps)
    rows, aucs = [], {}
    for kind in kinds:
        for seed in seeds:
            case = CASES[kind](seed)
            strokes = case.annotations["sparse"]
            image = np.moveaxis(case.image, -1, 0) if case.axes == "YXC" else case.image
            segmenter = Segmenter(device="auto")
            segmenter.fit([image], [strokes], TrainConfig(steps=steps, seed=seed))
            probs = segmenter.predict_probabilities(image)
            if case.task == "instances":
                wrong = ((1 - probs[0]) >= 0.5) != (case.truth > 0)
            else:
                wrong = probs.argmax(0) != case.truth - 1
            scored = case.score_mask("sparse")
            scores = {name: roc_auc(wrong[scored], u[scored]) for name, u in uncertainties(probs).items()}
            for name, value in scores.items():
                aucs.setdefault(name, []).append(value)
            rows.append([kind, seed, round(float(wrong[scored].mean()), 3), *(round(v, 3) for v in scores.values())])
            print(f"{kind:10s} seed {seed}: wrong {wrong[scored].mean():.3f}, " + ", ".join(f"{k} AUC {v:.3f}" for k, v in scores.items()), flush=True)
    names = list(aucs)
    summary = [[name, round(statistics.mean(v), 3), round(min(v), 3), round(max(v), 3)] for name, v in aucs.items()]
    tables = [
        table(f"ROC AUC of the uncertainty as a detector of wrong pixels ({steps} training steps, sparse strokes, unpainted region)", ["uncertainty", "mean", "min", "max"], summary),
        table("Every case", ["kind", "seed", "wrong pixels", *names], rows),
    ]
    ours = statistics.mean(aucs[names[0]])
    targets = [target("uncertainty finds the mistakes: mean ROC AUC (sparse cases)", f"≥ {TARGET}", round(ours, 3), ours >= TARGET)]
    print_tables(tables, targets)
    payload = {"title": "Uncertainty as a detector of mistakes", "tables": tables, "targets": targets}
    path = save_results(NAME, payload, results_dir(args), args.quick, machine)
    print(f"\nResults: {path}")
    return payload


if __name__ == "__main__":
    main()
