"""Responsiveness: the napari GUI while the widget trains, and what the GUI costs training.

In one run, on the bundled synthetic sample with the same settings and seed:

(a) **Direct**: ``Segmenter.train`` driven by a plain loop, as the CLI does.
(b) **Widget**: the dock widget in a real napari window (under Xvfb when
    there is no display) trains in its thread worker while a ``QTimer``
    probe fires every 10 ms on the GUI thread. A late probe is an event-loop
    stall: the time the viewer could not react to the mouse or repaint.

Reported: the longest and 99th-percentile stall during training, and
training steps per second in (a) and (b) (from the engine's own clock, so
both include the same work: sampling, augmentation, validation). The two
are interleaved (a, b, a, b, …) so a drift in machine load hits both.

Targets: longest stall < 100 ms and p99 < 20 ms in every pair; widget throughput
within 10 % of direct (median of the pair ratios). OpenMP waits as the package
sets them (see ``napari_unet._short_spin_waits``; ``GOMP_SPINCOUNT=300000``
in the environment measures torch's own setting).

``python -m benchmarks.bench_responsiveness`` (about a minute on 2 cores)
or ``--quick`` (a few seconds of training; numbers mean little).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from benchmarks._common import base_parser, print_tables, results_dir, save_results, start, table, target

NAME = "responsiveness"
STALL_TARGET_MS = 100.0
P99_TARGET_MS = 20.0
THROUGHPUT_TARGET = 0.10  # widget at most 10 % slower than direct
PROBE_MS = 10


def _settings(args) -> dict:
    if args.quick:
        return {"steps": 12, "patch_size": 64, "batch_size": 4}
    return {"steps": args.steps, "patch_size": args.patch, "batch_size": args.batch}


def run_direct(image, annotations, settings: dict, seed: int) -> dict:
    """Train with a plain loop over ``Segmenter.train`` (the CLI's way)."""
    from napari_unet.core.segmenter import Segmenter
    from napari_unet.core.training import TrainConfig

    segmenter = Segmenter(device="cpu")
    last = None
    for last in segmenter.train(image, annotations, TrainConfig(seed=seed, **settings)):
        pass
    return {"steps": last.step, "elapsed_s": last.elapsed, "steps_per_s": last.step / last.elapsed, "threads": torch.get_num_threads()}


class Probe:
    """Records when a fast GUI-thread timer actually fires."""

    def __init__(self, interval_ms: int = PROBE_MS) -> None:
        from qtpy.QtCore import Qt, QTimer

        self.interval = interval_ms / 1000
        self.times: list[float] = []
        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(lambda: self.times.append(time.perf_counter()))

    def start(self) -> None:
        self.times = [time.perf_counter()]
        self.timer.start()

    def stop(self) -> np.ndarray:
        """Stop and return the stalls in ms (lateness beyond the interval)."""
        self.timer.stop()
        gaps = np.diff(np.asarray(self.times)) - self.interval
        return np.clip(gaps, 0, None) * 1000


def make_viewer():
    """A shown napari window of 1400x900 with the widget docked and the sample loaded."""
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_unet.eval.synthetic import SAMPLE_PARAMS, make_nuclei

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1400, 900)
    _, widget = viewer.window.add_plugin_dock_widget("napari-stroke-unet", "U-Net segmentation")
    sample = make_nuclei(**SAMPLE_PARAMS)
    viewer.add_image(sample.image, name="nuclei", colormap="gray")
    annotations = widget.new_annotations()
    annotations.data = sample.annotations.copy()
    widget.prediction_panel.auto_predict.setChecked(False)  # measure training alone
    for _ in range(20):
        QApplication.processEvents()
    return viewer, widget, sample


