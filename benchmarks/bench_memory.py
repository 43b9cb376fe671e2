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

``python -m benchmarks.bench_memory`` (a few minutes), or ``--quick``.
"""

from __future__ import annotations

import argparse
import gc
import json
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

    def __enter__(self) -> "AnonPeak":
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
    from napari_unet.core.synthetic import make_nuclei

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
    parser.add_argument("--sizes", default=None, help="image sides, e.g. 1024,2048,4096,8192")
    parser.add_argument("--modes", default="memory,memmap", help="memory,memmap")
    parser.add_argument("--tmp", type=Path, default=None, help="folder for memmap files (default: a temporary folder)")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="memory", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        print(json.dumps(child(args.child, args.mode, args.tmp or Path(tempfile.gettempdir()))))
        return {}

    machine = start(NAME, args)
    sizes = tuple(int(s) for s in args.sizes.split(",")) if args.sizes else ((256, 512) if args.quick else (1024, 2048, 4096, 8192))
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
    targets = []
    for r in results:
        if r["size"] == TARGET_SIZE:
            targets.append(target(f"peak RSS predicting {TARGET_SIZE}² ({r['mode']})", f"< {TARGET_MB} MB", round(r["peak_mb"]), r["peak_mb"] < TARGET_MB))
    if not targets:
        targets.append(target(f"peak RSS predicting {TARGET_SIZE}²", f"< {TARGET_MB} MB", None, None))
    notes = [] if all(r["peak_reset"] for r in results) else ["peak counter could not be reset: 'predict +' is measured from the peak before predicting"]
    payload = {
        "title": "Memory",
        "tables": tables,
        "targets": targets,
        "notes": notes,
        "results": results,
        "growth_mb_per_mp": {m: growth(results, m) for m in modes},
        "total_s": round(time.perf_counter() - began, 1),
    }
    print_tables(tables, targets)
    path = save_results(NAME, payload, results_dir(args), args.quick, machine)
    print(f"\nTotal {payload['total_s']:.0f} s. Results: {path}")
    return payload


if __name__ == "__main__":
    main()
