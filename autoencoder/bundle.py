"""A trained model on disk: its folder, the `.keras` file and `info.json`.

train.py writes `saved_models/<dataset>/<architecture>/<loss>/<timestamp>/` holding
`<architecture>_b<batch>_e<best epoch>.keras` and `info.json` (everything finetune.py and test.py
need to rebuild the same preprocessing and splits). The folder is written under a temporary name and
renamed when complete, so a folder with that layout is always a whole model.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import shutil
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import keras

import autoencoder.losses  # noqa: F401  (registers the losses and metrics a saved model refers to)
from autoencoder.models import BOTTLENECK_LAYER

logger = logging.getLogger(__name__)

INFO_FILE = "info.json"
MODEL_SUFFIX = ".keras"


class ModelPathError(ValueError):
    """A model path that does not point at a model written by train.py."""


@dataclass
class ModelBundle:
    """A loaded model with the settings it was trained with."""

    model: keras.Model
    info: dict
    folder: Path
    model_file: Path

    @property
    def dataset_name(self) -> str:
        return self.info["dataset"]["name"]

    def results_dir(self, results_root: str | os.PathLike = "results") -> Path:
        """`results/<dataset>/<architecture>/<loss>/<model folder>/`."""
        return (
            Path(results_root)
            / self.dataset_name
            / self.info["model"]["architecture"]
            / self.info["training"]["loss"]
            / self.folder.name
        )

    def encoder(self) -> keras.Model:
        """The model up to its bottleneck layer (the latent code)."""
        try:
            bottleneck = self.model.get_layer(BOTTLENECK_LAYER)
        except ValueError:
            raise ModelPathError(
                f"{self.model_file}: architecture {self.info['model']['architecture']} has no "
                f"'{BOTTLENECK_LAYER}' layer"
            ) from None
        return keras.Model(self.model.inputs, bottleneck.output)


def timestamp() -> str:
    return datetime.now().strftime("%Y-%m-%d_%H-%M-%S")


def model_folder(root: str | os.PathLike, dataset_name: str, architecture: str, loss: str, stamp: str) -> Path:
    return Path(root) / dataset_name / architecture / loss / stamp


def model_file_name(architecture: str, batch_size: int, best_epoch: int) -> str:
    return f"{architecture}_b{batch_size}_e{best_epoch}{MODEL_SUFFIX}"


def environment_versions() -> dict:
    import numpy
    import tensorflow

    return {
        "python": platform.python_version(),
        "tensorflow": tensorflow.__version__,
        "keras": keras.__version__,
        "keras_backend": keras.backend.backend(),
        "numpy": numpy.__version__,
    }


@contextmanager
def staging_folder(final: Path, replace: bool = False):
    """Yield a temporary sibling of `final`; rename it to `final` if the block succeeds.

    On any error the temporary folder is removed, so no half-written folder is left behind. With
    `replace`, an existing `final` is swapped out only once the new folder is complete.
    """
    final = Path(final)
    if final.exists() and not replace:
        raise FileExistsError(f"{final} already exists: refusing to overwrite it")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def write_json(path: str | os.PathLike, data: dict) -> Path:
    """Write JSON through a temporary file so a reader never sees half of it.

    NaN (a metric that could not be computed) is written as ``null``, never as the non-standard ``NaN``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(_nan_to_none(data), indent=2, default=_json_default) + "\n")
    os.replace(tmp, path)
    return path


def _nan_to_none(value):
    if isinstance(value, dict):
        return {key: _nan_to_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(item) for item in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy arrays and scalars
        return _nan_to_none(value.tolist())
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _json_default(value):
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def command_line() -> str:
    return " ".join([Path(sys.executable).name, *sys.argv])


def resolve_model_path(path: str | os.PathLike) -> tuple[Path, Path]:
    """Return (model folder, .keras file) for a model folder or a .keras file inside one."""
    path = Path(path)
    if not path.exists():
        raise ModelPathError(f"--path {path} not found: expected a model folder written by train.py or its .keras file")
    if path.is_file():
        if path.suffix != MODEL_SUFFIX:
            raise ModelPathError(f"--path {path}: expected a {MODEL_SUFFIX} file or a model folder written by train.py")
        folder, model_file = path.parent, path
    else:
        folder = path
        candidates = sorted(folder.glob(f"*{MODEL_SUFFIX}"))
        if len(candidates) != 1:
            found = "no" if not candidates else f"{len(candidates)}"
            raise ModelPathError(
                f"--path {folder}: found {found} {MODEL_SUFFIX} files; expected one model folder written by train.py"
            )
        model_file = candidates[0]
    if not (folder / INFO_FILE).is_file():
        raise ModelPathError(f"--path {path}: {folder / INFO_FILE} missing; not a model folder written by train.py")
    return folder, model_file


def read_info(folder: str | os.PathLike) -> dict:
    path = Path(folder) / INFO_FILE
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ModelPathError(f"{path} is not valid JSON: {error}") from None


def load_bundle(path: str | os.PathLike) -> ModelBundle:
    """Load a model written by train.py from its folder or its .keras file."""
    folder, model_file = resolve_model_path(path)
    info = read_info(folder)
    try:
        model = keras.models.load_model(model_file, compile=False)
    except Exception as error:  # keras raises many types for a bad file
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelPathError(f"cannot load model {model_file}: {first_line}") from None
    logger.info("loaded %s", model_file)
    return ModelBundle(model=model, info=info, folder=folder, model_file=model_file)
