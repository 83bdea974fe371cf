"""A trained model on disk: its folder, the `.keras` file and `info.json`.

train.py writes `saved_models/<dataset>/<architecture>/<loss>/<timestamp>/` holding
`<architecture>_b<batch>_e<best epoch>.keras` and `info.json` (everything finetune.py and test.py
need to rebuild the same preprocessing and splits). The folder is written under a temporary name and
renamed when complete, so a folder with that layout is always a whole model (autoencoder/folders.py:
two runs of the same second get `<timestamp>` and `<timestamp>_2`, never one folder).

Keras is imported only where a model is built or loaded: reading and checking a model folder
(:func:`resolve_model_path`, :func:`read_info`) needs no TensorFlow, so the scripts check their
flags before paying for its start-up.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from autoencoder.errors import UserError
from autoencoder.folders import file_sha256, staging_folder, timestamp, write_bytes_atomic  # noqa: F401  (part of this module's interface)
from autoencoder.model_info import ModelInfo, check_info, is_path_component

if TYPE_CHECKING:
    import keras

logger = logging.getLogger(__name__)

INFO_FILE = "info.json"
MODEL_SUFFIX = ".keras"


class ModelPathError(UserError):
    """A model path that does not point at a model written by train.py."""


@dataclass
class ModelBundle:
    """A loaded model with the settings it was trained with."""

    model: keras.Model
    info: ModelInfo
    folder: Path
    model_file: Path
    sha256: str | None = None  # of model_file, when the folder was opened with open_model_folder

    @property
    def model_sha256(self) -> str:
        """The SHA-256 of the .keras file (computed once)."""
        if self.sha256 is None:
            self.sha256 = file_sha256(self.model_file)
        return self.sha256

    @property
    def dataset_name(self) -> str:
        return self.info.dataset.name

    def results_dir(self, results_root: str | os.PathLike = "results") -> Path:
        """`results/<dataset>/<architecture>/<loss>/<model folder>/`."""
        return results_dir_of(self.info, self.folder, results_root)

    def encoder(self) -> keras.Model:
        """The model up to its bottleneck layer (the latent code)."""
        import keras

        from autoencoder.models import BOTTLENECK_LAYER

        try:
            bottleneck = self.model.get_layer(BOTTLENECK_LAYER)
        except ValueError:
            raise ModelPathError(
                f"{self.model_file}: architecture {self.info.model.architecture} has no "
                f"'{BOTTLENECK_LAYER}' layer"
            ) from None
        return keras.Model(self.model.inputs, bottleneck.output)


def results_dir_of(info: ModelInfo, folder: str | os.PathLike, results_root: str | os.PathLike = "results") -> Path:
    """`results/<dataset>/<architecture>/<loss>/<model folder>/` of a model folder and its info.json.

    Each name is one folder name (model_info checks it when info.json is read; checked again here
    for the folder's own name), so the folder is always inside `results_root`."""
    names = (info.dataset.name, info.model.architecture, info.training.loss, Path(folder).name)
    for key, name in zip(("dataset.name", "model.architecture", "training.loss", "the model folder's name"), names):
        if not is_path_component(name):
            raise ModelPathError(f"{Path(folder) / INFO_FILE}: {key} {name!r}: expected one folder name (no '/', '..'): "
                                 "results are written under --results-dir only")
    return Path(results_root).joinpath(*names)


def model_folder(root: str | os.PathLike, dataset_name: str, architecture: str, loss: str, stamp: str) -> Path:
    return Path(root) / dataset_name / architecture / loss / stamp


def model_file_name(architecture: str, batch_size: int, best_epoch: int) -> str:
    return f"{architecture}_b{batch_size}_e{best_epoch}{MODEL_SUFFIX}"


def environment_versions() -> dict:
    import keras
    import numpy
    import tensorflow

    return {
        "python": platform.python_version(),
        "tensorflow": tensorflow.__version__,
        "keras": keras.__version__,
        "keras_backend": keras.backend.backend(),
        "numpy": numpy.__version__,
    }


def write_json(path: str | os.PathLike, data: dict) -> Path:
    """Write JSON through a temporary file so a reader never sees half of it.

    NaN (a metric that could not be computed) is written as ``null``, never as the non-standard ``NaN``.
    """
    text = json.dumps(_nan_to_none(data), indent=2, default=_json_default) + "\n"
    return write_bytes_atomic(path, text.encode())


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


def resolve_model_path(path: str | os.PathLike, flag: str = "--path") -> tuple[Path, Path]:
    """Return (model folder, .keras file) for a model folder or a .keras file inside one; errors name `flag`."""
    path = Path(path)
    if not path.exists():
        raise ModelPathError(f"{flag} {path} not found: expected a model folder written by train.py or its .keras file")
    if path.is_file():
        if path.suffix != MODEL_SUFFIX:
            raise ModelPathError(f"{flag} {path}: expected a {MODEL_SUFFIX} file or a model folder written by train.py")
        folder, model_file = path.parent, path
    else:
        folder = path
        candidates = sorted(folder.glob(f"*{MODEL_SUFFIX}"))
        if len(candidates) != 1:
            found = "no" if not candidates else f"{len(candidates)}"
            raise ModelPathError(
                f"{flag} {folder}: found {found} {MODEL_SUFFIX} files; expected one model folder written by train.py"
            )
        model_file = candidates[0]
    if not (folder / INFO_FILE).is_file():
        raise ModelPathError(f"{flag} {path}: {folder / INFO_FILE} missing; not a model folder written by train.py")
    return folder, model_file


def read_info(folder: str | os.PathLike) -> ModelInfo:
    """The model folder's info.json, checked against the schema train.py writes (one-line error)."""
    path = Path(folder) / INFO_FILE
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ModelPathError(f"{path} is not valid JSON: {error}") from None
    except UnicodeDecodeError:
        raise ModelPathError(f"{path} is not a text file: not an info.json written by train.py") from None
    return check_info(info, path)


def check_model_file(model_file: Path, info: ModelInfo) -> str:
    """The .keras file is the one train.py saved: a .keras archive whose SHA-256 is info.json's
    ``model.sha256`` (folders written before schema version 2 record none: not compared). No
    TensorFlow: the scripts run this before importing it. Returns the file's SHA-256."""
    model_file = Path(model_file)
    if not zipfile.is_zipfile(model_file):
        size = model_file.stat().st_size
        raise ModelPathError(
            f"cannot load model {model_file}: not a .keras archive ({size} bytes; truncated or corrupt?)"
        )
    config = keras_config(model_file)  # read once: the saved model's name and input, without TensorFlow
    saved_as = config.get("name")
    from autoencoder.models import available_architectures  # the registry: no TensorFlow

    known, architecture = set(available_architectures()), info.model.architecture
    if saved_as in known and architecture in known and saved_as != architecture:
        raise ModelPathError(f"{Path(model_file).parent / INFO_FILE}: model.architecture {architecture!r}, but {model_file.name} holds a "
                             f"{saved_as}: edited by hand? restore it or train again")
    recorded, digest = info.model.sha256, file_sha256(model_file)
    if recorded is not None and digest != recorded:
        raise ModelPathError(
            f"{model_file}: not the model train.py saved in this folder (its SHA-256 differs from model.sha256 in "
            f"{Path(model_file).parent / INFO_FILE}): replaced or changed since training; restore it or train again"
        )
    shape = keras_input_shape(config)
    expected = info.model.input_shape
    if shape is not None and shape != expected:
        raise shape_mismatch(model_file, shape, expected)
    return digest


def keras_config(model_file: Path) -> dict:
    """The "config" of a .keras archive's config.json ({} when it cannot be read)."""
    try:
        with zipfile.ZipFile(model_file) as archive:
            config = json.loads(archive.read("config.json"))
    except (KeyError, ValueError, OSError, zipfile.BadZipFile):
        return {}
    inner = config.get("config") if isinstance(config, dict) else None
    return inner if isinstance(inner, dict) else {}


def keras_input_shape(config: dict) -> tuple | None:
    """(H, W, C) of a functional model's first input layer, from its .keras config (:func:`keras_config`)."""
    layers = config.get("layers")
    if not isinstance(layers, list) or not layers or not isinstance(layers[0], dict) or layers[0].get("class_name") != "InputLayer":
        return None
    shape = (layers[0].get("config") or {}).get("batch_shape")
    if not isinstance(shape, list) or len(shape) != 4:
        return None
    return tuple(shape[1:])


def check_model_shape(model, model_file: Path, info: ModelInfo) -> None:
    """The loaded model takes the input info.json describes (height x width x channels)."""
    expected = info.model.input_shape
    shape = tuple(getattr(model, "input_shape", (None,))[1:])
    if shape != expected:
        raise shape_mismatch(model_file, shape, expected)


def _described(shape) -> str:
    """(H, W, C) as the toolkit writes sizes: WIDTHxHEIGHT px, C channel(s)."""
    if len(shape) != 3:
        return "x".join(map(str, shape))
    height, width, channels = shape
    return f"{width}x{height} px, {channels} channel{'s' if channels != 1 else ''}"


def shape_mismatch(model_file: Path, shape, expected) -> ModelPathError:
    return ModelPathError(
        f"{model_file}: takes inputs of {_described(shape)}, but {Path(model_file).parent / INFO_FILE} (model.image_size, "
        f"model.channels) describes {_described(expected)}: not the model of this folder"
    )


@dataclass(frozen=True)
class ModelFolder:
    """A model folder opened and checked, before TensorFlow: its info.json parsed, its .keras file
    the one train.py saved (hashed once). :func:`load_bundle` loads the network from it."""

    folder: Path
    model_file: Path
    info: ModelInfo
    sha256: str  # of model_file, hashed once


def open_model_folder(path: str | os.PathLike, flag: str = "--path") -> ModelFolder:
    """The checked model folder of a folder or its .keras file (errors name `flag`); no TensorFlow."""
    folder, model_file = resolve_model_path(path, flag)
    info = read_info(folder)
    if info.model.roi is not None and not (folder / info.model.roi.file).is_file():
        raise ModelPathError(f"{folder / INFO_FILE}: model.roi names {info.model.roi.file}, which is not in the folder: restore it or "
                             "train again")
    return ModelFolder(folder, model_file, info, check_model_file(model_file, info))


def load_bundle(path: str | os.PathLike | ModelFolder) -> ModelBundle:
    """Load a model written by train.py from its folder or its .keras file (checked against info.json),
    or from a folder already opened (:func:`open_model_folder`: not read or hashed again)."""
    opened = path if isinstance(path, ModelFolder) else open_model_folder(path)
    model = load_model_file(opened.model_file)
    check_model_shape(model, opened.model_file, opened.info)
    logger.info("loaded %s", opened.model_file)
    return ModelBundle(model=model, info=opened.info, folder=opened.folder, model_file=opened.model_file, sha256=opened.sha256)


def load_model_file(model_file: Path) -> keras.Model:
    """The Keras model of a .keras file (every architecture's custom layers and the toolkit's losses
    registered first); ModelPathError naming the file when it cannot be loaded."""
    model_file = Path(model_file)
    if not zipfile.is_zipfile(model_file):
        raise ModelPathError(
            f"cannot load model {model_file}: not a .keras archive ({model_file.stat().st_size} bytes; truncated or corrupt?)"
        )
    import keras

    import autoencoder.losses  # noqa: F401  (registers the losses and metrics a saved model refers to)
    from autoencoder.models import import_custom_layers

    import_custom_layers()  # the architectures' own layers (featureCAE's), which a saved model refers to
    try:
        return keras.models.load_model(model_file, compile=False)
    except Exception as error:  # keras raises many types for a bad file
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelPathError(f"cannot load model {model_file} (corrupt, or not saved by train.py): {first_line}") from None
