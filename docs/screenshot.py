"""Make ``docs/screenshot.png``: the widget after a real training on the sample.

Runs the loop a user would: open the synthetic sample, add annotations
from its strokes, train (for real, through the widget's worker), predict,
then grab the whole napari window.

    xvfb-run -a python docs/screenshot.py          # no display (CI, servers)
    python docs/screenshot.py --steps 120          # with a display

Takes about a minute on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MAX_BYTES = 500 * 1024


def _wait(app, condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the widget did not finish in time")
        app.processEvents()
        time.sleep(0.02)


def _save_small(image, path: Path) -> int:
    """Save an RGB(A) array as PNG, reducing colours if it would exceed 500 KB."""
    from PIL import Image

    picture = Image.fromarray(image[..., :3])
    picture.save(path, optimize=True)
    if path.stat().st_size > MAX_BYTES:
        # Screen captures have few distinct colours: a 256-colour palette is lossless-looking.
        picture.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return path.stat().st_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="training steps (default 100)")
    parser.add_argument("--out", type=Path, default=HERE / "screenshot.png")
    args = parser.parse_args(argv)

    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(title="napari-unet")
    viewer.window.resize(1400, 900)
    app = QApplication.instance()
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet", "U-Net segmentation")
    widget.setMinimumWidth(380)  # room for the plot and the labels

    # File ▸ Open Sample ▸ napari-unet ▸ Synthetic nuclei; the sample's own
    # stroke layer is replaced by one made with "New", as a user would.
    viewer.open_sample("napari-unet", "nuclei")
    strokes = viewer.layers["nuclei annotations"].data.copy()
    viewer.layers.remove("nuclei annotations")
    widget.image_combo.setCurrentText("nuclei")
    annotations = widget.new_annotations()
    annotations.data = strokes

    widget.advanced.budget.setValue(args.steps)
    widget.seed = 0
    finished = []
    widget.prediction_finished.connect(lambda: finished.append(True))
    started = time.monotonic()
    widget.train()  # "predict after training" is on: the labels follow
    _wait(app, lambda: finished, timeout=1800)
    print(f"trained {args.steps} steps and predicted in {time.monotonic() - started:.0f} s: {widget.train_progress.format()}")

    viewer.layers.selection.active = annotations  # the strokes layer, as while painting
    for _ in range(25):  # let napari lay out the window at its final size
        app.processEvents()
        time.sleep(0.02)
    viewer.reset_view()  # fit the image to the canvas as laid out
    for _ in range(25):
        app.processEvents()
        time.sleep(0.02)
    image = viewer.screenshot(canvas_only=False, flash=False)
    size = _save_small(image, args.out)
    print(f"wrote {args.out} ({image.shape[1]}x{image.shape[0]}, {size / 1024:.0f} KB)")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
