import dask.array as da
import numpy as np
import pytest
import zarr

from napari_unet.core.postprocess import InstanceParams
from napari_unet.core.segmenter import Segmenter
from napari_unet.core.stack import StackProgress, iter_predict_stack, training_data
from napari_unet.core.training import TrainConfig
from napari_unet.errors import UserInputError
from napari_unet.io.axes import Planes
from tests.helpers import Recorder, blobs_image

# A fresh model (the CPU default: forest + U-Net correction) seeded by the config:
# repeatable, and reliably past the thresholds below in 60 small steps.
TRAIN = TrainConfig(steps=60, val_fraction=0, patch_size=32, batch_size=4, seed=0)


def iou(a, b):
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    return (a & b).sum() / max((a | b).sum(), 1)


def predict(seg, planes, **kwargs):  # noqa: D103
    semantic = np.zeros(planes.label_shape, np.uint8)
    instances = np.zeros(planes.label_shape, np.uint32)
    reports = list(iter_predict_stack(seg, planes, semantic, instances, InstanceParams(), **kwargs))
    return semantic, instances, reports


@pytest.fixture(scope="module")
def stack():
    """Three different disc planes (ZYX), strokes on planes 0 and 2 only."""
    images, truths, strokes = zip(*(blobs_image(seed=s) for s in range(3)))
    annotations = np.zeros((3, 96, 96), np.uint8)
    annotations[0], annotations[2] = strokes[0], strokes[2]
    return np.stack(images), np.stack(truths), annotations


@pytest.fixture(scope="module")
def stack_model(stack):
    image, _, annotations = stack
    images, targets = training_data([(Planes(image, "ZYX"), annotations)])
    seg = Segmenter(device="cpu")
    seg.fit(images, targets, TRAIN)
    return seg


def test_training_data_takes_only_painted_planes(stack):
    image, _, annotations = stack
    images, targets = training_data([(Planes(image, "ZYX"), annotations)])
    assert len(images) == 2
    assert all(im.shape == (1, 96, 96) and im.dtype == np.float32 for im in images)
    np.testing.assert_array_equal(images[1][0], image[2])
    np.testing.assert_array_equal(targets[0], annotations[0])


def test_stack_annotated_on_two_planes_predicts_all_planes(stack, stack_model):
    """A time series (TYX): objects are per frame, ids unique over the series."""
    image, truth, _ = stack
    semantic, instances, reports = predict(stack_model, Planes(image, "TYX"))
    for z in range(3):  # plane 1 was never painted
        assert iou(semantic[z], truth[z]) > 0.6, z
        assert iou(instances[z], truth[z]) > 0.6, z
    # Ids are unique across planes and consecutive over the stack.
    ids = [set(np.unique(instances[z])) - {0} for z in range(3)]
    assert all(ids) and not (ids[0] & ids[1] or ids[1] & ids[2] or ids[0] & ids[2])
    assert set().union(*ids) == set(range(1, int(instances.max()) + 1))
    assert max(ids[0]) < min(ids[1]) and max(ids[1]) < min(ids[2])
    fractions = [r.fraction for r in reports]
    assert fractions == sorted(fractions) and reports[-1] == StackProgress(3, 3, None) and fractions[-1] == 1.0
    assert {r.plane for r in reports} == {0, 1, 2, 3}


def test_z_stack_instances_are_3d_objects_with_a_2d_model(stack_model):
    """ZYX predicted plane by plane: an object spanning planes is one id, touching ones stay apart."""
    plane = blobs_image(seed=0)[0]
    image = np.stack([plane] * 4)
    semantic, instances, _ = predict(stack_model, Planes(image, "ZYX"))  # the axes decide: 3D objects
    per_plane = [set(np.unique(instances[z])) - {0} for z in range(4)]
    assert per_plane[0] and all(ids == per_plane[0] for ids in per_plane)
    np.testing.assert_array_equal(instances[0], instances[3])
    seg, inst = stack_model.segment(image, axes="ZYX")
    np.testing.assert_array_equal(seg, semantic)
    assert len(np.unique(inst)) == len(np.unique(instances))
    _, frames = stack_model.segment(image, axes="TYX")
    assert len(np.unique(frames)) - 1 == 4 * (len(np.unique(inst)) - 1)
    _, flat, _ = predict(stack_model, Planes(image, "ZYX"), objects_3d=False)  # asked for: ids per plane
    np.testing.assert_array_equal(flat, frames)


