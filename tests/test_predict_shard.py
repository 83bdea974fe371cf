"""predict.py --shard K/N and --merge: N runs cover every image exactly once, and their merge equals
the single-process predictions (rows, masks, overlays, counts); bad --shard / --merge answer in one line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

import finetune
import predict as predict_script
import train
from autoencoder import cli
from processing.data.demo import make_demo_dataset
from processing.workflow.predict import PREDICTIONS_FILE, SETTINGS_FILE, parse_shard, shard_files

SIZE = 32


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shard")
    make_demo_dataset(root / "tiles", image_size=SIZE, n_train=16, n_test_good=4, n_test_defect=2, texture="brick", seed=4)
    folder = train.main(["-d", str(root / "tiles"), "-a", "mvtecCAE", "-l", "l2", "-b", "8", "--image-size", str(SIZE),
                         "--epochs", "1", "--lr", "1e-3", "--output-dir", str(root / "models")])
    finetune.main(["-p", str(folder), "--results-dir", str(root / "results")])
    (root / "model").write_text(str(folder))
    (root / "test" / "broken.png").parent.mkdir(exist_ok=True)
    (root / "test" / "broken.png").write_bytes(b"not a png")  # a failed row is merged too
    return root


def rows_of(folder: Path) -> list[dict]:
    with open(folder / PREDICTIONS_FILE, newline="") as handle:
        return list(csv.DictReader(handle))


def predict_args(work: Path, out: Path, *extra: str) -> list[str]:
    return ["-p", (work / "model").read_text(), "-i", str(work / "tiles" / "test"), str(work / "test"), "-o", str(out),
            "--results-dir", str(work / "results"), "--masks", "--overlays", *extra]


def test_three_shards_cover_every_image_once_and_merge_equals_one_run(work):
    assert cli.run(predict_script.main, predict_args(work, work / "single")) == 0
    parts = [work / f"part{k}" for k in (1, 2, 3)]
    for k, part in enumerate(parts, start=1):
        assert cli.run(predict_script.main, predict_args(work, part, "--shard", f"{k}/3")) == 0
    single = rows_of(work / "single")
    shards = [rows_of(part) for part in parts]
    paths = [row["path"] for rows in shards for row in rows]
    assert len(paths) == len(set(paths)) == len(single) == len(list((work / "tiles" / "test").rglob("*.png"))) + 1
    assert set(paths) == {row["path"] for row in single}
    assert all(abs(len(rows) - len(single) / 3) < 1 for rows in shards)  # balanced

    assert cli.run(predict_script.main, ["--merge", *map(str, parts), "-o", str(work / "merged")]) == 0
    merged = rows_of(work / "merged")
    assert merged == sorted(single, key=lambda row: row["path"])
    assert sum(1 for row in merged if row["error"]) == 1
    for row in merged:
        for column in ("mask", "overlay"):
            if row[column]:
                assert (work / "merged" / row[column]).read_bytes() == (work / "single" / row[column]).read_bytes()
    assert (work / "merged" / "report.html").is_file()
    one = json.loads((work / "single" / SETTINGS_FILE).read_text())
    both = json.loads((work / "merged" / SETTINGS_FILE).read_text())
    assert both["counts"] == one["counts"] and both["n_inputs"] == one["n_inputs"]
    assert [part["shard"] for part in both["merged_from"]] == ["1/3", "2/3", "3/3"]

    # a missing shard, and the same shard twice, are refused
    assert cli.run(predict_script.main, ["--merge", str(parts[0]), str(parts[2]), "-o", str(work / "m2")]) == 2
    assert not (work / "m2").exists()


def test_shard_partition_is_deterministic_and_complete():
    files = [Path(f"d{i % 4}/img{i:03d}.png") for i in range(20)]
    shuffled = files[::-1]
    for n in (1, 2, 3, 7, 25):
        parts = [shard_files(shuffled, k, n) for k in range(1, n + 1)]
        assert sorted(p for part in parts for p in part) == sorted(files)
        assert parts == [shard_files(files, k, n) for k in range(1, n + 1)]
    assert parse_shard("2/3") == (2, 3) and parse_shard("1/1") == (1, 1)


@pytest.mark.parametrize("shard", ["3/2", "0/0", "0/3", "a/3", "1/b", "2", "-1/3", "1/3/4", ""])
def test_bad_shard_is_one_line_before_tensorflow(shard, tmp_path, capsys):
    argv = ["-p", str(tmp_path), "-i", str(tmp_path), "-o", str(tmp_path / "out"), f"--shard={shard}"]
    assert cli.run(predict_script.main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --shard {shard}: expected")


def test_bad_merge_is_one_line(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    assert cli.run(predict_script.main, ["--merge", str(tmp_path / "a"), "-o", str(tmp_path / "out")]) == 2
    assert (
        capsys.readouterr().err.strip() == f"error: --merge {tmp_path / 'a'}: no predictions.csv (expected an output folder of predict.py)"
    )
    assert cli.run(predict_script.main, ["--merge", str(tmp_path / "a"), "-i", "x", "-o", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == "error: --merge joins finished runs: -i/--input does not apply"
    assert cli.run(predict_script.main, ["-i", "x", "-o", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == "error: -p/--path is required (unless --merge)"
