"""Where to paint next, as :class:`~napari_unet.plugin.session.Session` methods (:class:`Suggestions`).

After each plane prediction the session ranks that plane's regions by the
model's uncertainty (:func:`~napari_unet.core.suggest.rank_regions`,
painted regions lower); :meth:`Suggestions.next_region` takes the user
there. Kept in its own module so each file stays short; it uses the
session's ``viewer``, ``events``, ``notify``, ``last_prediction`` and
``annotations_layer``.
"""

from __future__ import annotations

import numpy as np

from napari_unet.core.postprocess import uncertainty_from_probabilities
from napari_unet.core.suggest import Region, suggest_regions
from napari_unet.plugin.view import camera, canvas_size


class Suggestions:
    """The session's suggestions of where to paint next."""

    #: Where to paint next in the last plane predicted: regions, most uncertain first (set by the session).
    suggestions: list[Region]

    def show_suggestions(self, regions) -> None:
        """Take ``regions`` (ranked in the prediction job, off the GUI thread) as the suggestions."""
        self.suggestions, self._suggested = list(regions), 0
        self.events.suggestions_changed.emit(len(self.suggestions))

    def suggest(self) -> list[Region]:
        """Rank the last predicted plane's regions again, with the strokes painted since (on request)."""
        cached, annotations = self.last_prediction, self.annotations_layer()
        regions = []
        if cached is not None:
            uncertainty = cached.prediction.uncertainty
            if uncertainty is None:
                uncertainty = uncertainty_from_probabilities(cached.probabilities)
            strokes = None
            if annotations is not None and tuple(annotations.data.shape) == cached.target.label_shape:
                strokes = np.asarray(annotations.data[cached.planes.label_index(cached.prediction.index)])
            regions = suggest_regions(uncertainty, strokes)
        self.show_suggestions(regions)
        return self.suggestions

    def next_region(self) -> Region | None:
        """Show the next suggested region: camera centred on it (its plane for a stack), annotations ready to paint.

        Returns
        -------
        Region or None
            The region shown (plane pixel coordinates); None when there is no suggestion.
        """
        cached = self.last_prediction
        if cached is None or not self.suggestions:
            self.notify("info", "No suggestion yet: predict a plane first (suggestions come from its uncertainty).")
            return None
        region = self.suggestions[self._suggested % len(self.suggestions)]
        self._suggested += 1
        target, planes = cached.target, cached.planes
        at = dict(zip(planes.loop_axes, cached.prediction.index))
        at.update({a: n // 2 for a, n in zip(planes.spatial_axes, planes.spatial_shape)}, Y=region.center[0], X=region.center[1])
        world = [at[a] * s + t for a, s, t in zip(planes.label_axes, target.scale, target.translate)]
        first = self.viewer.dims.ndim - len(world)
        for axis, value in enumerate(world[:-2]):
            self.viewer.dims.set_point(first + axis, value)
        cam = camera(self.viewer)
        cam.center = tuple(world[-2:])
        canvas = canvas_size(self.viewer)
        if canvas is not None:
            size = max((region.y1 - region.y0) * target.scale[-2], (region.x1 - region.x0) * target.scale[-1])
            cam.zoom = 0.8 * min(canvas) / size
        annotations = self.annotations_layer()
        if annotations is not None:
            self.viewer.layers.selection.active = annotations
            annotations.mode = "paint"
        return region
