"""Training as a generator: one yielded :class:`TrainProgress` per step.

A caller (CLI progress bar, napari thread worker, benchmark) drives the loop
and may stop it between any two steps, by a ``stop`` callable or by closing
the generator; either way the model ends with the best weights seen
(lowest validation loss, or lowest smoothed training loss when nothing
could be held out).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from napari_unet.core.anchor import consistency_weight, stroke_coverage
from napari_unet.core.autocontext import add_forest_inputs, forest_probabilities, image_features
from napari_unet.core.half_contrast import applies as half_contrast_applies
from napari_unet.core.implied import implied_background, rings_cut_objects
from napari_unet.core.live import RECENT_SHARE, RECENT_STEPS, StrokeFeed, StrokeUpdate, apply_update
from napari_unet.core.model import NetInputs
from napari_unet.core.postprocess import objects_tile
from napari_unet.core.samples import IGNORE, LabelledImage, PatchSampler, class_weights, prepare, validation_patches
from napari_unet.errors import UserInputError


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run.

    Attributes
    ----------
    steps : int or None
        Step budget. With ``max_time`` too, whichever ends first.
    max_time : float or None
        Wall-time budget in seconds.
    patch_size, batch_size : int
        Training patch side and patches per step. For 3D volumes a patch is
        ``patch_size // 16`` planes (at least 4) by ``patch_size // 2``
        squared (:func:`napari_unet.core.samples.patch_shape`).
    learning_rate, weight_decay : float
        AdamW settings; the rate warms up over 10 steps and decays by cosine
        to a tenth over the budget. ``learning_rate=None`` (default) takes
        1e-3 for a model with a forest and 3e-3 for a plain U-Net: the
        correction of a forest from a few strokes, at 3e-3, fits the
        strokes perfectly within ~40 steps and then collapses on the
        unpainted rest (measured on the accuracy suite's sparse nuclei:
        F1 0.80 at step 20, 0.20 at step 40; at 1e-3 it stays 0.72-0.92).
        2e-3 did no better on the suite's nuclei at 60 s (3 seeds, one
        run each: F1 0.780 / 0.424 / 0.734 full / sparse / whole, against
        0.788 / 0.454 / 0.727 at 1e-3), though ahead at a 180-step budget
        on 5 of 12 other cases.
    val_fraction : float
        Share of the labelled area held out for validation (0 disables).
    val_every : int
        Validate every this many steps (and at the end).
    augment : bool
        Random flips, rotations, intensity changes and noise.
    seed : int or None
        Makes CPU runs repeatable.
    forest_consistency : float or None
        For models with a forest: weight of a second loss on *unpainted*
        pixels where the forest is confident (a class above
        ``CONFIDENT``), with the forest's answer as the target (0 disables).
        Strokes say nothing about the pixels between them; without this
        anchor, a correction learned from a few strokes can drift anywhere
        there (objects swelling into the background, say) while the
        held-out strokes, which lie where the strokes are, never see it.
        Where the forest is unsure (object borders, dim objects) the U-Net
        stays free to change its answer. ``None`` (default) sets it from
        the strokes (:mod:`napari_unet.core.anchor`): 2 for sparse strokes,
        0.5 for regions painted in full, between the two in between. One
        weight did not serve both: 2 (against 0.5) in 200-step runs of
        ``python -m benchmarks.bench_selection`` took sparse EM seeds 0-2
        from -0.072 / -0.069 / -0.208 to +0.072 / +0.079 / -0.008 against
        the forest, and the accuracy suite's sparse EM from 0.540 to 0.604
        at 60 s, but full EM from 0.731 to 0.692, and in 120-step runs
        full strokes lost 0.03-0.08 on 3 of 4 cases.
    whole_objects : bool
        The user paints objects whole, up to their outline: the one-pixel
        ring around each such painted object is then taken as background
        (:mod:`napari_unet.core.implied`), so the strokes say where objects
        end. Off by default: strokes painted *inside* objects (cores, thick
        scribbles) would get a ring inside the object.
    balance_classes : bool
        Weight the stroke loss by inverse class frequency (see
        :func:`~napari_unet.core.samples.class_weights`). Needed by a plain
        U-Net from sparse strokes; a model with a forest starts from the
        forest's calibrated answer and keeps it unweighted.
    mixed_precision : bool
        Autocast on CUDA (bfloat16 where supported, else float16 with a
        gradient scaler). Ignored on other devices.
    """

    steps: int | None = 200
    max_time: float | None = None
    patch_size: int = 128
    batch_size: int = 8
    learning_rate: float | None = None
    weight_decay: float = 1e-4
    val_fraction: float = 0.15
    val_every: int = 10
    augment: bool = True
    seed: int | None = None
    mixed_precision: bool = True
    forest_consistency: float | None = None
    balance_classes: bool | None = None
    whole_objects: bool = False

    def __post_init__(self) -> None:
        if self.steps is None and self.max_time is None:
            raise UserInputError("give a training budget: a number of steps or a time limit")
        if self.steps is not None and self.steps < 1:
            raise UserInputError("the number of training steps must be at least 1")
        if self.max_time is not None and self.max_time <= 0:
            raise UserInputError("the training time limit must be positive")
        if self.patch_size < 16 or self.batch_size < 1:
            raise UserInputError("patch size must be at least 16 and batch size at least 1")
        if self.forest_consistency is not None and not self.forest_consistency >= 0:
            raise UserInputError("the forest-consistency weight must be 0 or more")

    def to_dict(self) -> dict:
        """Plain-type dict (stored in the model's history)."""
        return asdict(self)


