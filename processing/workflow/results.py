"""The results tree of a model: where its finetuning and test results live, and which there are.

    results/<dataset>/<architecture>/<loss>/<model folder>/
        finetuning/<name>/finetuning_result.json (+ the arrays its detector keeps beside it)
        test/<name>/test_result.json, classification.csv, segmentation/

``<name>`` is the detector's ``result_name`` (``ssim_float64``, ``padim+knn_float64``,
``kde_l2``). Folders whose name starts with a dot (staging) or that finetune.py/test.py
``--overwrite`` moved aside (``<name>.replaced-<time>``) are not results. finetune.py, test.py,
predict.py, export.py and benchmark.py list, name, choose and read results only through here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from autoencoder import bundle
from autoencoder.errors import UserError
from autoencoder.folders import is_replaced
from processing.detectors.base import RESULT_FILE, Detector, FinetuningResult, read_result

FINETUNING_DIR = "finetuning"
TEST_DIR = "test"


@dataclass(frozen=True)
class ResultsTree:
    """The results folder of one model (it need not exist yet)."""

    root: Path
    model_folder: Path

    @classmethod
    def of(cls, info, model_folder, results_root="results") -> ResultsTree:
        return cls(bundle.results_dir_of(info, model_folder, results_root), Path(model_folder))

    @classmethod
    def of_model(cls, model: bundle.ModelBundle, results_root="results") -> ResultsTree:
        return cls.of(model.info, model.folder, results_root)

    @property
    def finetuning_root(self) -> Path:
        return self.root / FINETUNING_DIR

    @property
    def test_root(self) -> Path:
        return self.root / TEST_DIR

    def finetuning_folder(self, name: str) -> Path:
        return self.finetuning_root / name

    def test_folder(self, name: str) -> Path:
        return self.test_root / name

    def finetuning_folders(self) -> dict[str, Path]:
        """{name: folder} of the finetuning results, sorted by name."""
        if not self.finetuning_root.is_dir():
            return {}
        return {
            folder.name: folder
            for folder in sorted(self.finetuning_root.iterdir())
            if folder.is_dir() and not folder.name.startswith(".") and not is_replaced(folder.name) and (folder / RESULT_FILE).is_file()
        }

    def missing(self, wanted: str = "") -> ValueError:
        return UserError(f"no finetuning result{wanted} in {self.finetuning_root}: run finetune.py -p {self.model_folder} first")

    def choose(self, name: str | None, flag: str = "-r/--result") -> tuple[str, Path]:
        """(name, folder) of the result to apply: `name`, or the model's only one."""
        found = self.finetuning_folders()
        if not found:
            raise self.missing()
        if name is None:
            if len(found) > 1:
                raise UserError(f"the model has {len(found)} finetuning results ({', '.join(found)}): choose one with {flag}")
            name = next(iter(found))
        elif name not in found:
            raise UserError(f"{flag} {name}: no such finetuning result of {self.model_folder}; it has {', '.join(found)}")
        return name, found[name]

    def select(self, method: str | None = None, dtype: str | None = None) -> list[tuple[Path, type[Detector], FinetuningResult]]:
        """The results whose map is `method` and whose maps are `dtype` (None: any), read and checked."""
        selected = []
        for folder in self.finetuning_folders().values():
            detector, result = read_result(folder)
            if result.matches(method, dtype):
                selected.append((folder, detector, result))
        if not selected:
            wanted = " for " + "_".join(part or "*" for part in (method, dtype)) if (method or dtype) else ""
            raise self.missing(wanted)
        return selected


def load_detector(model: bundle.ModelBundle, folder: Path, batch_size: int = 16) -> Detector:
    """The detector of the finetuning result in `folder`, ready to score images."""
    detector, result = read_result(folder)
    return detector.load(model, folder, result, batch_size)


def finetuning_record(folder: Path) -> dict:
    """Which finetuning result a test result or a prediction was made with: its folder, the SHA-256
    and the modification time of its finetuning_result.json."""
    path = Path(folder) / RESULT_FILE
    return {
        "folder": str(Path(folder).resolve()),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "modified": datetime.fromtimestamp(path.stat().st_mtime).isoformat(timespec="seconds"),
    }
