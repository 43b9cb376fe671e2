"""Paint while it trains: corrections taken in by the running training, against stop-correct-restart rounds.

A scripted user starts from the accuracy suite's sparse strokes (2D cases:
generated nuclei, membranes, RGB classes; seeds 0, 1, 2) and trains for
``--seconds`` of wall time (60 s). Every fifth of that time it looks at the
current prediction, finds the 48x48 window of its painting area (the
columns left of the scored region, so the scored region never changes)
with the most wrongly predicted unpainted pixels, and paints the truth on
those pixels. Two ways to use these corrections:

- **live** (this issue): one training run; each correction goes into the
  run's :class:`~napari_unet.core.live.StrokeFeed` and is taken in before
  the next step (the forest is fitted again a few steps later). The
  previews are taken between two steps, and their time counts against the
  live run's budget (a slight handicap: in the widget they run beside it);
- **restart**: the same corrections (replayed: the same strokes at the same
  times), each round a separate training from the current weights (Stop,
  paint, Train), the budget split into equal rounds.

Both end with the same strokes and the same total time; scores (instance
F1@0.5, or min of macro precision and recall for classes) are taken on
the accuracy suite's unpainted region.

Also measured: the time from a correction being handed over to the end of
the first training step that learned from it (target <= 1 s), and the GUI
thread's cost of taking strokes in: a brush drag of 200 dabs on a 2048²
annotation layer, the :class:`~napari_unet.plugin.live_strokes.StrokeWatcher`
listening (target < 100 ms).

``python -m benchmarks.bench_live_strokes`` (about 20 minutes on 2 cores) or
``--quick`` (one case, 12 s of training; numbers mean nothing).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks._common import base_parser, print_tables, results_dir, save_results, start, table, target
from benchmarks.bench_accuracy import _model_image, headline, score
from benchmarks.suite_data import KINDS as CASES
from benchmarks.suite_data import Case

NAME = "live_strokes"
KINDS = ("nuclei", "membranes", "rgb")
CORRECTIONS = 4
WINDOW = 48
LATENCY_TARGET_S = 1.0
STALL_TARGET_MS = 100.0


def truth_annotation(case: Case) -> np.ndarray:
    """What a perfect user would paint everywhere: 1 background, 2.. classes."""
    if case.task == "classes":
        return case.truth.astype(np.uint8)
    return np.where(case.truth > 0, 2, 1).astype(np.uint8)


def predicted_annotation(segmenter, image: np.ndarray) -> np.ndarray:
    """The current prediction in annotation values (1 background, 2.. classes), from a copy of the model."""
    from napari_unet.core.jobs import snapshot
    from napari_unet.core.postprocess import semantic_from_probabilities

    return semantic_from_probabilities(snapshot(segmenter).predict_probabilities(image)).astype(np.uint8) + 1


def correction(case: Case, annotations: np.ndarray, predicted: np.ndarray) -> tuple[tuple[int, int], np.ndarray] | None:
    """The window of the painting area with the most wrong unpainted pixels, painted with the truth there.

    Returns ``(start, labels)``: the window's corner and its annotations
    after painting; None when nothing in the painting area is wrong.
    """
    truth = truth_annotation(case)
    scored_from = int(np.flatnonzero(case.score_mask("sparse")[0])[0])
    wrong = (predicted != truth) & (annotations == 0)
    wrong[:, scored_from:] = False
    if not wrong.any():
        return None
    # Wrong pixels per window (summed-area table), windows on a 16-pixel grid.
    table_ = np.pad(wrong.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    h, w = wrong.shape
    best, corner = -1, (0, 0)
    for y in range(0, max(h - WINDOW, 0) + 1, 16):
        for x in range(0, max(min(scored_from, w) - WINDOW, 0) + 1, 16):
            y1, x1 = min(y + WINDOW, h), min(x + WINDOW, scored_from)
            count = table_[y1, x1] - table_[y, x1] - table_[y1, x] + table_[y, x]
            if count > best:
                best, corner = count, (y, x)
    y, x = corner
    box = (slice(y, min(y + WINDOW, h)), slice(x, min(x + WINDOW, scored_from)))
    labels = annotations[box].copy()
    labels[wrong[box]] = truth[box][wrong[box]]
    return corner, labels


def _final_score(case: Case, segmenter, image: np.ndarray) -> float:
    axes = "CYX" if case.axes == "YXC" else case.axes
    semantic, instances = segmenter.segment(image, axes=axes)
    return headline(case, score(case, "sparse", semantic, instances))


def run_live(case: Case, seed: int, seconds: float) -> dict:
    """One training run; corrections join it through the stroke feed."""
    from napari_unet.core.live import StrokeFeed, StrokeUpdate
    from napari_unet.core.segmenter import Segmenter
    from napari_unet.core.training import TrainConfig

    image = _model_image(case)
    annotations = case.annotations["sparse"].copy()
    segmenter = Segmenter(device="cpu")
    feed = StrokeFeed()
    painted: list[tuple[tuple[int, int], np.ndarray]] = []
    latencies: list[float] = []
    due = [seconds * (k + 1) / (CORRECTIONS + 1) for k in range(CORRECTIONS)]
    waiting = False
    t0 = time.perf_counter()
    last = None
    for last in segmenter.train(image, annotations, TrainConfig(steps=None, max_time=seconds, seed=seed), strokes=feed):
        if waiting and last.strokes == len(painted):
            latencies.append(last.stroke_latency)
            waiting = False
        if due and time.perf_counter() - t0 >= due[0] and not last.done:
            due.pop(0)
            fix = correction(case, annotations, predicted_annotation(segmenter, image))
            if fix is not None:
                (y, x), labels = fix
                annotations[y : y + labels.shape[0], x : x + labels.shape[1]] = labels
                painted.append(fix)
                feed.put(StrokeUpdate(0, (y, x), labels.copy()))
                waiting = True
    return {"score": _final_score(case, segmenter, image), "steps": last.step, "corrections": painted, "latencies": latencies}


def run_restart(case: Case, seed: int, seconds: float, corrections: list) -> dict:
    """The same corrections in rounds: train, stop, paint, train again from the current weights."""
    from napari_unet.core.segmenter import Segmenter
    from napari_unet.core.training import TrainConfig

    image = _model_image(case)
    annotations = case.annotations["sparse"].copy()
    segmenter = Segmenter(device="cpu")
    rounds = CORRECTIONS + 1
    steps = 0
    for k in range(rounds):
        last = segmenter.fit(image, annotations, TrainConfig(steps=None, max_time=seconds / rounds, seed=seed + k))
        steps += last.step
        if k < len(corrections):
            (y, x), labels = corrections[k]
            annotations[y : y + labels.shape[0], x : x + labels.shape[1]] = labels
    return {"score": _final_score(case, segmenter, image), "steps": steps}


def gui_stall_ms(shape: tuple[int, int] = (2048, 2048), dabs: int = 200, repeats: int = 5) -> dict:
    """The GUI thread's time to take in one brush drag, with and without the watcher listening."""
    from napari.layers import Labels

    from napari_unet.core.jobs import TrainingSet
    from napari_unet.core.live import StrokeFeed
    from napari_unet.io.axes import Planes
    from napari_unet.plugin.live_strokes import StrokeWatcher

    class _Image:  # what the watcher reads of an image layer: its name
        name = "image"

    def drag(layer: Labels, offset: int) -> float:
        ys = np.linspace(100, shape[0] - 100, dabs)
        xs = np.linspace(100 + offset, shape[1] - 100 - offset, dabs)
        layer._begin_stroke()
        for y, x in zip(ys, xs):
            layer.paint((y, x), 2, refresh=False)
        t0 = time.perf_counter()
        layer._commit_stroke()  # the `paint` event: what the watcher handles on the GUI thread
        return (time.perf_counter() - t0) * 1000

    results = {}
    for watched in (False, True):
        layer = Labels(np.zeros(shape, np.uint8), name="annotations")
        layer.brush_size = 10
        feed = StrokeFeed()
        if watched:
            found = TrainingSet([None], [None], [("image", 1)], [("image", ())])
            # Kept in a variable: napari holds its listeners weakly.
            watcher = StrokeWatcher(feed, found, [(_Image(), layer, Planes(np.zeros(shape, np.uint8), "YX"))], 2, print)
            watcher.connect()
        times = [drag(layer, 7 * i) for i in range(repeats)]
        results["watched" if watched else "plain"] = max(times)
        if watched:
            results["updates_per_drag"] = len(feed.drain()) / repeats
    return results


