"""Benchmark scripts of napari-unet (not part of the installed package).

Run all of them with ``python -m benchmarks`` from the repository root; see
``benchmarks/README.md``.
"""

# First, as in napari and the CLI: the package sets its OpenMP wait defaults
# before torch is imported (napari_unet._short_spin_waits).
import napari_unet  # noqa: E402, F401
