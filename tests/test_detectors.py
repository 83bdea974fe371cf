"""The detector interface: a detector registered from outside runs through finetune.py and test.py
unchanged, and the registry answers bad names with one line."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import finetune
import test as test_script
import train
from autoencoder import bundle, cli
from processing.data.demo import make_demo_dataset
from processing.data.images import load_images
from processing.detectors import base
from processing.detectors import fields as f
from processing.detectors.base import (
    Decisions,
    Detector,
    FinetuningResult,
    Scores,
    available_detectors,
    get_detector,
    register_detector,
)
from processing.maps.inference import reconstruct

SIZE = 32


@dataclass
class MaxMapResult(FinetuningResult):
    detector: str = f.checked(f.text)
    method: str = f.checked(f.text)
    finetuning_files: list = f.checked(f.list_of(f.text))
    threshold: float = f.checked(f.number(), default=0.0)


class MaxMapDetector(Detector):
    """Image score = maximum of the L2 residual map; threshold = the highest validation score."""

    name = "test-maxmap"
    result_type = MaxMapResult

    @staticmethod
    def result_name(config_or_result) -> str:
        return "maxmap_l2"

    @classmethod
    def fit(cls, model, config, data):
        detector = cls(model, MaxMapResult(detector=cls.name, method="l2", finetuning_files=data.relative_finetune_files()))
        validation = load_images(data.validation_files, "grayscale", SIZE)
        detector.result.threshold = float(detector.score(validation).image_scores.max())
        return detector

    def score(self, images):
        reconstructions = reconstruct(self.model.model, images, self.batch_size)
        maps = np.square(images - reconstructions)[..., 0].astype(np.float64)
        return Scores(maps.reshape(len(maps), -1).max(axis=1), None, {"max_l2": maps.reshape(len(maps), -1).max(axis=1)})

    def decide(self, scores):
        return Decisions(scores.image_scores > self.result.threshold)


@pytest.fixture(scope="module")
def registered():
    register_detector(MaxMapDetector)
    yield MaxMapDetector
    base._REGISTRY.pop(MaxMapDetector.name)


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    work = tmp_path_factory.mktemp("detectors")
    data = work / "tiles"
    make_demo_dataset(data, image_size=SIZE, n_train=24, n_test_good=8, n_test_defect=4, texture="brick", seed=2)
    return train.main(["-d", str(data), "-a", "mvtecCAE", "-l", "l2", "-b", "8", "--image-size", str(SIZE),
                       "--epochs", "1", "--lr", "1e-3", "--output-dir", str(work / "models")]), work


def test_registered_detector_runs_through_finetune_and_test(registered, model_folder):
    folder, work = model_folder
    results = work / "results"
    out = finetune.main(["-p", str(folder), "--detector", registered.name, "--results-dir", str(results)])
    assert out.name == "maxmap_l2"
    fitted = json.loads((out / base.RESULT_FILE).read_text())
    assert fitted["detector"] == registered.name and fitted["threshold"] > 0

    (test_dir,) = test_script.main(["-p", str(folder), "--results-dir", str(results)])
    result = json.loads((test_dir / "test_result.json").read_text())
    rows = list(csv.DictReader(open(test_dir / "classification.csv")))
    assert list(rows[0]) == ["file", "defect_type", "truth", "prediction", "max_l2"]
    assert not set(fitted["finetuning_files"]) & {row["file"] for row in rows}

    # Scores and decisions against an independent computation from the saved model.
    model = bundle.load_bundle(folder)
    root = model.info.dataset.path
    images = load_images([f"{root}/{row['file']}" for row in rows], "grayscale", SIZE)
    expected = np.square(images - model.model.predict(images, verbose=0))[..., 0].reshape(len(images), -1).max(axis=1)
    np.testing.assert_allclose([float(row["max_l2"]) for row in rows], expected, rtol=1e-5)
    np.testing.assert_array_equal(
        [int(row["prediction"]) for row in rows], (np.array([float(r["max_l2"]) for r in rows]) > fitted["threshold"]).astype(int)
    )
    truth = [int(row["truth"]) for row in rows]
    assert result["image_auroc"] == pytest.approx(roc_auc_score(truth, [float(row["max_l2"]) for row in rows]))
    assert result["n_images"] == len(rows) and "pixel_auroc" not in result


def test_registry_lists_the_built_in_detectors_and_rejects_unknown_names(model_folder, capsys):
    assert {"segmentation", "kde"} <= set(available_detectors())
    with pytest.raises(ValueError, match="--detector 'nope': expected one of segmentation, kde"):
        get_detector("nope")
    folder, work = model_folder
    assert cli.run(finetune.main, ["-p", str(folder), "--detector", "nope", "--results-dir", str(work / "r")]) == 2
    assert "error: --detector 'nope': expected one of segmentation, kde" in capsys.readouterr().err
    assert not (work / "r").exists()


def test_a_name_cannot_be_registered_twice():
    with pytest.raises(ValueError, match="registered twice"):
        register_detector(get_detector("kde"))
