
from napari_unet.eval.baselines import local_threshold_watershed, otsu_watershed, random_forest
from napari_unet.eval.metrics import foreground_iou


def test_baselines_segment_clean_blobs(blobs):
    image, truth, ann = blobs
    for semantic, instances in (
        otsu_watershed(image),
        local_threshold_watershed(image, block_size=31),
        random_forest(image, ann),
    ):
        assert semantic.shape == instances.shape == truth.shape
        assert foreground_iou(semantic, truth) > 0.6
        assert instances.max() >= 0.6 * truth.max()


def test_threshold_baselines_follow_the_strokes_polarity(blobs):
    image, truth, ann = blobs
    dark_objects = -image  # objects darker than background, as cell interiors vs. EM membranes are not
    semantic, _ = otsu_watershed(dark_objects, annotations=ann)
    assert foreground_iou(semantic, truth) > 0.6
    inverted, _ = otsu_watershed(dark_objects)
    assert foreground_iou(inverted, truth) < 0.3
