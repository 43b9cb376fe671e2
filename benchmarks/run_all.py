"""Run every benchmark in sequence, then write the report: ``python -m benchmarks``.

Each script runs in its own process (fresh memory and thread settings). A
script that fails does not stop the others; the exit status says whether all
passed. ``bench_responsiveness.py`` (the GUI benchmark) runs under
``xvfb-run -a`` when there is no display, and is skipped with a message when
the file or a display is missing.

Options: ``--quick`` (tiny sizes, results in ``benchmarks/results/quick/``,
report written there too, docs untouched), ``--only accuracy,speed``,
``--threads N``, ``--out DIR`` (results and report there, docs untouched),
``--no-report``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import QUICK_RESULTS_DIR, REPO_ROOT, RESULTS_DIR

BENCHMARKS = ("accuracy", "selection", "split", "whole_objects", "uncertainty", "next_region", "live_strokes", "speed", "end_to_end", "contention", "memory", "responsiveness")
GUI = {"responsiveness"}


def command_for(name: str, args: argparse.Namespace, out: Path) -> list[str] | str:
    """The command running one benchmark, or a reason (str) to skip it."""
    script = REPO_ROOT / "benchmarks" / f"bench_{name}.py"
    if not script.is_file():
        return f"{script.relative_to(REPO_ROOT)} does not exist"
    cmd = [sys.executable, "-m", f"benchmarks.bench_{name}", "--out", str(out)]
    if args.quick:
        cmd.append("--quick")
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if name in GUI and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        xvfb = shutil.which("xvfb-run")
        if not xvfb:
            return "no display and no xvfb-run (install xvfb)"
        cmd = [xvfb, "-a"] + cmd
    return cmd


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks and the report; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the scripts work, numbers mean nothing")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads for every script")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results, or its quick/ with --quick)")
    parser.add_argument("--no-report", action="store_true", help="do not write the report afterwards")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    out = args.out or (QUICK_RESULTS_DIR if args.quick else RESULTS_DIR)

    status: dict[str, str] = {}
    for name in names:
        cmd = command_for(name, args, out)
        if isinstance(cmd, str):
            print(f"\n=== {name}: SKIPPED ({cmd})", flush=True)
            status[name] = f"skipped: {cmd}"
            continue
        print(f"\n=== {name}: {' '.join(cmd)}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd, cwd=REPO_ROOT)
        status[name] = "ok" if rc == 0 else f"FAILED (exit status {rc})"
        print(f"=== {name}: {status[name]} in {time.perf_counter() - t0:.0f} s", flush=True)

    if not args.no_report:
        from benchmarks.make_report import write_report

        if args.quick or args.out:
            # Quick runs and runs into another folder never touch docs/ or the README.
            report = write_report(out, out, None)
        else:
            report = write_report(out, REPO_ROOT / "docs", REPO_ROOT / "README.md")
        print(f"\nReport: {report}")

    print("\nSummary:")
    for name, s in status.items():
        print(f"  {name}: {s}")
    return 0 if all(s == "ok" or s.startswith("skipped") for s in status.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
