"""``napari-unet demo``: sample → strokes → train → predict → TIFFs → scores.

Runs the whole loop on the bundled synthetic sample (generated in memory, so
it works offline from a wheel), then scores the U-Net against the sample's
ground truth and against the two classic baselines on held-out images.
Trains through :func:`napari_unet.cli.train.run_training`, the same
progress bar and Ctrl-C handling as ``napari-unet train``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from napari_unet.cli.guards import check_budget
from napari_unet.errors import UserInputError

HELD_OUT_IMAGES = 3


def _score_row(name: str, scores: list[tuple[float, float]], seconds: float | None) -> str:
    iou = sum(s[0] for s in scores) / len(scores)
    f1 = sum(s[1] for s in scores) / len(scores)
    t = f"{seconds:7.1f}" if seconds is not None else "      -"
    return f"  {name:<34} {iou:7.3f} {f1:11.3f} {t}"


def run_demo(output: str | Path = "napari-unet-demo", steps: int | None = None, max_time: float | None = None, device: str = "auto", seed: int = 0) -> int:
    """Run the demo and print what it did and how good the result is.

    Parameters
    ----------
    output : str or Path
        Folder for the TIFFs and the model (created if missing).
    steps, max_time : optional
        Training budget (default 200 steps).
    device : str
        ``auto``, ``cpu``, ``cuda`` or ``mps``.
    seed : int
        Seed for a repeatable run on the CPU.

    Returns
    -------
    int
        Exit status (0).
    """
    from napari_unet.cli.train import run_training
    from napari_unet.core.postprocess import postprocess
    from napari_unet.core.segmenter import Segmenter
    from napari_unet.core.training import TrainConfig
    from napari_unet.eval.baselines import otsu_watershed, random_forest
    from napari_unet.eval.metrics import foreground_iou, instance_f1
    from napari_unet.eval.synthetic import SAMPLE_PARAMS, make_nuclei, make_nuclei_set
    from napari_unet.io.tiff import write_labels, write_tiff

    out = Path(output)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserInputError(f"cannot create the demo folder {str(out)!r}: {exc.strerror}") from exc
    sample = make_nuclei(**SAMPLE_PARAMS)
    n_strokes = int((sample.annotations > 0).sum())
    print(f"1. sample: synthetic nuclei {sample.image.shape[0]}x{sample.image.shape[1]}, {int(sample.instances.max())} nuclei, "
          f"{n_strokes} painted pixels ({100 * n_strokes / sample.image.size:.1f} % of the image)")
    write_tiff(out / "image.tif", sample.image)
    write_labels(out / "annotations.tif", sample.annotations)

    if steps is not None and steps < 1:
        raise UserInputError(f"--steps must be at least 1, not {steps}")  # 0 used to mean "the default"
    config = TrainConfig(steps=200 if steps is None and max_time is None else steps, max_time=max_time, seed=seed)
    segmenter = Segmenter(device=device)
    last, interrupted = run_training(segmenter, sample.image, sample.annotations, config)
    if last is None or segmenter.model is None:
        raise UserInputError("the demo's training was stopped before the first step")
    segmenter.save(out / "model.pt")
    print(f"2. trained a {segmenter.config.depth}-level U-Net (width {segmenter.config.width}) for {last.step} steps "
          f"in {last.elapsed:.1f} s on {segmenter.device_label}{' (interrupted)' if interrupted else ''}")

    probs = segmenter.predict_probabilities(sample.image)
    semantic, instances = postprocess(probs)
    write_labels(out / "semantic.tif", semantic)
    write_labels(out / "instances.tif", instances)
    print(f"3. predicted the sample: {int(instances.max())} objects; wrote {out}/semantic.tif, instances.tif, model.pt")

    held_out = make_nuclei_set(HELD_OUT_IMAGES, SAMPLE_PARAMS["shape"], seed=SAMPLE_PARAMS["seed"])
    rows = {"U-Net (napari-unet)": [], "random forest, same strokes": [], "Otsu + watershed": []}
    times = {k: 0.0 for k in rows}
    for test in held_out:
        t = time.perf_counter()
        sem, inst = postprocess(segmenter.predict_probabilities(test.image))
        times["U-Net (napari-unet)"] += time.perf_counter() - t
        rows["U-Net (napari-unet)"].append((foreground_iou(sem, test.instances), instance_f1(inst, test.instances).f1))
        t = time.perf_counter()
        sem, inst = random_forest(sample.image, sample.annotations, predict_on=test.image, seed=seed)
        times["random forest, same strokes"] += time.perf_counter() - t
        rows["random forest, same strokes"].append((foreground_iou(sem, test.instances), instance_f1(inst, test.instances).f1))
        t = time.perf_counter()
        sem, inst = otsu_watershed(test.image)
        times["Otsu + watershed"] += time.perf_counter() - t
        rows["Otsu + watershed"].append((foreground_iou(sem, test.instances), instance_f1(inst, test.instances).f1))
    print(f"4. accuracy on {HELD_OUT_IMAGES} held-out synthetic images (mean; instance F1 at IoU 0.5):")
    print(f"  {'method':<34} {'fg IoU':>7} {'instance F1':>11} {'time s':>7}")
    for name, scores in rows.items():
        print(_score_row(name, scores, times[name]))
    print("  (U-Net time: prediction only; random forest: training + prediction; Otsu: no training)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """``napari-unet demo``: the whole loop on the bundled sample, scored against its ground truth."""
    check_budget(args.steps, args.max_time)
    return run_demo(args.output, steps=args.steps, max_time=args.max_time, device=args.device, seed=args.seed)
