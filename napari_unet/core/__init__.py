"""Qt-free engine of napari-unet: model, training, inference and post-processing.

Nothing here may import qtpy or napari, so the engine runs headless (CLI,
benchmarks, tests) and can be reused outside the viewer.
"""
