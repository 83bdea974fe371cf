"""The schema of a model folder's info.json, as train.py writes it, and its check.

finetune.py, test.py and benchmark.py read the model's settings from info.json; a file that is
valid JSON but not what train.py wrote (a key removed, a list, a string where a number belongs)
is reported in one line naming the file and the first bad key, instead of a KeyError deep in the
workflow.

``schema_version`` 1 is the layout train.py has written from the start; folders written before
the field existed have no ``schema_version`` and are read as version 1. Keys that later versions
of train.py added (``dataset.validation_files``, ``training.lr_finder_suggestion``, the
``adversarial`` section) are checked when present.

Version 2 adds what a model folder was made from, byte for byte: ``model.sha256`` (of the
``.keras`` file train.py saved; bundle.py checks it before loading) and ``dataset.content`` (the
content hash of the dataset, processing/data/fingerprint.py; ``--data-dir`` is checked against
it). Both are required from version 2 on; a version-1 folder without them is read as before.
"""

from __future__ import annotations

import math
import numbers

SCHEMA_VERSION = 2
COLOR_MODES = ("grayscale", "rgb")


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


# Each check: (predicate, what was expected).
STR = (lambda v: isinstance(v, str) and v != "", "a non-empty string")


def is_path_component(value) -> bool:
    """One plain folder name: no separator, not '.', '..' or absolute, no NUL or control character."""
    return (isinstance(value, str) and value not in ("", ".", "..") and "/" not in value and "\\" not in value
            and not any(ord(c) < 32 for c in value) and len(value) <= 255)


# Names that become folders of the results tree (results/<dataset>/<architecture>/<loss>/...).
PATH_COMPONENT = (is_path_component, "one folder name (no '/', '\\', '..' or control characters)")
INT = (_is_int, "an integer")
POSITIVE_INT = (lambda v: _is_int(v) and v > 0, "a positive integer")
COUNT = (lambda v: _is_int(v) and v >= 0, "a count (integer >= 0)")
NUMBER = (_is_number, "a number")
NUMBER_OR_NULL = (lambda v: v is None or _is_number(v), "a number or null")
FRACTION = (lambda v: _is_number(v) and 0 <= v < 1, "a fraction in [0, 1)")
BOOL = (lambda v: isinstance(v, bool), "true or false")
DICT = (lambda v: isinstance(v, dict), "an object")
LIST = (lambda v: isinstance(v, list), "a list")
STR_LIST = (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of strings")
COLOR_MODE = (lambda v: v in COLOR_MODES, f"one of {', '.join(COLOR_MODES)}")
VALUE_RANGE = (lambda v: isinstance(v, list) and len(v) == 2 and all(_is_number(x) for x in v) and v[0] < v[1], "[low, high] numbers")
COUNTS = (
    lambda v: isinstance(v, dict) and all(isinstance(k, str) and _is_int(n) and n >= 0 for k, n in v.items()),
    "an object of image counts per class",
)
SHA256 = (lambda v: isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v), "a SHA-256 (64 hex digits)")
FOLDER_HASHES = (
    lambda v: isinstance(v, dict) and all(isinstance(k, str) and SHA256[0](h) for k, h in v.items()),
    "an object of SHA-256 per folder",
)
LOCATION_SCALE = (
    lambda v: isinstance(v, dict) and _is_number(v.get("median")) and _is_number(v.get("scale")),
    "an object with numbers median and scale",
)

