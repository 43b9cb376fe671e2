"""Speed: the engine against bare PyTorch, measured as ratios in one run.

(a) A training step of the engine (``Segmenter.train``: patch sampling,
    augmentation, validation every 10 steps, best-weights bookkeeping)
    against a bare PyTorch loop with the same U-Net, AdamW, batch and patch on
    pre-made random tensors. Target: at most 1.1x.
(b) Tiled prediction of a 512² image through the engine against one untiled
    forward pass of the same network. Target: at most 1.15x. 256 tiles with
    the engine's default overlap are reported alongside (not a target).
(c) Prediction throughput in megapixels per second at 512², 2048², 8192².

Runs interleave the variants and report medians, so a drift in machine load
hits all of them alike. On a CUDA machine the same tables are measured on
the GPU with and without mixed precision; otherwise that is reported as not
measured.

``python -m benchmarks.bench_speed`` (a few minutes on 2 cores), or
``--quick`` (seconds; numbers mean nothing).
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
import torch.nn.functional as F

from benchmarks._common import base_parser, print_tables, results_dir, save_results, start, table, target

NAME = "speed"
TRAIN_TARGET = 1.1
TILED_TARGET = 1.15


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic_image(size: int, seed: int = 0) -> np.ndarray:
    """A ``size``² uint16 nuclei image: tiled copies of one 512² synthetic image (cheap to make)."""
    from napari_unet.eval.synthetic import make_nuclei

    base = make_nuclei((min(size, 512), min(size, 512)), seed=seed).image
    reps = -(-size // base.shape[0])
    return np.tile(base, (reps, reps))[:size, :size]


def _amp_dtype(device: torch.device, amp: bool):
    if not (amp and device.type == "cuda"):
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


# -- (a) training -------------------------------------------------------------
def engine_step_time(device, amp: bool, steps: int, warmup: int, patch: int, batch: int, validate: bool) -> float:
    """Seconds per step of ``Segmenter.train`` after ``warmup`` steps."""
    from napari_unet.core.model import default_config
    from napari_unet.core.segmenter import Segmenter
    from napari_unet.core.training import TrainConfig
    from napari_unet.eval.synthetic import make_nuclei

    sample = make_nuclei((512, 512), seed=0)
    torch.manual_seed(0)
    seg = Segmenter(default_config(device), device=device)
    cfg = TrainConfig(steps=steps, patch_size=patch, batch_size=batch, seed=0, mixed_precision=amp, val_fraction=0.15 if validate else 0.0)
    elapsed = {}
    for p in seg.train(sample.image, sample.annotations, cfg):
        if not p.done:
            elapsed[p.step] = p.elapsed
    return (elapsed[steps] - elapsed[warmup]) / (steps - warmup)


def bare_step_time(device, amp: bool, steps: int, warmup: int, patch: int, batch: int) -> float:
    """Seconds per step of a plain PyTorch loop: same U-Net, AdamW, batch and patch."""
    from napari_unet.core.model import UNet, default_config

    torch.manual_seed(0)
    config = default_config(device)
    model = UNet(config).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    x = torch.randn(batch, config.in_channels, patch, patch, device=device)
    y = torch.randint(0, config.n_classes, (batch, patch, patch), device=device)
    dtype = _amp_dtype(device, amp)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    t0 = 0.0
    for i in range(steps):
        if i == warmup:
            _sync(device)
            t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    _sync(device)
    return (time.perf_counter() - t0) / (steps - warmup)


def sampler_time(patch: int, batch: int, repeats: int) -> float:
    """Seconds per batch of the engine's patch sampling and augmentation alone."""
    from napari_unet.core.normalize import apply_range, measure_percentiles
    from napari_unet.core.samples import PatchSampler, annotations_to_targets, prepare
    from napari_unet.eval.synthetic import make_nuclei

    sample = make_nuclei((512, 512), seed=0)
    image = apply_range(sample.image[None], *measure_percentiles(sample.image, 1.0, 99.8))
    rng = np.random.default_rng(0)
    data = prepare([image], [annotations_to_targets(sample.annotations)], patch, 0.15, rng)
    sampler = PatchSampler(data, patch, batch, True, rng)
    sampler.batch()
    t0 = time.perf_counter()
    for _ in range(repeats):
        sampler.batch()
    return (time.perf_counter() - t0) / repeats


