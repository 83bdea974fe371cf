"""Tests for the digits-noise dataset (processing/digits.py, scripts/make_digits_dataset.py), its
figures (processing/plots.py) and the small autoencoders on it."""

import importlib.util
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.stats import norm
from skimage.transform import resize
from sklearn.datasets import load_digits

from processing.data.digits import (
    DEFAULT_NOISE_SIGMAS,
    SETTINGS_FILE,
    add_gaussian_noise,
    generate_digits_arrays,
    load_digit_images,
    make_digits_dataset,
    noise_class_name,
    split_digit_indices,
    upsample_digits,
)
from processing.data.images import DatasetError, scan_dataset

ROOT = Path(__file__).resolve().parents[1]
SKLEARN_DIGITS = load_digits()
N_DIGITS = len(SKLEARN_DIGITS.target)


def reference_digit(index: int) -> np.ndarray:
    """Digit `index` enlarged to 28x28 by scikit-image, float64 in [0, 1] (the independent reference)."""
    image = SKLEARN_DIGITS.images[index] / 16.0
    return resize(image, (28, 28), order=1, mode="edge", anti_aliasing=False)


def read_folder(folder: Path) -> dict[int, np.ndarray]:
    """{index (the file stem): uint8 image as stored} for every PNG of `folder`."""
    return {int(path.stem): cv2.imread(str(path), cv2.IMREAD_UNCHANGED) for path in sorted(folder.glob("*.png"))}


@pytest.fixture(scope="module")
def default_dataset(tmp_path_factory) -> Path:
    return make_digits_dataset(tmp_path_factory.mktemp("digits") / "all")


@pytest.fixture(scope="module")
def one_class_dataset(tmp_path_factory) -> Path:
    return make_digits_dataset(tmp_path_factory.mktemp("digits") / "zero_one", normal_digits=[1, 0], seed=3)


# ---------------------------------------------------------------------------------------------
# Array functions
# ---------------------------------------------------------------------------------------------


def test_upsample_digits_matches_skimage_bilinear_resize():
    images = SKLEARN_DIGITS.images[:50]
    upsampled = upsample_digits(images)
    assert upsampled.shape == (50, 28, 28) and upsampled.dtype == np.float32
    expected = resize(images / 16.0, (50, 28, 28), order=1, mode="edge", anti_aliasing=False)
    np.testing.assert_allclose(upsampled, expected, atol=1e-6)
    assert upsampled.min() >= 0.0 and upsampled.max() <= 1.0


def test_load_digit_images_covers_every_digit_at_full_8_bit_range():
    images, labels = load_digit_images()
    assert images.shape == (N_DIGITS, 28, 28) and images.dtype == np.uint8
    np.testing.assert_array_equal(labels, SKLEARN_DIGITS.target)
    assert images.min() == 0 and images.max() == 255
    for index in (0, 42, N_DIGITS - 1):
        np.testing.assert_allclose(images[index], reference_digit(index) * 255, atol=0.5 + 1e-3)


@pytest.mark.parametrize("sigma", [0.05, 0.3])
def test_add_gaussian_noise_has_the_requested_std_before_clipping(sigma):
    images = np.full((40, 50, 50), 0.5)
    noisy = add_gaussian_noise(images, sigma, np.random.default_rng(1), clip=False)
    noise = noisy - images
    standard_error = sigma / math.sqrt(noise.size)
    assert abs(noise.mean()) < 5 * standard_error
    assert noise.std() == pytest.approx(sigma, rel=0.02)
    clipped = add_gaussian_noise(images, sigma, np.random.default_rng(1))
    np.testing.assert_array_equal(clipped, np.clip(noisy, 0.0, 1.0))


@pytest.mark.parametrize("sigma", [-0.1, float("nan"), float("inf"), "0.1"])
def test_add_gaussian_noise_rejects_bad_sigma(sigma):
    with pytest.raises(DatasetError, match="noise sigma"):
        add_gaussian_noise(np.zeros((2, 2)), sigma, np.random.default_rng(0))


