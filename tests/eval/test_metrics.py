import numpy as np

from napari_unet.eval.metrics import foreground_iou, instance_f1


def test_foreground_iou():
    a = np.zeros((4, 4), int)
    b = np.zeros((4, 4), int)
    a[:2] = 1
    b[1:3] = 5
    assert foreground_iou(a, b) == 4 / 12
    assert foreground_iou(np.zeros(3), np.zeros(3)) == 1.0


def test_instance_f1_counts_matches_above_half_iou():
    truth = np.zeros((10, 30), int)
    truth[:, 0:10], truth[:, 10:20], truth[:, 20:30] = 1, 2, 3
    pred = np.zeros_like(truth)
    pred[:, 0:10] = 7  # exact
    pred[:, 10:14] = 8  # IoU 0.4 with object 2: no match
    pred[:, 20:29] = 9  # IoU 0.9
    score = instance_f1(pred, truth)
    assert (score.matched, score.n_pred, score.n_true) == (2, 3, 3)
    assert score.f1 == 2 / 3
    assert instance_f1(truth, truth).f1 == 1.0
