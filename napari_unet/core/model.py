"""A compact 2D or 3D U-Net that takes any input size.

Normalisation is per pixel, across channels (a "channels-only" LayerNorm,
as in ConvNeXt), chosen for two properties interactive use needs:

- no running statistics: BatchNorm's, after a few dozen steps on batches of
  a few patches, can make eval-mode predictions all wrong; this layer does
  the same thing in train and eval mode;
- no statistics over space: GroupNorm/InstanceNorm normalise over the whole
  input, so a tile would be normalised differently from the full image and
  tiled prediction could not match untiled prediction.

The 3D variant (``UNetConfig.ndim == 3``, inputs ``(N, C, Z, Y, X)``) is the
same network with 3x3x3 convolutions, 2x2x2 max pooling and trilinear
upsampling. Every spatial axis, Z included, is padded to
:attr:`UNetConfig.size_multiple` before the first layer, so pooling never
reduces an axis below one voxel, even for a stack of a few thick planes,
and the pooling pattern does not depend on the input's size (a tile and the
whole volume go through the same layers, which tiled prediction needs).
Z is pooled like Y and X (isotropic in voxels): pooling Z less on
anisotropic stacks would need a per-dataset setting that a model file and
every tile must agree on; the padding keeps thin stacks working, and the
net learns the anisotropy from the data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from napari_unet.core.filters import FilterBank
from napari_unet.core.forest import Forest
from napari_unet.errors import UserInputError


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
    ndim : int
        Spatial dimensions: 2 (images ``(C, Y, X)``, applied plane by plane
        to stacks) or 3 (volumes ``(C, Z, Y, X)``). Model files written
        before 3D support have no ``ndim`` and load as 2D.
    forest : int
        1: a random forest on the filter-bank features
        (:class:`~napari_unet.core.forest.Forest`) gives a first answer and
        the U-Net learns a correction of its log-probabilities
        (autocontext); 0: a plain U-Net (model files from before the forest).
    channel_norm : int
        1: per-pixel LayerNorm over channels after each convolution (the
        architecture of model files from before the forest); 0: none.
        Normalising each pixel's feature vector throws away its magnitude,
        so faint objects and noise in empty background look alike; with the
        forest's probabilities as input and a residual output the plain
        network trains stably without it.
    feature_norm : int
        1: the filter-bank features are standardised (per feature, by mean
        and standard deviation measured once, on the first training images,
        and stored in the model) before the U-Net's first convolution; 0:
        raw features (model files from before it). The bank's features span
        orders of magnitude (a sigma-16 smoothing beside the sigma-1 ridge
        response of a faint object), which a network without normalisation
        layers cannot even out in a few hundred steps; fixed statistics
        keep tiled prediction equal to untiled prediction, which statistics
        taken over each input would not. The forest takes the raw features
        (trees do not care about scale).
    """

    in_channels: int = 1
    n_classes: int = 2
    depth: int = 3
    width: int = 16
    filter_scales: int = 4
    ndim: int = 2
    forest: int = 0
    channel_norm: int = 1
    feature_norm: int = 0

    def to_dict(self) -> dict:
        """Plain-type dict for checkpoints."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> UNetConfig:
        """Inverse of :meth:`to_dict`, ignoring unknown keys (missing ones keep the old architecture)."""
        return cls(**{k: int(data[k]) for k in cls.__dataclass_fields__ if k in data})

    @property
    def size_multiple(self) -> int:
        """Input sizes divisible by this (on every spatial axis) need no padding."""
        return 2 ** (self.depth - 1)


# Sigmas 1-16, as the classic random-forest segmenter: objects up to ~30 px
# in radius need the sigma-16 features to be told from background.
FOREST_SCALES_2D = 5
FOREST_SCALES_3D = 4


def default_config(device: torch.device, in_channels: int = 1, n_classes: int = 2, ndim: int = 2) -> UNetConfig:
    """Architecture sized for interactivity on the given device.

    2D: on a CPU a 3-level, width-16 net does a training step on 8 patches
    of 128² in well under a second; a GPU affords the classic 4 levels,
    width 32. Both get the fixed filter bank (sigma 1-8), which is what
    makes a few hundred steps enough (see :mod:`napari_unet.core.filters`).

    3D: a 3x3x3 convolution costs three times a 3x3 one per voxel and a 3D
    patch holds twice the voxels of a 2D one, so the CPU net keeps 3
    levels but width 8 (a step on 8 patches of 8x64x64, see
    :func:`~napari_unet.core.samples.patch_shape`, takes 1.5-2 times a 2D
    step at width 16); a GPU gets 4 levels, width 16. The filter bank stops
    at sigma 4: 3D training patches are only a few planes deep, so
    a sigma-8 feature would mostly see border padding in Z during training
    and real context at prediction.
    """
    if ndim not in (2, 3):
        raise ValueError(f"ndim must be 2 or 3, got {ndim}")
    new = {"forest": 1, "channel_norm": 0, "feature_norm": 1}
    if ndim == 3:
        if device.type == "cpu":
            return UNetConfig(in_channels, n_classes, depth=3, width=8, filter_scales=FOREST_SCALES_3D, ndim=3, **new)
        return UNetConfig(in_channels, n_classes, depth=4, width=16, filter_scales=FOREST_SCALES_3D, ndim=3, **new)
    if device.type == "cpu":
        return UNetConfig(in_channels, n_classes, depth=3, width=16, filter_scales=FOREST_SCALES_2D, **new)
    return UNetConfig(in_channels, n_classes, depth=4, width=32, filter_scales=FOREST_SCALES_2D, **new)


class ChannelNorm(nn.Module):
    """LayerNorm over the channel axis of ``(N, C, *spatial)``, independently at each pixel."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) * torch.rsqrt(var + self.eps)
        shape = (-1,) + (1,) * (x.dim() - 2)
        return x * self.weight.view(shape) + self.bias.view(shape)