# key -> check, or a nested schema for an object. Keys in OPTIONAL are checked only when present.
SCHEMA = {
    "created": STR,
    "command": STR,
    "settings": DICT,
    "dataset": {
        "path": STR,
        "name": PATH_COMPONENT,
        "validation_split": FRACTION,
        "seed": INT,
        "n_train": COUNT,
        "n_validation": COUNT,
        "n_test": COUNTS,
        "validation_files": STR_LIST,
        "content": {"sha256": SHA256, "n_files": COUNT, "bytes": COUNT, "folders": FOLDER_HASHES},
    },
    "model": {
        "architecture": PATH_COMPONENT,
        "file": PATH_COMPONENT,
        "color_mode": COLOR_MODE,
        "image_size": POSITIVE_INT,
        "channels": POSITIVE_INT,
        "value_range": VALUE_RANGE,
        "preprocessing": STR,
        "has_bottleneck": BOOL,
        "parameters": COUNT,
        "sha256": SHA256,
    },
    "training": {
        "loss": PATH_COMPONENT,
        "batch_size": POSITIVE_INT,
        "epochs_cap": COUNT,  # 0: featureCAE's statistics only (train.py --epochs 0)
        "epochs_run": COUNT,
        "best_epoch": COUNT,
        "lr_finder": BOOL,
        "lr_finder_suggestion": NUMBER_OR_NULL,
        "max_lr": NUMBER_OR_NULL,  # null: nothing trained (--epochs 0)
        "base_lr": NUMBER_OR_NULL,
        "augment": BOOL,
        "seconds": NUMBER,
        "best": DICT,
    },
    "versions": DICT,
    # train.py --adversarial (processing/workflow/adversarial_training.py)
    "adversarial": {
        "latent_dim": POSITIVE_INT,
        "prior_std": NUMBER,
        "reject_every": COUNT,
        "reject_fraction": NUMBER_OR_NULL,
        "reject_by": STR,
        "rejection_rule": STR,
        "rounds": LIST,
        "n_rejected": COUNT,
        "discriminator_file": STR,
        "score_calibration": {
            "reconstruction_error": LOCATION_SCALE,
            "negative_log_likelihood": LOCATION_SCALE,
        },
    },
}
OPTIONAL = {"dataset.validation_files", "training.lr_finder_suggestion", "adversarial"}
# Keys required from a schema version on (absent from older folders, then not checked).
REQUIRED_FROM = {"dataset.content": 2, "model.sha256": 2}


class InfoSchemaError(ValueError):
    """info.json is not what train.py writes."""


def _describe(value) -> str:
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{text} ({type(value).__name__})"


def _check(data: dict, schema: dict, prefix: str, version: int) -> str | None:
    for key, rule in schema.items():
        dotted = f"{prefix}{key}"
        if key not in data:
            if dotted in OPTIONAL or version < REQUIRED_FROM.get(dotted, 1):
                continue
            return f"'{dotted}' missing"
        value = data[key]
        if isinstance(rule, dict):
            if not isinstance(value, dict):
                return f"'{dotted}' is {_describe(value)}; expected an object"
            problem = _check(value, rule, dotted + ".", version)
            if problem:
                return problem
        elif not rule[0](value):
            return f"'{dotted}' is {_describe(value)}; expected {rule[1]}"
    return None


def info_problem(info) -> str | None:
    """The first way `info` differs from what train.py writes, in words; None when it does not."""
    if not isinstance(info, dict):
        return f"holds {type(info).__name__ if info is not None else 'null'}; expected the object train.py writes"
    version = info.get("schema_version", 1)
    if not _is_int(version) or version < 1:
        return f"'schema_version' is {_describe(version)}; expected a positive integer"
    if version > SCHEMA_VERSION:
        return f"has schema_version {version}; this version of the toolkit reads up to {SCHEMA_VERSION} (written by a newer train.py?)"
    problem = _check(info, SCHEMA, "", version)
    if problem:
        return problem
    channels = {"grayscale": 1, "rgb": 3}[info["model"]["color_mode"]]
    if info["model"]["channels"] != channels:
        return f"'model.channels' is {info['model']['channels']} but 'model.color_mode' {info['model']['color_mode']!r} has {channels}"
    if info["dataset"].get("validation_files") is not None and len(info["dataset"]["validation_files"]) != info["dataset"]["n_validation"]:
        return "'dataset.validation_files' does not hold 'dataset.n_validation' files"
    return None


def check_info(info, path) -> dict:
    """Return `info` when it has train.py's schema; else raise InfoSchemaError naming `path` and the first bad key."""
    problem = info_problem(info)
    if problem:
        raise InfoSchemaError(f"{path}: {problem}; not an info.json written by train.py")
    return info
