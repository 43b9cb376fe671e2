"""Write ``docs/benchmarks.md`` and its plots from the measured result files.

Reads every ``benchmarks/results/*.json`` (never the ``quick/`` ones unless
pointed at them) and writes the tables, the machine each was measured on,
the date, the command and whether each target was met. Every figure comes
from a result file; nothing here is typed in.

Also writes the summary table between ``<!-- benchmarks:start -->`` and
``<!-- benchmarks:end -->`` in the README when both markers are there (and
prints it otherwise).

``python -m benchmarks.make_report [--results DIR] [--docs DIR]``
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import DOCS_DIR, REPO_ROOT, RESULTS_DIR, describe_machine, format_table

ORDER = ("accuracy", "selection", "split", "whole_objects", "uncertainty", "next_region", "live_strokes", "speed", "end_to_end", "contention", "memory", "responsiveness")
RUN_COMMAND = "python -m benchmarks"
README_START, README_END = "<!-- benchmarks:start -->", "<!-- benchmarks:end -->"
RESULT_WORDS = {True: "met", False: "**MISSED**", None: "not measured"}


def load_results(folder: Path) -> list[dict[str, Any]]:
    """Result files of ``folder``, known benchmarks first."""
    results = []
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            print(f"skipping {path}: {exc}", file=sys.stderr)
            continue
        data.setdefault("name", path.stem)
        results.append(data)
    rank = {n: i for i, n in enumerate(ORDER)}
    return sorted(results, key=lambda d: (rank.get(d["name"], len(ORDER)), d["name"]))


# -- plots -------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy(data: dict, path: Path) -> Path | None:
    """Per (kind, strokes): every seed's score for U-Net (both budgets), forest and Otsu."""
    records = data.get("records") or []
    budgets = data.get("budgets_s") or []
    if not records or len(budgets) != 2:
        return None
    plt = _pyplot()
    groups: list[tuple[str, str]] = []
    for r in records:
        if (r["kind"], r["mode"]) not in groups:
            groups.append((r["kind"], r["mode"]))
    methods = [(f"unet_{budgets[0]:g}s", f"U-Net {budgets[0]:g} s", "tab:cyan"), (f"unet_{budgets[1]:g}s", f"U-Net {budgets[1]:g} s", "tab:blue"), ("forest", "random forest", "tab:orange"), ("otsu", "Otsu", "tab:grey")]
    fig, ax = plt.subplots(figsize=(max(7, 1.1 * len(groups) + 2), 4.5))
    for gi, (kind, mode) in enumerate(groups):
        recs = [r for r in records if r["kind"] == kind and r["mode"] == mode]
        for mi, (key, name, colour) in enumerate(methods):
            values = [r[key]["headline"] for r in recs if r.get(key)]
            if not values:
                continue
            x = gi + (mi - 1.5) * 0.18
            ax.bar(x, float(np.mean(values)), 0.17, color=colour, alpha=0.8, label=name if gi == 0 else None)
            ax.plot([x] * len(values), values, "k.", ms=4)
    ax.set_xticks(range(len(groups)), [f"{k}\n{m}" for k, m in groups], fontsize=8)
    ax.set_ylabel("F1@0.5 (objects) / min(macro P, R) (classes)")
    ax.set_ylim(0, 1.02)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=4, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_throughput(data: dict, path: Path) -> Path | None:
    """Prediction throughput (MP/s) against image size."""
    results = data.get("results") or {}
    series = []
    if results.get("cpu"):
        series.append(("CPU", results["cpu"]["throughput"]))
    for key, r in (results.get("gpu") or {}).items():
        series.append((f"GPU ({'mixed precision' if key == 'amp' else 'float32'})", r["throughput"]))
    if not series:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for label, pts in series:
        ax.plot([p["megapixels"] for p in pts], [p["mp_per_s"] for p in pts], "o-", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("image size (megapixels)")
    ax.set_ylabel("prediction throughput (MP/s)")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_memory(data: dict, path: Path) -> Path | None:
    """Peak RSS against image size for each mode, with the 8192² target."""
    results = data.get("results") or []
    if not results:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for mode in sorted({r["mode"] for r in results}):
        pts = sorted((r["megapixels"], r["peak_mb"], r["peak_anon_mb"]) for r in results if r["mode"] == mode)
        x, peak, anon = zip(*pts)
        ax.plot(x, peak, "o-", label=f"{mode}: peak RSS")
        ax.plot(x, anon, "s--", label=f"{mode}: peak anonymous", alpha=0.7)
    ax.axhline(2048, color="red", lw=0.8, label="target at 8192² (2 GB)")
    ax.set_xlabel("image size (megapixels)")
    ax.set_ylabel("MB")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_next_region(data: dict, path: Path) -> Path | None:
    """Score after each round of painting, following Next region or at random: per kind (mean over seeds) and over all cases."""
    records = data.get("records") or []
    if not records:
        return None
    plt = _pyplot()
    kinds = list(dict.fromkeys(r["kind"] for r in records))
    groups = [(kind, [r for r in records if r["kind"] == kind]) for kind in kinds] + [("all cases", records)]
    fig, axes = plt.subplots(1, len(groups), figsize=(3.0 * len(groups), 3.4), sharey=True)
    for ax, (title, recs) in zip(np.atleast_1d(axes), groups):
        for strategy, style in (("next region", "o-"), ("random", "s--")):
            scores = np.array([r[strategy]["scores"] for r in recs])
            rounds = np.arange(scores.shape[1])
            ax.plot(rounds, scores.mean(0), style, label=strategy)
            ax.fill_between(rounds, scores.min(0), scores.max(0), alpha=0.15)
        ax.set_title(f"{title} ({recs[0]['metric'] if title != 'all cases' else 'headline'})", fontsize=9)
        ax.set_xlabel("round")
        ax.set_xticks(rounds)
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("score (mean; band: min-max over seeds)")
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.suptitle(f"Painting the truth over one region per round, {data.get('steps')} steps after each", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_live_strokes(data: dict, path: Path) -> Path | None:
    """Live corrections against stop-correct-restart rounds, one pair of points per case."""
    records = data.get("records") or []
    if not records:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    x = np.arange(len(records))
    for i, r in enumerate(records):
        ax.plot([i, i], [r["live"], r["restart"]], color="grey", lw=0.8)
    ax.plot(x, [r["restart"] for r in records], "s", color="#8fa3bf", label="stop, correct, Train again (rounds)")
    ax.plot(x, [r["live"] for r in records], "o", color="#ff6ec7", label="painted while it trains (live)")
    ax.set_xticks(x, [f"{r['kind']}\n{r['seed']}" for r in records], fontsize=7)
    ax.set_ylabel("F1@0.5 / min(P, R)")
    ax.set_title(f"The same corrections in the same {data.get('seconds', 60):g} s of training", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_end_to_end(data: dict, path: Path) -> Path | None:
    """Where a user's wait goes: seconds per stage for each input (stacked), from the profiled runs."""
    records = data.get("records") or []
    if not records:
        return None
    plt = _pyplot()
    stages = list(records[0]["stages_s"])
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    x = np.arange(len(records))
    bottom = np.zeros(len(records))
    for stage in stages:
        # A stage a run could not measure (None) is left out of its bar, and said so above it.
        share = np.array([100 * (r["stages_s"].get(stage) or 0.0) / max(r["profiled_s"], 1e-9) for r in records])
        ax.bar(x, share, bottom=bottom, label=stage)
        bottom += share
    for i, r in enumerate(records):
        missing = [stage for stage in stages if r["stages_s"].get(stage) is None]
        if missing:
            ax.text(i, bottom[i] + 1, "not measured:\n" + "\n".join(missing), ha="center", va="bottom", fontsize=6)
    ax.set_xticks(x, [f"{r['input']}\n{r['mp_per_s']:.2f} MP/s" for r in records], fontsize=8)
    ax.set_ylabel("share of the wall time (%)")
    ax.set_title("napari-unet predict --instances: where the time goes", fontsize=9)
    ax.legend(fontsize=7, frameon=False, bbox_to_anchor=(1.0, 1.0), loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


PLOTTERS = {
    "end_to_end": (plot_end_to_end, "end_to_end_stages.png"),
    "accuracy": (plot_accuracy, "accuracy_suite.png"),
    "live_strokes": (plot_live_strokes, "live_strokes.png"),
    "next_region": (plot_next_region, "next_region.png"),
    "speed": (plot_throughput, "speed_throughput.png"),
    "memory": (plot_memory, "memory_vs_size.png"),
}


# -- markdown ----------------------------------------------------------------
def _targets_table(rows: list[tuple[str, dict]]) -> str:
    return format_table(
        ["benchmark", "what", "target", "measured", "result"],
        [[name, t["what"], t["target"], t["value"], RESULT_WORDS[t["met"]]] for name, t in rows],
    )


def accuracy_summary(data: dict) -> str | None:
    """The suite's summary table (mean and spread over seeds per kind and strokes)."""
    tables = data.get("tables") or []
    return format_table(tables[0]["columns"], tables[0]["rows"]) if tables else None


def section(data: dict, docs: Path) -> tuple[str, Path | None]:
    """Markdown of one result file, and its plot (if any)."""
    lines = [f"## {data.get('title', data['name'])}", ""]
    if data.get("quick"):
        lines += ["> **Quick run: tiny sizes, the numbers mean nothing.**", ""]
    revision = f" at revision `{data['revision']}`" if data.get("revision") else ""
    lines += [f"Measured {data.get('date', '?')}{revision} with `{data.get('command', '?')}`.", ""]
    machine = data.get("machine")
    if machine:
        lines += [f"Machine: {describe_machine(machine)}.", ""]
        cores = machine.get("usable_cores") or 1
        others = machine.get("other_processes_cores")
        if others is not None:
            # Measured: CPU time of every other process during the run.
            if others > 0.25:
                lines += [f"> **Warning:** other processes used {others:.2f} of {cores} cores during this run: timings are unreliable.", ""]
        else:
            start, end = machine.get("load_average"), machine.get("load_average_end")
            if (start and start[0] > 0.5 * cores) or (end and end[0] > 0.5 * cores):
                lines += [
                    f"> Load average {start and start[0]} at start, {end and end[0]} at end ({cores} cores). This result predates the "
                    "measurement of other processes' CPU use; the load average includes the benchmark itself and, for a minute, "
                    "the previous benchmark of a sequential run, so it does not show whether anything else competed.",
                    "",
                ]
    for note in data.get("notes") or []:
        lines += [f"> {note}", ""]
    plot = None
    if data["name"] in PLOTTERS:
        fn, filename = PLOTTERS[data["name"]]
        plot = fn(data, docs / filename)
        if plot:
            lines += [f"![{data.get('title', data['name'])}]({filename})", ""]
    for t in data.get("tables") or []:
        lines += [f"### {t['title']}", "", format_table(t["columns"], t["rows"]), ""]
    targets = data.get("targets") or []
    if targets:
        lines += ["### Targets", "", _targets_table([(data["name"], t) for t in targets]), ""]
        for t in targets:
            if t["met"] is False:
                lines += [f"**Target missed:** {t['what']}: measured {t['value']}, target {t['target']}.", ""]
    return "\n".join(lines), plot


def summary(results: list[dict], link: bool = True) -> str:
    """The README summary: every target, and the accuracy headline (``link``: point to the docs)."""
    rows = [(d["name"], t) for d in results for t in d.get("targets") or []]
    parts = []
    if rows:
        parts.append(_targets_table(rows))
    acc = next((d for d in results if d["name"] == "accuracy"), None)
    acc_table = acc and accuracy_summary(acc)
    if acc_table:
        parts.append("Accuracy suite (unpainted regions; F1@0.5 for objects, min of macro precision and recall for classes):\n\n" + acc_table)
    if not parts:
        return "No benchmark results yet."
    if link:
        parts.append(f"Details, machines and plots: [docs/benchmarks.md](docs/benchmarks.md). Reproduce with `{RUN_COMMAND}`.")
    return "\n\n".join(parts)


def write_report(results_folder: Path, docs: Path, readme: Path | None) -> Path:
    """Write ``docs/benchmarks.md`` (and plots, and the README summary); return its path."""
    results = load_results(results_folder)
    docs.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `python -m benchmarks.make_report` from the result files in `{_rel(results_folder)}`; "
        f"every figure below was measured, on the machine stated with it. Reproduce all of them with `{RUN_COMMAND}` "
        "(see `benchmarks/README.md`).",
        "",
    ]
    if not results:
        lines += ["No results yet: run the benchmarks first.", ""]
    else:
        lines += ["## Summary", "", summary(results, link=False), ""]
    for data in results:
        text, _ = section(data, docs)
        lines += [text, ""]
    out = docs / "benchmarks.md"
    out.write_text("\n".join(lines).rstrip() + "\n")
    if readme is not None:
        update_readme(readme, summary(results))
    return out


def update_readme(readme: Path, text: str) -> bool:
    """Replace the text between the README markers; print the summary when they are missing."""
    content = readme.read_text() if readme.is_file() else ""
    if README_START in content and README_END in content:
        head, rest = content.split(README_START, 1)
        _, tail = rest.split(README_END, 1)
        readme.write_text(f"{head}{README_START}\n{text}\n{README_END}{tail}")
        print(f"updated the summary in {readme}")
        return True
    print(f"{readme} has no {README_START} / {README_END} markers; summary for it:\n\n{text}\n")
    return False


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> Path:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="folder of result JSON files")
    parser.add_argument("--docs", type=Path, default=DOCS_DIR, help="where benchmarks.md and the plots go")
    parser.add_argument("--readme", type=Path, default=REPO_ROOT / "README.md", help="README whose marked summary to update")
    parser.add_argument("--no-readme", action="store_true", help="leave the README alone")
    args = parser.parse_args(argv)
    out = write_report(args.results, args.docs, None if args.no_readme else args.readme)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
