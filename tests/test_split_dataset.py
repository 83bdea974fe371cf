"""scripts/split.py and processing/split_dataset.py: class folders -> MVTec AD layout."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from processing.data.images import DatasetError, scan_dataset
from processing.data.split_dataset import SETTINGS_FILE, split_dataset

REPO_ROOT = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location("split_script", REPO_ROOT / "scripts" / "split.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_class(folder: Path, n: int, seed: int) -> list[Path]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(n):
        path = folder / f"cell_{index:02d}.png"
        cv2.imwrite(str(path), rng.integers(0, 256, (8, 8), dtype=np.uint8))
        paths.append(path)
    (folder / ".hidden.png").write_bytes(b"not an image")  # skipped like macOS resource forks
    return paths


@pytest.fixture
def cells(tmp_path) -> Path:
    root = tmp_path / "cell_images"
    write_class(root / "Uninfected", 10, seed=0)
    write_class(root / "Parasitized", 7, seed=1)
    return root


def all_sources(summary) -> list[Path]:
    pairs = summary.train_good + [pair for pairs in summary.test.values() for pair in pairs]
    return [source for source, _ in pairs]


def test_counts_links_and_disjoint_splits(cells, tmp_path):
    out = tmp_path / "malaria"
    summary = split_dataset(cells, out, normal="Uninfected", train_fraction=0.7, seed=3)
    assert summary.counts() == {"train/good": 7, "test/good": 3, "test/Parasitized": 7}

    layout = scan_dataset(out, require_test=True)
    assert len(layout.train_good) == 7
    assert {name: len(files) for name, files in layout.test.items()} == {"good": 3, "Parasitized": 7}

    # Every source image lands in exactly one split, and every one of them is used.
    sources = all_sources(summary)
    assert len(sources) == len(set(sources)) == 17
    expected = {p for p in (cells / "Uninfected").glob("cell_*.png")} | {p for p in (cells / "Parasitized").glob("cell_*.png")}
    assert set(sources) == expected
    normal_train = {p.name for p in layout.train_good}
    assert not normal_train & {p.name for p in layout.test["good"]}

    for source, destination in summary.train_good + summary.test["Parasitized"]:
        assert destination.is_symlink() and destination.resolve() == source.resolve()
    settings = json.loads((out / SETTINGS_FILE).read_text())
    assert settings["normal"] == "Uninfected" and settings["counts"] == summary.counts()


def test_copy_mode_writes_identical_regular_files(cells, tmp_path):
    summary = split_dataset(cells, tmp_path / "copied", normal="Uninfected", train_fraction=0.5, copy=True)
    assert summary.counts()["train/good"] == 5
    for source, destination in summary.train_good + summary.test["good"]:
        assert not destination.is_symlink()
        assert destination.read_bytes() == source.read_bytes()


def test_split_depends_only_on_seed(cells, tmp_path):
    first = split_dataset(cells, tmp_path / "a", normal="Uninfected", seed=5)
    again = split_dataset(cells, tmp_path / "b", normal="Uninfected", seed=5)
    other = split_dataset(cells, tmp_path / "c", normal="Uninfected", seed=6)
    names = lambda summary: sorted(source.name for source, _ in summary.train_good)  # noqa: E731
    assert names(first) == names(again)
    assert names(first) != names(other)


def test_refuses_to_overwrite_unless_asked(cells, tmp_path):
    out = tmp_path / "out"
    split_dataset(cells, out, normal="Uninfected", seed=1)
    with pytest.raises(DatasetError, match="not empty: pass --overwrite"):
        split_dataset(cells, out, normal="Uninfected", seed=2)
    summary = split_dataset(cells, out, normal="Uninfected", seed=2, overwrite=True)
    assert sorted(p.name for p in (out / "train" / "good").iterdir()) == sorted(s.name for s, _ in summary.train_good)

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not written by split.py"):
        split_dataset(cells, foreign, normal="Uninfected", overwrite=True)
    assert (foreign / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("fraction", [0.0, 1.0, 1.5, -0.2])
def test_train_fraction_outside_open_unit_interval(cells, tmp_path, fraction):
    with pytest.raises(DatasetError, match=rf"--train-fraction {fraction}: expected a fraction in \(0, 1\)"):
        split_dataset(cells, tmp_path / "out", normal="Uninfected", train_fraction=fraction)
    assert not (tmp_path / "out").exists()


def test_missing_and_empty_class_folders(cells, tmp_path):
    with pytest.raises(DatasetError, match="--normal Healthy: class folder .*Healthy not found .*Parasitized, Uninfected"):
        split_dataset(cells, tmp_path / "out", normal="Healthy")
    (cells / "Empty").mkdir()
    with pytest.raises(DatasetError, match="class folder .*Empty holds no image"):
        split_dataset(cells, tmp_path / "out", normal="Uninfected")
    with pytest.raises(DatasetError, match="not found: expected a folder with one sub-folder per class"):
        split_dataset(tmp_path / "nowhere", tmp_path / "out", normal="Uninfected")
    assert not (tmp_path / "out").exists()


def test_normal_class_alone_is_an_error(tmp_path):
    write_class(tmp_path / "only" / "Uninfected", 4, seed=0)
    with pytest.raises(DatasetError, match="expected at least one anomaly class"):
        split_dataset(tmp_path / "only", tmp_path / "out", normal="Uninfected")


def test_cli_one_line_error_and_success(cells, tmp_path, capsys):
    script = load_script()
    out = tmp_path / "cli"
    code = script.cli.run(script.main, ["-i", str(cells), "-o", str(out), "--normal", "Uninfected", "--train-fraction", "2"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and err.startswith("error: --train-fraction 2.0")

    code = script.cli.run(script.main, ["-i", str(cells), "-o", str(out), "--normal", "Uninfected", "--copy"])
    assert code == 0
    assert len(list((out / "train" / "good").iterdir())) == 8  # round(0.8 * 10)
    assert not any(p.is_symlink() for p in (out / "test" / "Parasitized").iterdir())