@dataclass(frozen=True)
class TrainProgress:
    """What one training step reports.

    ``val_loss``/``val_iou`` are the latest validation figures (None before
    the first validation or when nothing is held out); ``time_left`` is an
    estimate in seconds; ``done`` is True on the last report of a run.
    ``strokes`` counts the stroke updates taken in while this run trained
    (:mod:`napari_unet.core.live`; a plot marks where it grows) and
    ``stroke_latency`` is the seconds from the latest of them being seen
    to the end of the first step that trained on it. ``fresh_wait`` is the
    step from which a fresh correction may replace the forest's answer
    (0 when no wait applies: see :data:`FRESH_CORRECTION_STEPS`).
    ``rings_dropped`` is True when ``whole_objects`` was asked for but the
    forest trained with the implied rings cut objects apart, so the run
    trained on the strokes as painted
    (:func:`~napari_unet.core.implied.rings_cut_objects`). ``tiled`` says
    whether the forest's answer on the training images has objects that
    tile the image (cells between membranes,
    :func:`~napari_unet.core.postprocess.objects_tile`): the model's
    instances are then always seeded by the mask's cores. ``half_contrast``
    says whether the strokes left object edges untaught on bright objects,
    so that prediction places them at half contrast
    (:func:`~napari_unet.core.half_contrast.applies`). ``anchor`` is the
    forest-consistency weight in use (``TrainConfig.forest_consistency``,
    or the one the strokes' density set: :mod:`napari_unet.core.anchor`).
    """

    step: int
    total_steps: int | None
    loss: float
    val_loss: float | None
    val_iou: float | None
    best_step: int
    elapsed: float
    time_left: float | None
    fraction: float
    done: bool = False
    stopped: bool = False
    strokes: int = 0
    stroke_latency: float | None = None
    fresh_wait: int = 0
    rings_dropped: bool = False
    tiled: bool = False
    half_contrast: bool = False
    anchor: float = 0.0

    def rings_note(self) -> str | None:
        """Why the whole-objects option was dropped, after the front-end's name for it (None when it was not)."""
        if not self.rings_dropped:
            return None
        return (
            "was ignored: with the background rings around painted objects, "
            "the forest cut unpainted objects into pieces far smaller than the painted ones, "
            "so this run trained on the strokes as painted"
        )

    def kept(self) -> str:
        """Which weights the run ends with, in words (for the CLI's and the widget's last message)."""
        if self.best_step:
            return f"kept the best weights (step {self.best_step})"
        if self.step < self.fresh_wait:
            return f"kept the forest's answer (step 0): a new correction may replace it from step {self.fresh_wait} on"
        return "kept the weights it started from (step 0): held-out strokes favoured no later step"


