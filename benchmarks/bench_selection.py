"""Model selection against the true score: which weights training ends with, and what they are worth.

Training keeps the weights that score best on held-out strokes
(:mod:`napari_unet.core.training`). Held-out strokes are painted pixels:
the easy interiors of objects and background, rarely an object's border.
This benchmark traces, for suite cases and two step budgets (35 steps are
about 10 s of CPU training, 200 about 60 s), the *true* score on the
unpainted region every few steps, and puts beside it

- the forest's answer (step 0: the model before any correction);
- the lowest and highest true score met during the run;
- the step that held-out strokes alone would have picked (lowest held-out
  loss, leaving the forest only for a 3 % lower loss), with its true score;
- the step the engine's rules picked (the weights it ends with), scored.

Held-out strokes are validated every 5 steps in 35-step runs, every 10 in
200-step runs (the engine's default is 10).

Step budgets, not time: the same run gives the same trace on any machine.
``python -m benchmarks.bench_selection`` (about 15 minutes on 2 cores);
``--quick`` (one case, 12 steps: checks the script, numbers mean nothing);
``--cases em:0:sparse,...`` and ``--budgets 200`` pick runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import base_parser, print_tables, results_dir, save_results, start, table, target
from benchmarks.bench_accuracy import _model_image, headline, score
from benchmarks.suite_data import KINDS

NAME = "selection"
# Cases where a pick can go wrong: sparse strokes (no borders painted) of
# every 2D kind, and a full and a whole-objects case for contrast.
CASES = ("em:0:sparse", "em:1:sparse", "em:2:sparse", "nuclei:0:sparse", "nuclei:2:sparse", "em:1:full", "nuclei:1:full", "rgb:2:sparse", "membranes:2:sparse", "nuclei:0:whole")
BUDGETS = (35, 200)
QUICK = (("nuclei:2:sparse",), (12,))


def held_out_pick(trace: list[dict], margin: float) -> int:
    """The step held-out strokes alone pick: lowest loss, leaving step 0 only for a ``margin`` lower one."""
    best_step, best_loss = 0, trace[0]["val_loss"]
    for row in trace[1:]:
        needed = best_loss * (1 - margin) if best_step == 0 else best_loss
        if row["val_loss"] is not None and row["val_loss"] < needed:
            best_step, best_loss = row["step"], row["val_loss"]
    return best_step


def trace_case(spec: str, steps: int) -> dict | None:
    """Train one case for ``steps`` steps, scoring the current weights every few steps (None: its data is missing)."""
    from napari_unet.core.segmenter import Segmenter
    from napari_unet.core.training import FOREST_MARGIN, TrainConfig

    kind, seed, mode = spec.split(":")
    case = KINDS[kind](int(seed))
    if case is None:
        return None
    ann, image = case.annotations[mode], _model_image(case)
    axes = "CYX" if case.axes == "YXC" else case.axes
    every = 5 if steps <= 50 else 10
    config = TrainConfig(steps=steps, seed=int(seed), whole_objects=mode == "whole", val_every=every)
    seg = Segmenter(device="cpu")

    def true_score() -> float:
        """The suite's headline score of the current weights on the unpainted region."""
        return headline(case, score(case, mode, *seg.segment(image, axes=axes)))

    trace: list[dict] = []
    # A Z stack trains the 3D model, as in the accuracy suite.
    for report in seg.train(image, ann, config, ndim=3 if case.axes == "ZYX" else 2):
        if report.done:
            # The last step's held-out loss comes with the closing report.
            if trace[-1]["step"] == report.step:
                trace[-1]["val_loss"] = report.val_loss
            continue  # running the generator to its end restores the weights it picked
        if report.step == 1:
            # The forest's answer: the model with a zero correction (its head), scored
            # once; the held-out loss reported at step 1 is still the one from before it.
            head = {k: v.clone() for k, v in seg.model.head.state_dict().items()}
            for p in seg.model.head.parameters():
                p.data.zero_()
            trace.append({"step": 0, "val_loss": report.val_loss, "true": true_score()})
            seg.model.head.load_state_dict(head)
        if report.step % every == 0 or report.step == steps:
            trace.append({"step": report.step, "val_loss": report.val_loss, "true": true_score()})
        seg.model.train()  # segment() leaves the model in eval mode
    picked = true_score()  # the weights training ended with
    alone = held_out_pick(trace, FOREST_MARGIN)
    at = {r["step"]: r["true"] for r in trace}
    return {
        "case": spec,
        "steps": steps,
        "forest": at[0],
        "lowest": min(at.values()),
        "highest": max(at.values()),
        "highest_step": max(at, key=at.get),
        "held_out_step": alone,
        "held_out": at[alone],
        "picked_step": report.best_step,
        "picked": picked,
        "trace": trace,
    }


def main(argv: list[str] | None = None) -> int:
    """Trace every case and budget and save ``selection.json``."""
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated kind:seed:strokes (default: the ten of CASES)")
    parser.add_argument("--budgets", default=",".join(map(str, BUDGETS)), help="comma-separated step budgets (default 35,200)")
    args = parser.parse_args(argv)
    machine = start(NAME, args)
    cases, budgets = QUICK if args.quick else (tuple(args.cases.split(",")), tuple(int(b) for b in args.budgets.split(",")))
    records, rows = [], []
    for steps in budgets:
        for spec in cases:
            rec = trace_case(spec, steps)
            if rec is None:
                print(f"{spec}: SKIPPED: data not found", flush=True)
                continue
            records.append(rec)
            rows.append(
                [
                    spec,
                    steps,
                    round(rec["forest"], 3),
                    f"{rec['lowest']:.3f} / {rec['highest']:.3f} (step {rec['highest_step']})",
                    f"{rec['held_out']:.3f} (step {rec['held_out_step']})",
                    f"{rec['picked']:.3f} (step {rec['picked_step']})",
                    f"{rec['picked'] - rec['forest']:+.3f}",
                ]
            )
            print(" | ".join(str(c) for c in rows[-1]), flush=True)
    columns = ["case", "steps", "forest (step 0)", "lowest / highest in the run", "held-out strokes alone pick", "engine picks", "engine - forest"]
    tables = [table("True score (headline of the accuracy suite) of the weights picked, beside the run's range", columns, rows)]
    short = [r for r in records if r["steps"] == min(budgets)]
    worst = min((r["picked"] - r["forest"] for r in short), default=float("nan"))
    targets = [target(f"{min(budgets)}-step runs end no worse than their forest (every case)", ">= 0", round(worst, 3), bool(worst >= -1e-9))]
    print_tables(tables, targets)
    payload = {"title": "Model selection against the true score", "tables": tables, "targets": targets, "records": records}
    path = save_results(NAME, payload, results_dir(args), args.quick, machine)
    print(f"\nSaved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
