"""Regenerate the bundled sample TIFFs next to this script.

Usage::

    python sample_data/make_sample.py

The parameters live in ``napari_unet.eval.synthetic.SAMPLE_PARAMS`` (also used
by the napari sample-data menu entry), so the files and the menu entry agree.
"""

from __future__ import annotations

import sys
from pathlib import Path

import tifffile

HERE = Path(__file__).resolve().parent
try:
    from napari_unet.eval.synthetic import SAMPLE_PARAMS, make_nuclei
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, str(HERE.parent))
    from napari_unet.eval.synthetic import SAMPLE_PARAMS, make_nuclei

#: File name -> attribute of the SyntheticSample written to it.
FILES = {
    "nuclei_image.tif": "image",
    "nuclei_annotations.tif": "annotations",
    "nuclei_truth.tif": "instances",
}


def main() -> int:
    """Write the three sample TIFFs and print their paths and sizes."""
    sample = make_nuclei(**SAMPLE_PARAMS)
    for name, attr in FILES.items():
        path = HERE / name
        # zlib is built into Python, so reading needs no extra codec package.
        tifffile.imwrite(path, getattr(sample, attr), compression="zlib")
        print(f"{path}  {path.stat().st_size // 1024} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