def run_widget(widget, settings: dict, seed: int, timeout_s: float = 3600) -> dict:
    """Train through the widget's worker while probing the GUI event loop."""
    from qtpy.QtCore import QEventLoop, QTimer

    adv = widget.advanced
    adv.patch_size.setValue(settings["patch_size"])
    adv.batch_size.setValue(settings["batch_size"])
    adv.budget_unit.setCurrentText("steps")
    adv.budget.setValue(settings["steps"])
    adv.device.setCurrentText("cpu")
    widget.session.seed = seed
    widget.session.reset_model()  # every run starts from the same fresh model

    import napari_unet.plugin.session as session_module

    worker_threads: list[int] = []
    original = session_module.train_steps

    def recording_train_steps(*args, **kwargs):
        # Runs in the worker thread: the thread count torch really uses there.
        worker_threads.append(torch.get_num_threads())
        yield from original(*args, **kwargs)

    session_module.train_steps = recording_train_steps
    loop = QEventLoop()
    widget.training_finished.connect(loop.quit)
    guard = QTimer()
    guard.setSingleShot(True)
    guard.timeout.connect(loop.quit)
    probe = Probe()
    probe.start()
    try:
        widget.session.train()
        guard.start(int(timeout_s * 1000))
        loop.exec()
    finally:
        session_module.train_steps = original
    stalls = probe.stop()
    widget.training_finished.disconnect(loop.quit)
    last = widget.session.last_progress
    if last is None or not last.done:
        raise RuntimeError("the widget's training did not finish")
    return {
        "steps": last.step,
        "elapsed_s": last.elapsed,
        "steps_per_s": last.step / last.elapsed,
        "threads": worker_threads[0] if worker_threads else None,
        "stall_max_ms": float(stalls.max()) if stalls.size else 0.0,
        "stall_p99_ms": float(np.percentile(stalls, 99)) if stalls.size else 0.0,
        "probes": int(stalls.size),
        "plot_redraws": widget.training_panel.loss_plot.draw_count,
    }


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; return the stored result."""
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="training steps per run")
    parser.add_argument("--patch", type=int, default=128, help="patch size (the widget's default)")
    parser.add_argument("--batch", type=int, default=8, help="batch size (the widget's default)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved (direct, widget) pairs (default 5: enough for a spread)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    machine = start(NAME, args)
    settings = _settings(args)
    repeats = 1 if args.quick else args.repeats
    print(f"Settings: {settings}, seed {args.seed}, {repeats} interleaved pair(s); GUI probe every {PROBE_MS} ms")

    viewer, widget, sample = make_viewer()
    direct, gui = [], []
    try:
        # Untimed: torch's one-off start-up costs (kernel selection, allocator) would
        # otherwise land on whichever run comes first.
        run_direct(sample.image, sample.annotations, dict(settings, steps=3), args.seed)
        for i in range(repeats):
            direct.append(run_direct(sample.image, sample.annotations, settings, args.seed))
            print(f"  direct run {i + 1}: {direct[-1]['steps_per_s']:.2f} steps/s")
            gui.append(run_widget(widget, settings, args.seed))
            print(f"  widget run {i + 1}: {gui[-1]['steps_per_s']:.2f} steps/s, longest stall {gui[-1]['stall_max_ms']:.0f} ms")
    finally:
        viewer.close()

    d_rate = statistics.median(r["steps_per_s"] for r in direct)
    w_rate = statistics.median(r["steps_per_s"] for r in gui)
    # Each widget run against the direct run just before it: a change in
    # machine load between pairs then cancels out of the ratio.
    ratios = [w["steps_per_s"] / d["steps_per_s"] for d, w in zip(direct, gui)]
    ratio = statistics.median(ratios)
    stall_max = max(r["stall_max_ms"] for r in gui)
    stall_p99 = max(r["stall_p99_ms"] for r in gui)
    rows = [
        ["direct (Segmenter.train loop)", direct[0]["steps"], round(d_rate, 3), "–", direct[0]["threads"], "–", "–"],
        ["napari widget worker", gui[0]["steps"], round(w_rate, 3), round(ratio, 3), gui[0]["threads"], round(stall_max, 1), round(stall_p99, 1)],  # worst pair's stalls
    ]
    pairs = [
        [i + 1, round(d["steps_per_s"], 3), round(w["steps_per_s"], 3), round(r, 3), round(w["stall_max_ms"], 1), round(w["stall_p99_ms"], 1)]
        for i, (d, w, r) in enumerate(zip(direct, gui, ratios))
    ]
    title = f"{settings['steps']} steps, patch {settings['patch_size']}, batch {settings['batch_size']}"
    tables = [
        table(
            f"Training on the 256² sample ({title}; medians of {repeats} interleaved pairs)",
            ["run", "steps", "steps/s", "widget / direct", "torch threads", "longest GUI stall ms", "p99 GUI stall ms"],
            rows,
        ),
        table("Each pair (direct run, then widget run)", ["pair", "direct steps/s", "widget steps/s", "ratio", "longest stall ms", "p99 stall ms"], pairs),
        table(
            f"Spread over the {repeats} pairs",
            ["figure", "min", "median", "max"],
            [
                [name, *(round(f(values), 3) for f in (min, statistics.median, max))]
                for name, values in (
                    ("widget / direct", ratios),
                    ("longest stall ms", [r["stall_max_ms"] for r in gui]),
                    ("p99 stall ms", [r["stall_p99_ms"] for r in gui]),
                )
            ],
        ),
    ]
    targets = [
        target("longest GUI event-loop stall while training (every pair)", f"< {STALL_TARGET_MS:.0f} ms", round(stall_max, 1), stall_max < STALL_TARGET_MS),
        target("p99 GUI event-loop stall (every pair)", f"< {P99_TARGET_MS:.0f} ms", round(stall_p99, 1), stall_p99 < P99_TARGET_MS),
        target("widget training throughput vs direct (median pair ratio)", f"≥ {1 - THROUGHPUT_TARGET:.2f}×", round(ratio, 3), ratio >= 1 - THROUGHPUT_TARGET),
    ]
    payload = {"title": "GUI responsiveness", "tables": tables, "targets": targets, "settings": settings, "direct": direct, "widget": gui}
    print_tables(tables, targets)
    path = save_results(NAME, payload, results_dir(args), args.quick, machine)
    print(f"\nResults: {path}")
    return payload


if __name__ == "__main__":
    main()
