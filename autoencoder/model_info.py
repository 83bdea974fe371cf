"""A model folder's info.json as a typed record, parsed and checked once when the folder is opened.

train.py writes info.json (processing/workflow/model_info.py builds it); everything else reads a
:class:`ModelInfo`: ``info.model.image_size``, ``info.dataset.path``, ``info.training.loss``, never
a key of the JSON object. The fields and their checks use the same mechanism as the finetuning
results (autoencoder/fields.py), so a file that is valid JSON but not what train.py wrote (a key
removed, a list, a string where a number belongs) is reported in one line naming the file and the
first bad key, instead of a KeyError deep in the workflow.

``schema_version`` 1 is the layout train.py has written from the start; folders written before
the field existed have no ``schema_version`` and are read as version 1. Keys that later versions
of train.py added (``dataset.validation_files``, ``training.lr_finder_suggestion``, ``model.tile``,
``model.output``, the ``adversarial`` section) are optional, with the value older folders meant.

Version 2 adds what a model folder was made from, byte for byte: ``model.sha256`` (of the
``.keras`` file train.py saved; bundle.py checks it before loading) and ``dataset.content`` (the
content hash of the dataset, processing/data/fingerprint.py; ``--data-dir`` is checked against
it). Both are required from version 2 on; a version-1 folder without them is read as before.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

from autoencoder import fields as f
from autoencoder.errors import UserError
from autoencoder.image_size import ImageSize

SCHEMA_VERSION = 2
COLOR_MODES = ("grayscale", "rgb")
CHANNELS = {"grayscale": 1, "rgb": 3}
MODEL_OUTPUTS = ("reconstruction", "map")


class InfoSchemaError(UserError):
    """info.json is not what train.py writes."""


def is_path_component(value) -> bool:
    """One plain folder name: no separator, not '.', '..' or absolute, no NUL or control character."""
    return (isinstance(value, str) and value not in ("", ".", "..") and "/" not in value and "\\" not in value
            and not any(ord(c) < 32 for c in value) and len(value) <= 255)


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_sha256(value) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _rule(predicate, expected: str) -> f.Check:
    def check(value):
        if not predicate(value):
            raise f.FieldError(f"expected {expected}")
        return value

    return check


# The checks of info.json's values (what each message says was expected).
STR = _rule(lambda v: isinstance(v, str) and v != "", "a non-empty string")
# Names that become folders of the results tree (results/<dataset>/<architecture>/<loss>/...).
PATH_COMPONENT = _rule(is_path_component, "one folder name (no '/', '\\', '..' or control characters)")
INT = _rule(_is_int, "an integer")
POSITIVE_INT = _rule(lambda v: _is_int(v) and v > 0, "a positive integer")
COUNT = _rule(lambda v: _is_int(v) and v >= 0, "a count (integer >= 0)")
NUMBER = _rule(lambda v: f.is_number(v) and math.isfinite(v), "a number")
NUMBER_OR_NULL = _rule(lambda v: v is None or (f.is_number(v) and math.isfinite(v)), "a number or null")
FRACTION = _rule(lambda v: f.is_number(v) and math.isfinite(v) and 0 <= v < 1, "a fraction in [0, 1)")
BOOL = _rule(lambda v: isinstance(v, bool), "true or false")
DICT = _rule(lambda v: isinstance(v, dict), "an object")
LIST = _rule(lambda v: isinstance(v, list), "a list")
STR_LIST = _rule(lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of strings")
COLOR_MODE = _rule(lambda v: v in COLOR_MODES, f"one of {', '.join(COLOR_MODES)}")
MODEL_OUTPUT = _rule(lambda v: v in MODEL_OUTPUTS, f"one of {', '.join(MODEL_OUTPUTS)}")
VALUE_RANGE = _rule(lambda v: isinstance(v, list) and len(v) == 2 and all(f.is_number(x) and math.isfinite(x) for x in v) and v[0] < v[1],
                    "[low, high] numbers")
COUNTS = _rule(lambda v: isinstance(v, dict) and all(isinstance(k, str) and _is_int(n) and n >= 0 for k, n in v.items()),
               "an object of image counts per class")
SHA256 = _rule(lambda v: _is_sha256(v), "a SHA-256 (64 hex digits)")
FOLDER_HASHES = _rule(lambda v: isinstance(v, dict) and all(isinstance(k, str) and _is_sha256(h) for k, h in v.items()),
                      "an object of SHA-256 per folder")


@dataclass(frozen=True)
class DatasetContent:
    sha256: str = f.checked(SHA256)
    n_files: int = f.checked(COUNT)
    bytes: int = f.checked(COUNT)
    folders: dict = f.checked(FOLDER_HASHES)


@dataclass(frozen=True)
class DatasetInfo:
    """What the model was trained on, and how its validation images were split off."""

    path: str = f.checked(STR)
    name: str = f.checked(PATH_COMPONENT)
    validation_split: float = f.checked(FRACTION)
    seed: int = f.checked(INT)
    n_train: int = f.checked(COUNT)
    n_validation: int = f.checked(COUNT)
    n_test: dict = f.checked(COUNTS)
    validation_files: list | None = f.checked(STR_LIST, optional=True)
    content: DatasetContent | None = f.checked(f.nested(DatasetContent), optional=True)  # required from version 2


def _image_size(value) -> ImageSize:
    if not (isinstance(value, dict) or (_is_int(value) and value > 0)):
        raise f.FieldError('expected a positive integer or {"width": W, "height": H}')
    try:
        return ImageSize.of(value)
    except UserError:
        raise f.FieldError('expected a positive integer or {"width": W, "height": H} of positive integers') from None


IMAGE_SIZE = _image_size


@dataclass(frozen=True)
class TileSpec:
    """train.py --tile: square tiles of `size` pixels overlapping by `overlap` (processing/data/tiles.py)."""

    size: int = f.checked(POSITIVE_INT)
    overlap: int = f.checked(COUNT)


@dataclass(frozen=True)
class RoiSpec:
    """The region of interest stored with the model (train.py --roi; processing/data/roi.py)."""

    file: str = f.checked(PATH_COMPONENT)
    coverage: float = f.checked(_rule(lambda v: f.is_number(v) and 0 < v <= 1, "a fraction in (0, 1]"))
    source: str | None = f.checked(STR, optional=True)


@dataclass(frozen=True)
class ModelSection:
    """The network: architecture, its input, and the .keras file."""

    architecture: str = f.checked(PATH_COMPONENT)
    file: str = f.checked(PATH_COMPONENT)
    color_mode: str = f.checked(COLOR_MODE)
    image_size: ImageSize = f.checked(IMAGE_SIZE)  # a side, or {"width": W, "height": H}
    channels: int = f.checked(POSITIVE_INT)
    value_range: list = f.checked(VALUE_RANGE)
    preprocessing: str = f.checked(STR)
    has_bottleneck: bool = f.checked(BOOL)
    parameters: int = f.checked(COUNT)
    sha256: str | None = f.checked(SHA256, optional=True)  # required from version 2
    output: str = f.checked(MODEL_OUTPUT, default="reconstruction")  # what the network outputs
    tile: TileSpec | None = f.checked(f.nested(TileSpec), optional=True)
    options: dict = f.checked(DICT, default_factory=dict)  # architecture options (featureCAE's backbone, ...)
    color_mode_from: str | None = f.checked(STR, optional=True)
    roi: RoiSpec | None = f.checked(f.nested(RoiSpec), optional=True)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.image_size.height, self.image_size.width, self.channels)


@dataclass(frozen=True)
class TrainingInfo:
    loss: str = f.checked(PATH_COMPONENT)
    batch_size: int = f.checked(POSITIVE_INT)
    epochs_cap: int = f.checked(COUNT)  # 0: featureCAE's statistics only (train.py --epochs 0)
    epochs_run: int = f.checked(COUNT)
    best_epoch: int = f.checked(COUNT)
    lr_finder: bool = f.checked(BOOL)
    max_lr: float | None = f.checked(NUMBER_OR_NULL)  # null: nothing trained (--epochs 0)
    base_lr: float | None = f.checked(NUMBER_OR_NULL)
    augment: bool = f.checked(BOOL)
    seconds: float = f.checked(NUMBER)
    best: dict = f.checked(DICT)
    lr_finder_suggestion: float | None = f.checked(NUMBER_OR_NULL, optional=True)


def _location_scale(value):
    if not (isinstance(value, dict) and f.is_number(value.get("median")) and f.is_number(value.get("scale"))):
        raise f.FieldError("expected an object with numbers median and scale")
    return value


@dataclass(frozen=True)
class ScoreCalibration:
    reconstruction_error: dict = f.checked(_location_scale)
    negative_log_likelihood: dict = f.checked(_location_scale)


@dataclass(frozen=True)
class AdversarialInfo:
    """train.py --adversarial (processing/workflow/adversarial_training.py)."""

    latent_dim: int = f.checked(POSITIVE_INT)
    prior_std: float = f.checked(NUMBER)
    reject_every: int = f.checked(COUNT)
    reject_fraction: float | None = f.checked(NUMBER_OR_NULL)
    reject_by: str = f.checked(STR)
    rejection_rule: str = f.checked(STR)
    rounds: list = f.checked(LIST)
    n_rejected: int = f.checked(COUNT)
    discriminator_file: str = f.checked(STR)
    score_calibration: ScoreCalibration = f.checked(f.nested(ScoreCalibration))


ABSOLUTE_PATHS = _rule(lambda v: isinstance(v, list) and all(isinstance(x, str) and x.startswith("/") and "\0" not in x for x in v),
                       "a list of absolute paths")


@dataclass(frozen=True)
class LineageInfo:
    """add_good.py: the model folder this one was made from, and the defect-free images added to the
    training images since train.py (every one so far, in order; the fitted maps are fitted on them too)."""

    parent: str = f.checked(STR)
    added_good: list = f.checked(ABSOLUTE_PATHS)
    added_last: int = f.checked(COUNT)  # how many of them the last add_good.py run added
    created: str = f.checked(STR)
    command: str = f.checked(STR)
    continued_training: dict | None = f.checked(DICT, optional=True)  # add_good.py --epochs: how the network was trained further


@dataclass(frozen=True)
class ModelInfo:
    """A model folder's info.json, typed; ``raw`` keeps the JSON object it was read from."""

    created: str = f.checked(STR)
    command: str = f.checked(STR)
    settings: dict = f.checked(DICT)
    dataset: DatasetInfo = f.checked(f.nested(DatasetInfo))
    model: ModelSection = f.checked(f.nested(ModelSection))
    training: TrainingInfo = f.checked(f.nested(TrainingInfo))
    versions: dict = f.checked(DICT)
    adversarial: AdversarialInfo | None = f.checked(f.nested(AdversarialInfo), optional=True)
    lineage: LineageInfo | None = f.checked(f.nested(LineageInfo), optional=True)
    schema_version: int = f.checked(POSITIVE_INT, default=1)  # absent: written before the field existed
    raw: dict = field(default_factory=dict, init=False, compare=False, repr=False)

    @property
    def was_trained(self) -> bool:
        """Whether train.py trained the network, not only fitted its statistics (--epochs 0)."""
        return self.training.epochs_run > 0

    @property
    def tiled(self) -> bool:
        return self.model.tile is not None

    def to_json(self) -> dict:
        """The JSON object it was read from (train.py's keys, in train.py's order)."""
        return self.raw