def training_section(device, amp: bool, quick: bool, repeats: int) -> tuple[dict, dict]:
    """Interleaved engine / bare runs; returns the table and the raw medians."""
    steps, warmup, patch, batch = (6, 2, 64, 2) if quick else (50, 10, 128, 8)
    times: dict[str, list[float]] = {"bare": [], "engine": [], "engine_noval": []}
    for _ in range(repeats):
        times["engine"].append(engine_step_time(device, amp, steps, warmup, patch, batch, validate=True))
        times["engine_noval"].append(engine_step_time(device, amp, steps, warmup, patch, batch, validate=False))
        times["bare"].append(bare_step_time(device, amp, steps, warmup, patch, batch))
    med = {k: statistics.median(v) for k, v in times.items()}
    sampling = sampler_time(patch, batch, 3 if quick else 20)
    label = _label(device, amp)
    rows = [
        ["bare PyTorch loop", med["bare"], 1 / med["bare"], 1.0],
        ["engine (validation every 10 steps)", med["engine"], 1 / med["engine"], med["engine"] / med["bare"]],
        ["engine without validation", med["engine_noval"], 1 / med["engine_noval"], med["engine_noval"] / med["bare"]],
        ["of which patch sampling + augmentation", sampling, None, sampling / med["bare"]],
    ]
    title = f"Training step, {label}: batch {batch} × {patch}², median of {repeats} runs of {steps - warmup} steps after {warmup} warm-up"
    raw = {"device": label, "amp": amp, "steps": steps, "warmup": warmup, "patch": patch, "batch": batch, "repeats": times, "median_s": med, "sampling_s": sampling}
    return table(title, ["loop", "s/step", "steps/s", "× bare"], rows), raw


# -- (b) and (c) prediction ------------------------------------------------------
def default_overlap(gpu: bool = False) -> int:
    """The engine's default 2D tile overlap (read, not copied, so it follows the engine)."""
    from napari_unet.core.inference import default_tiling

    return default_tiling(2, gpu)[1]


def engine_predict(seg, image: np.ndarray, amp: bool) -> np.ndarray:
    """The engine's prediction path with its defaults; with AMP off on CUDA, the same steps with autocast disabled."""
    from napari_unet.core.inference import iter_predict_tiled
    from napari_unet.core.normalize import image_range

    if amp or seg.device.type != "cuda":
        return seg.predict_probabilities(image)
    # Segmenter.iter_predict has no switch for mixed precision: its GPU defaults (tile 1024, 4 per batch), AMP off.
    im = image[None]
    out = np.empty((seg.config.n_classes,) + image.shape, np.float32)
    for _ in iter_predict_tiled(seg.model, im, *image_range(im, seg.normalization), out, seg.device, 1024, default_overlap(), 4, mixed_precision=False):
        pass
    return out


def _timed(fn, device, repeats: int, warmup: int = 1) -> float:
    """Median seconds of ``fn()`` over ``repeats`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def _segmenter(device):
    from napari_unet.core.model import default_config
    from napari_unet.core.segmenter import Segmenter

    torch.manual_seed(0)
    return Segmenter(default_config(device), device=device)


def tiling_section(device, amp: bool, quick: bool, repeats: int) -> tuple[dict, dict]:
    """Engine prediction of 512² (default tile, and 256 tiles) against one untiled forward pass.

    Quick runs use 256² and 128 tiles.
    """
    from napari_unet.core.inference import iter_predict_tiled
    from napari_unet.core.normalize import apply_range, measure_percentiles

    seg = _segmenter(device)
    size = 256 if quick else 512
    small = size // 2
    image = synthetic_image(size)
    low, high = measure_percentiles(image, 1.0, 99.8)
    x = torch.from_numpy(apply_range(image[None, None], low, high)).to(device)
    dtype = _amp_dtype(device, amp)
    out = np.empty((seg.config.n_classes, size, size), np.float32)

    def untiled():
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            seg.model(x)

    overlap = default_overlap(device.type != "cpu")

    def tiled_only(tile):
        for _ in iter_predict_tiled(seg.model, image[None], low, high, out, device, tile, overlap, 1, mixed_precision=amp):
            pass

    n = 1 if quick else repeats
    t_untiled = _timed(untiled, device, n)
    t_engine = _timed(lambda: engine_predict(seg, image, amp), device, n)
    t_whole = _timed(lambda: tiled_only(size), device, n)
    t_small = _timed(lambda: tiled_only(small), device, n)
    rows = [
        ["one untiled forward pass", "–", t_untiled, 1.0],
        ["engine predict_probabilities (default tile)", "default", t_engine, t_engine / t_untiled],
        [f"iter_predict_tiled, tile {size}, overlap {overlap}", str(size), t_whole, t_whole / t_untiled],
        [f"iter_predict_tiled, tile {small}, overlap {overlap}", str(small), t_small, t_small / t_untiled],
    ]
    raw = {"device": _label(device, amp), "amp": amp, "size": size, "untiled_s": t_untiled, "engine_s": t_engine, "whole_tile_s": t_whole, "small_tile": small, "small_tile_s": t_small, "overlap": overlap}
    title = f"Prediction of {size}², {_label(device, amp)}: tiled vs untiled (median of {n})"
    return table(title, ["path", "tile", "s", "× untiled"], rows), raw


def throughput_section(device, amp: bool, sizes: tuple[int, ...], quick: bool) -> tuple[dict, list[dict]]:
    """Megapixels per second of the engine's prediction at each size."""
    seg = _segmenter(device)
    engine_predict(seg, synthetic_image(256), amp)  # warm-up (allocator, kernels)
    rows, raw = [], []
    for size in sizes:
        image = synthetic_image(size)
        repeats = 1 if quick or size >= 4096 else (2 if size >= 2048 else 5)
        t = _timed(lambda image=image: engine_predict(seg, image, amp), device, repeats, warmup=0)
        mp = size * size / 1e6
        rows.append([f"{size}²", mp, t, mp / t])
        raw.append({"size": size, "megapixels": mp, "seconds": t, "mp_per_s": mp / t, "repeats": repeats})
        del image  # free the large image before the next size
    return table(f"Prediction throughput, {_label(device, amp)} (engine, default tile)", ["image", "MP", "s", "MP/s"], rows), raw


