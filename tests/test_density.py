"""processing/density.py: the KDE on latent codes, its file, the OR rule and the kde workflow."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import KFold
from sklearn.neighbors import KernelDensity

import finetune
import test as test_script
import train
from autoencoder import cli
from processing.data.demo import make_demo_dataset
from processing.data.split_dataset import split_dataset
from processing.decision.density import (
    DENSITY_FILE,
    DensityFileError,
    bandwidth_grid,
    code_and_reconstruction_model,
    dual_rule_predict,
    fit_density,
    gaussian_kde_log_density,
    load_density,
    save_density,
    search_dual_thresholds,
    select_bandwidth,
)

SIZE = 32


def direct_log_density(train_codes, query, bandwidth):
    """log( 1/N sum_i N(x; c_i, h^2 I) ), one query and one training code at a time."""
    n, d = train_codes.shape
    out = []
    for x in query:
        terms = []
        for c in train_codes:
            squared = sum((float(a) - float(b)) ** 2 for a, b in zip(x, c))
            terms.append(-squared / (2 * bandwidth**2))
        top = max(terms)
        log_sum = top + math.log(sum(math.exp(t - top) for t in terms))
        out.append(log_sum - math.log(n) - d / 2 * math.log(2 * math.pi * bandwidth**2))
    return np.array(out)


@pytest.fixture
def codes():
    rng = np.random.default_rng(0)
    return rng.normal(size=(40, 2, 2, 3)) * np.array([1.0, 2.0, 0.5])  # 40 codes of length 12


def test_log_density_equals_direct_gaussian_kernel_sum(codes):
    density = fit_density(codes, bandwidth=0.7)
    query = np.random.default_rng(1).normal(size=(9, 2, 2, 3)) * 2
    expected = direct_log_density(codes.reshape(40, -1), query.reshape(9, -1), 0.7)
    np.testing.assert_allclose(density.log_density(query), expected, rtol=1e-10)
    blocked = gaussian_kde_log_density(codes.reshape(40, -1), query.reshape(9, -1), 0.7, block_elements=80)
    np.testing.assert_allclose(blocked, expected, rtol=1e-10)  # 2 queries per block
    # scikit-learn's KernelDensity is the same model (accurate this close to the data).
    sklearn_kde = KernelDensity(kernel="gaussian", bandwidth=0.7).fit(codes.reshape(40, -1))
    np.testing.assert_allclose(sklearn_kde.score_samples(query.reshape(9, -1)), expected, rtol=1e-6)


def test_log_density_is_exact_far_from_the_training_codes(codes):
    """Far outliers (log density of about -1000) keep their exact value: no underflow, no tree bounds."""
    flat = codes.reshape(40, -1)
    far = flat[:3] + np.array([[20.0], [35.0], [50.0]])
    expected = direct_log_density(flat, far, 0.7)
    assert expected.min() < -1000
    np.testing.assert_allclose(fit_density(codes, bandwidth=0.7).log_density(far), expected, rtol=1e-9)


def test_log_density_with_pca_is_the_kde_of_projected_codes(codes):
    flat = codes.reshape(40, -1)
    density = fit_density(codes, bandwidth=0.5, pca_components=3)
    assert density.codes.shape == (40, 3) and density.pca_components.shape == (3, 12)
    # Independent projection: the top right-singular vectors of the centred codes.
    mean = flat.mean(axis=0)
    _, _, vt = np.linalg.svd(flat - mean, full_matrices=False)
    projected = (flat - mean) @ vt[:3].T
    np.testing.assert_allclose(np.abs(density.codes), np.abs(projected), atol=1e-9)  # up to sign
    query = np.random.default_rng(2).normal(size=(5, 12))
    expected = direct_log_density(projected, (query - mean) @ vt[:3].T, 0.5)
    np.testing.assert_allclose(density.log_density(query), expected, rtol=1e-9)


def test_bandwidth_maximises_cross_validated_likelihood(codes):
    flat = codes.reshape(40, -1)
    grid = bandwidth_grid(flat)
    bandwidth, returned_grid, scores = select_bandwidth(flat, seed=4)
    np.testing.assert_array_equal(returned_grid, grid)
    folds = list(KFold(n_splits=5, shuffle=True, random_state=4).split(flat))
    naive = [
        np.mean([direct_log_density(flat[tr], flat[te], h).sum() for tr, te in folds])
        for h in grid[::5]
    ]
    np.testing.assert_allclose(scores[::5], naive, rtol=1e-8)
    assert bandwidth == grid[int(np.argmax(scores))]
    assert fit_density(codes, seed=4).bandwidth == bandwidth


def test_density_file_round_trip(codes, tmp_path):
    density = fit_density(codes, bandwidth=0.3, pca_components=4)
    path = save_density(tmp_path / DENSITY_FILE, density, {"model_file": "m.keras", "n_train_images": 40})
    assert [p.name for p in tmp_path.iterdir()] == [DENSITY_FILE]  # no temporary file left
    loaded, metadata = load_density(path)
    assert metadata == {"model_file": "m.keras", "n_train_images": 40}
    for name in ("codes", "pca_mean", "pca_components"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(density, name))
    assert loaded.bandwidth == density.bandwidth and loaded.n_features == 12
    np.testing.assert_array_equal(loaded.log_density(codes[:5]), density.log_density(codes[:5]))
    with np.load(path, allow_pickle=False) as data:  # plain arrays, no pickles
        assert all(data[key].dtype != object for key in data.files)


def test_density_file_errors(codes, tmp_path):
    with pytest.raises(DensityFileError, match=r"density\.npz not found: run finetune.py --detector kde"):
        load_density(tmp_path / DENSITY_FILE)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file")
    with pytest.raises(DensityFileError, match="garbage.npz is not a density file"):
        load_density(garbage)
    partial = tmp_path / "partial.npz"
    np.savez(partial, codes=np.zeros((2, 2)))
    with pytest.raises(DensityFileError, match="partial.npz: missing bandwidth"):
        load_density(partial)
    density = fit_density(codes, bandwidth=1.0)
    with pytest.raises(ValueError, match="codes of length 5 do not match the density model's 12"):
        density.log_density(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="--bandwidth -1.0: expected a positive kernel width"):
        fit_density(codes, bandwidth=-1.0)
    with pytest.raises(ValueError, match=r"--pca-components 13: expected 1\.\.12"):
        fit_density(codes, pca_components=13)
    with pytest.raises(ValueError, match="training codes are all identical"):
        fit_density(np.ones((6, 3)))


def test_or_rule_hand_computed_example():
    log_density = np.array([-10.0, -2.0, -2.0, -7.0, -5.0])
    error = np.array([0.1, 0.9, 0.2, 0.6, 0.5])
    # density rule (< -5): images 0 and 3; error rule (> 0.5): images 1 and 3; image 4 sits on both thresholds.
    assert dual_rule_predict(log_density, error, -5.0, 0.5).tolist() == [True, True, False, True, False]
    assert dual_rule_predict(log_density, error, -np.inf, 0.5).tolist() == [False, True, False, True, False]
    assert dual_rule_predict(log_density, error, -5.0, np.inf).tolist() == [True, False, False, True, False]


def brute_force_best(val_ld, val_err, ld, err, labels):
    """Every (density, error) threshold pair that keeps the validation images normal, scored in a loop."""
    best = None
    for td in sorted({val_ld.min(), -np.inf, *ld[ld < val_ld.min()]}, reverse=True):
        for te in sorted({val_err.max(), np.inf, *err[err > val_err.max()]}):
            predicted = [(a < td) or (b > te) for a, b in zip(ld, err)]
            tpr = sum(p and y for p, y in zip(predicted, labels)) / sum(labels)
            tnr = sum((not p) and (not y) for p, y in zip(predicted, labels)) / (len(labels) - sum(labels))
            score = (tpr + tnr) / 2
            if best is None or score > best[0]:
                best = (score, td, te)
    return best


@pytest.mark.parametrize("seed", range(5))
def test_threshold_search_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    labels = np.array([False] * 12 + [True] * 10)
    ld = np.where(labels, rng.normal(-8, 3, 22), rng.normal(-3, 1, 22)).round(1)  # ties on purpose
    err = np.where(labels, rng.normal(0.6, 0.2, 22), rng.normal(0.3, 0.1, 22)).round(2)
    val_ld, val_err = rng.normal(-3, 1, 6), rng.normal(0.3, 0.1, 6)
    result = search_dual_thresholds(val_ld, val_err, ld, err, labels)
    score, td, te = brute_force_best(val_ld, val_err, ld, err, labels)
    assert result.best_score == pytest.approx(score)
    assert (result.best_density_threshold, result.best_error_threshold) == (td, te)
    assert not dual_rule_predict(val_ld, val_err, td, te).any()  # validation images stay normal
    predicted = dual_rule_predict(ld, err, td, te)
    assert result.best_tpr == pytest.approx(predicted[labels].mean())
    assert result.best_tnr == pytest.approx(1 - predicted[~labels].mean())


def test_threshold_search_needs_both_classes():
    with pytest.raises(ValueError, match="needs both defect-free and defective images"):
        search_dual_thresholds([0.0], [0.0], [1.0, 2.0], [0.1, 0.2], [True, True])


def test_model_without_bottleneck_is_refused():
    inputs = keras.Input((8, 8, 1))
    model = keras.Model(inputs, keras.layers.Conv2D(1, 3, padding="same", name="out")(inputs), name="plain")
    with pytest.raises(ValueError, match="--detector kde: model plain has no 'bottleneck' layer"):
        code_and_reconstruction_model(model)


# --------------------------------------------------------------------------------------------
# End to end: split.py dataset -> train.py -a vggCAE -> finetune.py --detector kde -> test.py
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workflow(tmp_path_factory):
    """A two-class folder (demo tiles: Normal / Defect) split by split.py, a vggCAE trained with a
    local VGG16 weights file and a frozen encoder, finetuned with the kde detector and tested."""
    work = tmp_path_factory.mktemp("kde")
    demo = make_demo_dataset(work / "demo", image_size=SIZE, n_train=40, n_test_good=10, n_test_defect=6, seed=2)
    flat = work / "flat"
    for target, sources in (("Normal", ["train/good", "test/good"]), ("Defect", ["test/crack", "test/scratch", "test/spot"])):
        (flat / target).mkdir(parents=True)
        for source in sources:
            for path in sorted((demo / source).glob("*.png")):
                shutil.copy(path, flat / target / f"{source.replace('/', '_')}_{path.name}")
    dataset = work / "cells"
    split_dataset(flat, dataset, normal="Normal", train_fraction=0.8, seed=0)

    keras.utils.set_random_seed(0)
    weights = work / "vgg16_notop.weights.h5"
    keras.applications.VGG16(include_top=False, weights=None, input_shape=(SIZE, SIZE, 3)).save_weights(weights)
    folder = train.main([
        "-d", str(dataset), "-a", "vggCAE", "-l", "ssim", "-b", "8", "--image-size", str(SIZE), "--epochs", "2",
        "--lr", "1e-3", "--output-dir", str(work / "models"), "--encoder-weights", str(weights), "--freeze-encoder",
    ])
    results = work / "results"
    finetune_dir = finetune.main(["-p", str(folder), "--detector", "kde", "--results-dir", str(results)])
    test_dirs = test_script.main(["-p", str(folder), "--results-dir", str(results)])
    return {"folder": folder, "results": results, "finetune_dir": finetune_dir, "test_dirs": test_dirs, "weights": weights}


def test_workflow_writes_density_and_kde_finetuning_result(workflow):
    folder = workflow["folder"]
    assert not (folder / DENSITY_FILE).exists(), "the density belongs to the result, not the model folder"
    density, metadata = load_density(workflow["finetune_dir"] / DENSITY_FILE)
    info = json.loads((folder / "info.json").read_text())
    assert len(density.codes) == info["dataset"]["n_train"]  # train/good minus validation
    assert density.n_features == 7  # 1x1x7 code at 32 px
    assert metadata["model_file"].startswith("vggCAE_b8_e")

    assert workflow["finetune_dir"].name == "kde_ssim"
    assert (workflow["finetune_dir"] / "density_vs_error.png").stat().st_size > 0
    result = json.loads((workflow["finetune_dir"] / "finetuning_result.json").read_text())
    assert result["detector"] == "kde" and result["bandwidth"] == density.bandwidth
    assert result["n_finetune"] == len(result["finetuning_files"]) > 0
    # The validation images stay normal under the chosen pair.
    td = -np.inf if result["density_threshold"] is None else result["density_threshold"]
    te = np.inf if result["error_threshold"] is None else result["error_threshold"]
    assert td <= result["validation_min_log_density"] and te >= result["validation_max_error"]
    scores = result["finetuning_scores"]
    predicted = dual_rule_predict(scores["log_density"], scores["error"], td, te)
    labels = np.array(scores["label"], dtype=bool)
    assert result["best_score"] == pytest.approx((predicted[labels].mean() + (~predicted[~labels]).mean()) / 2)


def test_frozen_encoder_kept_the_loaded_weights(workflow):
    from autoencoder.bundle import load_bundle
    from autoencoder.models.vgg_cae import vgg16_conv_layer_names

    model = load_bundle(workflow["folder"]).model
    vgg = keras.applications.VGG16(include_top=False, weights=None, input_shape=(SIZE, SIZE, 3))
    vgg.load_weights(workflow["weights"])
    for name in vgg16_conv_layer_names()[1:]:
        np.testing.assert_array_equal(model.get_layer(name).get_weights()[0], vgg.get_layer(name).get_weights()[0])


def test_workflow_test_result_applies_the_or_rule(workflow):
    (out_dir,) = workflow["test_dirs"]
    assert out_dir.name == "kde_ssim"
    result = json.loads((out_dir / "test_result.json").read_text())
    rows = list(csv.DictReader(open(out_dir / "classification.csv")))
    assert len(rows) == result["n_images"] > 0
    finetuning = json.loads((workflow["finetune_dir"] / "finetuning_result.json").read_text())
    assert not {row["file"] for row in rows} & set(finetuning["finetuning_files"])

    log_density = np.array([float(row["log_density"]) for row in rows])
    error = np.array([float(row["error"]) for row in rows])
    truth = np.array([row["truth"] == "1" for row in rows])
    td = -np.inf if result["density_threshold"] is None else result["density_threshold"]
    te = np.inf if result["error_threshold"] is None else result["error_threshold"]
    predicted = dual_rule_predict(log_density, error, td, te)
    assert [int(p) for p in predicted] == [int(row["prediction"]) for row in rows]
    assert result["tp"] == int((predicted & truth).sum()) and result["fp"] == int((predicted & ~truth).sum())
    assert result["image_auroc_density"] == pytest.approx(roc_auc_score(truth, -log_density))
    assert result["image_auroc_error"] == pytest.approx(roc_auc_score(truth, error))
    assert set(result["per_defect_type"]) == {"Defect"}


def test_workflow_density_belongs_to_its_result(workflow, tmp_path, capsys):
    """Every kde result keeps its own density.npz: another result (another --results-dir, another
    bandwidth, --refit-density) never rewrites one, and an existing result scores exactly as before.
    An older version's density.npz in the model folder is read, never written."""
    from autoencoder.bundle import load_bundle
    from processing.data.images import load_images
    from processing.workflow.results import load_detector

    folder, first = workflow["folder"], workflow["finetune_dir"]
    model_before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    first_before = {p.name: p.read_bytes() for p in first.iterdir()}
    model = load_bundle(folder)
    images = load_images(sorted(Path(model.info.dataset.path).glob("test/*/*.png"))[:8], model.info.model.color_mode, SIZE)
    scores_before = load_detector(model, first).score(images).image_scores
    other = tmp_path / "other"
    again = finetune.main(["-p", str(folder), "--detector", "kde", "--refit-density", "--bandwidth", "123", "--results-dir", str(other)])
    assert json.loads((again / "finetuning_result.json").read_text())["bandwidth"] == 123
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == model_before
    assert {p.name: p.read_bytes() for p in first.iterdir()} == first_before
    assert load_density(again / DENSITY_FILE)[0].bandwidth == 123
    np.testing.assert_array_equal(load_detector(model, first).score(images).image_scores, scores_before)

    # An older version's density.npz in the model folder: read (not refitted), never written.
    legacy = tmp_path / "legacy_model"
    shutil.copytree(folder, legacy)
    shutil.copy(first / DENSITY_FILE, legacy / DENSITY_FILE)
    legacy_bytes = (legacy / DENSITY_FILE).read_bytes()
    reused = finetune.main(["-p", str(legacy), "--detector", "kde", "--results-dir", str(tmp_path / "legacy_results")])
    assert json.loads((reused / "finetuning_result.json").read_text())["density_fitted_now"] is False
    assert (reused / DENSITY_FILE).read_bytes() == legacy_bytes and (legacy / DENSITY_FILE).read_bytes() == legacy_bytes
    argv = ["-p", str(legacy), "--detector", "kde", "--bandwidth", "123", "--overwrite", "--results-dir", str(tmp_path / "legacy_results")]
    code = cli.run(finetune.main, argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "pass --refit-density" in err and "left as it is" in err

    # A result without its density, or with a density changed since: one line naming the file.
    moved = again / "density.npz.bak"
    (again / DENSITY_FILE).rename(moved)
    code = cli.run(test_script.main, ["-p", str(folder), "--results-dir", str(other)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == f"error: {again / DENSITY_FILE} not found: the kde finetuning result needs its density file; " \
                                f"run finetune.py -p {folder} --detector kde --overwrite"
    shutil.copy(first / DENSITY_FILE, again / DENSITY_FILE)  # a valid density, but not this result's
    code = cli.run(test_script.main, ["-p", str(folder), "--results-dir", str(other)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and f"{again / DENSITY_FILE} changed since finetuning" in err
    assert not (other / "tiles").exists() or not list(other.rglob("test_result.json"))


@pytest.mark.parametrize("edit, expected", [
    (lambda a: a | {"bandwidth": np.array(-1.0)}, "bandwidth"),
    (lambda a: a | {"bandwidth": np.array(np.nan)}, "bandwidth"),
    (lambda a: a | {"codes": a["codes"][:, :1]}, "codes of 1 columns"),
    (lambda a: a | {"codes": np.full_like(a["codes"], np.inf)}, "codes of shape"),
    (lambda a: a | {"n_features": np.array(0)}, "n_features"),
    (lambda a: a | {"codes": np.array(["a", "b"])}, "numeric"),
])
def test_hand_edited_density_file_is_refused_naming_it(tmp_path, edit, expected):
    codes = np.random.default_rng(0).normal(size=(10, 3))
    path = save_density(tmp_path / DENSITY_FILE, fit_density(codes, bandwidth=0.5))
    with np.load(path) as data:
        arrays = {key: data[key] for key in data.files}
    np.savez(path, **edit(arrays))
    with pytest.raises(DensityFileError, match=rf"{path}: .*{expected}"):
        load_density(path)
