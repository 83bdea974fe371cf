"""benchmark.py end to end on a tiny generated dataset, its JSON, its final line and its bad input."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import re
import shutil
from pathlib import Path

import pytest
from sklearn.metrics import roc_auc_score

import benchmark as benchmark_script
import test as test_script
from autoencoder import cli
from autoencoder.image_size import ImageSize
from processing.data.demo import make_demo_dataset
from processing.workflow.benchmarking import (
    FINAL_KEYS,
    BenchmarkConfig,
    RunSpec,
    expand_grid,
    final_line,
    select_best,
)

SIZE = 32


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "tiles"
    make_demo_dataset(root, image_size=SIZE, n_train=24, n_test_good=8, n_test_defect=5, texture="brick", seed=2)
    return root


@pytest.fixture(scope="module")
def benchmarked(dataset, tmp_path_factory):
    """Two configurations (ssim and l2 loss), 1 epoch each; returns (stdout, JSON path, work folder)."""
    work = tmp_path_factory.mktemp("bench")
    argv = [
        "-d", str(dataset), "-a", "mvtecCAE", "-l", "ssim", "l2", "--image-sizes", str(SIZE),
        "--epochs", "1", "--lr", "1e-3", "--seed", "5", "--smoothing", "1",
        "--output-dir", str(work / "results"), "--models-dir", str(work / "models"),
    ]
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        path = benchmark_script.main(argv)
    return buffer.getvalue(), Path(path), work


def parse_final_line(line: str) -> dict:
    pairs = dict(part.split("=", 1) for part in line.split())
    return {key: float(value) for key, value in pairs.items()}


def test_prints_final_line_with_all_six_keys(benchmarked):
    stdout, _, _ = benchmarked
    last = stdout.strip().splitlines()[-1]
    values = parse_final_line(last)
    assert list(values) == list(FINAL_KEYS)
    for key in ("image_auroc", "pixel_auroc", "aupro", "balanced_accuracy"):
        assert 0.0 <= values[key] <= 1.0, (key, values[key])
    assert values["train_s"] > 0 and values["infer_ms_per_image"] > 0


def test_prints_a_table_per_configuration_and_defect_type(benchmarked, dataset):
    stdout, _, _ = benchmarked
    for name in ("mvtecCAE-ssim-32", "mvtecCAE-l2-32"):
        assert f"== {name} " in stdout
    defect_types = sorted(p.name for p in (dataset / "test").iterdir() if p.name != "good")
    for defect_type in defect_types:
        # one row per defect type in each of the two tables
        assert len(re.findall(rf"^{defect_type}\s", stdout, flags=re.M)) == 2
    assert len(re.findall(r"^all\s", stdout, flags=re.M)) == 2
    assert "nan" not in re.findall(r"^all\s+(\S+)", stdout, flags=re.M)  # the image count is printed
    assert not re.search(r"\bnan\b", stdout)


def test_json_records_config_metrics_timings_and_versions(benchmarked, dataset):
    stdout, path, work = benchmarked
    assert path.parent == work / "results" / "benchmarks"
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")], "temporary file left behind"
    result = json.loads(path.read_text())
    assert result["config"]["seed"] == 5 and result["config"]["epochs"] == 1
    assert result["config"]["learning_rate"] == pytest.approx(1e-3)
    assert [run["name"] for run in result["runs"]] == ["mvtecCAE-ssim-32", "mvtecCAE-l2-32"]
    assert {"tensorflow", "keras", "numpy"} <= set(result["versions"])
    for run in result["runs"]:
        assert run["method"] == {"ssim": "ssim", "l2": "l2"}[run["loss"]]
        assert run["training"]["epochs_run"] == 1
        # the summary is the test result of the run, not a recomputation
        tested = json.loads((Path(run["test_dir"]) / "test_result.json").read_text())
        assert run["summary"]["image_auroc"] == tested["image_auroc"]
        assert run["summary"]["infer_ms_per_image"] == tested["ms_per_image"]
        assert Path(run["model_folder"]).parent.parent.parent.parent == work / "models"
        assert set(run["timings_s"]) == {"train_total_s", "finetune_s", "test_s"}
    # the best run is the one with the best finetuning-subset numbers, and the last line is its line
    keys = [(run["finetuning"]["image_auroc"], run["finetuning"]["best_score"]) for run in result["runs"]]
    assert result["best_index"] == keys.index(max(keys))
    assert stdout.strip().splitlines()[-1] == result["final_line"] == final_line(result["runs"][result["best_index"]])


def test_smoothing_reaches_finetuning_and_test(benchmarked):
    _, path, _ = benchmarked
    for run in json.loads(path.read_text())["runs"]:
        assert run["finetuning"]["smoothing_sigma"] == 1.0
        assert json.loads((Path(run["finetuning_dir"]) / "finetuning_result.json").read_text())["smoothing_sigma"] == 1.0
        assert run["test"]["smoothing_sigma"] == 1.0


def test_finetuning_auroc_matches_test_scores_of_the_finetuning_images(benchmarked, tmp_path):
    """Reference: test.py's own scores of the finetuning images (--include-finetune) and sklearn."""
    _, path, work = benchmarked
    run = json.loads(path.read_text())["runs"][0]
    results = tmp_path / "results"
    shutil.copytree(work / "results", results)
    test_script.main(["-p", run["model_folder"], "--include-finetune", "--overwrite", "--results-dir", str(results)])
    relative = Path(run["test_dir"]).relative_to(work / "results")
    rows = list(csv.DictReader(open(results / relative / "classification.csv")))
    tuned = set(json.loads((Path(run["finetuning_dir"]) / "finetuning_result.json").read_text())["finetuning_files"])
    rows = [row for row in rows if row["file"] in tuned]
    assert len(rows) == len(tuned) == run["finetuning"]["n_finetune"]
    expected = roc_auc_score([int(row["truth"]) for row in rows], [float(row["score"]) for row in rows])
    assert run["finetuning"]["image_auroc"] == pytest.approx(expected, abs=1e-12)


