"""Packaging contracts: Qt-free core, import-light package, valid manifest."""

from __future__ import annotations

import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GUI_MODULES = ("qtpy", "napari", "PyQt6", "PyQt5", "PySide6", "PySide2")


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300
    )


def test_core_imports_no_gui() -> None:
    code = (
        "import napari_unet.core, pkgutil, importlib, sys\n"
        "for m in pkgutil.walk_packages(napari_unet.core.__path__, 'napari_unet.core.'):\n"
        "    importlib.import_module(m.name)\n"
        f"bad = sorted(k for k in sys.modules if k.split('.')[0] in {GUI_MODULES!r})\n"
        "assert not bad, bad\n"
    )
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr


def test_package_import_is_light() -> None:
    heavy = GUI_MODULES + ("torch", "magicgui", "matplotlib")
    code = (
        "import sys, napari_unet\n"
        "assert napari_unet.__version__\n"
        f"bad = sorted({{k.split('.')[0] for k in sys.modules}} & set({heavy!r}))\n"
        "assert not bad, bad\n"
    )
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr


def test_version_matches_distribution() -> None:
    from importlib.metadata import version

    import napari_unet

    assert napari_unet.__version__ == version(napari_unet.DISTRIBUTION)


def test_distribution_name_is_ours() -> None:
    """``napari-unet`` on PyPI is another project; ours is installed under its own name."""
    from importlib.metadata import distribution

    import napari_unet

    assert napari_unet.DISTRIBUTION == "napari-stroke-unet"
    dist = distribution(napari_unet.DISTRIBUTION)
    assert "napari_unet" in (dist.read_text("top_level.txt") or "napari_unet").split()
    scripts = {ep.name: ep.value for ep in dist.entry_points if ep.group == "console_scripts"}
    assert scripts == {"napari-unet": "napari_unet.cli:main"}
    manifests = {ep.name: ep.value for ep in dist.entry_points if ep.group == "napari.manifest"}
    assert manifests == {napari_unet.DISTRIBUTION: "napari_unet:napari.yaml"}


def test_installed_manifest_is_top_level_manifest() -> None:
    installed = resources.files("napari_unet").joinpath("napari.yaml").read_text()
    assert installed == (REPO / "napari.yaml").read_text()


def test_manifest_validates_with_npe2() -> None:
    npe2 = pytest.importorskip("npe2")
    from napari_unet import DISTRIBUTION

    manifest = npe2.PluginManifest.from_distribution(DISTRIBUTION)
    assert manifest.name == DISTRIBUTION
    assert all(c.id.startswith(f"{DISTRIBUTION}.") for c in manifest.contributions.commands or [])
    keys = [s.key for s in manifest.contributions.sample_data or []]
    assert "nuclei" in keys
    # Every command's python_name must resolve to a real callable.
    for command in manifest.contributions.commands or []:
        module_name, _, attr = command.python_name.partition(":")
        module = __import__(module_name, fromlist=[attr])
        assert callable(getattr(module, attr)), command.python_name
    proc = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", DISTRIBUTION],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_io_imports_nothing_above_it() -> None:
    """``napari_unet.io`` depends only on ``napari_unet.errors``: never the engine, the CLI or batch."""
    code = (
        "import napari_unet.io, pkgutil, importlib, sys\n"
        "for m in pkgutil.walk_packages(napari_unet.io.__path__, 'napari_unet.io.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = sorted(k for k in sys.modules if k.startswith('napari_unet.') and k.split('.')[1] not in ('io', 'errors'))\n"
        "assert not bad, bad\n"
    )
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr


def _cli_imports() -> dict[str, set[str]]:
    """Each module of napari_unet.cli -> the modules of napari_unet.cli it imports (anywhere in it)."""
    import ast

    folder = REPO / "napari_unet" / "cli"
    names = {p.stem for p in folder.glob("*.py")} - {"__init__", "__main__"}
    graph: dict[str, set[str]] = {}
    for name in names:
        edges: set[str] = set()
        for node in ast.walk(ast.parse((folder / f"{name}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "napari_unet.cli":
                edges |= {a.name for a in node.names} & names
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("napari_unet.cli."):
                edges.add(node.module.split(".")[2])
            elif isinstance(node, ast.Import):
                edges |= {a.name.split(".")[2] for a in node.names if a.name.startswith("napari_unet.cli.")}
        graph[name] = edges
    return graph


def test_cli_modules_import_without_cycles() -> None:
    """Lower modules of the CLI never import higher ones; nothing but ``__init__`` imports ``app``."""
    from graphlib import CycleError, TopologicalSorter

    graph = _cli_imports()
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as exc:  # pragma: no cover - the failure message
        pytest.fail(f"import cycle in napari_unet.cli: {exc.args[1]}")
    assert order[-1] == "app" and not any("app" in edges for edges in graph.values())
    assert "demo" in graph and not graph["demo"] & {"app", "parser"}


def test_tiff_suffixes_are_defined_once() -> None:
    """One definition of what a TIFF is, shared by inputs, stores and the napari reader."""
    from napari_unet.io import inputs, stores, tiff
    from napari_unet.plugin import reader

    assert inputs.TIFF_SUFFIXES is stores.TIFF_SUFFIXES is tiff.TIFF_SUFFIXES
    assert reader.is_tiff is inputs.is_tiff is tiff.is_tiff
