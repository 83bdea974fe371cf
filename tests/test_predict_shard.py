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


def part_args(work: Path, out: Path, results: Path, *inputs) -> list[str]:
    return ["-p", (work / "model").read_text(), "-i", *map(str, inputs), "-o", str(out), "--results-dir", str(results)]


def test_merge_refuses_an_unfinished_part(work, tmp_path, capsys):
    """A part whose run was killed (its settings still say running) holds a partial list of rows."""
    test_images = work / "tiles" / "test"
    for k in (1, 2):
        assert cli.run(predict_script.main, [*part_args(work, tmp_path / f"p{k}", work / "results", test_images), "--shard",
                                             f"{k}/2"]) == 0
    settings = json.loads((tmp_path / "p2" / SETTINGS_FILE).read_text())
    settings["runs"][-1]["status"] = "running"
    (tmp_path / "p2" / SETTINGS_FILE).write_text(json.dumps(settings))
    lines = (tmp_path / "p2" / PREDICTIONS_FILE).read_text().splitlines()
    (tmp_path / "p2" / PREDICTIONS_FILE).write_text("\n".join(lines[: len(lines) // 2]) + "\n")
    assert cli.run(predict_script.main, ["--merge", str(tmp_path / "p1"), str(tmp_path / "p2"), "-o", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: --merge {tmp_path / 'p2'}: its predict.py run did not finish (status 'running'") and "--resume" in err
    assert not (tmp_path / "m").exists()


def test_merge_compares_what_the_result_is_not_its_name(work, tmp_path, capsys):
    """Shards of two finetuning results of the same name (another --results-dir, another smoothing)
    are not one prediction; nor is a part whose result was finetuned again since."""
    test_images = work / "tiles" / "test"
    other = tmp_path / "other_results"
    finetune.main(["-p", (work / "model").read_text(), "--smoothing", "1", "--results-dir", str(other)])
    assert cli.run(predict_script.main, [*part_args(work, tmp_path / "p1", work / "results", test_images), "--shard", "1/2"]) == 0
    assert cli.run(predict_script.main, [*part_args(work, tmp_path / "p2", other, test_images), "--shard", "2/2"]) == 0
    assert cli.run(predict_script.main, ["--merge", str(tmp_path / "p1"), str(tmp_path / "p2"), "-o", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: --merge {tmp_path / 'p2'}: another result folder") and "not predictions of the same model" in err
    assert not (tmp_path / "m").exists()

    assert cli.run(predict_script.main, [*part_args(work, tmp_path / "p3", other, test_images), "--shard", "1/2"]) == 0
    finetune.main(["-p", (work / "model").read_text(), "--smoothing", "2", "--overwrite", "--results-dir", str(other)])
    assert cli.run(predict_script.main, ["--merge", str(tmp_path / "p3"), str(tmp_path / "p2"), "-o", str(tmp_path / "m")]) == 2
    assert "changed since these predictions were made" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_merge_compares_resolved_paths(work, tmp_path, capsys, monkeypatch):
    """The same image in two parts, once by an absolute and once by a relative path, is refused;
    parts from different working folders merge with their relative paths resolved."""
    test_images = work / "tiles" / "test"
    assert cli.run(predict_script.main, part_args(work, tmp_path / "abs", work / "results", test_images / "good")) == 0
    monkeypatch.chdir(test_images)
    assert cli.run(predict_script.main, part_args(work, tmp_path / "rel", work / "results", "good", "crack")) == 0
    monkeypatch.chdir(tmp_path)
    assert cli.run(predict_script.main, ["--merge", str(tmp_path / "abs"), str(tmp_path / "rel"), "-o", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "is in both" in err and not (tmp_path / "m").exists()

    monkeypatch.chdir(test_images)
    assert cli.run(predict_script.main, part_args(work, tmp_path / "crack", work / "results", "crack")) == 0
    monkeypatch.chdir(tmp_path)
    assert cli.run(predict_script.main, ["--merge", str(tmp_path / "abs"), str(tmp_path / "crack"), "-o", str(tmp_path / "m")]) == 0
    rows = rows_of(tmp_path / "m")
    assert len(rows) == 4 + 2 and all(Path(row["path"]).is_absolute() and Path(row["path"]).is_file() for row in rows)


KILLED_MERGE = """
import os, signal, sys
sys.path.insert(0, {root!r})
import predict
from processing.workflow.predict import shards
shards.build_report = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)  # killed half way: CSV written, no report
predict.main(sys.argv[1:])
"""


def test_a_killed_merge_is_redone_by_its_rerun_and_refused_elsewhere(work, tmp_path, capsys):
    """SIGKILL mid-merge (issue 30, case 13): rerunning the same --merge redoes it without --overwrite;
    --resume on it and merging it as a part answer in one line."""
    import subprocess
    import sys

    parts = [work / f"killpart{k}" for k in (1, 2)]
    for k, part in enumerate(parts, start=1):
        assert cli.run(predict_script.main, predict_args(work, part, "--shard", f"{k}/2")) == 0
    merged = tmp_path / "merged"
    argv = ["--merge", *map(str, parts), "-o", str(merged)]
    root = str(Path(__file__).resolve().parents[1])
    killed = subprocess.run([sys.executable, "-c", KILLED_MERGE.format(root=root), *argv], capture_output=True, timeout=300)
    assert killed.returncode == -9 and (merged / PREDICTIONS_FILE).exists() and not (merged / "report.html").exists()

    assert cli.run(predict_script.main, [*predict_args(work, merged), "--resume"]) == 2
    assert "holds a predict.py --merge that did not finish (killed?): run the same --merge again" in capsys.readouterr().err
    assert cli.run(predict_script.main, ["--merge", str(merged), str(parts[0]), "-o", str(tmp_path / "m3")]) == 2
    assert "a --merge that did not finish (killed?)" in capsys.readouterr().err

    assert cli.run(predict_script.main, argv) == 0
    assert (merged / "report.html").is_file() and not (merged / ".merging.json").exists()
    assert len(rows_of(merged)) == len(rows_of(parts[0])) + len(rows_of(parts[1]))