def run_record(score, auroc=math.nan, **summary):
    base = dict.fromkeys(FINAL_KEYS, 0.5)
    return {"finetuning": {"best_score": score, "image_auroc": auroc}, "summary": base | summary}


def test_select_best_uses_finetuning_subset_only():
    # the second run has better test metrics but worse finetuning numbers: it must not be chosen
    runs = [run_record(0.6, 0.8, image_auroc=0.6), run_record(0.7, 0.7, image_auroc=0.99), run_record(math.nan)]
    assert select_best(runs) == 0
    assert select_best([run_record(0.9, 0.6), run_record(0.5, 0.6)]) == 0  # equal AUROC: balanced accuracy decides
    assert select_best([run_record(0.5, 0.6), run_record(0.9, 0.6)]) == 1
    assert select_best([run_record(math.nan), run_record(0.1)]) == 1
    assert select_best([run_record(0.5, 0.7), run_record(0.5, 0.7)]) == 0  # full ties: the earlier run


def test_final_line_format():
    line = final_line(run_record(0.5, image_auroc=0.91234, aupro=math.nan, train_s=12.34, infer_ms_per_image=3.21))
    assert line == ("image_auroc=0.912 pixel_auroc=0.500 aupro=n/a balanced_accuracy=0.500 balanced_accuracy_ratio=0.500 "
                    "train_s=12.3 infer_ms_per_image=3.2")


def test_expand_grid_is_the_cartesian_product_without_repeats(dataset):
    config = BenchmarkConfig(input_dir=str(dataset), architectures=["mvtecCAE", "baselineCAE"],
                             losses=["ssim", "l2", "ssim"], image_sizes=[32, 64])
    specs = expand_grid(config)
    assert len(specs) == 2 * 2 * 2 == len(set(specs))
    assert specs[0] == RunSpec("mvtecCAE", "ssim", ImageSize(32, 32)) and specs[-1] == RunSpec("baselineCAE", "l2", ImageSize(64, 64))


@pytest.mark.parametrize(
    "extra, message",
    [
        (["-a", "noSuchNet"], "--architecture 'noSuchNet'"),
        (["--image-sizes", "30"], "--image-sizes 30"),
        (["--epochs", "-1"], "--epochs -1"),
        (["-l", "mssim"], "mssim"),
        (["--smoothing", "-1"], "--smoothing -1"),
    ],
)
def test_bad_flags_give_one_line_errors(dataset, tmp_path, capsys, extra, message):
    argv = ["-d", str(dataset), "--output-dir", str(tmp_path / "r"), "--models-dir", str(tmp_path / "m"), *extra]
    assert cli.run(benchmark_script.main, argv) == 2
    err = re.split(r"[\r\n]", capsys.readouterr().err.strip())[-1]
    assert err.startswith("error: ") and message in err
    assert not (tmp_path / "m").exists() and not (tmp_path / "r").exists()


def test_missing_dataset_is_a_one_line_error(tmp_path, capsys):
    argv = ["-d", str(tmp_path / "nowhere"), "--output-dir", str(tmp_path / "r")]
    assert cli.run(benchmark_script.main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and "nowhere" in err


def test_quick_overrides_size_epochs_and_learning_rate():
    args = benchmark_script.parse_args(["-d", "x", "--quick", "--epochs", "9", "--image-sizes", "128", "-l", "l2"])
    config = benchmark_script.config_from_args(args)
    assert (config.epochs, config.image_sizes, config.learning_rate) == (2, [32], 1e-3)
    assert config.losses == ["l2"]  # other flags are kept
