"""End to end: what a user waits for ``napari-unet predict --instances``, stage by stage, beside a plain network.

For 512², 2048², 8192² images and a 64x2048² stack (uint16 TIFFs of
generated nuclei), the command line is run as a user runs it, in a fresh
process: ``napari-unet predict IMAGE -m MODEL -o OUT.tif --instances``. Its
wall time gives the end-to-end megapixels per second; the start-up (a
fresh ``napari-unet --version``: interpreter and imports) is measured
beside it. A second run under cProfile splits the time into stages:

- start-up (all but the command itself: the interpreter, imports, argument
  parsing; imports made lazily inside the command count as "other") and
  model loading;
- read (tiles and bands read from the image);
- network (the U-Net's forward passes, with the forest and filter bank in
  it; the forest's per-pixel tree walk is reported on its own too);
- post-processing (semantic labels, the instance split, measurements);
- write (the TIFF outputs, written atomically);
- other (blending overlapping tiles, argument checks, bookkeeping).

The functions with the most time of their own in the 2048² profile are
listed too: the profile that explains the shares.

In the same run, a plain 4-level width-16 U-Net (3x3 convolutions, ReLU,
no normalisation) does its forward pass over the same 2048² image in 512²
tiles, in PyTorch's default memory layout and channels-last: the
network-only cost a user's wait is compared with (the faster of the two).

Targets (the speed issue): ``predict --instances`` on 2048², start-up
subtracted, <= 1.5x the plain network's pass; per-pixel cost flat from
2048² to 8192² (within 1.25x).

``python -m benchmarks.bench_end_to_end`` (about 15 minutes on 2 cores) or
``--quick`` (512² only; numbers mean nothing).
"""

from __future__ import annotations

import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks._common import base_parser, print_tables, results_dir, save_results, start, table, target

NAME = "end_to_end"
RATIO_TARGET = 1.5
FLAT_TARGET = 1.25
SIZES = (512, 2048, 8192)
STACK = (64, 2048)
#: Functions listed from the 2048² profile.
HOT_SPOTS = 12
#: Stages, and the functions whose cumulative time makes each (first match wins, outermost calls).
STAGES = {
    "model loading": ("load_segmenter",),
    "read": ("_read_padded",),
    "network": ("forward",),
    "of which forest": ("forward",),
    "post-processing": ("postprocess", "semantic_from_probabilities", "instances_from_semantic", "split_instances", "_relabel_in_3d", "measure_objects"),
    "write": ("write_labels", "write_tiff", "open_output"),
}


def _write_inputs(folder: Path, sizes: tuple[int, ...], stack: tuple[int, int] | None) -> dict[str, Path]:
    import tifffile

    from benchmarks.bench_speed import synthetic_image

    paths = {}
    for size in sizes:
        path = folder / f"image_{size}.tif"
        tifffile.imwrite(path, synthetic_image(size))
        paths[f"{size}²"] = path
    if stack is not None:
        planes, size = stack
        base = synthetic_image(size)
        path = folder / f"stack_{planes}x{size}.tif"
        with tifffile.TiffWriter(path, bigtiff=True) as tif:
            tif.write(np.stack([np.roll(base, 37 * i, axis=1) for i in range(planes)]), metadata={"axes": "ZYX"})
        paths[f"{planes}x{size}²"] = path
    return paths


def _train_model(path: Path) -> None:
    """The default model (as the CLI and widget make it), briefly trained on the sample."""
    from napari_unet.core.segmenter import Segmenter
    from napari_unet.core.training import TrainConfig
    from napari_unet.eval.synthetic import make_nuclei

    sample = make_nuclei((256, 256), seed=0)
    seg = Segmenter(device="cpu")
    seg.fit(sample.image, sample.annotations, TrainConfig(steps=10, seed=0))
    seg.save(path)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "napari_unet.cli", *args]


