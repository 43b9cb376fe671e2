"""Shared pieces of the benchmark scripts.

- :func:`machine_info`: what the numbers were measured on (CPU, cores,
  threads, GPU, library versions, load), stored with every result.
- :func:`format_table`: markdown tables, printed and reused in the docs.
- :func:`load_em`: the ISBI 2012 EM stack, found next to the repository.
- :func:`base_parser` / :func:`save_results`: the ``--quick`` / ``--out``
  convention and the JSON result format that ``make_report.py`` reads.

Result JSON files hold ``name``, ``title``, ``machine``, ``command``, ``date``,
``quick``, ``tables`` (list of ``{"title", "columns", "rows"}``), ``targets``
(list of ``{"what", "target", "value", "met"}``) and any raw data a script
wants to keep. Docs and plots are made from these files only.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
# Quick (smoke-test) results go elsewhere so they never end up in the docs.
QUICK_RESULTS_DIR = RESULTS_DIR / "quick"
DOCS_DIR = REPO_ROOT / "docs"
EM_ENV = "NAPARI_UNET_EM_DATA"


class DataMissing(RuntimeError):
    """A data set a benchmark needs is not on this machine."""


# -- machine -----------------------------------------------------------------
def _cpuinfo() -> tuple[str | None, int | None]:
    """CPU model name and physical core count from /proc/cpuinfo (Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None, None
    model, cores, phys = None, set(), None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "model name" and model is None:
            model = value
        elif key == "physical id":
            phys = value
        elif key == "core id":
            cores.add((phys, value))
    return model, (len(cores) or None)


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def machine_info() -> dict[str, Any]:
    """Describe the machine and software the benchmark runs on.

    Returns
    -------
    dict
        Plain types only (stored in the result JSON).
    """
    import torch

    model, physical = _cpuinfo()
    info: dict[str, Any] = {
        "cpu": model or platform.processor() or platform.machine(),
        "physical_cores": physical,
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gb": _memory_gb(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "gpu": None,
        "cuda": None,
        # Load at start: a loaded machine makes every timing meaningless.
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


def code_revision() -> str | None:
    """The checkout's commit, with ``+dirty`` when the package has uncommitted changes."""
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "napari_unet"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def describe_machine(info: dict[str, Any]) -> str:
    """One paragraph describing ``machine_info()`` output for humans."""
    cores = f"{info.get('physical_cores') or '?'} physical / {info.get('logical_cores')} logical cores"
    if info.get("usable_cores") != info.get("logical_cores"):
        cores += f" ({info.get('usable_cores')} usable)"
    gpu = f"GPU {info['gpu']} (CUDA {info['cuda']})" if info.get("gpu") else "no CUDA GPU"
    load = info.get("load_average")
    text = (
        f"CPU {info.get('cpu')}, {cores}, {info.get('torch_threads')} torch threads, "
        f"{info.get('memory_gb')} GB RAM, {gpu}; {info.get('os')}, Python {info.get('python')}, "
        f"torch {info.get('torch')}, numpy {info.get('numpy')}"
    )
    if load:
        text += f"; load average at start {load[0]:.2f}"
    others = info.get("other_processes_cores")
    if others is not None:
        text += f"; other processes used {others:.2f} cores on average during the run"
    return text


def _cpu_counters() -> list[float] | None:
    """[busy CPU seconds of the whole machine, CPU seconds of this process and its children, wall time]."""
    import resource

    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    # user nice system idle iowait irq softirq steal ...: busy = all but idle and iowait.
    busy = (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
    own = sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)))
    return [busy, own, time.monotonic()]


def other_cpu_use(start: list[float] | None) -> float | None:
    """Cores used on average by *other* processes since ``start`` (from :func:`_cpu_counters`).

    The load average cannot tell this: it counts the benchmark itself, and
    for a minute after it, the previous benchmark of a sequential run.
    """
    end = _cpu_counters()
    if not start or not end or end[2] <= start[2]:
        return None
    return max(0.0, ((end[0] - start[0]) - (end[1] - start[1])) / (end[2] - start[2]))


def warn_if_busy(info: dict[str, Any]) -> str | None:
    """A warning when the machine was already busy (timings then mean little)."""
    load, cores = info.get("load_average"), info.get("usable_cores") or 1
    if load and load[0] > 0.5 * cores:
        return f"WARNING: load average {load[0]:.2f} on {cores} core(s) at start: other work competes for the CPU, timings are unreliable"
    return None


# -- tables ------------------------------------------------------------------
def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not np.isfinite(value):
            return "–"
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def format_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table with aligned columns (readable in a terminal too)."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"  # noqa: E731
    out = [line(columns), "| " + " | ".join("-" * w for w in widths) + " |"]
    out += [line(r) for r in cells]
    return "\n".join(out)


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> dict[str, Any]:
    """A table as stored in result JSON."""
    return {"title": title, "columns": list(columns), "rows": [[_plain(v) for v in r] for r in rows]}