def test_repredicting_one_plane_keeps_ids_unique(stack, stack_model):
    image, _, _ = stack
    planes = Planes(image, "TYX")
    semantic, instances, _ = predict(stack_model, planes)
    before_sem, before_inst = semantic.copy(), instances.copy()
    reports = list(iter_predict_stack(stack_model, planes, semantic, instances, InstanceParams(), indices=[(1,)]))
    assert reports[-1] == StackProgress(1, 1, None)
    np.testing.assert_array_equal(semantic, before_sem)
    np.testing.assert_array_equal(instances[[0, 2]], before_inst[[0, 2]])
    new = np.unique(instances[1])[1:]
    old_max = max(before_inst[0].max(), before_inst[2].max())
    assert new.min() == old_max + 1 and len(new) == len(np.unique(before_inst[1])[1:])


def test_zarr_outputs_and_probabilities_match_numpy(stack, stack_model):
    image, _, _ = stack
    planes = Planes(image, "ZYX")
    semantic, instances, _ = predict(stack_model, planes)
    sem_z = zarr.zeros(planes.label_shape, dtype=np.uint8, chunks=(1, 48, 48))
    inst_z = zarr.zeros(planes.label_shape, dtype=np.uint32, chunks=(1, 48, 48))
    probs_z = zarr.zeros((2,) + planes.label_shape, dtype=np.float32, chunks=(2, 1, 48, 48))
    list(iter_predict_stack(stack_model, planes, sem_z, inst_z, InstanceParams(), probabilities_out=probs_z))
    np.testing.assert_array_equal(sem_z[:], semantic)
    np.testing.assert_array_equal(inst_z[:], instances)
    probs = np.asarray(probs_z)
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-4)
    np.testing.assert_array_equal(probs[1] >= 0.5, semantic > 0)


def test_dask_stack_predicts_without_materialising(stack, stack_model):
    image, _, _ = stack
    rec = Recorder(image)
    lazy = da.from_array(rec, chunks=(1, 32, 96))
    semantic, instances, _ = predict(stack_model, Planes(lazy, "ZYX"))
    expected_sem, expected_inst, _ = predict(stack_model, Planes(image, "ZYX"))
    np.testing.assert_array_equal(semantic, expected_sem)
    np.testing.assert_array_equal(instances, expected_inst)
    # Every read stays within one chunk of one plane: the stack is never read whole.
    assert rec.reads and all(rec.data[k].size <= 32 * 96 for k in rec.reads)


def test_two_images_each_with_its_own_annotations_train_one_model():
    (a, truth_a, strokes_a), (b, truth_b, strokes_b) = blobs_image(seed=3), blobs_image(seed=4)
    # A two-plane stack painted on its second plane, and a single image.
    stack_a = np.stack([a[::-1], a])
    ann_a = np.zeros(stack_a.shape, np.uint8)
    ann_a[1] = strokes_a
    # Its annotations on plane 0 would not fit the single image: shapes are checked per image.
    images, targets = training_data([(Planes(stack_a, "ZYX"), ann_a), (Planes(b * 100 + 500, "YX"), strokes_b)])
    assert len(images) == 2 and images[1].shape == (1, 96, 96)
    seg = Segmenter(device="cpu")
    seg.fit(images, targets, TRAIN)
    sem_a, _, _ = predict(seg, Planes(stack_a, "ZYX"))
    sem_b, _, _ = predict(seg, Planes(b * 100 + 500, "YX"))
    assert iou(sem_a[0], truth_a[::-1]) > 0.6 and iou(sem_a[1], truth_a) > 0.6
    assert iou(sem_b, truth_b) > 0.6


def _colour(image, gains):
    scaled = (image - image.min()) / np.ptp(image)
    return np.stack([np.clip(scaled * g * 255, 0, 255) for g in gains], -1).astype(np.uint8)