# A trained correction replaces the forest's answer (step 0) only when its
# held-out loss is this much lower (relative): held-out strokes are few, and
# their loss moves by a few per cent between equally good states.
FOREST_MARGIN = 0.03
# A fresh correction may replace the forest's answer only from this step on.
# Started from zero at the full learning rate, the correction first fits the
# strokes' own pixels and often disturbs the unpainted rest, and held-out
# strokes (painted pixels, like the training ones) do not see it.
# ``python -m benchmarks.bench_selection`` traces the true score every 5
# steps of 35-step runs (about 10 s on 2 CPU cores) on 10 suite cases: 5
# ended below their forest (sparse EM 0.34 -> 0.20, 0.20 -> 0.08, 0.26 ->
# 0.14; sparse RGB 0.92 -> 0.89; sparse membranes 0.88 -> 0.82), and
# held-out strokes alone picked the young correction on the three EM ones;
# 4 ended within 0.03 of it, and one well above (sparse nuclei 0.72 ->
# 0.92), a step held-out strokes alone did not pick either. The dip lasts
# beyond step 50: in the benchmark's 200-step runs the true score at step
# 50 was still 0.08-0.29 below the forest on 4 of the 10 cases, and from
# step 80 on within 0.05 of it or above except on two sparse EM cases that
# no held-out signal tells apart; and once training steps got faster
# (channels-last), 10 s runs reached steps 50-55 and kept young corrections
# on sparse EM (0.344 -> 0.222 and 0.204 -> 0.082 at a 50-step wait). A
# correction trained in an earlier run is past this phase: no wait then.
FRESH_CORRECTION_STEPS = 80
# Forest probability above which an unpainted pixel's forest answer is used as a target.
CONFIDENT = 0.9
# Steps without new strokes after which the forest is fitted again on all
# strokes (about a second on 2 CPU cores): strokes arrive as a stream of
# small updates while the user paints, and each fit takes a second or two.
REFIT_QUIET_STEPS = 3
# Validation patches per forward pass: a training batch's worth (16 patches
# of 128² on 2 CPU cores, timed alone: 0.18 s in chunks of 4, 0.14 s in
# chunks of 8).
VAL_CHUNK = 8


def _lr_factor(step: int, fraction: float) -> float:
    warmup = min(1.0, (step + 1) / 10)
    return warmup * (0.1 + 0.45 * (1 + math.cos(math.pi * min(fraction, 1.0))))