_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_POOL = {2: F.max_pool2d, 3: F.max_pool3d}
_UPSAMPLE = {2: "bilinear", 3: "trilinear"}
_CHANNELS_LAST = {2: torch.channels_last, 3: torch.channels_last_3d}


class _DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int, ndim: int = 2, norm: bool = True) -> None:
        conv = _CONV[ndim]
        layers: list[nn.Module] = []
        for c in (cin, cout):
            layers.append(conv(c, cout, 3, padding=1, bias=not norm))
            if norm:
                layers.append(ChannelNorm(cout))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class NetInputs(NamedTuple):
    """What :meth:`UNet.fixed_inputs` gives :meth:`UNet.learned`.

    Attributes
    ----------
    x : torch.Tensor
        Standardised filter features and forest probabilities, padded to
        the size multiple.
    prior : torch.Tensor or None
        The forest's log-probabilities the logits are added to (None
        without a forest).
    spatial : tuple of int
        The input's spatial shape, to crop the logits back to.
    """

    x: torch.Tensor
    prior: torch.Tensor | None
    spatial: tuple[int, ...]


class UNet(nn.Module):
    """U-Net (Ronneberger et al. 2015) with same-padding convolutions.

    Inputs of any size are reflect-padded on every spatial axis to a
    multiple of ``2**(depth-1)`` and the output is cropped back, so the
    logits have the input's spatial shape. ``config.ndim`` chooses 2D
    ``(N, C, Y, X)`` or 3D ``(N, C, Z, Y, X)`` inputs.
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        if config.depth < 1 or config.width < 1:
            raise ValueError("depth and width must be positive")
        if config.ndim not in (2, 3):
            raise ValueError(f"ndim must be 2 or 3, got {config.ndim}")
        self.config = config
        nd = config.ndim
        conv = _CONV[nd]
        self._pool = _POOL[nd]
        self._upsample = _UPSAMPLE[nd]
        widths = [config.width * 2**i for i in range(config.depth)]
        self.down = nn.ModuleList()
        self.filters = FilterBank(config.in_channels, config.filter_scales, nd) if config.filter_scales > 0 else None
        cin = self.filters.out_channels if self.filters is not None else config.in_channels
        self.forest = Forest(config.n_classes) if config.forest else None
        if config.feature_norm:
            # Filled by set_feature_stats before the first training step;
            # feature_pixels (0 until then) says whether that happened.
            self.register_buffer("feature_mean", torch.zeros(cin))
            self.register_buffer("feature_std", torch.ones(cin))
            self.register_buffer("feature_pixels", torch.zeros(()))
        if self.forest is not None:
            cin += config.n_classes
        norm = bool(config.channel_norm)
        for w in widths:
            self.down.append(_DoubleConv(cin, w, nd, norm))
            cin = w
        self.up_proj = nn.ModuleList()
        self.up = nn.ModuleList()
        for w in reversed(widths[:-1]):
            # 1x1 projection after bilinear upsampling: cheaper than a
            # transposed convolution and free of checkerboard artefacts.
            self.up_proj.append(conv(cin, w, 1))
            self.up.append(_DoubleConv(2 * w, w, nd, norm))
            cin = w
        self.head = conv(cin, config.n_classes, 1)
        if self.forest is not None:
            # A zero correction: until training moves it, the model's answer is the forest's.
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Filter-bank features of ``(N, C, *spatial)`` images (the image itself without a bank)."""
        return self.filters(x) if self.filters is not None else x

    @property
    def needs_feature_stats(self) -> bool:
        """True for a model that standardises its features and has no statistics yet."""
        return bool(self.config.feature_norm) and float(self.feature_pixels) == 0

    def set_feature_stats(self, features: list) -> None:
        """Measure the features' mean and standard deviation once (see ``UNetConfig.feature_norm``).

        Parameters
        ----------
        features : list of array-like
            ``(F, *spatial)`` features of the training images (as
            :meth:`features` gives them, batch axis removed).
        """
        n = self.feature_mean.numel()
        total, sums, squares = 0, torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
        for f in features:
            # One channel at a time in float64: exact enough, and never a
            # float64 copy of a whole volume's features.
            f = torch.as_tensor(f).reshape(n, -1)
            total += f.shape[1]
            for c in range(n):
                channel = f[c].double()
                sums[c] += channel.sum()
                squares[c] += (channel * channel).sum()
        mean = sums / total
        var = (squares / total - mean * mean).clamp_min(0)
        self.feature_mean.copy_(mean.float())
        self.feature_std.copy_(var.sqrt().clamp_min(1e-6).float())
        self.feature_pixels.fill_(float(total))

    def _standardize(self, features: torch.Tensor) -> torch.Tensor:
        if not self.config.feature_norm:
            return features
        shape = (1, -1) + (1,) * self.config.ndim
        # In place on the difference: one full-size temporary, not two
        # (the division's gradient needs only the constant std).
        return (features - self.feature_mean.view(shape)).div_(self.feature_std.view(shape))

    def forward(self, x: torch.Tensor, forest_probs: torch.Tensor | None = None) -> torch.Tensor:
        """Return class logits ``(N, n_classes, *spatial)`` for input ``(N, C, *spatial)``.

        Parameters
        ----------
        x : torch.Tensor
            Normalised images.
        forest_probs : torch.Tensor, optional
            ``(N, n_classes, *spatial)`` forest probabilities to use instead
            of the model's own forest: training feeds out-of-fold ones on
            painted pixels (see :mod:`napari_unet.core.autocontext`).
        """
        return self.learned(self.fixed_inputs(x, forest_probs))

    def fixed_inputs(self, x: torch.Tensor, forest_probs: torch.Tensor | None = None) -> NetInputs:
        """The parts of :meth:`forward` that training does not change: padding, filter bank, forest.

        Split out so that a batch run many times (the fixed validation
        batch) computes them once: the filter bank alone was 28 % of a
        16-patch validation pass. Same parameters as :meth:`forward`.
        """
        spatial = tuple(x.shape[2:])
        if len(spatial) != self.config.ndim:
            raise ValueError(f"a {self.config.ndim}D U-Net needs input (N, C, {'Z, ' if self.config.ndim == 3 else ''}Y, X), got shape {tuple(x.shape)}")
        m = self.config.size_multiple
        pads = [(-s) % m for s in spatial]
        if any(pads):
            # Reflect needs pad < size; replicate covers tiny inputs.
            mode = "reflect" if all(p < s for p, s in zip(pads, spatial)) else "replicate"
            # F.pad lists (before, after) pairs from the last axis backwards.
            x = F.pad(x, [v for p in reversed(pads) for v in (0, p)], mode=mode)
            if forest_probs is not None:
                forest_probs = F.pad(forest_probs, [v for p in reversed(pads) for v in (0, p)], mode="replicate")
        features = self.features(x)
        x = self._standardize(features)
        prior = None
        if self.forest is not None:
            probs = self.forest(features) if forest_probs is None else forest_probs
            # Floor at 1e-3: a forest's hard 0 must stay correctable.
            prior = torch.log(probs.clamp_min(1e-3))
            x = torch.cat([x, probs.to(x.dtype)], dim=1)
        return NetInputs(x, prior, spatial)

    def learned(self, inputs: NetInputs) -> torch.Tensor:
        """Logits from :meth:`fixed_inputs`: the trained layers, plus the forest's log-probabilities."""
        # Channels-last through the convolutions: oneDNN's CPU kernels run
        # them without reordering each layer's input (2 cores, both layouts
        # alternated: a 2D 464² forward 0.155 -> 0.125 s, a 2D training step
        # on 8 x 128² 0.250 -> 0.180 s, a 3D one on 8 x 8x64² 0.47 -> 0.25 s);
        # CUDA's mixed-precision kernels prefer it too.
        x = inputs.x.contiguous(memory_format=_CHANNELS_LAST[self.config.ndim])
        skips = []
        for i, block in enumerate(self.down):
            if i:
                x = self._pool(x, 2)
            x = block(x)
            skips.append(x)
        for proj, block, skip in zip(self.up_proj, self.up, reversed(skips[:-1])):
            x = F.interpolate(x, size=skip.shape[2:], mode=self._upsample, align_corners=False)
            x = block(torch.cat([skip, proj(x)], dim=1))
        logits = self.head(x)
        if inputs.prior is not None:
            logits = logits + inputs.prior.to(logits.dtype)
        # Back to the default layout: callers view and copy the logits as plain arrays.
        return logits[(Ellipsis, *(slice(0, s) for s in inputs.spatial))].contiguous()


def model_ndim(config: UNetConfig | None) -> int:
    """Spatial dimensions of a model: its config's, 2 when there is no model yet."""
    return int(config.ndim) if config is not None else 2


def channel_mismatch(expected: int, got: int, axes: str | None = None) -> UserInputError:
    """The error for an image whose channel count the model was not trained on."""
    where = f" (axes {axes!r})" if axes else ""
    hint = "" if axes else "; check which axis holds the channels"
    return UserInputError(f"the model expects {expected} channel(s) but the image has {got}{where}{hint}")