def test_rgb_input_trains_and_predicts_and_refuses_grey():
    image, truth, ann = blobs_image(seed=5)
    rgb = _colour(image, (1.0, 0.6, 0.3))  # YXC, as napari's RGB layers
    planes = Planes(rgb, "YXC")
    assert planes.channels == 3 and planes.label_shape == (96, 96)
    images, targets = training_data([(planes, ann)])
    seg = Segmenter(device="cpu")
    seg.fit(images, targets, TRAIN)
    semantic, instances, _ = predict(seg, planes)
    assert iou(semantic, truth) > 0.6 and instances.max() >= truth.max() // 2
    with pytest.raises(UserInputError, match=r"the model expects 3 channel\(s\) but the image has 1 \(axes 'YX'\)"):
        predict(seg, Planes(image, "YX"))


def test_two_channel_input_trains_and_predicts():
    image, truth, ann = blobs_image(seed=6)
    # A second stain marking the background, dimmer and with its own noise.
    background = (truth == 0) * 0.5 + np.random.default_rng(0).normal(0, 0.2, image.shape)
    cyx = np.stack([image, background.astype(np.float32)])
    planes = Planes(cyx, "CYX")
    images, targets = training_data([(planes, ann)])
    assert images[0].shape == (2, 96, 96)
    seg = Segmenter(device="cpu")
    seg.fit(images, targets, TRAIN)
    semantic, _, _ = predict(seg, planes)
    assert iou(semantic, truth) > 0.6
    with pytest.raises(UserInputError, match=r"expects 2 channel\(s\) but the image has 3 \(axes 'YXC'\)"):
        predict(seg, Planes(_colour(image, (1, 1, 1)), "YXC"))


def test_mismatches_give_clear_messages(stack, stack_model):
    image, _, annotations = stack
    planes = Planes(image, "ZYX")
    with pytest.raises(UserInputError, match=r"annotations of shape \(96, 96\) do not match the image's shape without channels \(3, 96, 96\) \(axes 'ZYX'\)"):
        training_data([(planes, annotations[0])])
    with pytest.raises(UserInputError, match=r"image 2's shape without channels \(96, 96\)"):
        training_data([(planes, annotations), (Planes(image[0], "YX"), annotations)])
    with pytest.raises(UserInputError, match="no annotations"):
        training_data([(planes, np.zeros_like(annotations))])
    rgb = np.zeros((96, 96, 3), np.uint8)
    with pytest.raises(UserInputError, match=r"image 1 has 1 \(axes 'ZYX'\), image 2 has 3 \(axes 'YXC'\)"):
        training_data([(planes, annotations), (Planes(rgb, "YXC"), annotations[0])])
    with pytest.raises(UserInputError, match="does not match the image's"):
        next(iter_predict_stack(stack_model, planes, np.zeros((3, 96, 95), np.uint8), np.zeros((3, 96, 96), np.uint32), InstanceParams()))
    with pytest.raises(UserInputError, match="model is 2D but the image is being predicted in 3D"):
        out = np.zeros((3, 96, 96), np.uint8)
        next(iter_predict_stack(stack_model, Planes(image, "ZYX", spatial_ndim=3), out, out, InstanceParams()))


def test_volumes_for_a_3d_model_train_and_predict_whole(stack):
    image, _, annotations = stack
    planes = Planes(image[:, :48, :48], "ZYX", spatial_ndim=3)
    images, targets = training_data([(planes, annotations[:, :48, :48])])
    assert len(images) == 1 and images[0].shape == (1, 3, 48, 48) and targets[0].shape == (3, 48, 48)
    seg = Segmenter(device="cpu")
    seg.fit(images, targets, TrainConfig(steps=3, val_fraction=0, patch_size=16, batch_size=2, seed=0), ndim=3)
    semantic = np.full(planes.label_shape, 9, np.uint8)
    instances = np.full(planes.label_shape, 9, np.uint32)
    reports = list(iter_predict_stack(seg, planes, semantic, instances, InstanceParams(min_size=0)))
    assert reports[-1] == StackProgress(1, 1, None)
    # Every voxel was written; instance ids are 1..N without gaps.
    assert set(np.unique(semantic)) <= {0, 1}
    ids = np.unique(instances)
    assert ids.tolist() == list(range(int(ids[0]), int(ids[-1]) + 1)) and ids[0] in (0, 1)
    assert ((instances > 0) == (semantic > 0)).all()
    with pytest.raises(UserInputError, match="model is 3D but the image is being predicted in 2D"):
        next(iter_predict_stack(seg, Planes(image, "ZYX"), semantic, instances, InstanceParams()))
