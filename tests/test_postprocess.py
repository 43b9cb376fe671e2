import numpy as np

from napari_unet.core.postprocess import InstanceParams, postprocess, semantic_from_probabilities, split_instances
from napari_unet.core.synthetic import touching_discs


def test_two_touching_discs_become_two_instances():
    binary, truth = touching_discs()
    inst = split_instances(binary, split_strength=0.5)
    assert inst.max() == 2
    # each instance mostly covers one true disc
    for label in (1, 2):
        overlap = np.bincount(truth[inst == label])
        assert overlap[1:].max() / (inst == label).sum() > 0.9


def test_split_strength_zero_keeps_components_whole():
    binary, _ = touching_discs()
    assert split_instances(binary, split_strength=0.0).max() == 1


def test_min_size_drops_small_objects_and_renumbers():
    mask = np.zeros((40, 40), bool)
    mask[2:4, 2:4] = True  # 4 px
    mask[10:30, 10:30] = True
    inst = split_instances(mask, split_strength=0.5, min_size=10)
    assert inst.max() == 1 and inst[20, 20] == 1 and inst[3, 3] == 0


def test_postprocess_from_probabilities_threshold_and_classes():
    probs = np.zeros((3, 20, 20), np.float32)
    probs[0] = 1.0
    probs[:, 2:8, 2:8] = np.array([0.2, 0.7, 0.1])[:, None, None]  # class 1
    probs[:, 12:18, 12:18] = np.array([0.45, 0.15, 0.4])[:, None, None]  # class 2 at threshold 0.5
    sem, inst = postprocess(probs, InstanceParams(threshold=0.5, min_size=1, split_strength=0.5))
    assert sem[4, 4] == 1 and sem[15, 15] == 2 and sem[0, 0] == 0
    assert inst.max() == 2 and inst[4, 4] != inst[15, 15]
    strict = semantic_from_probabilities(probs, threshold=0.6)
    assert strict[15, 15] == 0 and strict[4, 4] == 1
