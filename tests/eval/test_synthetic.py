"""The synthetic nuclei generator: determinism, realism hooks, annotation rules."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_unet.eval.synthetic import (
    SAMPLE_PARAMS,
    SyntheticSample,
    make_nuclei,
    make_nuclei_set,
    touching_discs,
)


@pytest.fixture(scope="module")
def sample() -> SyntheticSample:
    return make_nuclei(**SAMPLE_PARAMS)


def test_shapes_and_dtypes(sample: SyntheticSample) -> None:
    assert sample.image.shape == sample.instances.shape == sample.annotations.shape == (256, 256)
    assert sample.image.dtype == np.uint16
    assert sample.instances.dtype == np.uint16
    assert sample.annotations.dtype == np.uint8
    assert sample.semantic.dtype == np.uint8
    np.testing.assert_array_equal(sample.semantic, sample.instances > 0)


def test_frozen(sample: SyntheticSample) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        sample.image = sample.image  # type: ignore[misc]


def test_deterministic_for_a_seed() -> None:
    a, b = make_nuclei(seed=7), make_nuclei(seed=7)
    for field in ("image", "instances", "annotations"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert a.touching_pairs == b.touching_pairs
    c = make_nuclei(seed=8)
    assert not np.array_equal(a.instances, c.instances)


def test_instances_are_consecutive_and_connected(sample: SyntheticSample) -> None:
    labels = np.unique(sample.instances)
    n = int(labels.max())
    np.testing.assert_array_equal(labels, np.arange(n + 1))
    assert 15 <= n <= 40
    for lab in range(1, n + 1):
        _, count = ndi.label(sample.instances == lab)
        assert count == 1, f"label {lab} is in {count} pieces"


def test_touching_pairs_are_one_blob(sample: SyntheticSample) -> None:
    assert len(sample.touching_pairs) >= 2
    for a, b in sample.touching_pairs:
        union = np.isin(sample.instances, (a, b))
        _, count = ndi.label(union)  # 4-connectivity: really touching
        assert count == 1, f"pair {(a, b)} is not one connected component"
    # And the semantic mask has fewer components than there are nuclei: a
    # plain connected-components labelling cannot be right.
    _, n_blobs = ndi.label(sample.semantic)
    assert n_blobs == sample.instances.max() - len(sample.touching_pairs)


def test_annotation_rules(sample: SyntheticSample) -> None:
    ann, inst = sample.annotations, sample.instances
    assert set(np.unique(ann)) == {0, 1, 2}
    assert np.all(inst[ann == 2] > 0), "a nucleus stroke leaves its nucleus"
    assert np.all(inst[ann == 1] == 0), "a background stroke touches a nucleus"
    # Each nucleus stroke lies within ONE nucleus (never crosses the split
    # line of a touching pair).
    strokes, n = ndi.label(ann == 2)
    for i in range(1, n + 1):
        assert len(np.unique(inst[strokes == i])) == 1
    # Sparse: a few percent of the pixels, not a full annotation.
    assert 0.002 < (ann > 0).mean() < 0.05
    # About 40 % of the nuclei carry a stroke; 4-6 background strokes.
    annotated = len(np.unique(inst[ann == 2]))
    assert 0.45 * inst.max() <= annotated <= 0.75 * inst.max()
    _, n_bg = ndi.label(ann == 1, structure=np.ones((3, 3)))
    assert 4 <= n_bg <= 13  # strokes may touch end to end


def test_uneven_illumination_and_dim_nuclei(sample: SyntheticSample) -> None:
    img = ndi.gaussian_filter(sample.image.astype(float), 2)
    bg = sample.instances == 0
    far_bg = ndi.binary_erosion(bg, iterations=6)
    background = img[far_bg]
    assert 150 < np.median(background) < 260
    # The background varies a lot across the field...
    assert np.percentile(background, 99) - np.percentile(background, 1) > 40
    # ...so that the dimmest nucleus is darker than the brightest background:
    # no single global threshold separates them.
    means = ndi.mean(img, sample.instances, range(1, sample.instances.max() + 1))
    assert min(means) < np.percentile(background, 99)
    assert max(means) > 2 * np.median(background)


def test_other_shapes_and_counts() -> None:
    s = make_nuclei(shape=(128, 192), n_objects=6, seed=3)
    assert s.image.shape == (128, 192)
    assert 1 <= s.instances.max() <= 6
    empty = make_nuclei(shape=(64, 64), n_objects=0, seed=1)
    assert empty.instances.max() == 0
    with pytest.raises(ValueError):
        make_nuclei(shape=(16, 16))


def test_nuclei_set_differs_and_is_reproducible() -> None:
    a = make_nuclei_set(3, shape=(96, 96), seed=0)
    b = make_nuclei_set(3, shape=(96, 96), seed=0)
    assert len(a) == 3
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.image, y.image)
    train = make_nuclei(shape=(96, 96), seed=0)
    images = [train.image] + [s.image for s in a]
    for i in range(len(images)):
        for j in range(i + 1, len(images)):
            assert not np.array_equal(images[i], images[j])


def test_touching_discs() -> None:
    binary, truth = touching_discs()
    assert binary.shape == truth.shape == (64, 96)
    assert binary.dtype == bool and truth.dtype == np.uint16
    _, n = ndi.label(binary)
    assert n == 1
    assert set(np.unique(truth)) == {0, 1, 2}
    np.testing.assert_array_equal(truth > 0, binary)
    # Equal halves: a correct watershed split is symmetric.
    assert (truth == 1).sum() == (truth == 2).sum()
    with pytest.raises(ValueError):
        touching_discs(shape=(20, 20), radius=15)
