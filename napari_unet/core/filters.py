"""A fixed multiscale filter bank in front of the U-Net, for fast convergence.

Random forests on multiscale filter features (ilastik, APOC,
``skimage.feature.multiscale_basic_features``) give a usable answer from a
few strokes within a second because smoothing, edge and ridge detectors are
given, not learned. A U-Net trained from scratch must first learn such
filters from the same few strokes, which takes more steps than an
interactive CPU budget allows. Feeding it the same kind of features (at no
learning cost: fixed weights, no parameters) lets its first steps start
from where the forest ends, and its learned layers add the spatial context
a per-pixel forest lacks.

Per input channel and scale sigma: Gaussian smoothing, gradient magnitude
and the two Hessian eigenvalues (scale-normalised), plus the raw channel.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

FEATURES_PER_SCALE = 4


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


class FilterBank(nn.Module):
    """Fixed Gaussian-derivative features at sigmas 1, 2, 4, ... (``scales`` of them).

    Output channels: ``in_channels * (1 + 4 * scales)``. Borders are
    reflect-padded, like the image padding in tiled prediction.
    """

    def __init__(self, in_channels: int, scales: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.sigmas = [2.0**i for i in range(scales)]
        for i, sigma in enumerate(self.sigmas):
            self.register_buffer(f"kernel{i}", _gaussian_kernel(sigma), persistent=False)

    @property
    def out_channels(self) -> int:
        """Channels produced for the configured input channels."""
        return self.in_channels * (1 + FEATURES_PER_SCALE * len(self.sigmas))

    def _blur(self, x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        r = kernel.numel() // 2
        c = x.shape[1]
        h, w = x.shape[-2:]
        # Reflect needs the pad smaller than the size; replicate covers tiny inputs.
        mode = "reflect" if r < h and r < w else "replicate"
        x = F.pad(x, (r, r, r, r), mode=mode)
        x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
        return F.conv2d(x, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features ``(N, out_channels, H, W)`` of images ``(N, C, H, W)``."""
        feats = [x]
        for i, sigma in enumerate(self.sigmas):
            g = self._blur(x, getattr(self, f"kernel{i}"))
            gp = F.pad(g, (1, 1, 1, 1), mode="replicate")
            gy = 0.5 * (gp[..., 2:, 1:-1] - gp[..., :-2, 1:-1])
            gx = 0.5 * (gp[..., 1:-1, 2:] - gp[..., 1:-1, :-2])
            gyy = gp[..., 2:, 1:-1] - 2 * g + gp[..., :-2, 1:-1]
            gxx = gp[..., 1:-1, 2:] - 2 * g + gp[..., 1:-1, :-2]
            gxy = 0.25 * (gp[..., 2:, 2:] - gp[..., 2:, :-2] - gp[..., :-2, 2:] + gp[..., :-2, :-2])
            # Scale normalisation (sigma, sigma^2) keeps all scales in one range.
            grad = sigma * torch.sqrt(gx * gx + gy * gy + 1e-12)
            half_trace = 0.5 * (gxx + gyy) * sigma**2
            root = torch.sqrt((0.5 * (gxx - gyy)) ** 2 + gxy * gxy + 1e-12) * sigma**2
            feats += [g, grad, half_trace + root, half_trace - root]
        return torch.cat(feats, dim=1)