def main(argv: list[str] | None = None) -> dict:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--seconds", type=float, default=60.0, help="total training time per case (default 60)")
    args = parser.parse_args(argv)
    machine = start(NAME, args)
    # Quick: 12 s, since on a slow machine the forest's fit took most of 6 s and no step was left to take a correction.
    kinds, seeds, seconds = (("nuclei",), [0], 12.0) if args.quick else (KINDS, [int(s) for s in args.seeds.split(",")], args.seconds)
    rows, diffs, latencies = [], [], []
    for kind in kinds:
        for seed in seeds:
            case = CASES[kind](seed)
            live = run_live(case, seed, seconds)
            restart = run_restart(case, seed, seconds, live["corrections"])
            diff = live["score"] - restart["score"]
            diffs.append(diff)
            latencies += [v for v in live["latencies"] if v is not None]
            worst = max(live["latencies"], default=float("nan"))
            rows.append([kind, seed, len(live["corrections"]), round(live["score"], 3), round(restart["score"], 3), round(diff, 3), live["steps"], restart["steps"], round(worst, 2)])
            print(f"{kind:10s} seed {seed}: live {live['score']:.3f} ({live['steps']} steps), restart {restart['score']:.3f} ({restart['steps']} steps), stroke->step <= {worst:.2f} s", flush=True)
    stall = gui_stall_ms((512, 512), 50, 2) if args.quick else gui_stall_ms()
    mean_diff = statistics.mean(diffs)
    columns = ["kind", "seed", "corrections", "live", "restart", "live - restart", "live steps", "restart steps", "stroke->step max (s)"]
    tables = [
        table(f"Score after {seconds:g} s with the same corrections (sparse strokes, unpainted region)", columns, rows),
        table(
            "Summary",
            ["live - restart: mean", "min", "max", "stroke->step: median (s)", "max (s)", "GUI: brush drag taken in (ms)", "without listening (ms)", "updates per drag"],
            [[round(mean_diff, 3), round(min(diffs), 3), round(max(diffs), 3), round(statistics.median(latencies), 3) if latencies else None,
              round(max(latencies), 3) if latencies else None, round(stall["watched"], 1), round(stall["plain"], 1), stall["updates_per_drag"]]],
        ),
    ]
    worst_latency = max(latencies) if latencies else float("nan")
    targets = [
        target("live corrections vs stop-correct-restart rounds: mean score difference", "> 0 (and never clearly worse)", round(mean_diff, 3), mean_diff > 0),
        target("time from a stroke to its first training step (max)", f"≤ {LATENCY_TARGET_S:g} s", round(worst_latency, 3), worst_latency <= LATENCY_TARGET_S),
        target("GUI thread taking in a 200-dab brush drag (2048² layer)", f"< {STALL_TARGET_MS:g} ms", round(stall["watched"], 1), stall["watched"] < STALL_TARGET_MS),
    ]
    print_tables(tables, targets)
    records = [dict(zip(("kind", "seed", "corrections", "live", "restart", "difference", "live_steps", "restart_steps", "latency_max_s"), row)) for row in rows]
    payload = {"title": "Paint while it trains", "tables": tables, "targets": targets, "seconds": seconds, "records": records}
    path = save_results(NAME, payload, results_dir(args), args.quick, machine)
    print(f"\nResults: {path}")
    return payload


if __name__ == "__main__":
    main()