def target(what: str, goal: str, value: float | None, met: bool | None) -> dict[str, Any]:
    """A target check as stored in result JSON (``met`` None: not measured)."""
    return {"what": what, "target": goal, "value": _plain(value), "met": met}


def print_tables(tables: Sequence[dict[str, Any]], targets: Sequence[dict[str, Any]] = ()) -> None:
    """Print stored tables and target checks."""
    for t in tables:
        print(f"\n### {t['title']}\n")
        print(format_table(t["columns"], t["rows"]))
    if targets:
        print("\n### Targets\n")
        rows = [[t["what"], t["target"], t["value"], {True: "met", False: "MISSED", None: "not measured"}[t["met"]]] for t in targets]
        print(format_table(["what", "target", "measured", "result"], rows))


# -- data --------------------------------------------------------------------
def em_data_dir() -> Path:
    """Folder of the ISBI 2012 EM stack: ``$NAPARI_UNET_EM_DATA`` or ``../shared/data/isbi2012-em``."""
    env = os.environ.get(EM_ENV)
    if env:
        return Path(env)
    return (REPO_ROOT / ".." / "shared" / "data" / "isbi2012-em").resolve()


def load_em() -> tuple[np.ndarray, np.ndarray]:
    """Load the EM stack.

    Returns
    -------
    image : numpy.ndarray
        ``(30, 512, 512)`` uint8 EM slices.
    labels : numpy.ndarray
        Same shape, uint8: 255 cell interior, 0 membrane.

    Raises
    ------
    DataMissing
        If the files are not there (with where they were looked for).
    """
    from napari_unet.io.tiff import read_image, read_labels

    folder = em_data_dir()
    image_path, labels_path = folder / "image.tif", folder / "labels.tif"
    if not (image_path.is_file() and labels_path.is_file()):
        raise DataMissing(
            f"ISBI 2012 EM data not found: expected {image_path} and {labels_path}. "
            f"Put the data there or point ${EM_ENV} at its folder."
        )
    image, labels = read_image(image_path), read_labels(labels_path)
    if image.shape != labels.shape or image.ndim != 3:
        raise DataMissing(f"EM image {image.shape} and labels {labels.shape} should be matching (Z, Y, X) stacks")
    return image, labels


# -- command line and results ------------------------------------------------
def base_parser(description: str) -> argparse.ArgumentParser:
    """Parser with the options every benchmark takes: ``--quick`` and ``--out``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the script works, timings mean nothing")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"folder for the result JSON (default {RESULTS_DIR.relative_to(REPO_ROOT)}, or its quick/ subfolder with --quick)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's own choice)")
    return parser


def results_dir(args: argparse.Namespace) -> Path:
    """Where results of this run go (``--out``, else by ``--quick``)."""
    if args.out is not None:
        return Path(args.out)
    return QUICK_RESULTS_DIR if args.quick else RESULTS_DIR


def _plain(value: Any) -> Any:
    """numpy scalars and arrays to JSON types."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def command_line() -> str:
    """The command that started this process, as typed (best effort)."""
    argv = getattr(sys, "orig_argv", None) or [sys.executable] + sys.argv
    argv = list(argv)
    argv[0] = "python" if "python" in Path(argv[0]).name else argv[0]
    return " ".join(shlex.quote(a) for a in argv)


def save_results(name: str, payload: dict[str, Any], out_dir: Path, quick: bool, machine: dict[str, Any]) -> Path:
    """Write ``<out_dir>/<name>.json`` with the machine, date and command added.

    Parameters
    ----------
    name : str
        Result name (file stem), e.g. ``"speed"``.
    payload : dict
        ``title``, ``tables``, ``targets`` and raw data.
    out_dir : pathlib.Path
        Destination folder (created).
    quick : bool
        Whether this was a ``--quick`` run.
    machine : dict
        :func:`machine_info` taken at the start of the run.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    machine = dict(machine)
    if hasattr(os, "getloadavg"):
        machine["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    others = other_cpu_use(machine.pop("cpu_counters_start", None))
    if others is not None:
        machine["other_processes_cores"] = round(others, 2)
    data = {
        "name": name,
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command_line(),
        "revision": code_revision(),
        "quick": quick,
        "machine": machine,
        **payload,
    }
    path = out_dir / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_plain(data), indent=1, allow_nan=True))
    tmp.replace(path)
    return path


def start(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Apply ``--threads``, print the header of a benchmark run and return the machine description."""
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
    info = machine_info()
    info["cpu_counters_start"] = _cpu_counters()
    print(f"# napari-unet benchmark: {name}{' (quick: timings mean nothing)' if args.quick else ''}")
    print(f"Machine: {describe_machine(info)}")
    busy = warn_if_busy(info)
    if busy:
        print(busy)
    return info
