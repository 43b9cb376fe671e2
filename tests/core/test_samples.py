import numpy as np
import pytest

from napari_unet.core.samples import (
    IGNORE,
    PatchSampler,
    annotations_to_targets,
    check_annotations,
    class_weights,
    prepare,
    validation_patches,
)
from napari_unet.errors import UserInputError


def test_targets_follow_the_convention():
    ann = np.array([[0, 1, 2, 3]], np.uint8)
    assert annotations_to_targets(ann).tolist() == [[IGNORE, 0, 1, 2]]


@pytest.mark.parametrize(
    "ann, message",
    [
        (np.zeros((8, 8), np.uint8), "no annotations"),
        (np.ones((8, 8), np.uint8), "only background"),
        (np.full((8, 8), 2, np.uint8), "only class 2"),
    ],
)
def test_check_annotations_refuses_unusable_strokes(ann, message):
    with pytest.raises(UserInputError, match=message):
        check_annotations([ann], [(8, 8)])


def test_check_annotations_refuses_shape_mismatch_and_too_many_classes():
    ann = np.zeros((8, 8), np.uint8)
    ann[0, 0], ann[1, 1] = 1, 3
    with pytest.raises(UserInputError, match="do not match"):
        check_annotations([ann], [(8, 9)])
    assert check_annotations([ann], [(8, 8)]) == 3
    with pytest.raises(UserInputError, match="train a new model") as exc:
        check_annotations([ann], [(8, 8)], n_classes=2)
    assert "leave out --resume" in str(exc.value)  # said in the CLI's terms too, not only the widget's


@pytest.mark.parametrize("value, dtype", [(257, np.uint16), (300, np.uint16), (40000, np.uint16), (60000, np.uint16), (65537, np.uint32)])
def test_annotation_values_above_the_class_limit_are_refused_naming_the_value(value, dtype):
    ann = np.zeros((8, 8), dtype)
    ann[0, 0], ann[1, 1], ann[2, 2] = 1, 2, value
    with pytest.raises(UserInputError, match=f"value {value}.*image passed as annotations"):
        check_annotations([ann], [(8, 8)])
    # No int16 wraparound: 65537 must not become 0 (background) nor 40000 a negative class.
    with pytest.raises(UserInputError, match=f"value {value}"):
        annotations_to_targets(ann)


def test_the_largest_allowed_annotation_value_is_accepted():
    from napari_unet.core.limits import MAX_ANNOTATION_VALUE, MAX_OBJECT_CLASSES

    assert MAX_OBJECT_CLASSES == 255 and MAX_ANNOTATION_VALUE == 256
    ann = np.zeros((8, 8), np.uint16)
    ann[0, 0], ann[1, 1] = 1, MAX_ANNOTATION_VALUE
    assert check_annotations([ann], [(8, 8)]) == MAX_ANNOTATION_VALUE
    assert annotations_to_targets(ann).max() == MAX_ANNOTATION_VALUE - 1


def test_sampler_balances_classes_and_keeps_shapes(blobs):
    image, truth, ann = blobs
    ann = ann.copy()
    ann[ann == 2] = 0
    ann[truth == 1] = 2  # one small object vs. a large background area
    rng = np.random.default_rng(0)
    data = prepare([image[None]], [annotations_to_targets(ann)], 32, 0.0, rng)
    sampler = PatchSampler(data, 32, 64, augment=True, rng=rng)
    x, y = sampler.batch()
    assert x.shape == (64, 1, 32, 32) and x.dtype == np.float32
    assert y.shape == (64, 32, 32) and y.dtype == np.int64
    with_object = np.mean([(yi == 1).any() for yi in y])
    assert with_object > 0.35  # about half the patches are drawn around the rare class


def test_patches_of_images_smaller_than_the_patch_are_padded_and_ignored():
    rng = np.random.default_rng(0)
    ann = np.ones((10, 12), np.uint8)
    ann[3:6, 3:6] = 2
    data = prepare([np.zeros((1, 10, 12), np.float32)], [annotations_to_targets(ann)], 32, 0.0, rng)
    x, y = PatchSampler(data, 32, 4, augment=False, rng=rng).batch()
    assert x.shape == (4, 1, 32, 32)
    assert (y >= 0).sum(axis=(1, 2)).tolist() == [120] * 4


def test_validation_split_holds_out_whole_blocks_and_keeps_every_class(blobs):
    image, _, ann = blobs
    rng = np.random.default_rng(1)
    targets = annotations_to_targets(ann)
    (item,) = prepare([image[None]], [targets], 24, 0.25, rng)
    assert item.val_target is not None
    held = item.val_target >= 0
    assert held.any()
    assert not np.any((item.train_target >= 0) & held)  # no pixel in both
    assert set(np.unique(item.train_target[item.train_target >= 0])) == {0, 1}
    x, y = validation_patches([item], 24)
    assert x.shape[1:] == (1, 24, 24) and (y >= 0).any()


def test_class_weights_favour_the_rarely_painted_class(blobs):
    image, truth, ann = blobs
    ann = np.where(ann == 2, 0, ann).astype(np.uint8)
    ann[truth == 1] = 2
    data = prepare([image[None]], [annotations_to_targets(ann)], 32, 0.0, np.random.default_rng(0))
    w = class_weights(data, 2)
    assert w[1] > w[0]
