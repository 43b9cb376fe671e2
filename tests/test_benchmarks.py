"""The benchmark scripts keep working: a tiny (``--quick``) run of each.

One ``python -m benchmarks --quick`` run (the documented command) produces
every result file and the report in a temporary folder; the tests check
their fields. The full runs are not tests.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._common import em_data_dir, format_table  # noqa: E402
from benchmarks.strokes import full_mask_annotations, painted_fraction, sparse_strokes  # noqa: E402

EM_PRESENT = (em_data_dir() / "image.tif").is_file() and (em_data_dir() / "labels.tif").is_file()


def _run(args: list[str], env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable] + args, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """Run ``python -m benchmarks --quick`` once (1 torch thread: fast even on a busy machine)."""
    out = tmp_path_factory.mktemp("bench")
    proc = _run(["-m", "benchmarks", "--quick", "--threads", "1", "--only", "accuracy,selection,split,uncertainty,next_region,live_strokes,speed,end_to_end,contention,memory", "--out", str(out)], timeout=600)
    return out, proc


def _load(quick_run, name: str) -> dict:
    out, proc = quick_run
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    path = out / f"{name}.json"
    assert path.is_file(), proc.stdout[-4000:]
    data = json.loads(path.read_text())
    assert data["quick"] is True
    assert data["machine"]["torch_threads"] == 1
    assert data["machine"]["cpu"] and data["machine"]["logical_cores"] >= 1
    assert data["tables"] and all(t["rows"] for t in data["tables"])
    return data


@pytest.mark.slow  # the shared quick run takes 40-60 s
def test_speed_quick(quick_run):
    data = _load(quick_run, "speed")
    cpu = data["results"]["cpu"]
    med = cpu["training"]["median_s"]
    assert all(v > 0 for v in med.values())
    assert cpu["tiling"]["untiled_s"] > 0 and cpu["tiling"]["engine_s"] > 0
    assert [p["size"] for p in cpu["throughput"]] == [128, 256]
    assert all(p["mp_per_s"] > 0 for p in cpu["throughput"])
    assert {t["what"] for t in data["targets"]} >= {"CPU training step, engine / bare PyTorch", "CPU tiled 256² prediction / untiled forward"}
    assert all(t["value"] > 0 and isinstance(t["met"], bool) for t in data["targets"] if t["what"].startswith("CPU"))
    if not torch.cuda.is_available():
        assert "GPU: not measured (no CUDA device)" in data["notes"]


@pytest.mark.slow  # the shared quick run takes 40-60 s
def test_memory_quick(quick_run):
    data = _load(quick_run, "memory")
    results = data["results"]
    assert {(r["size"], r["mode"]) for r in results} == {(256, "memory"), (256, "memmap"), (512, "memory"), (512, "memmap")}
    for r in results:
        assert r["finite"]
        assert r["peak_mb"] > r["baseline_mb"] > 50  # python + torch are resident before predicting
        assert r["delta_mb"] >= 0
    assert set(data["growth_mb_per_mp"]) == {"memory", "memmap"}
    # 8192² is not measured in a quick run: the target says so rather than guessing.
    assert data["targets"][0]["met"] is None


@pytest.mark.slow  # the shared quick run takes 40-60 s
def test_accuracy_quick(quick_run):
    """The suite ran generated kinds beside the forest and Otsu, both budgets, every score in range."""
    data = _load(quick_run, "accuracy")
    records = data["records"]
    expected = {(k, m) for k in ("nuclei", "rgb") for m in ("full", "sparse")} | {("nuclei", "whole")}
    assert {(r["kind"], r["mode"]) for r in records} == expected
    assert data["budgets_s"] == [2.0, 4.0] and data["steps_per_second"] == 2.0
    for r in records:
        for key in ("forest", "unet_2s", "unet_4s"):
            assert 0.0 <= r[key]["headline"] <= 1.0
        assert r["unet_4s"]["steps"] == 8  # step budgets in quick runs, whatever the machine's speed
        assert (r["otsu"] is None) == (r["kind"] == "rgb")
    assert {t["met"] for t in data["targets"]} <= {True, False}


@pytest.mark.slow  # the shared quick run takes 40-60 s
def test_report_from_quick_results(quick_run):
    out, proc = quick_run
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    report = (out / "benchmarks.md").read_text()
    assert "Quick run" in report and "## Speed" in report and "## Memory" in report
    assert "Machine: CPU" in report and "Targets" in report
    assert (out / "speed_throughput.png").is_file() and (out / "memory_vs_size.png").is_file()
    assert (out / "accuracy_suite.png").is_file() and "## Accuracy suite" in report
    assert "random forest" in report and "nuclei" in report and "rgb" in report


@pytest.mark.slow  # the shared quick run takes 40-60 s
def test_split_quick(quick_run):
    """The split benchmark scores all three splits on the generated kinds' true masks."""
    data = _load(quick_run, "split")
    summary = data["tables"][0]
    assert summary["columns"][2:] == ["connected components", "standard watershed", "napari-unet split"]
    assert {row[0] for row in summary["rows"]} == {"nuclei", "membranes", "stack"}
    assert all(0.0 <= v <= 1.0 for row in summary["rows"] for v in row[2:])
    assert isinstance(data["targets"][0]["met"], bool)
    out, _ = quick_run
    assert "## Instance split on true masks" in (out / "benchmarks.md").read_text()


