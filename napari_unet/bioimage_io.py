"""Export a trained model as a bioimage.io model package (bioimage.io spec 0.5).

The package is what Fiji/deepImageJ, ilastik, QuPath and bioimageio.core
load: ``rdf.yaml`` describing the tensors, TorchScript weights (which need
nothing of this package to run) and the PyTorch state dict with its
architecture (``napari_unet`` installed), a test input with its expected
output, a cover image and a README with the classes and the training
history.

The network is treated as a black box: ``segmenter.model`` maps the
normalised image ``(N, C, *spatial)`` (float32) to class logits
``(N, n_classes, *spatial)``. It is wrapped with a softmax
(:class:`ProbabilityNet`), so the package outputs probabilities; whatever
the network computes inside (its fixed filter bank included) is traced
into the TorchScript weights. The intensity normalisation (percentiles of
each whole image mapped to 0 and 1, :mod:`.normalize`) is declared as
bioimage.io pre-processing, which consumers compute over the whole image
before tiling, as this package does.

bioimageio.spec (and bioimageio.core for the check) are imported only when
a package is written: ``pip install "napari-stroke-unet[bioimageio]"``.
"""

from __future__ import annotations

import copy
import getpass
import math
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_unet.errors import UserInputError
from napari_unet.io.atomic import atomic_path

#: Side of the test input (and of the traced example), per spatial axis.
TEST_SIZE = {2: (256, 256), 3: (32, 128, 128)}
#: Smallest input a consumer may pass, per spatial axis (before rounding up to the network's size multiple).
MIN_SIZE = {2: (128, 128), 3: (32, 64, 64)}
#: Border of each output tile a consumer should discard when tiling (half the engine's tile overlap).
HALO = {2: 32, 3: 16}
#: The traced network must reproduce the eager one this closely (probabilities).
TRACE_TOLERANCE = 1e-4
U_NET_DOI = "10.1007/978-3-319-24574-4_28"
INSTALL_HINT = "exporting to bioimage.io needs bioimageio.spec and bioimageio.core: pip install 'napari-stroke-unet[bioimageio]'"


class ProbabilityNet(nn.Module):
    """``softmax(net(x))`` over classes: the network of a package, probabilities out."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(x), dim=1)


def probability_network(config: dict) -> nn.Module:
    """The package's architecture for its PyTorch state dict (bioimage.io calls this).

    Parameters
    ----------
    config : dict
        The model's architecture (``UNetConfig.to_dict()``), as stored in the package.
    """
    from napari_unet.core.model import UNetConfig
    from napari_unet.core.segmenter import Segmenter

    # Built the way a model file is loaded, so the state dict's keys match.
    return ProbabilityNet(Segmenter(UNetConfig.from_dict(config), device="cpu").model).eval()


@dataclass(frozen=True)
class Geometry:
    """Input sizes of a package: the test input's, and what consumers may pass."""

    test: tuple[int, ...]
    minimum: tuple[int, ...]
    step: int
    #: True when the traced network only reproduces the eager one at ``test``'s size.
    fixed: bool = False


def _round_up(n: int, multiple: int) -> int:
    return int(math.ceil(n / multiple) * multiple)


def _size_multiple(segmenter) -> int:
    """Inputs divisible by this need no padding inside the network (``UNetConfig.size_multiple``)."""
    return int(getattr(segmenter.config, "size_multiple", 2 ** (int(segmenter.config.depth) - 1)))


def geometry(segmenter, sample_shape: Sequence[int]) -> Geometry:
    """Test-input size (a crop of the sample, at most :data:`TEST_SIZE`) and the allowed sizes."""
    from napari_unet.core.segmenter import model_ndim

    ndim = model_ndim(segmenter.config)
    step = _size_multiple(segmenter)
    minimum = tuple(_round_up(max(m, 2 * HALO[ndim] + step), step) for m in MIN_SIZE[ndim])
    test = tuple(max(lo, min(_round_up(s, step), t)) for s, t, lo in zip(sample_shape, TEST_SIZE[ndim], minimum))
    return Geometry(test=test, minimum=minimum, step=step)


