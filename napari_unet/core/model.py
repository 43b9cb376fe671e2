"""A compact 2D U-Net that takes any input size.

Normalisation is per pixel, across channels (a "channels-only" LayerNorm,
as in ConvNeXt), chosen for two properties interactive use needs:

- no running statistics: BatchNorm's, after a few dozen steps on batches of
  a few patches, can make eval-mode predictions all wrong; this layer does
  the same thing in train and eval mode;
- no statistics over space: GroupNorm/InstanceNorm normalise over the whole
  input, so a tile would be normalised differently from the full image and
  tiled prediction could not match untiled prediction.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .filters import FilterBank


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of a :class:`UNet`; stored in checkpoints.

    Attributes
    ----------
    in_channels : int
        Image channels (1 for greyscale).
    n_classes : int
        Output classes including background (annotation values minus one).
    depth : int
        Number of resolution levels (``depth - 1`` poolings).
    width : int
        Feature channels at the first level; doubled at each level down.
    filter_scales : int
        Scales (sigma 1, 2, 4, ...) of the fixed filter bank in front of the
        first convolution (:mod:`napari_unet.core.filters`); 0 feeds the raw
        image to the first convolution.
    """

    in_channels: int = 1
    n_classes: int = 2
    depth: int = 3
    width: int = 16
    filter_scales: int = 4

    def to_dict(self) -> dict:
        """Plain-type dict for checkpoints."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "UNetConfig":
        """Inverse of :meth:`to_dict`, ignoring unknown keys."""
        return cls(**{k: int(data[k]) for k in cls.__dataclass_fields__ if k in data})

    @property
    def size_multiple(self) -> int:
        """Input sizes divisible by this need no padding."""
        return 2 ** (self.depth - 1)


def default_config(device: torch.device, in_channels: int = 1, n_classes: int = 2) -> UNetConfig:
    """Architecture sized for interactivity on the given device.

    On a CPU a 3-level, width-16 net does a training step on 8 patches of
    128² in well under a second; a GPU affords the classic 4 levels, width 32.
    Both get the fixed filter bank (sigma 1-8), which is what makes a few
    hundred steps enough (see :mod:`napari_unet.core.filters`).
    """
    if device.type == "cpu":
        return UNetConfig(in_channels, n_classes, depth=3, width=16, filter_scales=4)
    return UNetConfig(in_channels, n_classes, depth=4, width=32, filter_scales=4)


class ChannelNorm(nn.Module):
    """LayerNorm over the channel axis of ``(N, C, H, W)``, independently at each pixel."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) * torch.rsqrt(var + self.eps)
        return x * self.weight[:, None, None] + self.bias[:, None, None]


class _DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            ChannelNorm(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            ChannelNorm(cout),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """U-Net (Ronneberger et al. 2015) with same-padding convolutions.

    Inputs of any height and width are reflect-padded to a multiple of
    ``2**(depth-1)`` and the output is cropped back, so the logits have the
    input's spatial shape.
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        if config.depth < 1 or config.width < 1:
            raise ValueError("depth and width must be positive")
        self.config = config
        widths = [config.width * 2**i for i in range(config.depth)]
        self.down = nn.ModuleList()
        self.filters = FilterBank(config.in_channels, config.filter_scales) if config.filter_scales > 0 else None
        cin = self.filters.out_channels if self.filters is not None else config.in_channels
        for w in widths:
            self.down.append(_DoubleConv(cin, w))
            cin = w
        self.up_proj = nn.ModuleList()
        self.up = nn.ModuleList()
        for w in reversed(widths[:-1]):
            # 1x1 projection after bilinear upsampling: cheaper than a
            # transposed convolution and free of checkerboard artefacts.
            self.up_proj.append(nn.Conv2d(cin, w, 1))
            self.up.append(_DoubleConv(2 * w, w))
            cin = w
        self.head = nn.Conv2d(cin, config.n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits of shape ``(N, n_classes, H, W)`` for input ``(N, C, H, W)``."""
        h, w = x.shape[-2:]
        m = self.config.size_multiple
        pad_h, pad_w = (-h) % m, (-w) % m
        if pad_h or pad_w:
            # Reflect needs pad < size; replicate covers tiny inputs.
            mode = "reflect" if pad_h < h and pad_w < w else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        if self.filters is not None:
            x = self.filters(x)
        skips = []
        for i, block in enumerate(self.down):
            if i:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        for proj, block, skip in zip(self.up_proj, self.up, reversed(skips[:-1])):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([skip, proj(x)], dim=1))
        return self.head(x)[..., :h, :w]
