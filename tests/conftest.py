import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("MPLBACKEND", "Agg")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SHARED_DATASETS = ROOT.parent / "shared" / "datasets"


import shutil  # noqa: E402

import pytest  # noqa: E402

SHARED_SIZE = 32


@pytest.fixture(scope="session")
def finetuned_model_tree(tmp_path_factory) -> Path:
    """One small finetuned model for the test files that need *some* model to predict or serve
    with (built once per test process instead of once per file): a 32 px l2 mvtecCAE trained one
    epoch on a brick demo set (`tiles/`), finetuned (`results/`), with min_area 5 and the median
    test score as threshold, so that both verdicts, masks and boxes occur. Read-only: a module
    that writes beside it takes :func:`copy_model_tree`."""
    import json

    import numpy as np

    import finetune
    import train
    from autoencoder import bundle
    from processing.data.demo import make_demo_dataset
    from processing.data.images import load_image
    from processing.workflow.results import load_detector

    root = tmp_path_factory.mktemp("shared_model")
    make_demo_dataset(root / "tiles", image_size=SHARED_SIZE, n_train=24, n_test_good=8, n_test_defect=4, texture="brick", seed=6)
    folder = train.main(["-d", str(root / "tiles"), "-a", "mvtecCAE", "-l", "l2", "-b", "8", "--image-size", str(SHARED_SIZE),
                         "--epochs", "1", "--lr", "1e-3", "--output-dir", str(root / "models")])
    out = finetune.main(["-p", str(folder), "--results-dir", str(root / "results")])
    result = json.loads((out / "finetuning_result.json").read_text())
    result["best_min_area"] = 5
    (out / "finetuning_result.json").write_text(json.dumps(result))
    detector = load_detector(bundle.load_bundle(folder), out)
    paths = sorted((root / "tiles" / "test").rglob("*.png"))
    scores = detector.score(np.stack([load_image(path, "grayscale", SHARED_SIZE) for path in paths])).image_scores
    result["best_threshold"] = float(np.median(scores[scores > detector.no_defect_score]))
    (out / "finetuning_result.json").write_text(json.dumps(result))
    (root / "model_folder.txt").write_text(str(folder.relative_to(root)))
    return root


def copy_model_tree(shared: Path, destination: Path) -> tuple[Path, Path]:
    """A module's own copy of :func:`finetuned_model_tree` (dataset, model folder, results):
    (the copy's root, its model folder). The copy's info.json still names the shared dataset,
    which nobody writes to."""
    shutil.copytree(shared, destination)
    return destination, destination / (shared / "model_folder.txt").read_text()


@pytest.fixture(scope="module")
def finetuned_copy(finetuned_model_tree, tmp_path_factory, request) -> tuple[Path, Path]:
    """The calling module's own copy of :func:`finetuned_model_tree`: (root, model folder)."""
    return copy_model_tree(finetuned_model_tree, tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2]) / "tree")