@pytest.mark.slow  # the shared quick run takes 40-60 s
def test_contention_quick(quick_run):
    """Steps/s alone and beside one and two busy processes, for both OpenMP settings."""
    data = _load(quick_run, "contention")
    rows = data["tables"][0]["rows"]
    assert [(r[0], r[1]) for r in rows] == [(v, b) for v in ("napari-unet default", "torch default") for b in (0, 1, 2)]
    assert all(r[2] > 0 for r in rows) and isinstance(data["targets"][0]["met"], bool)


@pytest.mark.slow  # the shared quick run takes 40-60 s
def test_uncertainty_quick(quick_run):
    """ROC AUC of each uncertainty as a detector of wrong pixels, per case and summarised."""
    data = _load(quick_run, "uncertainty")
    summary = data["tables"][0]
    assert [row[0] for row in summary["rows"]] == ["1 - margin, spread (napari-unet)", "1 - margin, per pixel", "entropy", "1 - max probability"]
    assert all(0.0 <= v <= 1.0 for row in summary["rows"] for v in row[1:] if v == v)
    assert isinstance(data["targets"][0]["met"], bool)


@pytest.mark.slow  # the shared quick run takes 40-60 s
def test_next_region_quick(quick_run):
    """Both scripted users' scores per round, the check on unpainted pixels, and the plot."""
    data = _load(quick_run, "next_region")
    record = data["records"][0]
    for strategy in ("next region", "random"):
        assert len(record[strategy]["scores"]) == data["rounds"] + 1 == len(record[strategy]["unpainted_pixel_score"])
        assert len(record[strategy]["regions"]) == data["rounds"] and all(0.0 <= v <= 1.0 for v in record[strategy]["scores"])
    assert record["next region"]["scores"][0] == record["random"]["scores"][0]  # the same start
    assert data["tables"][0]["rows"][-1][0] == "all" and isinstance(data["targets"][0]["met"], bool)
    assert (quick_run[0] / "next_region.png").is_file()


@pytest.mark.slow  # the shared quick run takes 40-60 s
def test_live_strokes_quick(quick_run):
    """Live corrections and restart rounds scored side by side, the stroke-to-step latency and the GUI cost."""
    data = _load(quick_run, "live_strokes")
    (record,) = data["records"]
    assert record["corrections"] >= 1 and 0.0 <= record["live"] <= 1.0 and 0.0 <= record["restart"] <= 1.0
    # A wall-time run: on a slow machine no step may follow the last correction (no latency: NaN).
    assert not record["latency_max_s"] < 0.0 and record["live_steps"] >= 1 and record["restart_steps"] >= 1
    assert [t["met"] for t in data["targets"]] and all(isinstance(t["met"], bool) for t in data["targets"])
    assert (quick_run[0] / "live_strokes.png").is_file()


