"""The packed random forest and autocontext: the model starts as the forest and stays a file of tensors."""

import numpy as np
import pytest
import torch
from sklearn.ensemble import RandomForestClassifier

from napari_unet.core.autocontext import _folds, add_forest_inputs, image_features
from napari_unet.core.forest import MAX_SAMPLES, MIN_SAMPLES, Forest, fit_forest, pack_forest, samples_per_tree
from napari_unet.core.model import UNet, UNetConfig, default_config


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 6)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] ** 2 > 1).astype(int) + (x[:, 2] > 1)
    clf = RandomForestClassifier(20, max_depth=6, random_state=0).fit(x, y)
    return clf, pack_forest(clf, 4), rng.normal(size=(500, 6)).astype(np.float32)


def test_packed_forest_matches_scikit_learn_on_both_paths(fitted):
    clf, packed, x = fitted
    forest = Forest(4)
    forest.set(packed)
    expected = np.zeros((len(x), 4), np.float32)
    expected[:, :3] = clf.predict_proba(x)  # class 3 has no pixels: probability 0
    features = torch.as_tensor(x.T[None])  # (1, F, P)
    cpu = forest(features)[0].T.numpy()
    # The tensor walk (GPUs, tracing), run on the CPU: same trees, same answer.
    tensor = forest.tensor_walk(features)[0].T.numpy()
    np.testing.assert_allclose(cpu, expected, atol=1e-5)
    np.testing.assert_allclose(tensor, expected, atol=1e-5)


def test_cpu_walk_on_several_threads_gives_the_same_bits(fitted, monkeypatch):
    import napari_unet.core.forest as forest_module

    clf, packed, _ = fitted
    monkeypatch.setattr(forest_module, "_MIN_BLOCK", 1000)  # several blocks from 20000 pixels
    x = torch.as_tensor(np.random.default_rng(1).normal(size=(20000, 6)).astype(np.float32))
    forest = Forest(4)
    forest.set(packed)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = forest._predict_cpu(x)
        torch.set_num_threads(2)
        two = forest._predict_cpu(x)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)
    np.testing.assert_allclose(one[:, :3].numpy(), clf.predict_proba(x.numpy()), atol=1e-5)


def test_forest_round_trips_through_a_weights_only_state_dict(tmp_path, fitted):
    _, packed, x = fitted
    model = UNet(UNetConfig(1, 4, depth=2, width=4, filter_scales=1, forest=1, channel_norm=0))
    model.forest.set(packed)
    torch.save(model.state_dict(), tmp_path / "m.pt")
    fresh = UNet(model.config)
    assert not fresh.forest.fitted
    fresh.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True))
    assert fresh.forest.fitted
    features = torch.as_tensor(x.T[None])
    assert torch.equal(fresh.forest(features), model.forest(features))


def test_a_fresh_model_answers_exactly_what_its_forest_says():
    """Zero-initialised correction: before any step the U-Net's output is the forest's."""
    torch.manual_seed(0)
    config = UNetConfig(1, 2, depth=2, width=8, filter_scales=2, forest=1, channel_norm=0)
    model = UNet(config).eval()
    image = torch.rand(1, 1, 40, 40)
    with torch.no_grad():
        feats = model.features(image)[0].numpy()
    labels = (image[0, 0].numpy() > 0.5).astype(int)
    model.forest.set(fit_forest(feats.reshape(feats.shape[0], -1).T, labels.ravel(), 2, seed=0))
    with torch.no_grad():
        probs = torch.softmax(model(image), 1)
        forest = model.forest(model.features(image)).clamp_min(1e-3)
    np.testing.assert_allclose(probs.numpy(), (forest / forest.sum(1, keepdim=True)).numpy(), atol=1e-5)


def test_painted_pixels_get_out_of_fold_forest_inputs():
    """On painted pixels the U-Net's forest input comes from forests that never saw them."""
    rng = np.random.default_rng(1)
    image = rng.normal(size=(1, 96, 96)).astype(np.float32)  # pure noise: nothing to learn
    target = np.full((96, 96), -1, np.int16)
    target[:, :64] = rng.integers(0, 2, size=(96, 64))  # random labels
    model = UNet(default_config(torch.device("cpu"), 1, 2))
    feats = [image_features(model, image, torch.device("cpu"))]
    out = add_forest_inputs(model, [image], feats, [target], torch.device("cpu"), seed=0)[0]
    assert out.shape == (3, 96, 96) and np.allclose(out[0], image[0])
    painted = target >= 0
    pred = out[2][painted] > 0.5
    in_sample = torch.softmax(model.forest(model.features(torch.as_tensor(image)[None])), 1)[0, 1].detach().numpy()[painted] > 0.5
    truth = target[painted] == 1
    # Out of fold, random labels are guessed at chance; in sample the forest remembers them.
    assert abs((pred == truth).mean() - 0.5) < 0.05
    assert (in_sample == truth).mean() > 0.6


def test_folds_keep_blocks_together_and_use_every_fold():
    target = np.zeros((128, 128), np.int16)
    folds = _folds(target, np.random.default_rng(0))
    assert set(np.unique(folds)) == {0, 1, 2}
    assert len(np.unique(folds[:32, :32])) == 1


def test_trees_draw_a_fifth_of_the_painted_pixels_within_bounds():
    # Few strokes: all of them (a bootstrap of n), then the floor, a fifth, the cap.
    assert samples_per_tree(150) == 150
    assert samples_per_tree(500) == MIN_SAMPLES
    assert samples_per_tree(1_200) == 240  # sparse strokes: trees that differ, not all alike
    assert samples_per_tree(9_000) == 1_800
    assert samples_per_tree(30_000) == 6_000
    assert samples_per_tree(49_152) == 9_830
    assert samples_per_tree(131_072) == MAX_SAMPLES
    assert samples_per_tree(4_000_000) == MAX_SAMPLES


def test_a_fit_draws_that_many_pixels_per_tree(monkeypatch):
    from sklearn import ensemble

    drawn = []
    original = ensemble.RandomForestClassifier.fit

    def spy(self, x, y, *args, **kwargs):
        drawn.append(self.max_samples)
        return original(self, x, y, *args, **kwargs)

    monkeypatch.setattr(ensemble.RandomForestClassifier, "fit", spy)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30_000, 3)).astype(np.float32)
    fit_forest(x, (x[:, 0] > 0).astype(int), 2, seed=0, n_trees=2)
    fit_forest(x[:800], (x[:800, 0] > 0).astype(int), 2, seed=0, n_trees=2)
    fit_forest(x[:150], (x[:150, 0] > 0).astype(int), 2, seed=0, n_trees=2)
    # None: scikit-learn's bootstrap of all n pixels (fewer than the floor).
    assert drawn == [6_000, 200, None]
