"""train.py -> finetune.py -> test.py end to end on a tiny generated dataset, and their bad input."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import finetune
import test as test_script
import train
from autoencoder import bundle
from processing.data.demo import make_demo_dataset
from processing.data.images import load_images, scan_dataset

SIZE = 32


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "tiles"
    make_demo_dataset(root, image_size=SIZE, n_train=40, n_test_good=10, n_test_defect=6, texture="brick", seed=1)
    return root


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("work")


def train_args(dataset: Path, out: Path, *extra: str) -> list[str]:
    return ["-d", str(dataset), "-a", "mvtecCAE", "-l", "ssim", "-c", "grayscale", "-b", "8",
            "--image-size", str(SIZE), "--output-dir", str(out), *extra]


@pytest.fixture(scope="module")
def trained(dataset, workspace) -> Path:
    """A model trained for 2 epochs with a fixed learning rate, then finetuned and tested."""
    models = workspace / "models"
    folder = train.main(train_args(dataset, models, "--epochs", "2", "--lr", "1e-3", "--seed", "3", "-i"))
    results = workspace / "results"
    finetune.main(["-p", str(folder), "-m", "ssim", "-t", "float64", "--results-dir", str(results)])
    finetune.main(["-p", str(folder), "-m", "l2", "-t", "uint8", "--results-dir", str(results)])
    test_script.main(["-p", str(folder), "-s", "--results-dir", str(results)])
    return folder


def results_dir(folder: Path, workspace: Path) -> Path:
    info = json.loads((folder / "info.json").read_text())
    return workspace / "results" / info["dataset"]["name"] / "mvtecCAE" / "ssim" / folder.name


def test_train_writes_model_folder(trained, dataset, workspace):
    assert trained.parent == workspace / "models" / "tiles" / "mvtecCAE" / "ssim"
    names = {path.name for path in trained.iterdir()}
    model_files = [name for name in names if name.endswith(".keras")]
    assert len(model_files) == 1 and model_files[0].startswith("mvtecCAE_b8_e")
    assert {"info.json", "history.csv", "loss_plot.png", "lr_plot.png", "inspection"} <= names
    assert not [p for p in trained.parent.iterdir() if p.name.startswith(".")], "temporary folder left behind"

    info = json.loads((trained / "info.json").read_text())
    assert info["model"]["image_size"] == SIZE and info["model"]["color_mode"] == "grayscale"
    assert info["training"]["loss"] == "ssim" and info["training"]["max_lr"] == pytest.approx(1e-3)
    assert info["training"]["epochs_run"] == 2 and 1 <= info["training"]["best_epoch"] <= 2
    assert info["dataset"]["n_train"] + info["dataset"]["n_validation"] == 40
    assert info["dataset"]["n_validation"] == len(info["dataset"]["validation_files"]) == 4
    assert info["settings"]["seed"] == 3
    assert model_files[0] == f"mvtecCAE_b8_e{info['training']['best_epoch']}.keras"
    rows = list(csv.DictReader(open(trained / "history.csv")))
    assert len(rows) == 2 and "val_loss" in rows[0]


def test_saved_model_reloads_and_reconstructs_identically(trained, dataset):
    first = bundle.load_bundle(trained)
    second = bundle.load_bundle(next(trained.glob("*.keras")))
    images = load_images(scan_dataset(dataset).train_good[:4], "grayscale", SIZE)
    np.testing.assert_array_equal(first.model.predict(images, verbose=0), second.model.predict(images, verbose=0))
    assert first.encoder().output.shape[1:] == (1, 1, 100)


def test_finetuning_result(trained, workspace, dataset):
    folder = results_dir(trained, workspace) / "finetuning" / "ssim_float64"
    result = json.loads((folder / "finetuning_result.json").read_text())
    assert result["method"] == "ssim" and result["dtype"] == "float64"
    assert result["best_min_area"] in result["search"]["min_areas"]
    assert 0 <= result["best_score"] <= 1
    # 10% of each class, at least one image each: 1 good + 1 per defect type.
    classes = sorted(Path(name).parent.name for name in result["finetuning_files"])
    assert classes == ["crack", "good", "scratch", "spot"]
    assert (folder / "threshold_vs_min_area.png").stat().st_size > 0
    assert (folder / "scores_vs_min_area.png").stat().st_size > 0


def test_test_results_exclude_finetuning_images(trained, workspace):
    base = results_dir(trained, workspace)
    for variant in ("ssim_float64", "l2_uint8"):
        tuned = set(json.loads((base / "finetuning" / variant / "finetuning_result.json").read_text())["finetuning_files"])
        rows = list(csv.DictReader(open(base / "test" / variant / "classification.csv")))
        tested = {row["file"] for row in rows}
        assert not tested & tuned
        assert len(tested) + len(tuned) == 10 + 3 * 6

        result = json.loads((base / "test" / variant / "test_result.json").read_text())
        truth = np.array([int(row["truth"]) for row in rows])
        scores = np.array([float(row["score"]) for row in rows])
        predictions = np.array([int(row["prediction"]) for row in rows])
        assert result["image_auroc"] == pytest.approx(roc_auc_score(truth, scores))
        assert result["tpr"] == pytest.approx(predictions[truth == 1].mean())
        assert result["tnr"] == pytest.approx(1 - predictions[truth == 0].mean())
        # The score is the highest threshold at which a component of min_area survives, so every
        # image found defective at the chosen threshold scores above it. (Not conversely: border
        # clearing can remove, at a lower threshold, a component that survives higher up.)
        assert np.all(scores[predictions == 1] > result["threshold"])
        assert set(result["per_defect_type"]) == {"crack", "scratch", "spot"}
        for key in ("pixel_auroc", "aupro", "mean_iou"):
            assert 0 <= result[key] <= 1


def test_segmentation_masks_at_original_size(trained, workspace, dataset):
    out = results_dir(trained, workspace) / "test" / "ssim_float64" / "segmentation"
    rows = list(csv.DictReader(open(out.parent / "classification.csv")))
    for row in rows:
        stem = Path(row["file"]).stem
        mask = cv2.imread(str(out / row["defect_type"] / f"{stem}_mask.png"), cv2.IMREAD_UNCHANGED)
        image = cv2.imread(str(dataset / row["file"]), cv2.IMREAD_UNCHANGED)
        assert mask.shape == image.shape[:2]
        assert set(np.unique(mask)) <= {0, 255}
        assert (mask.any()) == bool(int(row["prediction"]))
        overlay = cv2.imread(str(out / row["defect_type"] / f"{stem}_overlay.png"))
        assert overlay.shape == (*image.shape[:2], 3)


def test_include_finetune_scores_every_image(trained, workspace):
    results = workspace / "results_all"
    shutil.copytree(workspace / "results", results)
    argv = ["-p", str(trained), "-m", "ssim", "-t", "float64", "--include-finetune", "--overwrite", "--results-dir", str(results)]
    test_script.main(argv)
    base = results_dir(trained, workspace).relative_to(workspace / "results")
    rows = list(csv.DictReader(open(results / base / "test" / "ssim_float64" / "classification.csv")))
    assert len(rows) == 10 + 3 * 6


def test_learning_rate_finder_runs_when_no_lr_given(dataset, tmp_path):
    folder = train.main(train_args(dataset, tmp_path, "--epochs", "1"))
    info = json.loads((folder / "info.json").read_text())
    assert info["training"]["lr_finder"] is True
    assert 1e-5 <= info["training"]["max_lr"] <= 10
    assert (folder / "lr_finder_plot.png").stat().st_size > 0


# --- bad input: one line on stderr, exit code 2, nothing half-written -------------------------


def run_cli(script, argv, capsys) -> str:
    from autoencoder import cli

    assert cli.run(script.main, argv) == 2
    # Progress bars may have written to stderr before the error: the error is the last line.
    err = re.split(r"[\r\n]", capsys.readouterr().err.strip())[-1]
    assert err.startswith("error: ")
    return err


def test_train_bad_input(tmp_path, dataset, capsys):
    out = tmp_path / "models"
    err = run_cli(train, train_args(tmp_path / "nowhere", out), capsys)
    assert "nowhere" in err and "train/good" in err

    empty = tmp_path / "empty"
    (empty / "train" / "good").mkdir(parents=True)
    assert "no image" in run_cli(train, train_args(empty, out), capsys).lower()

    corrupt = tmp_path / "corrupt"
    shutil.copytree(dataset, corrupt)
    (corrupt / "train" / "good" / "broken.png").write_bytes(b"not an image at all")
    assert "broken.png" in run_cli(train, train_args(corrupt, out, "--lr", "1e-3", "--epochs", "1"), capsys)

    err = run_cli(train, train_args(dataset, out, "-c", "rgb"), capsys)
    assert "--loss ssim" in err and "grayscale" in err
    err = run_cli(train, [*train_args(dataset, out), "-l", "mssim"], capsys)
    assert "--loss mssim" in err and "rgb" in err
    err = run_cli(train, [*train_args(dataset, out), "-a", "noSuchCAE"], capsys)
    assert "noSuchCAE" in err and "mvtecCAE" in err
    err = run_cli(train, [*train_args(dataset, out), "--image-size", "40"], capsys)
    assert "--image-size 40" in err
    assert not out.exists() or not any(out.rglob("*")), "a failed run left files behind"


def test_finetune_and_test_bad_input(tmp_path, trained, workspace, capsys):
    err = run_cli(finetune, ["-p", str(tmp_path / "missing")], capsys)
    assert "missing" in err and "not found" in err
    (tmp_path / "not_a_model").mkdir()
    err = run_cli(test_script, ["-p", str(tmp_path / "not_a_model")], capsys)
    assert "not_a_model" in err

    err = run_cli(test_script, ["-p", str(trained), "--results-dir", str(tmp_path / "fresh")], capsys)
    assert "finetune.py" in err
    err = run_cli(test_script, ["-p", str(trained), "-m", "l2", "-t", "float64", "--results-dir", str(workspace / "results")], capsys)
    assert "l2_float64" in err


def copy_model_with_dataset(trained: Path, dataset: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the trained model whose info.json points at a copy of the dataset."""
    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    model = tmp_path / "model"
    shutil.copytree(trained, model)
    info = json.loads((model / "info.json").read_text())
    info["dataset"]["path"] = str(data)
    (model / "info.json").write_text(json.dumps(info))
    return model, data