def _label(device, amp: bool) -> str:
    if device.type == "cuda":
        return f"GPU {torch.cuda.get_device_name(device)}, mixed precision {'on' if amp else 'off'}"
    n = torch.get_num_threads()
    return f"CPU ({n} thread{'s' if n > 1 else ''})"


def device_sections(device, amp: bool, quick: bool, repeats: int, sizes: tuple[int, ...]) -> tuple[list[dict], dict]:
    """All three measurements on one device / precision."""
    label = _label(device, amp)
    print(f"\n... training step, {label}", flush=True)
    t_train, raw_train = training_section(device, amp, quick, repeats)
    print(f"... tiled vs untiled, {label}", flush=True)
    t_tile, raw_tile = tiling_section(device, amp, quick, 3 if quick else 10)
    print(f"... throughput, {label}", flush=True)
    t_tp, raw_tp = throughput_section(device, amp, sizes, quick)
    return [t_train, t_tile, t_tp], {"training": raw_train, "tiling": raw_tile, "throughput": raw_tp}


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; return the stored result."""
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats of the training comparison")
    parser.add_argument("--no-gpu", action="store_true", help="skip the GPU section even where CUDA is available")
    args = parser.parse_args(argv)
    machine = start(NAME, args)
    began = time.perf_counter()
    repeats = 1 if args.quick else args.repeats
    sizes = (128, 256) if args.quick else (512, 2048, 8192)

    cpu = torch.device("cpu")
    tables, raw = device_sections(cpu, False, args.quick, repeats, sizes)
    results = {"cpu": raw}
    tr, tl = raw["training"]["median_s"], raw["tiling"]
    train_ratio = tr["engine"] / tr["bare"]
    tiled_ratio = tl["engine_s"] / tl["untiled_s"]
    targets = [
        target("CPU training step, engine / bare PyTorch", f"≤ {TRAIN_TARGET}×", round(train_ratio, 3), train_ratio <= TRAIN_TARGET),
        target(f"CPU tiled {tl['size']}² prediction / untiled forward", f"≤ {TILED_TARGET}×", round(tiled_ratio, 3), tiled_ratio <= TILED_TARGET),
    ]

    notes = []
    if torch.cuda.is_available() and not args.no_gpu:
        gpu = torch.device("cuda")
        results["gpu"] = {}
        for amp in (True, False):
            t, r = device_sections(gpu, amp, args.quick, repeats, sizes)
            tables += t
            results["gpu"]["amp" if amp else "fp32"] = r
            ratio = r["training"]["median_s"]["engine"] / r["training"]["median_s"]["bare"]
            tiled = r["tiling"]["engine_s"] / r["tiling"]["untiled_s"]
            targets.append(target(f"GPU training step, engine / bare (AMP {'on' if amp else 'off'})", f"≤ {TRAIN_TARGET}×", round(ratio, 3), ratio <= TRAIN_TARGET))
            targets.append(target(f"GPU tiled {r['tiling']['size']}² / untiled (AMP {'on' if amp else 'off'})", f"≤ {TILED_TARGET}×", round(tiled, 3), tiled <= TILED_TARGET))
    else:
        notes.append("GPU: not measured (no CUDA device)" if not torch.cuda.is_available() else "GPU: not measured (--no-gpu)")
        results["gpu"] = None

    payload = {"title": "Speed", "tables": tables, "targets": targets, "notes": notes, "results": results, "total_s": round(time.perf_counter() - began, 1)}
    print_tables(tables, targets)
    for n in notes:
        print(f"\n{n}")
    path = save_results(NAME, payload, results_dir(args), args.quick, machine)
    print(f"\nTotal {payload['total_s']:.0f} s. Results: {path}")
    return payload


if __name__ == "__main__":
    main()
