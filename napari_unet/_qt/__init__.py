"""Everything that imports Qt: the dock widget (wiring only), its panels, the loss plot, the progress bar and the thread-worker glue.

Only this package may import ``qtpy`` (an import-linter contract in
``pyproject.toml`` keeps it so); the logic it drives lives in
:mod:`napari_unet.plugin` and :mod:`napari_unet.core`.
"""