# Keys required from a schema version on (absent from older folders, then not checked).
REQUIRED_FROM = {"dataset.content": 2, "model.sha256": 2}


def _describe(value) -> str:
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{text} ({type(value).__name__})"


def parse(data) -> ModelInfo:
    """The ModelInfo of an info.json object; InfoSchemaError saying what is wrong (without the file name)."""
    if not isinstance(data, dict):
        raise InfoSchemaError(f"holds {type(data).__name__ if data is not None else 'null'}; expected the object train.py writes")
    version = data.get("schema_version", 1)
    if not _is_int(version) or version < 1:
        raise InfoSchemaError(f"'schema_version' is {_describe(version)}; expected a positive integer")
    if version > SCHEMA_VERSION:
        raise InfoSchemaError(f"has schema_version {version}; this version of the toolkit reads up to {SCHEMA_VERSION} "
                              "(written by a newer train.py?)")
    try:
        info = ModelInfo(**f.parse_fields(ModelInfo, data))
    except f.MissingField as error:
        raise InfoSchemaError(f"'{error.key}' missing") from None
    except f.FieldError as error:
        value = f.value_at(data, error.key)
        expected = str(error).removeprefix("expected ")
        raise InfoSchemaError(f"'{error.key}' is {_describe(value)}; expected {expected}") from None
    object.__setattr__(info, "raw", data)
    for dotted, since in REQUIRED_FROM.items():
        section, key = dotted.split(".")
        if version >= since and getattr(getattr(info, section), key) is None:
            raise InfoSchemaError(f"'{dotted}' missing")
    channels = CHANNELS[info.model.color_mode]
    if info.model.channels != channels:
        raise InfoSchemaError(f"'model.channels' is {info.model.channels} but 'model.color_mode' {info.model.color_mode!r} has {channels}")
    if info.dataset.validation_files is not None and len(info.dataset.validation_files) != info.dataset.n_validation:
        raise InfoSchemaError("'dataset.validation_files' does not hold 'dataset.n_validation' files")
    return info


def check_info(data, path) -> ModelInfo:
    """The ModelInfo of `data` when it has train.py's schema; else InfoSchemaError naming `path` and the first bad key."""
    try:
        return parse(data)
    except InfoSchemaError as error:
        raise InfoSchemaError(f"{path}: {error}; not an info.json written by train.py") from None
