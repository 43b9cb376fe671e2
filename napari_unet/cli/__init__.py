"""The ``napari-unet`` command line: train, predict and a self-contained demo.

Contract (scripts outside the project call it)::

    napari-unet train IMAGE.tif ANNOTATIONS.tif [IMAGE ANNOTATIONS ...] -o MODEL
                      [--axes AXES] [--3d | --2d] [--whole-objects]
                      [--max-time SECONDS | --steps N]
                      [--resume MODEL] [--device auto|cpu|cuda|mps] [--seed N]
    napari-unet predict IMAGE.tif -m MODEL -o LABELS.tif|.zarr [--instances INSTANCES.tif]
                        [--probabilities PROBS.tif] [--uncertainty U.tif] [--axes AXES] [--tile N]
    napari-unet predict INPUT [INPUT ...] -m MODEL -o FOLDER [--instances]
                        [--format tif|zarr] [--axes AXES] [--tile N]
                        [--workers N | --scheduler ADDRESS] [--measurements [OBJECTS.csv]]
    napari-unet export MODEL -o PACKAGE.zip [--sample IMAGE.tif] [--axes AXES] [--name NAME]
                       [--author NAME ...] [--no-test]
    napari-unet evaluate PREDICTED.tif TRUTH.tif [--semantic] [--json]
    napari-unet demo [--steps N | --max-time SECONDS] [--output FOLDER]

Every command also takes ``--debug`` (the traceback of an error).

``predict --measurements [OBJECTS.csv]`` also writes one row per object.
INPUT is a file, a folder (its TIFFs) or a quoted glob pattern. Several
inputs are predicted in parallel through dask: threads of the local
scheduler, or an existing dask.distributed cluster with ``--scheduler``.

Exit status: 0 done; 1 an error, printed as one line
(``napari-unet: error: ...``) naming the file concerned, without a traceback
(``--debug`` adds it; an unexpected internal error says so); 2 a command
line argparse cannot parse; 130 interrupted by Ctrl-C; 143 stopped by
SIGTERM (a batch scheduler ending the job). ``train`` treats Ctrl-C and
SIGTERM alike: it stops, keeps the best weights so far and still writes the
model. In a batch, each failing file gets its own error line, the other
files are still written, and the exit status is 1.

Nothing is lost: an output that would replace an input of the same command
(or another output) is refused before any work; outputs that cannot be
written (missing or read-only folder, a folder in the way) are found before
training or prediction starts; the outputs of one command are written under
temporary names and moved into place together, or not at all, keeping any
previous outputs (:func:`napari_unet.io.atomic.atomic_group`); a model
that cannot be written after training is saved elsewhere and that place
printed.

Modules, lowest first (none imports one above it): :mod:`~napari_unet.cli.status`
(exit statuses, SIGTERM), :mod:`~napari_unet.cli.guards` (refusals before
any work), the commands :mod:`~napari_unet.cli.train`,
:mod:`~napari_unet.cli.predict`, :mod:`~napari_unet.cli.export` and
:mod:`~napari_unet.cli.demo`, then :mod:`~napari_unet.cli.parser` and
:mod:`~napari_unet.cli.app` (:func:`main`, errors as one line).
"""

from napari_unet.cli.app import main

__all__ = ["main"]