@pytest.mark.slow  # the shared quick run takes 40-60 s
def test_end_to_end_quick(quick_run):
    """The command line timed in a fresh process, its stages from a profiled run, and the plot."""
    data = _load(quick_run, "end_to_end")
    (record,) = data["records"]
    assert record["input"] == "512²" and record["wall_s"] > 0 and record["mp_per_s"] > 0
    assert set(record["stages_s"]) == {"start-up", "model loading", "read", "network", "post-processing", "write", "other"}
    assert record["stages_s"]["network"] > 0 and all(v >= 0 for v in record["stages_s"].values())
    assert (quick_run[0] / "end_to_end_stages.png").is_file()


@pytest.mark.slow
@pytest.mark.gui
def test_responsiveness_quick(tmp_path):
    """The GUI benchmark drives the real widget (a short run under the test's Xvfb display)."""
    proc = _run(["-m", "benchmarks.bench_responsiveness", "--quick", "--out", str(tmp_path)], timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    data = json.loads((tmp_path / "responsiveness.json").read_text())
    assert [t["what"].split(" (")[0] for t in data["targets"]] == [
        "longest GUI event-loop stall while training", "p99 GUI event-loop stall", "widget training throughput vs direct",
    ]
    assert data["widget"][0]["steps"] == data["direct"][0]["steps"] > 0


def test_accuracy_says_when_real_data_is_absent(tmp_path):
    env = dict(os.environ, NAPARI_UNET_EM_DATA=str(tmp_path / "nowhere"))
    proc = _run(["-m", "benchmarks.bench_accuracy", "--quick", "--kinds", "em", "--out", str(tmp_path)], env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "em: SKIPPED: data not found" in proc.stdout
    assert not (tmp_path / "accuracy.json").exists()


def test_suite_cases_are_repeatable_and_differ_by_seed():
    from benchmarks.suite_data import KINDS

    for kind in ("nuclei", "rgb", "membranes"):
        a, b, c = KINDS[kind](0), KINDS[kind](0), KINDS[kind](1)
        assert np.array_equal(a.image, b.image) and np.array_equal(a.annotations["sparse"], b.annotations["sparse"])
        assert not np.array_equal(a.image, c.image)
        for mode, ann in a.annotations.items():
            labelled = set(np.unique(ann)) - {0}
            assert 1 in labelled and len(labelled) >= 2, (kind, mode)
            assert a.score_mask(mode).any() and not np.any(ann[a.score_mask(mode)]), (kind, mode)


def test_run_all_runs_as_a_file():
    proc = _run(["benchmarks/run_all.py", "--help"], timeout=60)
    assert proc.returncode == 0 and "--quick" in proc.stdout


def test_run_all_skips_the_gui_benchmark_with_a_reason(tmp_path, monkeypatch):
    import argparse

    from benchmarks import run_all

    args = argparse.Namespace(quick=True, threads=None)
    monkeypatch.setattr(run_all, "REPO_ROOT", tmp_path)
    assert "bench_responsiveness.py does not exist" in run_all.command_for("responsiveness", args, tmp_path)
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "bench_responsiveness.py").write_text("")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(run_all.shutil, "which", lambda name: None)
    assert "xvfb" in run_all.command_for("responsiveness", args, tmp_path)
    monkeypatch.setattr(run_all.shutil, "which", lambda name: "/usr/bin/xvfb-run")
    cmd = run_all.command_for("responsiveness", args, tmp_path)
    assert cmd[:2] == ["/usr/bin/xvfb-run", "-a"] and "--quick" in cmd


def _ring_mask(shape=(160, 160)) -> np.ndarray:
    """Square cells separated by 4 px 'membranes'."""
    fg = np.ones(shape, bool)
    fg[::40, :] = False
    for k in range(1, 4):
        fg[np.arange(shape[0]) % 40 == k, :] = False
        fg[:, np.arange(shape[1]) % 40 == k] = False
    fg[:, ::40] = False
    return fg


def test_sparse_strokes_are_on_the_right_side_and_repeatable():
    fg = _ring_mask()
    a = sparse_strokes(fg, seed=3)
    assert np.array_equal(a, sparse_strokes(fg, seed=3))
    assert np.any(a == 1) and np.any(a == 2)
    assert not np.any((a == 2) & ~fg) and not np.any((a == 1) & fg)
    assert 0 < painted_fraction(a) < 0.1
    assert np.array_equal(np.unique(full_mask_annotations(fg)), [1, 2])


def test_format_table_handles_missing_and_float_values():
    text = format_table(["a", "b"], [[1.23456, None], [math.nan, "x"]])
    assert "1.23" in text and "–" in text and text.count("\n") == 3


def test_report_renders_any_result_file_and_flags_missed_targets(tmp_path):
    from benchmarks.make_report import write_report

    results = tmp_path / "results"
    results.mkdir()
    data = {
        "name": "responsiveness",
        "title": "Responsiveness",
        "quick": False,
        "date": "2026-01-01T00:00:00+00:00",
        "command": "python -m benchmarks.bench_responsiveness",
        "machine": {"cpu": "Test CPU", "physical_cores": 2, "logical_cores": 4, "usable_cores": 4, "torch_threads": 2, "load_average": [0.1, 0.1, 0.1]},
        "tables": [{"title": "Frame times", "columns": ["case", "ms"], "rows": [["paint", 12.5]]}],
        "targets": [{"what": "frame time while training", "target": "< 50 ms", "value": 80.0, "met": False}],
    }
    (results / "responsiveness.json").write_text(json.dumps(data))
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- benchmarks:start -->\nold\n<!-- benchmarks:end -->\nrest\n")
    report = write_report(results, tmp_path / "docs", readme).read_text()
    assert "## Responsiveness" in report and "Test CPU" in report and "| paint | 12.5 |" in report
    assert "**Target missed:** frame time while training: measured 80.0" in report
    text = readme.read_text()
    assert "old" not in text and "MISSED" in text and text.startswith("intro") and text.endswith("rest\n")


@pytest.mark.parametrize("kind", ["nuclei", "membranes", "stack"])
def test_evaluate_command_agrees_with_the_suite_score(kind, tmp_path, capsys):
    """``napari-unet evaluate`` on a suite case gives the accuracy suite's own F1, precision and recall to 1e-6."""
    import tifffile

    from benchmarks.bench_accuracy import score
    from benchmarks.suite_data import KINDS
    from napari_unet.cli import main
    from napari_unet.eval.baselines import otsu_watershed

    case = KINDS[kind](0)
    semantic, instances = otsu_watershed(case.image, annotations=case.annotations["full"])
    expected = score(case, "full", semantic, instances)
    keep = case.score_mask("full")  # the suite scores the unpainted part: give evaluate that part
    if case.axes == "ZYX":
        planes = np.flatnonzero(keep[:, 0, 0])
        predicted, truth = instances[planes], case.truth[planes]
    else:
        cols = np.flatnonzero(keep[0])
        predicted, truth = instances[:, cols], case.truth[:, cols]
    tifffile.imwrite(tmp_path / "p.tif", predicted.astype(np.uint32))
    tifffile.imwrite(tmp_path / "t.tif", truth.astype(np.uint32))
    assert main(["evaluate", str(tmp_path / "p.tif"), str(tmp_path / "t.tif"), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert expected["n_true"] > 0
    for key in ("f1", "precision", "recall"):
        assert abs(scores[key] - expected[key]) < 1e-6, (key, scores[key], expected[key])


@pytest.mark.slow  # the shared quick run takes 40-60 s
def test_selection_quick(quick_run):
    """The selection benchmark scores the forest, the run's range and the weights each traced run ends with."""
    data = _load(quick_run, "selection")
    (rec,) = data["records"]
    at = {row["step"]: row["true"] for row in rec["trace"]}
    assert min(at) == 0 and max(at) == rec["steps"] and rec["forest"] == at[0]
    # The weights training ends with are those of the step it picked.
    assert rec["picked"] == at[rec["picked_step"]] and rec["lowest"] <= rec["picked"] <= rec["highest"]
    assert data["targets"][0]["what"].startswith("12-step runs end no worse than their forest")
    out, _ = quick_run
    assert "## Model selection against the true score" in (out / "benchmarks.md").read_text()