def test_split_counts_and_disjointness():
    labels = SKLEARN_DIGITS.target
    splits = split_digit_indices(labels, train_fraction=0.5, seed=0)
    folders = splits.folders()
    assert list(folders) == ["train/good", "test/good"] + [f"test/noise_{s:g}" for s in DEFAULT_NOISE_SIGMAS]
    assert len(splits.train_good) == round(0.5 * N_DIGITS)
    test_sizes = [len(indices) for name, indices in folders.items() if name != "train/good"]
    assert sum(test_sizes) == N_DIGITS - round(0.5 * N_DIGITS)
    assert max(test_sizes) - min(test_sizes) <= 1
    everything = np.concatenate(list(folders.values()))
    np.testing.assert_array_equal(np.sort(everything), np.arange(N_DIGITS))  # each index exactly once


def test_generated_arrays_are_deterministic_and_depend_on_the_seed():
    first = generate_digits_arrays(seed=7, noise_sigmas=(0.2,))
    second = generate_digits_arrays(seed=7, noise_sigmas=(0.2,))
    other = generate_digits_arrays(seed=8, noise_sigmas=(0.2,))
    assert list(first.images) == list(second.images)
    for folder in first.images:
        np.testing.assert_array_equal(first.indices[folder], second.indices[folder])
        np.testing.assert_array_equal(first.images[folder], second.images[folder])
    assert not np.array_equal(first.indices["train/good"], other.indices["train/good"])


def test_noise_folders_hold_noisy_versions_of_their_clean_digits():
    arrays = generate_digits_arrays(seed=0)
    for sigma in (0.05, 0.1):
        folder = f"test/{noise_class_name(sigma)}"
        clean = arrays.clean[folder].astype(np.float64) / 255
        noisy = arrays.images[folder].astype(np.float64) / 255
        # Mid-gray pixels are almost never clipped at these sigmas: their noise has std sigma.
        mid_gray = (clean > 0.35) & (clean < 0.65)
        assert mid_gray.sum() > 2000
        assert (noisy - clean)[mid_gray].mean() == pytest.approx(0.0, abs=0.01)
        assert (noisy - clean)[mid_gray].std() == pytest.approx(sigma, rel=0.05)
    np.testing.assert_array_equal(arrays.images["test/good"], arrays.clean["test/good"])


# ---------------------------------------------------------------------------------------------
# The written dataset
# ---------------------------------------------------------------------------------------------


def test_written_dataset_layout_counts_and_settings(default_dataset):
    layout = scan_dataset(default_dataset, require_test=True)
    expected_classes = {"good"} | {f"noise_{s:g}" for s in DEFAULT_NOISE_SIGMAS}
    assert set(layout.test) == expected_classes
    settings = json.loads((default_dataset / SETTINGS_FILE).read_text())
    assert settings["seed"] == 0 and settings["normal_digits"] == list(range(10))
    assert settings["counts"]["train/good"] == len(layout.train_good) == round(0.5 * N_DIGITS)
    for name, files in layout.test.items():
        assert settings["counts"][f"test/{name}"] == len(files)
    assert sum(settings["counts"].values()) == N_DIGITS
    assert not [p for p in default_dataset.parent.iterdir() if p.name.endswith(".tmp")]


def test_written_images_are_8_bit_28x28_and_named_by_their_digit_index(default_dataset):
    seen: dict[int, str] = {}
    for folder in sorted((default_dataset / "test").iterdir()) + [default_dataset / "train" / "good"]:
        images = read_folder(folder)
        for index, image in images.items():
            assert image.dtype == np.uint8 and image.shape == (28, 28), folder
            assert index not in seen, f"digit {index} is in {seen.get(index)} and {folder}"
            seen[index] = folder.name
            if not folder.name.startswith("noise_"):
                np.testing.assert_allclose(image, reference_digit(index) * 255, atol=0.5 + 1e-3)
    assert sorted(seen) == list(range(N_DIGITS))
    train = np.stack(list(read_folder(default_dataset / "train" / "good").values()))
    assert train.min() == 0 and train.max() == 255


