"""The napari side that needs no Qt: reader, writer, sample data, menu commands, result layers, colours and the widget's session.

Modules here may import napari's models (layers, viewer) but never ``qtpy``
or ``napari.qt``, so the session loop (paint -> train -> predict -> correct)
runs in tests without a window.
"""
