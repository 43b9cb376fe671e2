"""Benchmark scripts of napari-unet (not part of the installed package).

Run all of them with ``python -m benchmarks`` from the repository root; see
``benchmarks/README.md``.
"""