@pytest.mark.parametrize("sigma", [0.1, 0.2, 0.3])
def test_written_noise_has_the_requested_strength(default_dataset, sigma):
    noisy_images = read_folder(default_dataset / "test" / noise_class_name(sigma))
    clean = np.stack([np.round(reference_digit(i) * 255) for i in noisy_images]) / 255
    noisy = np.stack(list(noisy_images.values())).astype(np.float64) / 255
    background = clean == 0
    difference = (noisy - clean)[background]
    # On the background, noise below 0 is clipped to 0 (and rounding sends noise below half a
    # gray level there too); the rest is half-normal, so the RMS difference is sigma / sqrt(2).
    expected_zero_fraction = norm.cdf(0.5 / 255 / sigma)
    assert np.mean(difference == 0) == pytest.approx(expected_zero_fraction, abs=0.01)
    assert np.sqrt(np.mean(difference**2)) == pytest.approx(sigma / math.sqrt(2), rel=0.03)
    assert noisy.min() >= 0 and noisy.max() <= 1


def test_one_class_mode_writes_other_digits_as_anomalies(one_class_dataset):
    layout = scan_dataset(one_class_dataset, require_test=True)
    assert set(layout.test) == {"good"} | {f"noise_{s:g}" for s in DEFAULT_NOISE_SIGMAS} | {
        f"digit_{d}" for d in range(2, 10)
    }
    labels = SKLEARN_DIGITS.target
    for digit in range(2, 10):
        indices = sorted(int(p.stem) for p in layout.test[f"digit_{digit}"])
        assert indices == np.flatnonzero(labels == digit).tolist()
    normal_files = layout.train_good + [p for name, files in layout.test.items() if not name.startswith("digit_") for p in files]
    normal_indices = [int(p.stem) for p in normal_files]
    assert sorted(normal_indices) == np.flatnonzero(np.isin(labels, [0, 1])).tolist()
    settings = json.loads((one_class_dataset / SETTINGS_FILE).read_text())
    assert settings["normal_digits"] == [0, 1] and settings["anomalous_digits"] == list(range(2, 10))


def test_same_seed_writes_the_same_files(tmp_path):
    first = make_digits_dataset(tmp_path / "a", normal_digits=[5], noise_sigmas=(0.3,), seed=11)
    second = make_digits_dataset(tmp_path / "b", normal_digits=[5], noise_sigmas=(0.3,), seed=11)
    first_files = sorted(p.relative_to(first) for p in first.rglob("*.png"))
    assert first_files == sorted(p.relative_to(second) for p in second.rglob("*.png"))
    for relative in first_files:
        np.testing.assert_array_equal(cv2.imread(str(first / relative), -1), cv2.imread(str(second / relative), -1))


