"""Colour by default when the images have it: train.py -c auto (the default) trains in RGB on images
that carry colour (a generated set whose defects differ from the background only by hue) and in
grayscale on gray ones, says so and records it; -c still overrides; SSIM answers in one line."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

import train
from autoencoder import cli
from processing.data.colour import carries_colour, detect_color_mode
from processing.data.demo import make_demo_dataset
from processing.data.images import list_images
from processing.data.synthetic_datasets import make_color_dataset


@pytest.fixture(scope="module")
def colour_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("colour")
    make_color_dataset(root / "hue", image_size=64, n_train=20, n_test_good=4, n_test_defect=2, defect_size_range=(8, 30), seed=1)
    return root / "hue"


@pytest.fixture(scope="module")
def gray_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("gray")
    make_demo_dataset(root / "tiles", image_size=32, n_train=20, n_test_good=4, n_test_defect=2, seed=1)
    return root / "tiles"


def test_detection_of_colour(colour_set, gray_set, tmp_path):
    assert detect_color_mode(list_images(colour_set / "train" / "good")) == "rgb"
    assert detect_color_mode(list_images(gray_set / "train" / "good")) == "grayscale"
    # A gray photograph saved as a colour JPEG is gray; one coloured stain makes an image colour.
    gray = (np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "gray.jpg"), cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))
    assert not carries_colour(tmp_path / "gray.jpg")
    stained = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    stained[20:40, 20:40] = (40, 200, 90)
    cv2.imwrite(str(tmp_path / "stained.png"), stained)
    assert carries_colour(tmp_path / "stained.png")


def test_train_defaults_to_the_images_colour(colour_set, tmp_path, caplog):
    argv = ["-d", str(colour_set), "-a", "baselineCAE", "--image-size", "64", "-b", "8", "--epochs", "1", "--lr", "1e-3",
            "--output-dir", str(tmp_path / "models")]
    with caplog.at_level("INFO"):
        folder = train.main(argv)
    info = json.loads((folder / "info.json").read_text())
    assert info["model"]["color_mode"] == "rgb" and info["model"]["channels"] == 3
    assert info["model"]["color_mode_from"] == "the training images (-c auto)" and info["settings"]["color_detected"] is True
    assert "colour mode rgb: the training images carry colour" in caplog.text
    forced = train.main([*argv, "-c", "grayscale", "--output-dir", str(tmp_path / "gray_models")])
    info = json.loads((forced / "info.json").read_text())
    assert info["model"]["color_mode"] == "grayscale" and info["model"]["color_mode_from"] == "-c/--color"


def test_ssim_on_colour_images_is_one_line(colour_set, gray_set, tmp_path, capsys):
    argv = ["-d", str(colour_set), "-a", "mvtecCAE", "-l", "ssim", "--image-size", "64", "--output-dir", str(tmp_path / "m")]
    assert cli.run(train.main, argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: --loss ssim needs grayscale images, and the training images carry colour (-c auto chose rgb): "
                   "pass -c grayscale, or use --loss mssim or l2")
    assert not (tmp_path / "m").exists()