def test_test_rejects_mask_of_wrong_size(tmp_path, trained, dataset, workspace, capsys):
    model, data = copy_model_with_dataset(trained, dataset, tmp_path)
    results = tmp_path / "r"
    finetune.main(["-p", str(model), "--results-dir", str(results)])
    mask = sorted((data / "ground_truth" / "spot").glob("*_mask.png"))[0]
    cv2.imwrite(str(mask), np.zeros((SIZE + 3, SIZE), dtype=np.uint8))
    err = run_cli(test_script, ["-p", str(model), "--results-dir", str(results)], capsys)
    assert mask.name in err
    assert not (results / "tiles" / "mvtecCAE" / "ssim" / "model" / "test").exists()


def test_demo_runs_the_whole_workflow(tmp_path, monkeypatch, capsys):
    import demo

    monkeypatch.chdir(tmp_path)
    model_dir = demo.main(["--data-dir", "data/brick", "--image-size", "32", "--epochs", "1", "--lr", "1e-3"])
    assert (tmp_path / "data" / "brick" / "demo_settings.json").is_file()
    assert model_dir.parent == Path("saved_models/brick/mvtecCAE/ssim")
    test_dir = Path("results/brick/mvtecCAE/ssim") / model_dir.name / "test" / "ssim_float64"
    assert (test_dir / "test_result.json").is_file() and (test_dir / "segmentation").is_dir()
    assert "image_auroc=" in capsys.readouterr().out