def test_refuses_to_overwrite_unless_asked(tmp_path):
    out = make_digits_dataset(tmp_path / "digits", noise_sigmas=(0.5,), seed=0)
    (out / "stale.txt").write_text("x")
    with pytest.raises(DatasetError, match="not empty.*--overwrite"):
        make_digits_dataset(out, noise_sigmas=(0.5,), seed=1)
    assert (out / "stale.txt").exists()
    make_digits_dataset(out, noise_sigmas=(0.5,), seed=1, overwrite=True)
    assert not (out / "stale.txt").exists()
    assert json.loads((out / SETTINGS_FILE).read_text())["seed"] == 1

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not a digits dataset"):
        make_digits_dataset(foreign, overwrite=True)
    assert (foreign / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits", "foreign"]  # no staging left


@pytest.mark.parametrize(
    "kwargs, flag",
    [
        ({"normal_digits": [10]}, "--digits"),
        ({"normal_digits": []}, "--digits"),
        ({"normal_digits": [3, 3]}, "--digits"),
        ({"train_fraction": 0.0}, "--train-fraction"),
        ({"train_fraction": 1.0}, "--train-fraction"),
        ({"train_fraction": 0.999}, "--train-fraction"),  # leaves too few test digits
        ({"noise_sigmas": [-0.1]}, "--noise-sigmas"),
        ({"noise_sigmas": [0.1, 0.10000001]}, "--noise-sigmas"),  # same folder name
    ],
)
def test_bad_arguments_raise_one_line_errors_naming_the_flag(tmp_path, kwargs, flag):
    with pytest.raises(DatasetError, match=flag) as error:
        make_digits_dataset(tmp_path / "out", **kwargs)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()


def _load_script():
    spec = importlib.util.spec_from_file_location("make_digits_dataset", ROOT / "scripts" / "make_digits_dataset.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_writes_a_one_class_dataset_and_refuses_to_overwrite(tmp_path):
    from autoencoder import cli

    script = _load_script()
    out = tmp_path / "cli"
    argv = ["-o", str(out), "--digits", "3", "--noise-sigmas", "0.2", "--seed", "4", "--train-fraction", "0.6"]
    assert cli.run(script.main, argv) == 0
    settings = json.loads((out / SETTINGS_FILE).read_text())
    assert settings["normal_digits"] == [3] and settings["noise_sigmas"] == [0.2]
    assert settings["counts"]["train/good"] == round(0.6 * np.sum(SKLEARN_DIGITS.target == 3))
    assert sorted(p.name for p in (out / "test").iterdir()) == sorted(
        ["good", "noise_0.2"] + [f"digit_{d}" for d in range(10) if d != 3]
    )
    assert cli.run(script.main, argv) == 2
    assert cli.run(script.main, argv + ["--overwrite"]) == 0


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------


def test_plot_reconstruction_pairs_and_loss_histograms_write_pngs(tmp_path):
    from processing.evaluation.plots import plot_loss_histograms, plot_reconstruction_pairs

    rng = np.random.default_rng(0)
    images = rng.random((3, 28, 28, 1)).astype(np.float32)
    path = plot_reconstruction_pairs(
        {"good": (images, images * 0.5), "noise_0.3": (images[:1], images[:1])}, tmp_path / "pairs.png", max_pairs=2
    )
    assert cv2.imread(str(path)) is not None
    losses = {
        "modelA": {"good": rng.random(20) + 0.01, "noise": rng.random(10) + 1},
        "modelB": {"good": rng.random(5), "noise": np.zeros(5)},
    }
    path = plot_loss_histograms(losses, "good", tmp_path / "hist.png")
    assert cv2.imread(str(path)) is not None

    with pytest.raises(ValueError, match="differs from inputs shape"):
        plot_reconstruction_pairs({"good": (images, images[:2])}, tmp_path / "bad.png")
    with pytest.raises(ValueError, match="reference class 'clean'"):
        plot_loss_histograms(losses, "clean", tmp_path / "bad.png")
    with pytest.raises(ValueError, match="row 'modelB' has classes"):
        plot_loss_histograms({"modelA": losses["modelA"], "modelB": {"good": np.ones(3)}}, "good", tmp_path / "bad.png")


# ---------------------------------------------------------------------------------------------
# The small autoencoders learn clean digits
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def study_arrays():
    """(train (400, 28, 28, 1), clean test, sigma-0.5 test), float32 in [0, 1]."""
    arrays = generate_digits_arrays(noise_sigmas=(0.5,), seed=0)

    def as_float(folder):
        return (arrays.images[folder].astype(np.float32) / 255)[..., None]

    return as_float("train/good")[:400], as_float("test/good"), as_float("test/noise_0.5")


@pytest.mark.parametrize("architecture", ["fcnSimpleAE", "fcnImprovedAE", "cnnAE"])
def test_small_autoencoder_reconstructs_clean_digits_better_than_noisy_ones(study_arrays, architecture):
    import keras

    from autoencoder.losses import l2_loss
    from autoencoder.models import build_model

    train, clean, noisy = study_arrays
    keras.utils.set_random_seed(0)
    model = build_model(architecture, "grayscale", 28)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=l2_loss)

    def mean_mse(images):  # per-image MSE in numpy, independent of the loss under test
        return float(np.mean((model.predict(images, batch_size=len(images), verbose=0) - images) ** 2))

    untrained_clean = mean_mse(clean)
    model.fit(train, train, epochs=6, batch_size=32, verbose=0)
    trained_clean, trained_noisy = mean_mse(clean), mean_mse(noisy)
    assert trained_clean < 0.8 * untrained_clean
    assert trained_clean < 0.7 * trained_noisy
