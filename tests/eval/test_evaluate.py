import json

import numpy as np
import pytest
import tifffile

from napari_unet.cli import main
from napari_unet.errors import UserInputError
from napari_unet.eval.evaluate import evaluate
from napari_unet.eval.metrics import instance_f1
from napari_unet.eval.synthetic import make_nuclei


def squares(*boxes, shape=(40, 60)) -> np.ndarray:
    labels = np.zeros(shape, np.uint16)
    for i, (y0, y1, x0, x1) in enumerate(boxes, start=1):
        labels[y0:y1, x0:x1] = i
    return labels


def test_missed_false_split_and_merged_objects_are_counted() -> None:
    truth = squares((0, 10, 0, 10), (0, 10, 20, 30), (0, 10, 30, 40), (20, 30, 0, 20), (30, 40, 50, 60))
    predicted = squares((0, 10, 0, 10), (0, 10, 20, 40), (20, 30, 0, 10), (20, 30, 10, 20), (30, 40, 30, 40))
    s = evaluate(predicted, truth)
    # Matched: the first square only. Truth 2 and 3 merged into one prediction; truth 4 split in two;
    # truth 5 missed; the prediction at (30:40, 30:40) is false.
    assert (s.n_true, s.n_pred, s.matched) == (5, 5, 1)
    assert (s.missed, s.false, s.split, s.merged) == (4, 4, 1, 1)
    assert s.f1 == pytest.approx(instance_f1(predicted, truth).f1) == pytest.approx(0.2)
    assert s.class_iou.keys() == {"0", "1"} and 0 < s.foreground_iou < 1


def test_a_perfect_prediction_scores_one_and_classes_are_scored_per_value() -> None:
    truth = squares((0, 10, 0, 10), (20, 30, 20, 30))
    s = evaluate(truth.copy(), truth)
    assert s.f1 == s.f1_mean == s.mean_iou == 1.0 and s.missed == s.false == s.split == s.merged == 0
    classes = np.where(truth == 2, 3, truth)  # classes 0, 1, 3
    worse = classes.copy()
    worse[0:10, 0:5] = 3
    semantic = evaluate(worse, classes, semantic=True)
    assert semantic.class_iou["1"] == pytest.approx(0.5) and semantic.class_iou["3"] == pytest.approx(100 / 150)


def test_what_cannot_be_scored_is_refused() -> None:
    with pytest.raises(UserInputError, match="shape"):
        evaluate(np.zeros((4, 4), np.uint8), np.zeros((4, 5), np.uint8))
    with pytest.raises(UserInputError, match="not labels"):
        evaluate(np.zeros((4, 4), np.float32), np.zeros((4, 4), np.uint8))


def test_evaluate_command_agrees_with_the_benchmark_metric(tmp_path, capsys) -> None:
    sample = make_nuclei((128, 128), seed=4)
    rng = np.random.default_rng(0)
    predicted = sample.instances.copy()
    predicted[rng.random(predicted.shape) < 0.02] = 0  # some damage
    predicted[:, 64:] = np.where(predicted[:, 64:] > 0, predicted[:, 64:] + 1000, 0)  # objects cut at x = 64
    tifffile.imwrite(tmp_path / "p.tif", predicted)
    tifffile.imwrite(tmp_path / "t.tif", sample.instances)
    assert main(["evaluate", str(tmp_path / "p.tif"), str(tmp_path / "t.tif"), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    reference = instance_f1(predicted, sample.instances)
    assert abs(scores["f1"] - reference.f1) < 1e-6 and scores["matched"] == reference.matched
    assert {"f1", "precision", "recall", "f1_mean", "missed", "false", "split", "merged", "class_iou", "mean_iou"} <= scores.keys()
    assert main(["evaluate", str(tmp_path / "p.tif"), str(tmp_path / "t.tif")]) == 0
    assert "F1 " in capsys.readouterr().out
    assert main(["evaluate", str(tmp_path / "p.tif"), str(tmp_path / "missing.tif")]) == 1
    assert "missing.tif" in capsys.readouterr().err
