"""Memory: peak resident memory while predicting large images, and its growth.

Each measurement runs in a fresh Python process, so peaks never mix. In it:
imports, model creation, a tiny warm-up prediction and the input image come
first; then the peak counter is reset (``/proc/self/clear_refs``) and the
image is predicted. Reported per image size and mode:

- ``peak RSS``: the process's peak resident set (VmHWM), everything counted
  (Python, torch, input, output). Target at 8192²: below 2 GB.
- ``predict +``: that peak minus the resident set just before predicting,
  i.e. what predicting this image added (output array included).
- ``peak anon``: peak anonymous memory (sampled every 5 ms), which excludes
  file-backed pages of memory maps: the kernel can drop those at will.

Modes: ``memory`` (numpy input, numpy output allocated by the engine) and
``memmap`` (input and output are ``np.memmap`` files: the bounded-memory
path for images larger than RAM).

Larger than memory (issue 5), the whole pipeline as the CLI and widget run
it: a lazy input on disk (an uncompressed TIFF, memory-mapped, or a zarr
array) predicted into on-disk outputs of the same kind (semantic and
instance labels through :func:`napari_unet.io.stores.open_output`),
instances computed block by block and stitched. Cases: one 8192² plane
(``plane``) and a 64×2048×2048 ZYX stack predicted plane by plane with the
2D model (``stack``), each reported with its throughput. The model is
briefly trained first (in the parent process) so the instances are real
nuclei, not one image-sized blob.

``python -m benchmarks.bench_memory`` (a few minutes; the large cases about
ten more on a CPU), or ``--quick``.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks._common import REPO_ROOT, base_parser, print_tables, results_dir, save_results, start, table, target

NAME = "memory"
TARGET_SIZE = 8192
TARGET_MB = 2048
MB = 2**20
# Issue 5's larger-than-memory cases: (Z, Y, X) shapes, Z = 1 for a plane.
LARGE_SHAPES = {"plane": (1, 8192, 8192), "stack": (64, 2048, 2048)}
QUICK_LARGE_SHAPES = {"plane": (1, 512, 512), "stack": (3, 256, 256)}
LARGE_FORMATS = ("zarr", "tiff")


def proc_status() -> dict[str, int]:
    """Memory fields of /proc/self/status in bytes (Linux)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        parts = value.split()
        if key.startswith(("Vm", "Rss")) and len(parts) == 2 and parts[1] == "kB":
            out[key] = int(parts[0]) * 1024
    return out


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux 4.0+); False where not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class AnonPeak:
    """Samples RssAnon in a thread: the peak of memory that is not file-backed."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, proc_status().get("RssAnon", 0))
            time.sleep(self.interval)

    def __enter__(self) -> AnonPeak:
        self.peak = proc_status().get("RssAnon", 0)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, proc_status().get("RssAnon", 0))


def _image_band(base: np.ndarray, y0: int, y1: int, size: int) -> np.ndarray:
    """Rows ``y0:y1`` of a ``size``² image made of tiled copies of ``base``."""
    h, w = base.shape
    rows = np.arange(y0, y1) % h
    reps = -(-size // w)
    return np.tile(base[rows], (1, reps))[:, :size]


def child(size: int, mode: str, tmp: Path) -> dict:
    """One measurement (runs in a fresh process): predict a ``size``² image."""
    import torch

    from napari_unet.core.model import default_config
    from napari_unet.core.segmenter import Segmenter
    from napari_unet.eval.synthetic import make_nuclei

    torch.manual_seed(0)
    seg = Segmenter(default_config(torch.device("cpu")), device="cpu")
    base = make_nuclei((512, 512), seed=0).image  # uint16
    seg.predict_probabilities(base[:64, :64])  # warm-up: lazily loaded kernels belong to the baseline
    out = None
    if mode == "memory":
        image = _image_band(base, 0, size, size)
    elif mode == "memmap":
        # Written with plain file writes, never mapped here, so the input
        # costs no resident memory until prediction reads it.
        path = tmp / f"image_{size}.raw"
        with open(path, "wb") as f:
            for y in range(0, size, 512):
                f.write(np.ascontiguousarray(_image_band(base, y, min(y + 512, size), size)).tobytes())
        image = np.memmap(path, dtype=base.dtype, mode="r", shape=(size, size))
        out = np.memmap(tmp / f"probs_{size}.raw", dtype=np.float32, mode="w+", shape=(seg.config.n_classes, size, size))
    else:
        raise ValueError(mode)
    gc.collect()
    reset_ok = reset_peak()
    before = proc_status()
    t0 = time.perf_counter()
    with AnonPeak() as anon:
        result = seg.predict_probabilities(image, out=out)
    seconds = time.perf_counter() - t0
    after = proc_status()
    ok = bool(np.isfinite(np.asarray(result[:, :: max(1, size // 64), :: max(1, size // 64)])).all())
    base_rss = before["VmRSS"] if reset_ok else before["VmHWM"]
    return {
        "size": size,
        "mode": mode,
        "megapixels": size * size / 1e6,
        "seconds": seconds,
        "baseline_mb": base_rss / MB,
        "peak_mb": after["VmHWM"] / MB,
        "delta_mb": (after["VmHWM"] - base_rss) / MB,
        "baseline_anon_mb": before.get("RssAnon", 0) / MB,
        "peak_anon_mb": anon.peak / MB,
        "delta_anon_mb": (anon.peak - before.get("RssAnon", 0)) / MB,
        "input_mb": size * size * base.itemsize / MB,
        "output_mb": seg.config.n_classes * size * size * 4 / MB,
        "peak_reset": reset_ok,
        "finite": ok,
    }


def _write_input(path: Path, fmt: str, shape: tuple[int, int, int], base: np.ndarray):
    """Write the lazy input file band by band (never whole in memory) and open it lazily."""
    from napari_unet.io.stores import open_lazy

    z, h, w = shape
    full = shape if z > 1 else (h, w)
    if fmt == "tiff":
        import tifffile

        arr = tifffile.memmap(str(path), shape=full, dtype=base.dtype, bigtiff=True, photometric="minisblack")
    else:
        import zarr

        arr = zarr.open_array(str(path), mode="w", shape=full, dtype=base.dtype, chunks=(1,) * (len(full) - 2) + (512, 512))
    for k in range(z):
        for y in range(0, h, 512):
            band = _image_band(base, y + 37 * k, min(y + 512, h) + 37 * k, w)  # each plane shifted: not all alike
            if z > 1:
                arr[k, y : y + band.shape[0]] = band
            else:
                arr[y : y + band.shape[0]] = band
    if fmt == "tiff":
        arr.flush()
    del arr
    return open_lazy(path)


def child_large(case: str, fmt: str, shape: tuple[int, int, int], block: int, model: Path, tmp: Path) -> dict:
    """One larger-than-memory measurement (fresh process): lazy input -> on-disk semantic + instances."""
    import torch

    from napari_unet.core.postprocess import InstanceParams
    from napari_unet.core.progress import drive
    from napari_unet.core.segmenter import Segmenter
    from napari_unet.eval.synthetic import make_nuclei
    from napari_unet.io.axes import Planes
    from napari_unet.io.stores import open_lazy, open_output

    torch.manual_seed(0)
    seg = Segmenter.load(model, device="cpu")
    base = make_nuclei((512, 512), seed=0).image
    seg.predict_probabilities(base[:64, :64])  # warm-up, as in child()
    ext = ".zarr" if fmt == "zarr" else ".tif"
    image = _write_input(tmp / f"input{ext}", fmt, shape, base)
    z, h, w = shape
    label_shape = tuple(image.shape)
    params = InstanceParams()
    gc.collect()
    reset_ok = reset_peak()
    before = proc_status()
    t0 = time.perf_counter()
    with AnonPeak() as anon:
        with open_output(tmp / f"semantic{ext}", label_shape, np.uint8) as semantic, open_output(tmp / f"instances{ext}", label_shape, np.uint32) as instances:
            if z == 1:
                n_objects = int(drive(seg.predict_plane(Planes(image, "YX").image(), semantic, instances, params, block=block)))
            else:
                drive(seg.predict_stack(Planes(image, "ZYX"), semantic, instances, params))
                n_objects = None
    seconds = time.perf_counter() - t0
    after = proc_status()
    result = open_lazy(tmp / f"instances{ext}")
    if n_objects is None:  # the stack's largest id, read plane by plane
        n_objects = max(int(np.asarray(result[k]).max()) for k in range(z))
    voxels = z * h * w
    return {
        "case": case,
        "format": fmt,
        "shape": list(shape),
        "megapixels": voxels / 1e6,
        "block": block,
        "seconds": seconds,
        "mpix_per_s": voxels / 1e6 / seconds,
        "objects": n_objects,
        "baseline_mb": (before["VmRSS"] if reset_ok else before["VmHWM"]) / MB,
        "peak_mb": after["VmHWM"] / MB,
        "delta_mb": (after["VmHWM"] - (before["VmRSS"] if reset_ok else before["VmHWM"])) / MB,
        "peak_anon_mb": anon.peak / MB,
        "delta_anon_mb": (anon.peak - before.get("RssAnon", 0)) / MB,
        "input_mb": voxels * base.itemsize / MB,
        "outputs_mb": voxels * 5 / MB,  # uint8 semantic + uint32 instances, uncompressed
        "peak_reset": reset_ok,
    }


def train_model(path: Path, steps: int, threads: int | None) -> Path:
    """A briefly trained model, saved for the large cases (fresh process, not measured)."""
    cmd = [sys.executable, "-m", "benchmarks.bench_memory", "--train-model", str(path), "--train-steps", str(steps)]
    if threads:
        cmd += ["--threads", str(threads)]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"training the benchmark model failed:\n{proc.stderr[-3000:]}")
    return path


def _train(path: Path, steps: int) -> None:
    import torch

    from napari_unet.core.segmenter import Segmenter
    from napari_unet.core.training import TrainConfig
    from napari_unet.eval.synthetic import make_nuclei

    torch.manual_seed(0)
    sample = make_nuclei((256, 256), seed=0)
    seg = Segmenter(device="cpu")
    seg.fit(sample.image, sample.annotations, TrainConfig(steps=steps, seed=0))
    seg.save(path)


def measure_large(case: str, fmt: str, shape: tuple[int, int, int], block: int, model: Path, threads: int | None, tmp: Path) -> dict:
    """Run :func:`child_large` in a fresh interpreter and return its result."""
    cmd = [sys.executable, "-m", "benchmarks.bench_memory", "--child-large", case, "--mode", fmt, "--shape", ",".join(map(str, shape)), "--block", str(block), "--model", str(model), "--tmp", str(tmp)]
    if threads:
        cmd += ["--threads", str(threads)]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"memory measurement {case} {fmt} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(size: int, mode: str, threads: int | None, tmp: Path) -> dict:
    """Run :func:`child` in a fresh interpreter and return its result."""
    cmd = [sys.executable, "-m", "benchmarks.bench_memory", "--child", str(size), "--mode", mode, "--tmp", str(tmp)]
    if threads:
        cmd += ["--threads", str(threads)]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"memory measurement {size}² {mode} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def growth(results: list[dict], mode: str, key: str = "delta_mb") -> float | None:
    """MB per extra megapixel between the two largest sizes of ``mode``.

    Below a tile's size the working memory of the network dominates and
    grows with the tile; the marginal cost at large sizes is what tells
    whether memory stays bounded.
    """
    pts = sorted((r["megapixels"], r[key]) for r in results if r["mode"] == mode)
    if len(pts) < 2:
        return None
    (x0, y0), (x1, y1) = pts[-2], pts[-1]
    return float((y1 - y0) / (x1 - x0))


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark (or, with ``--child``, one measurement); return the result."""
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=None, help="image sides, e.g. 1024,2048,4096,8192; empty for none")
    parser.add_argument("--modes", default="memory,memmap", help="memory,memmap")
    parser.add_argument("--tmp", type=Path, default=None, help="folder for memmap files (default: a temporary folder)")
    parser.add_argument("--cases", default="plane,stack", help="larger-than-memory cases: plane (8192²), stack (64×2048²); empty for none")
    parser.add_argument("--formats", default=",".join(LARGE_FORMATS), help="on-disk formats of the large cases: zarr,tiff")
    parser.add_argument("--block", type=int, default=None, help="instance block side of the large cases (default 2048; 256 with --quick)")
    parser.add_argument("--train-steps", type=int, default=None, help="training steps of the large cases' model (default 100; 3 with --quick)")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-large", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--train-model", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--shape", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="memory", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child or args.child_large or args.train_model:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        if args.train_model:
            _train(args.train_model, args.train_steps)
        elif args.child_large:
            shape = tuple(int(s) for s in args.shape.split(","))
            print(json.dumps(child_large(args.child_large, args.mode, shape, args.block, args.model, args.tmp or Path(tempfile.gettempdir()))))
        else:
            print(json.dumps(child(args.child, args.mode, args.tmp or Path(tempfile.gettempdir()))))
        return {}

    machine = start(NAME, args)
    if args.sizes is None:
        sizes = (256, 512) if args.quick else (1024, 2048, 4096, 8192)
    else:  # "" runs none of them (the large cases only)
        sizes = tuple(int(s) for s in args.sizes.split(",") if s)
    modes = tuple(args.modes.split(","))
    began = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        for size in sizes:
            for mode in modes:
                r = measure(size, mode, args.threads, Path(tmp))
                results.append(r)
                print(f"{size}² {mode}: peak {r['peak_mb']:.0f} MB, predict +{r['delta_mb']:.0f} MB, anon +{r['delta_anon_mb']:.0f} MB, {r['seconds']:.1f} s", flush=True)
                for f in Path(tmp).iterdir():
                    f.unlink()
        large = []
        cases = [c for c in args.cases.split(",") if c]
        if cases:
            shapes = QUICK_LARGE_SHAPES if args.quick else LARGE_SHAPES
            block = args.block or (256 if args.quick else 2048)
            steps = args.train_steps or (3 if args.quick else 100)
            model = train_model(Path(tmp) / "model.pt", steps, args.threads)
            for case in cases:
                for fmt in args.formats.split(","):
                    work = Path(tmp) / f"{case}-{fmt}"
                    work.mkdir()
                    r = measure_large(case, fmt, shapes[case], block, model, args.threads, work)
                    large.append(r)
                    print(f"{'×'.join(map(str, r['shape']))} {fmt}: peak {r['peak_mb']:.0f} MB, anon +{r['delta_anon_mb']:.0f} MB, {r['seconds']:.1f} s, {r['mpix_per_s']:.2f} MPix/s", flush=True)
                    shutil.rmtree(work)

    rows = [
        [f"{r['size']}²", r["mode"], r["megapixels"], r["input_mb"], r["output_mb"], r["baseline_mb"], r["peak_mb"], r["delta_mb"], r["delta_anon_mb"], r["seconds"]]
        for r in results
    ]
    tables = [
        table(
            "Peak resident memory predicting one image (CPU, fresh process each)",
            ["image", "mode", "MP", "input MB", "output MB", "before MB", "peak RSS MB", "predict + MB", "peak anon + MB", "s"],
            rows,
        )
    ]
    growth_rows = [[m, growth(results, m), growth(results, m, "delta_anon_mb")] for m in modes]
    tables.append(table("Growth with image size (between the two largest sizes)", ["mode", "predict + MB per MP", "anon + MB per MP"], growth_rows))
    if large:
        tables.append(
            table(
                "Larger than memory: lazy input on disk -> semantic + instances on disk (CPU, fresh process each)",
                ["case", "shape (Z×Y×X)", "format", "MP", "objects", "before MB", "peak RSS MB", "predict + MB", "peak anon + MB", "s", "MPix/s"],
                [
                    [r["case"], "×".join(map(str, r["shape"])), r["format"], r["megapixels"], r["objects"], r["baseline_mb"], r["peak_mb"], r["delta_mb"], r["delta_anon_mb"], r["seconds"], r["mpix_per_s"]]
                    for r in large
                ],
            )
        )
    targets = []
    for r in results:
        if r["size"] == TARGET_SIZE:
            targets.append(target(f"peak RSS predicting {TARGET_SIZE}² ({r['mode']})", f"< {TARGET_MB} MB", round(r["peak_mb"]), r["peak_mb"] < TARGET_MB))
    if not targets:
        targets.append(target(f"peak RSS predicting {TARGET_SIZE}²", f"< {TARGET_MB} MB", None, None))
    for case in cases:
        full = LARGE_SHAPES[case]
        what = f"peak RSS predicting {'×'.join(map(str, full if full[0] > 1 else full[1:]))} lazily into on-disk outputs"
        measured = [r for r in large if r["case"] == case and tuple(r["shape"]) == full]
        if measured:
            worst = max(r["peak_mb"] for r in measured)
            targets.append(target(what, f"< {TARGET_MB} MB", round(worst), worst < TARGET_MB))
        else:
            targets.append(target(what, f"< {TARGET_MB} MB", None, None))
    notes = [] if all(r["peak_reset"] for r in results + large) else ["peak counter could not be reset: 'predict +' is measured from the peak before predicting"]
    payload = {
        "title": "Memory",
        "tables": tables,
        "targets": targets,
        "notes": notes,
        "results": results,
        "large": large,
        "growth_mb_per_mp": {m: growth(results, m) for m in modes},
        "total_s": round(time.perf_counter() - began, 1),
    }
    print_tables(tables, targets)
    path = save_results(NAME, payload, results_dir(args), args.quick, machine)
    print(f"\nTotal {payload['total_s']:.0f} s. Results: {path}")
    return payload


if __name__ == "__main__":
    main()