def masked_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Class-weighted cross-entropy over labelled pixels only (target -1 is ignored).

    A batch without any labelled pixel gives 0 (with a gradient), not NaN.
    """
    if not (target != IGNORE).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), target, weight=weight, ignore_index=IGNORE)


def _copy_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _budget_fraction(config: TrainConfig, step: int, elapsed: float) -> float:
    """Share of the budget used: the larger of the step and time shares."""
    by_steps = step / config.steps if config.steps else 0.0
    by_time = elapsed / config.max_time if config.max_time else 0.0
    return max(by_steps, by_time)


def best_class(scores: torch.Tensor) -> torch.Tensor:
    """Index of the largest of ``scores (N, C, *spatial)`` along the class axis (the first on ties, as ``argmax``).

    ``Tensor.max(1)`` rather than ``argmax(1)``: on a CPU, torch 2.13's
    argmax over a short class axis took 11-23 ms on 8 x 2 x 128² where max
    took 0.5-1 ms (timed alone), and it ran once per training step (the
    forest-consistency target) and once per validation. Inside a training
    loop the difference is smaller: 2-14 ms of a 200 ms step.
    """
    return scores.max(1).indices


def _mean_iou(logits: torch.Tensor, target: torch.Tensor, n_classes: int) -> float:
    pred = best_class(logits)
    valid = target != IGNORE
    ious = []
    for c in range(n_classes):
        p, t = (pred == c) & valid, (target == c) & valid
        union = (p | t).sum().item()
        if t.any():
            ious.append((p & t).sum().item() / union)
    return float(np.mean(ious)) if ious else float("nan")


def train_model(
    model: torch.nn.Module,
    images: list[np.ndarray],
    targets: list[np.ndarray],
    config: TrainConfig,
    device: torch.device,
    stop: Callable[[], bool] | None = None,
    strokes: StrokeFeed | None = None,
    normalize: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Iterator[TrainProgress]:
    """Train ``model`` in place on normalised images and targets, yielding progress.

    Parameters
    ----------
    model : torch.nn.Module
        Network returning logits ``(N, n_classes, *spatial)``; already on ``device``.
    images : list of numpy.ndarray
        Normalised float32 images ``(C, Y, X)`` for a 2D model or volumes
        ``(C, Z, Y, X)`` for a 3D one (``model.config.ndim``).
    targets : list of numpy.ndarray
        Class targets ``(*spatial)``, -1 where unlabeled.
    config : TrainConfig
        Budget and hyper-parameters.
    device : torch.device
        Where to train.
    stop : callable, optional
        Polled before every step; training ends when it returns True.
    strokes : StrokeFeed, optional
        Strokes painted while training runs, taken in before every step
        (:mod:`napari_unet.core.live`). Once strokes change, held-out
        scores from before are not comparable: the best weights are chosen
        again from the next validation on.
    normalize : callable, optional
        Maps a raw ``(C, *spatial)`` image to the model's normalised input,
        for images that join through ``strokes`` (default: as is).

    Yields
    ------
    TrainProgress
        One per step; the last has ``done=True``.
    """
    rng = np.random.default_rng(config.seed)
    if config.seed is not None:
        torch.manual_seed(config.seed)
    n_classes = model.config.n_classes
    ndim = model.config.ndim
    for image, target in zip(images, targets):
        if target.ndim != ndim:
            raise UserInputError(f"a {ndim}D model cannot train on {target.ndim}D annotations of shape {tuple(target.shape)}")
    start = time.perf_counter()  # the forest's fit counts against the budget too
    channels = model.config.in_channels
    forest = getattr(model, "forest", None) is not None
    plain_targets = targets
    if config.whole_objects:
        targets = [implied_background(t, n_classes) for t in targets]
    rings = any(a is not b for a, b in zip(targets, plain_targets))

    def anchor_weight(painted: list[np.ndarray]) -> float:
        # The config's weight, or one set by how densely the user painted.
        return config.forest_consistency if config.forest_consistency is not None else consistency_weight(stroke_coverage(painted))

    anchor = anchor_weight(plain_targets)
    feats = None
    if forest or getattr(model, "needs_feature_stats", False):
        feats = [image_features(model, image, device) for image in images]
    if getattr(model, "needs_feature_stats", False):
        # A fresh model: its feature scaling comes from its first images and then stays.
        model.set_feature_stats(feats)
    rings_dropped = False
    if forest:
        with_forest = add_forest_inputs(model, images, feats, targets, device, config.seed)
        if rings and rings_cut_objects(plain_targets, [image[channels:] for image in with_forest]):
            # The rings taught the forest to cut objects apart: train on the strokes as painted.
            targets, rings_dropped = plain_targets, True
            with_forest = add_forest_inputs(model, images, feats, targets, device, config.seed)
        images = with_forest
    # Decided once on the forest's answer, not on each prediction (see objects_tile).
    tiled = forest and objects_tile([image[channels:] for image in images])
    half_contrast = half_contrast_applies([image[:channels] for image in images], [image[channels:] for image in images] if forest else None, targets, n_classes, ndim, tiled)
    del feats
    data = prepare(images, targets, config.patch_size, config.val_fraction, rng)
    sampler = PatchSampler(data, config.patch_size, config.batch_size, config.augment, rng, channels)
    balance = config.balance_classes if config.balance_classes is not None else not forest
    weight = torch.as_tensor(class_weights(data, n_classes), device=device) if balance else None
    val = validation_patches(data, config.patch_size)
    val_x = val_y = None
    if val is not None:
        val_x, val_y = (torch.as_tensor(a, device=device) for a in val)

    use_amp = config.mixed_precision and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    autocast = (lambda: torch.autocast("cuda", dtype=amp_dtype)) if use_amp else contextlib.nullcontext
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    base_lr = config.learning_rate if config.learning_rate is not None else (1e-3 if forest else 3e-3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=base_lr, weight_decay=config.weight_decay)

    def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return masked_cross_entropy(logits, y, weight)

    def train_loss(logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = loss_fn(logits, y)
        if forest and anchor > 0:
            prior = x[:, channels:]
            top = prior.max(1)  # the best class and its probability in one pass (see best_class)
            confident = (top.values >= CONFIDENT) & (y == IGNORE)
            pseudo = torch.where(confident, top.indices, torch.full_like(y, IGNORE))
            loss = loss + anchor * masked_cross_entropy(logits, pseudo)
        return loss

    def fixed_inputs(x: torch.Tensor) -> NetInputs:
        # Forest inputs ride along as extra channels of the training images.
        return model.fixed_inputs(x[:, :channels], forest_probs=x[:, channels:]) if forest else model.fixed_inputs(x)

    def run(x: torch.Tensor) -> torch.Tensor:
        return model.learned(fixed_inputs(x))

    val_inputs: list[NetInputs] | None = None  # the validation batch's fixed inputs, made once per batch

    def validate() -> tuple[float, float]:
        nonlocal val_inputs
        model.eval()
        with torch.inference_mode(), autocast():
            if val_inputs is None:
                # Filter bank and forest inputs do not change while the
                # batch stays: computed once, not at every validation.
                val_inputs = [fixed_inputs(val_x[i : i + VAL_CHUNK]) for i in range(0, len(val_x), VAL_CHUNK)]
            logits = torch.cat([model.learned(inputs) for inputs in val_inputs])
            loss = loss_fn(logits, val_y).item()
        model.train()
        return loss, _mean_iou(logits.float(), val_y, n_classes)

    best_state: dict[str, torch.Tensor] | None = None
    best_score, best_step = math.inf, 0
    ema = None
    val_loss = val_iou = None
    if forest and val_x is not None:
        # Step 0 is a candidate too: the forest with the current correction
        # (none for a fresh model). Training then only replaces it when the
        # held-out strokes say it got better.
        val_loss, val_iou = validate()
        best_score, best_state = val_loss, _copy_state(model)
    forest_best = best_state is not None
    # Steps before a fresh correction may replace the forest (FRESH_CORRECTION_STEPS).
    head = getattr(model, "head", None)
    fresh = forest and head is not None and not any(bool(p.detach().any()) for p in head.parameters())
    first_pick = FRESH_CORRECTION_STEPS if fresh and forest_best else 0

    def may_replace(score: float) -> bool:
        """Whether weights scoring ``score`` on held-out strokes replace the best so far."""
        if forest_best:
            # Leaving the forest's answer (step 0) takes a clear improvement on the
            # held-out strokes, not noise (FOREST_MARGIN), and a correction past its
            # first dip (FRESH_CORRECTION_STEPS).
            return step >= first_pick and score < best_score * (1 - FOREST_MARGIN)
        return score < best_score

    step = 0
    stopped = False
    taken = 0  # stroke updates taken in during this run
    settled = 0  # no best weights are picked before this step (see take_strokes below)
    latency: float | None = None
    waiting: list[float] = []  # when the strokes taken before this step were seen

    def new_item(raw: Any) -> LabelledImage:
        """A training image painted for the first time during the run: normalised, with its forest inputs."""
        image = np.asarray(raw, dtype=np.float32)
        image = normalize(image) if normalize is not None else image
        if forest:
            probs = forest_probabilities(model, image_features(model, image, device), device)
            image = np.concatenate([image, probs], axis=0)
        return LabelledImage(image, np.full(image.shape[1:], IGNORE, np.int16))

    def take_strokes(updates: list[StrokeUpdate]) -> bool:
        """Apply updates to the targets and the sampler; True when the validation batch changed."""
        rebuild = False
        for update in updates:
            if update.item >= len(data):
                if update.image is None:
                    raise ValueError(f"stroke update for training image {update.item} of {len(data)} without its pixels")
                data.append(new_item(update.image))
                update = replace(update, item=len(data) - 1)
            applied = apply_update(data[update.item], update, n_classes)
            sampler.add_recent(update.item, applied.recent, RECENT_STEPS, RECENT_SHARE)
            rebuild |= applied.validation_changed
            waiting.append(update.painted_at)
        sampler.refresh_classes()
        return rebuild

    def refit_forest() -> None:
        """Fit the forest again on every stroke, old and new, and give each training image its new forest inputs.

        As at the start (:func:`add_forest_inputs`): out-of-fold
        probabilities on painted pixels, so the U-Net still learns where
        the forest goes wrong. Without it the forest keeps its answer
        from before a correction, and the U-Net has to learn to overrule
        it from a few dozen steps.
        """
        nonlocal tiled, half_contrast, anchor
        base = [item.image[:channels] for item in data]
        labels = [item.train_target if item.val_target is None else np.where(item.val_target >= 0, item.val_target, item.train_target) for item in data]
        anchor = anchor_weight(labels)
        feats = [image_features(model, image, device) for image in base]
        for item, image in zip(data, add_forest_inputs(model, base, feats, labels, device, config.seed)):
            item.image = image
        tiled = objects_tile([item.image[channels:] for item in data])
        half_contrast = half_contrast_applies(base, [item.image[channels:] for item in data], labels, n_classes, ndim, tiled)

    def validation_batch() -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The fixed validation batch, made again after held-out strokes or forest inputs changed."""
        val = validation_patches(data, config.patch_size)
        return (None, None) if val is None else tuple(torch.as_tensor(a, device=device) for a in val)

    refit_at: int | None = None  # the step at which the forest is fitted again after new strokes
    model.train()
    try:
        while True:
            elapsed = time.perf_counter() - start
            fraction = _budget_fraction(config, step, elapsed)
            if fraction >= 1.0:
                break
            if stop is not None and stop():
                stopped = True
                break
            updates = strokes.drain() if strokes is not None else []
            if updates:
                taken += len(updates)
                if take_strokes(updates):
                    val_x, val_y = validation_batch()
                    val_inputs = None
                    val_loss = val_iou = None
                # The strokes changed: earlier held-out scores measured another
                # task, and the held-out strokes do not see the correction
                # (new strokes train). Keep the current weights, and pick a
                # best again only once the correction has had its favoured
                # steps: held-out scores alone would pick weights from before
                # it took hold.
                best_state, best_score, best_step, forest_best = None, math.inf, step, False
                settled = step + RECENT_STEPS
                if forest:
                    refit_at = step + REFIT_QUIET_STEPS  # once the user has paused: a stroke arrives as several updates
            elif refit_at is not None and step >= refit_at:
                refit_at = None
                refit_forest()
                val_x, val_y = validation_batch()  # its patches carry forest inputs too
                val_inputs = None
            for group in optimizer.param_groups:
                group["lr"] = base_lr * _lr_factor(step, fraction)
            x, y = sampler.batch()
            x, y = torch.from_numpy(x).to(device, non_blocking=True), torch.from_numpy(y).to(device, non_blocking=True)
            with autocast():
                loss = train_loss(run(x), x, y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            loss_value = float(loss.item())
            if not math.isfinite(loss_value):
                raise RuntimeError("training diverged (loss is not finite); try a lower learning rate")
            step += 1
            if waiting:
                latency, waiting = time.perf_counter() - waiting[-1], []
            ema = loss_value if ema is None else 0.9 * ema + 0.1 * loss_value
            if val_x is not None and (step % config.val_every == 0):
                val_loss, val_iou = validate()
            score = val_loss if val_x is not None and val_loss is not None else ema
            # Validation figures only change every val_every steps; compare them then.
            if (val_x is None or step % config.val_every == 0) and step >= settled and may_replace(score):
                forest_best = False
                best_score, best_step = score, step
                best_state = _copy_state(model)
            elapsed = time.perf_counter() - start
            fraction = _budget_fraction(config, step, elapsed)
            time_left = elapsed / fraction * (1 - fraction) if fraction > 0 else None
            yield TrainProgress(step, config.steps, loss_value, val_loss, val_iou, best_step, elapsed, time_left, min(fraction, 1.0), strokes=taken, stroke_latency=latency, fresh_wait=first_pick, rings_dropped=rings_dropped, tiled=tiled, half_contrast=half_contrast, anchor=anchor)
        if val_x is not None and step % config.val_every != 0 and step > 0 and step >= settled:
            val_loss, val_iou = validate()
            if may_replace(val_loss):
                best_score, best_step = val_loss, step
                best_state = _copy_state(model)
        elapsed = time.perf_counter() - start
        last_loss = ema if ema is not None else float("nan")
        yield TrainProgress(step, config.steps, last_loss, val_loss, val_iou, best_step, elapsed, 0.0, 1.0, done=True, stopped=stopped, strokes=taken, stroke_latency=latency, fresh_wait=first_pick, rings_dropped=rings_dropped, tiled=tiled, half_contrast=half_contrast, anchor=anchor)
    finally:
        # Runs on normal end, on stop, and when the caller closes the
        # generator: the model always ends with the best weights seen.
        if best_state is not None:
            model.load_state_dict(best_state)
        model.eval()
