"""info.json as a typed record (autoencoder/model_info.py), the scripts' error policy
(autoencoder/cli.py: a UserError is one line, anything else an internal error) and the loss
registry (autoencoder/loss_rules.py)."""

from __future__ import annotations

import copy
import logging

import pytest

from autoencoder import cli
from autoencoder.errors import UserError
from autoencoder.model_info import InfoSchemaError, ModelInfo, check_info, parse

INFO = {
    "schema_version": 2,
    "created": "2026-12-05_10-00-00",
    "command": "python train.py -d x",
    "settings": {"loss": "l2"},
    "dataset": {"path": "/data/tiles", "name": "tiles", "validation_split": 0.1, "seed": 42, "n_train": 9, "n_validation": 1,
                "n_test": {"good": 4, "crack": 2}, "validation_files": ["train/good/0.png"],
                "content": {"algorithm": "sha256", "sha256": "a" * 64, "n_files": 16, "bytes": 1000, "folders": {"train/good": "b" * 64}}},
    "model": {"architecture": "mvtecCAE", "file": "mvtecCAE_b8_e1.keras", "color_mode": "grayscale", "image_size": 32, "channels": 1,
              "value_range": [0, 1], "preprocessing": "scale_0_1", "has_bottleneck": True, "parameters": 1000, "sha256": "c" * 64},
    "training": {"loss": "l2", "batch_size": 8, "epochs_cap": 1, "epochs_run": 1, "best_epoch": 1, "lr_finder": False,
                 "max_lr": 0.001, "base_lr": 0.0001, "augment": True, "seconds": 2.5, "best": {"loss": 0.1}},
    "versions": {"python": "3.11"},
}


def test_info_json_is_read_into_typed_sections():
    info = parse(copy.deepcopy(INFO))
    assert isinstance(info, ModelInfo)
    assert (info.dataset.name, info.model.image_size, info.training.loss) == ("tiles", (32, 32), "l2")
    assert info.model.input_shape == (32, 32, 1) and info.dataset.content.n_files == 16
    # Keys later versions of train.py added read as what older folders meant.
    assert info.model.output == "reconstruction" and info.model.tile is None and info.model.options == {}
    assert info.adversarial is None and info.was_trained and not info.tiled
    assert info.to_json() == INFO  # the object it was read from, for writing copies


def test_tiles_and_an_untrained_model_are_typed_too():
    data = copy.deepcopy(INFO)
    data["model"] |= {"tile": {"size": 64, "overlap": 16}, "output": "map", "options": {"backbone": "efficientnet_lite1"}}
    data["training"]["epochs_run"] = 0
    info = parse(data)
    assert (info.model.tile.size, info.model.tile.overlap) == (64, 16) and info.tiled and not info.was_trained
    assert info.model.options == {"backbone": "efficientnet_lite1"}


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["model"].update(tile={"size": "64", "overlap": 0}), "'model.tile.size' is '64' (str); expected a positive integer"),
    (lambda d: d["model"].update(output="pixels"), "'model.output' is 'pixels' (str); expected one of reconstruction, map"),
    (lambda d: d["dataset"].pop("content"), "'dataset.content' missing"),
    (lambda d: d["dataset"]["content"].update(n_files=-1), "'dataset.content.n_files' is -1 (int); expected a count"),
    (lambda d: d.update(adversarial={"latent_dim": 8}), "'adversarial.prior_std' missing"),
    (lambda d: d["dataset"].update(name="../../etc"), "'dataset.name' is '../../etc' (str); expected one folder name"),
    (lambda d: d.update(model=[]), "'model' is [] (list); expected an object"),
])
def test_a_hand_edited_info_json_is_refused_naming_the_key(edit, message):
    data = copy.deepcopy(INFO)
    edit(data)
    with pytest.raises(InfoSchemaError) as error:
        check_info(data, "m/info.json")
    assert str(error.value).startswith(f"m/info.json: {message}") and str(error.value).endswith("not an info.json written by train.py")
    assert isinstance(error.value, UserError)


def test_a_version_1_folder_needs_no_hashes():
    data = copy.deepcopy(INFO)
    data["schema_version"] = 1
    del data["dataset"]["content"], data["model"]["sha256"]
    info = parse(data)
    assert info.dataset.content is None and info.model.sha256 is None


def failing(error):
    def main(argv):
        raise error

    return main


def test_a_user_error_is_one_line_and_a_bug_says_it_is_one(capsys):
    assert cli.run(failing(UserError("--flag 3: expected 1 or 2"))) == 2
    assert capsys.readouterr().err == "error: --flag 3: expected 1 or 2\n"
    assert cli.run(failing(FileNotFoundError(2, "No such file or directory", "x.png"))) == 2
    assert capsys.readouterr().err == "error: x.png: no such file or directory\n"
    assert cli.run(failing(ValueError("operands could not be broadcast together"))) == 1
    err = capsys.readouterr().err
    assert err.startswith("internal error: ValueError: operands could not be broadcast together (a bug, not your input: rerun with -v")
    assert "Traceback" not in err and err.count("\n") == 1


def test_a_bug_keeps_its_traceback_under_verbose(capsys):
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.DEBUG)
    try:
        assert cli.run(failing(KeyError("shape"))) == 1
    finally:
        root.setLevel(level)
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and 'raise error' in err
    assert err.rstrip().splitlines()[-1] == "internal error: KeyError: 'shape'"


def test_the_loss_registry_names_every_loss_function_once():
    from autoencoder import losses
    from autoencoder.loss_rules import available_losses, check_loss_color, get_loss_spec

    assert available_losses() == list(losses.LOSSES) == ["ssim", "mssim", "l2", "feature", "mined"]
    assert [metric.name for metric in losses.get_metrics("l2", "rgb")] == ["mssim"]
    assert [metric.name for metric in losses.get_metrics("ssim", "grayscale")] == ["ssim"]
    assert losses.get_metrics("mined", "rgb") == [] and get_loss_spec("mssim").color_mode == "rgb"
    with pytest.raises(UserError, match="--loss ssim needs --color grayscale .*use --loss mssim"):
        check_loss_color("ssim", "rgb")
    with pytest.raises(UserError, match="--loss 'hinge': expected one of ssim, mssim, l2, feature, mined"):
        check_loss_color("hinge", "rgb")


def test_test_py_does_not_hide_the_standard_librarys_test_package():
    """test.py keeps its name (the toolkit's documented layout) and the standard library's `test`
    package stays importable beside it."""
    import importlib
    import sysconfig
    from pathlib import Path

    import test as test_script

    assert hasattr(test_script, "build_parser") and Path(test_script.__file__).name == "test.py"
    support = importlib.import_module("test.support")
    assert Path(support.__file__).is_relative_to(Path(sysconfig.get_paths()["stdlib"]) / "test")
