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

Per input channel and scale sigma, plus the raw channel:

- 2D: Gaussian smoothing, gradient magnitude and the two Hessian
  eigenvalues (4 features);
- 3D: Gaussian smoothing, gradient magnitude and the three Hessian
  eigenvalues (5 features). The eigenvalues of the symmetric 3x3 Hessian
  come from the closed-form trigonometric solution (Smith 1961), all
  elementwise tensor arithmetic: ``torch.linalg.eigvalsh`` on one 3x3
  matrix per voxel is an order of magnitude slower on a CPU, and cheaper
  subsets (Laplacian alone) cannot tell blobs (three negative eigenvalues)
  from tubes (two) or sheets/membranes (one), which is what 3D
  segmentation of nuclei, neurites and EM membranes hinges on.

Derivatives are scale-normalised (sigma for the gradient, sigma² for the
Hessian) so all scales share one range. Sigmas are in voxels on every axis:
on anisotropic stacks (thicker Z planes) the Z smoothing is physically
wider; the learned layers compensate.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

FEATURES_PER_SCALE = 4
FEATURES_PER_SCALE_3D = 5


def features_per_scale(ndim: int) -> int:
    """Feature maps per channel and scale for 2D or 3D input."""
    return FEATURES_PER_SCALE if ndim == 2 else FEATURES_PER_SCALE_3D


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def symmetric_eigvals3(
    a11: torch.Tensor, a22: torch.Tensor, a33: torch.Tensor, a12: torch.Tensor, a13: torch.Tensor, a23: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eigenvalues (largest first) of symmetric 3x3 matrices given elementwise.

    Closed form (O. K. Smith, 1961): shift by a third of the trace, scale,
    and the eigenvalues are ``q + 2 p cos(phi + 2 pi k / 3)``. The clamp on
    the cosine argument and the epsilon on ``p`` keep every output finite,
    also for (near-)multiples of the identity such as flat image regions.
    """
    q = (a11 + a22 + a33) / 3
    b11, b22, b33 = a11 - q, a22 - q, a33 - q
    off = a12 * a12 + a13 * a13 + a23 * a23
    p = torch.sqrt((b11 * b11 + b22 * b22 + b33 * b33 + 2 * off) / 6 + 1e-20)
    # det(A - qI) / (2 p^3), i.e. det(B)/2 with B = (A - qI) / p.
    det = b11 * (b22 * b33 - a23 * a23) - a12 * (a12 * b33 - a23 * a13) + a13 * (a12 * a23 - b22 * a13)
    r = (det / (2 * p * p * p)).clamp(-1.0, 1.0)
    phi = torch.acos(r) / 3
    e1 = q + 2 * p * torch.cos(phi)
    e3 = q + 2 * p * torch.cos(phi + 2 * math.pi / 3)
    e2 = 3 * q - e1 - e3
    return e1, e2, e3


class FilterBank(nn.Module):
    """Fixed Gaussian-derivative features at sigmas 1, 2, 4, ... (``scales`` of them).

    Output channels: ``in_channels * (1 + 4 * scales)`` in 2D,
    ``in_channels * (1 + 5 * scales)`` in 3D (see :attr:`out_channels`).
    Borders are reflect-padded, like the image padding in tiled prediction.

    Parameters
    ----------
    in_channels : int
        Image channels.
    scales : int
        Number of sigmas (1, 2, 4, ...).
    ndim : int
        Spatial dimensions of the input: 2 for ``(N, C, Y, X)``, 3 for
        ``(N, C, Z, Y, X)``.
    """

    def __init__(self, in_channels: int, scales: int, ndim: int = 2) -> None:
        super().__init__()
        if ndim not in (2, 3):
            raise ValueError(f"ndim must be 2 or 3, got {ndim}")
        self.in_channels = in_channels
        self.ndim = ndim
        self.sigmas = [2.0**i for i in range(scales)]
        for i, sigma in enumerate(self.sigmas):
            self.register_buffer(f"kernel{i}", _gaussian_kernel(sigma), persistent=False)

    @property
    def out_channels(self) -> int:
        """Channels produced for the configured input channels."""
        return self.in_channels * (1 + features_per_scale(self.ndim) * len(self.sigmas))

    def _blur(self, x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        r = kernel.numel() // 2
        c = x.shape[1]
        h, w = x.shape[-2:]
        # Reflect needs the pad smaller than the size; replicate covers tiny inputs.
        mode = "reflect" if r < h and r < w else "replicate"
        x = F.pad(x, (r, r, r, r), mode=mode)
        x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
        return F.conv2d(x, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)

    def _blur3d(self, x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        r = kernel.numel() // 2
        c = x.shape[1]
        # One axis at a time, each padded by its own rule: a stack with few Z
        # planes falls back to replicate in Z without losing reflect in YX.
        for axis in (4, 3, 2):
            pad = [0] * 6
            pad[2 * (4 - axis)] = pad[2 * (4 - axis) + 1] = r
            mode = "reflect" if r < x.shape[axis] else "replicate"
            x = F.pad(x, pad, mode=mode)
            shape = [1, 1, 1]
            shape[axis - 2] = -1
            x = F.conv3d(x, kernel.view(1, 1, *shape).expand(c, 1, *shape), groups=c)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features ``(N, out_channels, *spatial)`` of images ``(N, C, *spatial)``."""
        if self.ndim == 3:
            return self._forward3d(x)
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

    def _forward3d(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for i, sigma in enumerate(self.sigmas):
            g = self._blur3d(x, getattr(self, f"kernel{i}"))
            gp = F.pad(g, (1, 1, 1, 1, 1, 1), mode="replicate")
            nz, ny, nx = gp.shape[-3:]

            def at(dz: int, dy: int, dx: int) -> torch.Tensor:
                # g shifted by (dz, dy, dx), from the 1-voxel replicate border.
                return gp[..., 1 + dz : nz - 1 + dz, 1 + dy : ny - 1 + dy, 1 + dx : nx - 1 + dx]

            gz = 0.5 * (at(1, 0, 0) - at(-1, 0, 0))
            gy = 0.5 * (at(0, 1, 0) - at(0, -1, 0))
            gx = 0.5 * (at(0, 0, 1) - at(0, 0, -1))
            gzz = at(1, 0, 0) - 2 * g + at(-1, 0, 0)
            gyy = at(0, 1, 0) - 2 * g + at(0, -1, 0)
            gxx = at(0, 0, 1) - 2 * g + at(0, 0, -1)
            gzy = 0.25 * (at(1, 1, 0) - at(1, -1, 0) - at(-1, 1, 0) + at(-1, -1, 0))
            gzx = 0.25 * (at(1, 0, 1) - at(1, 0, -1) - at(-1, 0, 1) + at(-1, 0, -1))
            gyx = 0.25 * (at(0, 1, 1) - at(0, 1, -1) - at(0, -1, 1) + at(0, -1, -1))
            grad = sigma * torch.sqrt(gz * gz + gy * gy + gx * gx + 1e-12)
            s2 = sigma**2
            e1, e2, e3 = symmetric_eigvals3(gzz * s2, gyy * s2, gxx * s2, gzy * s2, gzx * s2, gyx * s2)
            feats += [g, grad, e1, e2, e3]
        return torch.cat(feats, dim=1)
