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