def _run(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return elapsed


def _ancestors(stats: dict, key: tuple) -> set:
    """Every function that called ``key`` in a profile, directly or through others."""
    seen: set = set()
    todo = list(stats[key][4])
    while todo:
        caller = todo.pop()
        if caller not in seen:
            seen.add(caller)
            todo.extend(stats.get(caller, (None,) * 4 + ({},))[4])
    seen.discard(key)
    return seen


def _stage_times(profile: Path) -> dict[str, float]:
    """Cumulative time of each stage's functions (outermost matching calls only)."""
    stats = pstats.Stats(str(profile))
    table_ = stats.stats  # (file, line, name) -> (cc, nc, tt, ct, callers)
    found: dict[str, float] = {}
    for stage, names in STAGES.items():
        if stage == "network":
            # The U-Net's forward (napari_unet/core/model.py; forest and filter bank run inside it).
            keys = [k for k in table_ if k[2] == "forward" and k[0].endswith("napari_unet/core/model.py")]
        elif stage == "of which forest":
            # The random forest's per-pixel walk inside the network (napari_unet/core/forest.py).
            keys = [k for k in table_ if k[2] == "forward" and k[0].endswith("napari_unet/core/forest.py")]
        else:
            keys = [k for k in table_ if k[2] in names and "napari_unet" in k[0]]
        # Outermost: drop calls made, directly or through other functions,
        # from functions counted already. Direct callers are not enough: the
        # stack's 3D relabelling (a generator) reaches instances_from_semantic
        # through the blockwise labelling, and both were counted (a 64x2048²
        # stack's shares summed to 117 %). Generators resumed by next() make
        # cycles in cProfile's caller graph, so an ancestor only counts when
        # its cumulative time can hold the call's.
        counted = set(keys)
        outer = [k for k in keys if not any(j in counted and table_[j][3] >= table_[k][3] for j in _ancestors(table_, k))]
        found[stage] = sum(table_[k][3] for k in outer)
    # The command itself (everything before it is start-up: interpreter, imports, argument parsing).
    found["command"] = sum(v[3] for k, v in table_.items() if k[2] == "cmd_predict" and "napari_unet" in k[0])
    return found


def plain_unet(width: int = 16, levels: int = 4):
    """A plain U-Net: ``levels`` poolings, ``width`` channels doubling, 3x3 conv + ReLU pairs, no normalisation."""
    import torch
    from torch import nn

    def block(i: int, o: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(o, o, 3, padding=1), nn.ReLU(inplace=True))

    class Plain(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            widths = [width * 2**i for i in range(levels + 1)]
            self.down = nn.ModuleList([block(1, widths[0])] + [block(widths[i], widths[i + 1]) for i in range(levels)])
            self.up = nn.ModuleList([nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in reversed(range(levels))])
            self.merge = nn.ModuleList([block(2 * widths[i], widths[i]) for i in reversed(range(levels))])
            self.head = nn.Conv2d(widths[0], 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            skips = []
            for i, down in enumerate(self.down):
                x = down(x if i == 0 else torch.max_pool2d(x, 2))
                skips.append(x)
            for up, merge, skip in zip(self.up, self.merge, reversed(skips[:-1])):
                x = merge(torch.cat([up(x), skip], 1))
            return self.head(x)

    return Plain().eval()


def plain_forward_s(image: np.ndarray, tile: int = 512, repeats: int = 2, channels_last: bool = False) -> float:
    """Seconds for the plain U-Net's forward pass over ``image`` in non-overlapping ``tile``² tiles (median).

    ``channels_last`` runs it in the memory layout napari-unet's own network
    uses (faster on CPUs, see ``napari_unet.core.model``): the reference a
    PyTorch user gets with one more line.
    """
    import torch

    net = plain_unet()
    layout = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=layout)
    x = torch.from_numpy(image.astype(np.float32))[None, None]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        with torch.inference_mode():
            for y in range(0, image.shape[0], tile):
                for xx in range(0, image.shape[1], tile):
                    net(x[:, :, y : y + tile, xx : xx + tile].contiguous(memory_format=layout))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _hot_spots(profile: Path, wall: float, n: int = HOT_SPOTS) -> list[list]:
    """The ``n`` functions with the most time of their own in a profile (what the stage shares are made of).

    Threads other than the main one are not profiled: time the main thread
    spends waiting for them (the forest's tree walk runs on a thread pool)
    shows as ``acquire`` of a lock.
    """
    stats = pstats.Stats(str(profile)).stats
    rows = []
    for (file, line, name), (_, calls, own, _cum, _) in sorted(stats.items(), key=lambda kv: -kv[1][2])[:n]:
        # Built-ins come as "<built-in method ...>": no angle brackets in a Markdown table.
        where = name.strip("<>") if file == "~" else f"{Path(file).parent.name}/{Path(file).name}:{line}({name})"
        rows.append([where, calls, round(own, 2), f"{100 * own / max(wall, 1e-9):.0f} %"])
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--no-stack", action="store_true", help="leave out the 64x2048² stack")
    parser.add_argument("--sizes", default=None, help="image sides, e.g. 512,2048,8192 (the default); empty for none (the stack only)")
    args = parser.parse_args(argv)
    machine = start(NAME, args)
    if args.sizes is not None:
        sizes = tuple(int(s) for s in args.sizes.split(",") if s)
    else:
        sizes = (512,) if args.quick else SIZES
    stack = None if (args.quick or args.no_stack) else STACK
    rows, records, hot = [], [], []
    with tempfile.TemporaryDirectory(prefix="napari-unet-e2e-") as tmp:
        folder = Path(tmp)
        model = folder / "model.pt"
        _train_model(model)
        inputs = _write_inputs(folder, sizes, stack)
        startup = statistics.median(_run(_cli("--version")) for _ in range(3))
        print(f"start-up (napari-unet --version): {startup:.2f} s", flush=True)
        reference, references = None, {}
        if 2048 in sizes:
            from benchmarks.bench_speed import synthetic_image

            img = synthetic_image(2048).astype(np.float32)
            img = (img - img.mean()) / img.std()
            references = {layout: plain_forward_s(img, channels_last=layout == "channels-last") for layout in ("default layout", "channels-last")}
            # The target is held against the faster of the two: the network's cost as a user could get it.
            reference = min(references.values())
            print("plain 4-level width-16 U-Net, 2048² in 512² tiles: " + ", ".join(f"{v:.2f} s ({k})" for k, v in references.items()), flush=True)
        for name, path in inputs.items():
            out = folder / f"out_{path.stem}.tif"
            command = ["predict", str(path), "-m", str(model), "-o", str(out), "--instances"]
            wall = _run(_cli(*command))
            for produced in folder.glob("out_*"):
                produced.unlink()
            profile = folder / f"{path.stem}.prof"
            profiled = _run([sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "napari_unet.cli", *command])
            for produced in folder.glob("out_*"):
                produced.unlink()
            stages = _stage_times(profile)
            if name == "2048²" or (not hot and args.quick):
                hot = _hot_spots(profile, profiled)
            # Start-up: all but the command (the interpreter, imports, argument parsing).
            shares = {"start-up": max(profiled - stages.pop("command"), 0.0), **stages}
            forest_s = shares.pop("of which forest")
            shares["other"] = max(profiled - sum(shares.values()), 0.0)
            import tifffile

            with tifffile.TiffFile(path) as tif:
                pixels = int(np.prod(tif.series[0].shape))
            mp = pixels / 1e6
            record = {
                "input": name, "megapixels": round(mp, 2), "wall_s": round(wall, 2), "startup_s": round(startup, 2),
                "mp_per_s": round(mp / wall, 3), "mp_per_s_without_startup": round(mp / max(wall - startup, 1e-9), 3),
                "ns_per_pixel": round((wall - startup) / pixels * 1e9, 1), "profiled_s": round(profiled, 2),
                "stages_s": {k: round(v, 2) for k, v in shares.items()}, "forest_s": round(forest_s, 2),
            }
            records.append(record)
            rows.append([name, record["megapixels"], record["wall_s"], record["mp_per_s"], record["mp_per_s_without_startup"], record["ns_per_pixel"],
                         *(f"{100 * shares[k] / profiled:.0f} %" for k in ("start-up", "model loading", "read", "network")), f"{100 * forest_s / profiled:.0f} %",
                         *(f"{100 * shares[k] / profiled:.0f} %" for k in ("post-processing", "write", "other"))])
            print(f"{name}: {wall:.1f} s ({mp / wall:.2f} MP/s end to end)", flush=True)
    tables = [table(
        "napari-unet predict --instances, fresh process (stage shares from a second, profiled run)",
        ["input", "MP", "wall (s)", "MP/s", "MP/s without start-up", "ns/pixel without start-up", "start-up", "load", "read", "network", "of which forest", "post-processing", "write", "other"],
        rows,
    )]
    if hot:
        tables.append(table("Where the time goes: the functions with the most time of their own in the 2048² profiled run (512² with --quick)",
                            ["function", "calls", "own s", "share of the run"], hot))
    targets = []
    by_name = {r["input"]: r for r in records}
    if reference is not None and "2048²" in by_name:
        ours = by_name["2048²"]["wall_s"] - startup
        ratio = ours / reference
        tables.append(table("2048²: the command (start-up subtracted) against a plain network's forward pass in the same run (the target uses the faster layout)",
                            ["predict --instances (s)", "plain U-Net layout", "plain U-Net forward, 512² tiles (s)", "ratio"],
                            [[round(ours, 2), layout, round(s, 2), round(ours / s, 2)] for layout, s in references.items()]))
        targets.append(target("predict --instances on 2048² (start-up subtracted) / plain 4-level width-16 U-Net forward in 512² tiles", f"≤ {RATIO_TARGET}×", round(ratio, 2), ratio <= RATIO_TARGET))
    if "2048²" in by_name and "8192²" in by_name:
        flat = by_name["8192²"]["ns_per_pixel"] / by_name["2048²"]["ns_per_pixel"]
        targets.append(target("per-pixel cost, 8192² / 2048² (start-up subtracted)", f"≤ {FLAT_TARGET}×", round(flat, 2), flat <= FLAT_TARGET))
    print_tables(tables, targets)
    payload = {"title": "End to end: the command line's wait, stage by stage", "tables": tables, "targets": targets, "records": records,
               "reference_s": reference, "references_s": references, "startup_s": startup}
    path = save_results(NAME, payload, results_dir(args), args.quick, machine)
    print(f"\nResults: {path}")
    return payload


if __name__ == "__main__":
    main()