def default_sample(channels: int, ndim: int) -> np.ndarray:
    """A synthetic nuclei image ``(C, *spatial)`` when no sample image is given."""
    from napari_unet.eval.synthetic import make_nuclei

    if ndim == 2:
        plane = make_nuclei(TEST_SIZE[2], seed=0).image.astype(np.float32)
    else:
        depth = TEST_SIZE[3][0]
        plane = np.stack([make_nuclei(TEST_SIZE[3][1:], seed=z).image.astype(np.float32) for z in range(depth)])
    return np.repeat(plane[None], channels, axis=0)


def sample_from_planes(planes, index: tuple | None = None) -> np.ndarray:
    """Plane ``index`` (default the first) of an image, centre-cropped to the test size, as ``(C, *spatial)``.

    Only the crop is read from a lazy image.
    """
    image = planes.image(next(iter(planes.indices())) if index is None else tuple(index))
    ndim = planes.spatial_ndim
    spatial = tuple(image.shape[-ndim:])
    box = tuple(slice(max(0, (s - t) // 2), max(0, (s - t) // 2) + t) for s, t in zip(spatial, TEST_SIZE[ndim]))
    crop = np.asarray(image[(Ellipsis,) + box], dtype=np.float32)
    return crop if crop.ndim == ndim + 1 else crop[None]


def _fit(sample: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Centre-crop or reflect-pad ``(C, *spatial)`` to ``shape``."""
    out = sample
    for axis, want in enumerate(shape, start=1):
        have = out.shape[axis]
        if have > want:
            start = (have - want) // 2
            out = np.take(out, np.arange(start, start + want), axis=axis)
        elif have < want:
            pad = [(0, 0)] * out.ndim
            pad[axis] = ((want - have) // 2, want - have - (want - have) // 2)
            out = np.pad(out, pad, mode="reflect" if have > 1 else "edge")
    return np.ascontiguousarray(out, dtype=np.float32)


def normalize_like_package(image: np.ndarray, normalization) -> np.ndarray:
    """The pre-processing the package declares, as a consumer computes it.

    Per image: bioimage.io ``scale_range``, ``(x - p_low) / (p_high - p_low + 1e-6)``
    with the percentiles over channels and space (as :func:`.normalize.image_range`);
    fixed: ``scale_linear`` with the training set's values.
    """
    from napari_unet.core.normalize import image_range

    low, high = image_range(image, normalization)
    if normalization.per_image:
        return ((image - np.float32(low)) / np.float32(high - low + 1e-6)).astype(np.float32)
    gain, offset = _linear(low, high)
    return (image * np.float32(gain) + np.float32(offset)).astype(np.float32)


def _linear(low: float, high: float) -> tuple[float, float]:
    scale = 1.0 / max(high - low, 1e-6)
    return scale, -low * scale


def _random_input(shape: tuple[int, ...], channels: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.rand((1, channels) + tuple(shape), generator=generator)


def trace(net: nn.Module, example: torch.Tensor, other_shape: tuple[int, ...]) -> tuple[torch.jit.ScriptModule, bool]:
    """TorchScript of ``net`` by tracing; whether it also holds at another input size.

    Tracing records the operations run on ``example``: a network whose
    Python code branches on the input's size may then be right only at
    that size. The trace is compared with the eager network at
    ``example``'s size (it must agree) and at ``other_shape``.

    Returns
    -------
    (ScriptModule, bool)
        The traced module and True when it agrees at ``other_shape`` too.

    Raises
    ------
    UserInputError
        If the network cannot be traced or the trace disagrees at ``example``'s size.
    """
    with torch.no_grad(), warnings.catch_warnings():
        # TracerWarnings name size-dependent branches: the comparisons below check what they warn about.
        warnings.simplefilter("ignore")
        try:
            traced = torch.jit.trace(net, example, check_trace=False)
        except Exception as exc:  # tracing raises many types for unsupported code
            raise UserInputError(f"cannot convert the network to TorchScript: {type(exc).__name__}: {exc}") from exc
        if not _agrees(net, traced, example):
            raise UserInputError("the TorchScript network does not reproduce the model's output")
        other = _random_input(other_shape, example.shape[1])
        return traced, _agrees(net, traced, other)


def _agrees(net: nn.Module, traced: nn.Module, x: torch.Tensor) -> bool:
    try:
        got = traced(x)
    except Exception:  # a size the trace cannot run at all
        return False
    want = net(x)
    return got.shape == want.shape and bool((got - want).abs().max() <= TRACE_TOLERANCE)


def _package_name(name: str) -> str:
    """A name bioimage.io accepts: letters, digits, ``_+- ()``, 5 to 128 characters."""
    allowed = "".join(c if c.isalnum() or c in "_+- ()" else " " for c in name).strip()
    allowed = " ".join(allowed.split())[:128]
    return allowed if len(allowed) >= 5 else f"napari-unet {allowed}".strip()


# -- training history --------------------------------------------------------
def history_runs(history: Sequence[dict]) -> list[dict]:
    """One summary per training run: steps, seconds, last loss, best validation IoU."""
    runs: dict[int, list[dict]] = {}
    for entry in history:
        runs.setdefault(int(entry.get("run", 0)), []).append(entry)
    out = []
    for run, entries in sorted(runs.items()):
        ious = [e["val_iou"] for e in entries if e.get("val_iou") is not None]
        out.append(
            {
                "run": run + 1,
                "steps": int(entries[-1].get("step", len(entries))),
                "seconds": float(entries[-1].get("elapsed", 0.0)),
                "loss": float(entries[-1].get("loss", float("nan"))),
                "best_val_iou": max(ious) if ious else None,
            }
        )
    return out


def describe_training(history: Sequence[dict]) -> str:
    """``"2 training runs, 300 steps in 95 s; best validation IoU 0.87"``."""
    runs = history_runs(history)
    if not runs:
        return "no training history (a loaded or untrained model)"
    steps = sum(r["steps"] for r in runs)
    seconds = sum(r["seconds"] for r in runs)
    ious = [r["best_val_iou"] for r in runs if r["best_val_iou"] is not None]
    text = f"{len(runs)} training run{'s' if len(runs) != 1 else ''}, {steps} steps in {seconds:.0f} s"
    return text + (f"; best validation IoU {max(ious):.3f}" if ious else "")


def _history_table(history: Sequence[dict]) -> str:
    lines = ["| run | steps | seconds | last training loss | best validation IoU |", "| --- | --- | --- | --- | --- |"]
    for r in history_runs(history):
        iou = f"{r['best_val_iou']:.3f}" if r["best_val_iou"] is not None else "–"
        lines.append(f"| {r['run']} | {r['steps']} | {r['seconds']:.1f} | {r['loss']:.4f} | {iou} |")
    return "\n".join(lines)


def _thinned_history(history: Sequence[dict], limit: int = 500) -> list[dict]:
    """At most ``limit`` history entries (evenly spaced, the last kept), as plain YAML values."""
    history = list(history)
    if len(history) > limit:
        keep = sorted(set(np.linspace(0, len(history) - 1, limit).round().astype(int).tolist()))
        history = [history[i] for i in keep]
    return [{k: (None if v is None else float(v) if isinstance(v, float) else int(v)) for k, v in e.items()} for e in history]


def _half_contrast_text(segmenter) -> str:
    """The README's word on a step napari-unet adds after the network (empty when the model has none)."""
    from napari_unet.core.half_contrast import PEAK_RADIUS

    if not segmenter.half_contrast:
        return ""
    return (
        "\n\nThis model's strokes never showed where objects end, so napari-unet also moves object pixels "
        "whose contrast over the local background is under half of the brightest object pixel within "
        f"{PEAK_RADIUS} pixels to background (edges at half contrast). That step is not part of these weights: "
        "their objects reach further into the blur around bright objects."
    )


def _readme(name: str, segmenter, geo: Geometry, ndim: int) -> str:
    from napari_unet import DISTRIBUTION, __version__

    norm = segmenter.normalization
    names = segmenter.names()
    axes = "z, y, x" if ndim == 3 else "y, x"
    if norm.per_image:
        pre = (
            f"`scale_range`: the {norm.low_percentile:g} and {norm.high_percentile:g} percentiles of the whole image "
            "(all channels together) are mapped to 0 and 1, without clipping."
        )
    else:
        pre = f"`scale_linear`: the training images' intensities {norm.low:g} and {norm.high:g} are mapped to 0 and 1."
    sizes = (
        f"exactly {' x '.join(map(str, geo.test))}"
        if geo.fixed
        else f"at least {' x '.join(map(str, geo.minimum))}, in steps of {geo.step}"
    )
    classes = "\n".join(f"- channel {i}: {n}" for i, n in enumerate(names))
    return f"""# {name}

A {ndim}D U-Net trained interactively from painted strokes with
[{DISTRIBUTION}](https://pypi.org/project/{DISTRIBUTION}/) {__version__}
(the `napari_unet` package, a napari plugin).

## Input

One image `(batch, channel, {axes})` with {segmenter.config.in_channels} channel(s), float32;
spatial size {sizes} (bioimage.io consumers tile larger images).
Pre-processing: {pre}

## Output

Class probabilities `(batch, class, {axes})` (softmax over classes, summing to 1):

{classes}

In napari-unet, a pixel is an object when the object classes' probabilities
together reach 0.5; touching objects are then split by a watershed on the
distance transform. Discard a border of {HALO[ndim]} pixels of each tile when
tiling (the output's halo).{_half_contrast_text(segmenter)}

## Training

{describe_training(segmenter.history)}.

{_history_table(segmenter.history)}

The network is a U-Net (Ronneberger et al. 2015) behind a fixed multiscale
filter bank (Gaussian smoothing, gradient magnitude, Hessian eigenvalues);
the TorchScript weights contain both.

## Validation

The validation IoU above is measured during training on blocks of the
painted strokes that were held out from training, not on independent
data. Check the model on images of your own with a few fully annotated
objects before relying on it; the test input and output of this package
only check that a consumer reproduces the network.
"""


def _cover(path: Path, image: np.ndarray, probabilities: np.ndarray, ndim: int) -> Path:
    """A 2:1 PNG: the normalised test input beside the object probability."""
    from matplotlib import colormaps
    from matplotlib.image import imsave

    def middle(a: np.ndarray) -> np.ndarray:
        return a[a.shape[0] // 2] if ndim == 3 else a

    raw = middle(image[0])
    lo, hi = np.percentile(raw, [1, 99.8])
    raw = np.clip((raw - lo) / max(hi - lo, 1e-6), 0, 1)
    foreground = middle(1.0 - probabilities[0])
    left = np.repeat(raw[..., None], 3, axis=-1)
    right = colormaps["magma"](np.clip(foreground, 0, 1))[..., :3]
    imsave(path, (np.concatenate([left, right], axis=1) * 255).astype(np.uint8))
    return path


# -- the package ----------------------------------------------------------------
def export_model(
    segmenter,
    path: str | Path,
    sample: np.ndarray | None = None,
    name: str | None = None,
    authors: Sequence[str] | None = None,
    test: bool = True,
) -> Path:
    """Write ``segmenter`` as a bioimage.io model package (a ``.zip``), atomically.

    Parameters
    ----------
    segmenter : Segmenter
        A trained model (its ``model``, ``config``, ``normalization``,
        ``names()`` and ``history`` are used).
    path : str or Path
        The package to write.
    sample : numpy.ndarray, optional
        A raw image ``(C, *spatial)`` (or ``(*spatial)`` for one channel)
        whose centre gives the test input and the cover; a synthetic
        nuclei image by default.
    name : str, optional
        The model's name in the package.
    authors : sequence of str, optional
        Author names (default: the user's login name).
    test : bool
        Check the written package with bioimageio.core (the model runs on
        its test input and must reproduce the expected output) before it
        is moved into place.

    Returns
    -------
    Path
        The package.

    Raises
    ------
    UserInputError
        Without a trained model, without the bioimageio packages, or when
        the network cannot be converted or the package fails its check.
    """
    from napari_unet.core.segmenter import as_channels_first, model_ndim

    if segmenter.model is None or segmenter.config is None:
        raise UserInputError("no model to export: train one or load a model file first")
    try:
        import bioimageio.spec  # noqa: F401
    except ImportError as exc:
        raise UserInputError(INSTALL_HINT) from exc
    ndim = model_ndim(segmenter.config)
    channels = int(segmenter.config.in_channels)
    raw = default_sample(channels, ndim) if sample is None else as_channels_first(np.asarray(sample, np.float32), ndim)
    if raw.shape[0] != channels:
        from napari_unet.core.segmenter import channel_mismatch

        raise channel_mismatch(channels, raw.shape[0])
    net = ProbabilityNet(copy.deepcopy(segmenter.model).cpu()).eval()
    geo = geometry(segmenter, raw.shape[1:])
    test_input = _fit(raw, geo.test)[None]
    example = torch.from_numpy(normalize_like_package(test_input, segmenter.normalization))
    with torch.no_grad():
        expected = net(example).numpy()
    traced, general = trace(net, example, geo.minimum)
    if not general:  # right only at the traced size: consumers must tile at that size
        geo = Geometry(geo.test, geo.test, geo.step, fixed=True)
    path = Path(path)
    name = _package_name(name or path.stem)
    with tempfile.TemporaryDirectory(prefix="napari-unet-bioimageio-") as folder, atomic_path(path) as tmp:
        files = Path(folder)
        np.save(files / "test_input.npy", test_input)
        np.save(files / "test_output.npy", expected)
        traced.save(str(files / "weights_torchscript.pt"))
        torch.save(net.state_dict(), files / "weights_state_dict.pt")
        _cover(files / "cover.png", test_input[0], expected[0], ndim)
        (files / "README.md").write_text(_readme(name, segmenter, geo, ndim), encoding="utf-8")
        descr = _description(segmenter, files, name, authors, geo, ndim)
        package = _save_package(descr, files / "package.zip")
        if test:
            check_package(package)
        shutil.move(str(package), tmp)
    return path


def _description(segmenter, files: Path, name: str, authors: Sequence[str] | None, geo: Geometry, ndim: int):
    """The bioimage.io ``ModelDescr`` of a package whose files are in ``files``."""
    from bioimageio.spec.model import v0_5 as bio

    from napari_unet import DISTRIBUTION, __version__

    spatial = "zyx"[-ndim:] if ndim == 3 else "yx"
    if geo.fixed:
        in_axes = [bio.SpaceInputAxis(id=bio.AxisId(a), size=s) for a, s in zip(spatial, geo.test)]
    else:
        in_axes = [
            bio.SpaceInputAxis(id=bio.AxisId(a), size=bio.ParameterizedSize(min=m, step=geo.step)) for a, m in zip(spatial, geo.minimum)
        ]
    channel_names = [f"channel{i}" for i in range(int(segmenter.config.in_channels))]
    inputs = bio.InputTensorDescr(
        id=bio.TensorId("raw"),
        description="the raw image (any intensity range: it is normalised by the pre-processing)",
        axes=[bio.BatchAxis(), bio.ChannelAxis(channel_names=channel_names), *in_axes],
        test_tensor=bio.FileDescr(source=files / "test_input.npy"),
        data=bio.IntervalOrRatioDataDescr(type="float32"),
        preprocessing=[bio.EnsureDtypeDescr(kwargs=bio.EnsureDtypeKwargs(dtype="float32")), _normalization(bio, segmenter.normalization, spatial)],
    )
    out_axes = [
        bio.SpaceOutputAxisWithHalo(id=bio.AxisId(a), size=bio.SizeReference(tensor_id=bio.TensorId("raw"), axis_id=bio.AxisId(a)), halo=HALO[ndim])
        for a in spatial
    ]
    outputs = bio.OutputTensorDescr(
        id=bio.TensorId("probabilities"),
        description="class probabilities (softmax over the class axis)",
        axes=[bio.BatchAxis(), bio.ChannelAxis(id=bio.AxisId("channel"), channel_names=segmenter.names()), *out_axes],
        test_tensor=bio.FileDescr(source=files / "test_output.npy"),
        data=bio.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
    )
    version = bio.Version(torch.__version__.split("+")[0])
    weights = bio.WeightsDescr(
        pytorch_state_dict=bio.PytorchStateDictWeightsDescr(
            source=files / "weights_state_dict.pt",
            architecture=bio.ArchitectureFromLibraryDescr(
                import_from=__name__, callable=bio.Identifier("probability_network"), kwargs={"config": segmenter.config.to_dict()}
            ),
            pytorch_version=version,
        ),
        torchscript=bio.TorchscriptWeightsDescr(source=files / "weights_torchscript.pt", pytorch_version=version, parent="pytorch_state_dict"),
    )
    description = (
        f"U-Net trained from painted strokes in napari ({DISTRIBUTION} {__version__}): "
        f"{len(segmenter.names())} classes ({', '.join(segmenter.names())}); {describe_training(segmenter.history)}. "
        "Outputs class probabilities."
    )
    return bio.ModelDescr(
        name=name,
        description=description[:512],
        authors=[bio.Author(name=a) for a in (authors or [_user()])],
        cite=[bio.CiteEntry(text="Ronneberger, Fischer and Brox: U-Net, MICCAI 2015", doi=bio.Doi(U_NET_DOI))],
        license=bio.LicenseId("CC-BY-4.0"),
        tags=["napari", "napari-unet", "u-net", "pytorch", "semantic-segmentation", "instance-segmentation", f"{ndim}d"],
        documentation=bio.FileDescr(source=files / "README.md"),
        covers=[bio.FileDescr(source=files / "cover.png")],
        inputs=[inputs],
        outputs=[outputs],
        weights=weights,
        config={
            "napari_unet": {
                "version": __version__,
                "unet": segmenter.config.to_dict(),
                "normalization": segmenter.normalization.to_dict(),
                "class_names": segmenter.names(),
                "training_runs": history_runs(segmenter.history),
                "history": _thinned_history(segmenter.history),
            }
        },
    )


def _normalization(bio, normalization, spatial: str):
    """The pre-processing step that reproduces :mod:`.normalize` for one image."""
    axes = [bio.AxisId("channel")] + [bio.AxisId(a) for a in spatial]
    if normalization.per_image or normalization.low is None or normalization.high is None:
        return bio.ScaleRangeDescr(
            kwargs=bio.ScaleRangeKwargs(
                axes=axes, min_percentile=float(normalization.low_percentile), max_percentile=float(normalization.high_percentile)
            )
        )
    gain, offset = _linear(float(normalization.low), float(normalization.high))
    return bio.ScaleLinearDescr(kwargs=bio.ScaleLinearKwargs(gain=gain, offset=offset))


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name (containers)
        return "napari-unet user"


def _save_package(descr: Any, path: Path) -> Path:
    from bioimageio.spec import save_bioimageio_package

    try:
        return Path(save_bioimageio_package(descr, output_path=path))
    except Exception as exc:  # validation errors come as several types
        raise UserInputError(f"bioimage.io rejected the model description: {exc}") from exc


def check_package(path: str | Path) -> None:
    """Run bioimageio.core's test on a package (``bioimageio test``); raise unless it passes.

    Raises
    ------
    UserInputError
        Naming the failed checks.
    """
    try:
        from bioimageio.core import test_model
    except ImportError as exc:
        raise UserInputError(INSTALL_HINT) from exc
    summary = test_model(str(path))
    if summary.status != "passed":
        failed = [f"{d.name}: {'; '.join(str(e.msg) for e in d.errors)}" for d in summary.details if d.status != "passed"]
        raise UserInputError("the bioimage.io package failed its test: " + " | ".join(failed or [summary.status]))
