"""Label colours that follow the annotation convention.

Annotations: 0 unlabeled (transparent), 1 background, 2.. object classes.
Semantic predictions: 0 background (transparent), c = class c, coloured
like annotation value c + 1, so a predicted class has the colour the user
painted it with.
"""

from __future__ import annotations

from napari.utils.colormaps import DirectLabelColormap

# Background strokes in a cool blue; object classes in warm, distinct hues.
BACKGROUND_COLOR = "#4c8dff"
CLASS_COLORS = ("#ffa41b", "#ff3d6e", "#2ee6a8", "#b36bff", "#ffe14d", "#00c2ff", "#ff7bd5", "#9be564")
OTHER_COLOR = "#c8c8c8"  # values beyond the table (rare: >9 classes)
TRANSPARENT = (0.0, 0.0, 0.0, 0.0)


def class_color(annotation_value: int) -> str:
    """Colour of an annotation value (1 background, 2.. classes); 0 is transparent."""
    if annotation_value == 1:
        return BACKGROUND_COLOR
    index = annotation_value - 2
    return CLASS_COLORS[index] if 0 <= index < len(CLASS_COLORS) else OTHER_COLOR


def annotation_colormap() -> DirectLabelColormap:
    """Colormap for an annotations layer: 0 transparent, 1 blue, 2.. warm colours."""
    colors = {None: OTHER_COLOR, 0: TRANSPARENT}
    colors.update({value: class_color(value) for value in range(1, len(CLASS_COLORS) + 2)})
    return DirectLabelColormap(color_dict=colors)


def semantic_colormap() -> DirectLabelColormap:
    """Colormap for a semantic prediction: class c drawn like annotation value c + 1."""
    colors = {None: OTHER_COLOR, 0: TRANSPARENT}
    colors.update({value: class_color(value + 1) for value in range(1, len(CLASS_COLORS) + 1)})
    return DirectLabelColormap(color_dict=colors)
