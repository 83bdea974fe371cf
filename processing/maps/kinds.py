"""Map kinds: the registry of anomaly maps, and map specs such as ``padim+knn``.

A map kind (``ssim``, ``l2``, ``feature``, ``padim``, ``knn``, ...) declares everything the rest
of the toolkit needs to know about one anomaly map, so that finetuning, test, predict, export and
benchmark never test map names:

- ``model_output``: the models it applies to (``"reconstruction"``: pixel autoencoders; ``"map"``:
  models that output their own anomaly map, e.g. featureCAE), as info.json's ``model.output``;
- ``source``: what it is computed from, shared by the kinds of one batch (a registered
  :class:`MapSource`: ``"output"``, the model's output; ``"features"``, a featureCAE's
  standardised feature grid);
- ``dtypes`` and ``value_range`` (the range of its float64 maps; None: unbounded);
- its decision defaults (``image_score``, ``clear_border``) and the training losses it matches;
- whether it is fitted on the training images (``state_file``: its fitted arrays beside the
  finetuning result), and how: :meth:`MapKind.fit`, :meth:`MapKind.load_state`;
- :meth:`MapKind.maps`: a batch of images and its source -> maps (N, H, W) at the input size;
- :meth:`MapKind.graph`: the same map as tensor ops, for export.py (or a one-line refusal).

A spec (:func:`parse_map_spec`) is one kind or the mean of several (``a+b``), each standardised by
its mean and standard deviation over the validation images (:func:`fit_combination`,
:func:`combine_maps`). Kinds register with :func:`register_map_kind`; importing
``processing.maps`` registers the built-in ones. Nothing here imports TensorFlow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from autoencoder.errors import UserError

MAP_DTYPES = ("float64", "uint8")
MODEL_OUTPUTS = ("reconstruction", "map")
IMAGE_SCORES = ("component", "max")
COMBINED_IMAGE_SCORE = "max"  # combined maps are standardised, unbounded: scored like feature maps
COMBINED_CLEAR_BORDER = False


class MapKind:
    """One anomaly map; subclasses set the class attributes and implement :meth:`maps`."""

    name: ClassVar[str]
    model_output: ClassVar[str]
    source: ClassVar[str] = "output"
    dtypes: ClassVar[tuple[str, ...]] = ("float64",)
    value_range: ClassVar[tuple[float, float] | None] = None
    image_score: ClassVar[str] = "max"  # the default image score of its maps
    clear_border: ClassVar[bool] = False  # the default border rule of its maps
    matches_losses: ClassVar[tuple[str, ...]] = ()  # the map of a model trained with these losses
    default_for_losses: ClassVar[tuple[str, ...]] = ()  # finetune.py's map for these losses when -m is not given
    state_file: ClassVar[str | None] = None  # fitted kinds: their arrays in the finetuning folder
    # Fitted kinds that can take more training images later (add_good.py): the file beside the
    # state holding the running sums (:meth:`Fitter.running_sums`) that :meth:`resume` continues.
    sums_file: ClassVar[str | None] = None
    needs_training: ClassVar[bool] = False  # meaningless on a model train.py did not train (--epochs 0)
    description: ClassVar[str] = ""

    @property
    def fitted(self) -> bool:
        return self.state_file is not None

    @property
    def bounded(self) -> bool:
        return self.value_range is not None

    def maps(self, images: np.ndarray, source: np.ndarray, dtype: str, state=None) -> np.ndarray:
        """Maps (N, H, W) of a batch of model inputs (N, H, W, C), given its `source` values."""
        raise NotImplementedError

    def fit(self, source: np.ndarray, seed: int):
        """The fitted state (an object with ``save(path)``) from the training images' source values."""
        raise NotImplementedError(f"map {self.name} is not fitted")

    def fitter(self, seed: int) -> Fitter:
        """What fits the state batch by batch (``update(source_batch)``, then ``state()``). This
        default keeps every batch and calls :meth:`fit` on them together; a kind whose fit can
        stream (padim's sums, knn's bounded pool) overrides it, so memory does not grow with the
        number of training images."""
        return CollectingFitter(self, seed)

    def load_state(self, path):
        raise NotImplementedError(f"map {self.name} is not fitted")

    def resume(self, sums: dict, seed: int, source: str, state) -> Fitter:
        """A fitter that continues from the running sums of an earlier fit (read from `source`),
        checked to be those of `state`, the fitted state saved beside them: updated with more
        images, its state equals a fit on the earlier and the new images together."""
        raise UserError(f"{self.name} maps cannot take more training images without a new fit")

    def lifted(self, state) -> dict[str, np.ndarray]:
        """{state attribute: array} of the fitted arrays too large to be constants of an export graph
        (padim's inverse covariances: 220 MB at 256 px), in the form :meth:`graph` accepts in their
        place: the ONNX export feeds them in as inputs while it converts, then stores them as the
        model's weights (processing/workflow/export.py). None by default."""
        return {}

    def graph(self, images, source, state, dtype):
        """The map (N, H, W) as tensor ops of the input batch and its source; `dtype` the compute type."""
        raise UserError(f"{self.name} maps have no graph for export.py yet")


@dataclass(frozen=True)
class MapSource:
    """What map kinds are computed from. ``bind(keras_model)`` -> ``f(images, batch_size)`` giving
    the source values of a batch (computed once per batch for all kinds of a spec);
    ``tensor(keras_model)`` -> ``g(images_tensor)`` for export graphs."""

    name: str
    bind: Callable
    tensor: Callable


_KINDS: dict[str, MapKind] = {}
_SOURCES: dict[str, MapSource] = {}


class Fitter:
    """Fits a map kind's state on the training images' source values, one batch at a time."""

    def update(self, source: np.ndarray) -> None:
        raise NotImplementedError

    def state(self):
        raise NotImplementedError

    def running_sums(self) -> dict[str, np.ndarray] | None:
        """What :meth:`MapKind.resume` continues from, as plain arrays; None when the kind cannot."""
        return None


class CollectingFitter(Fitter):
    """Keeps every batch and fits on all of them at the end (for kinds that need every value at once)."""

    def __init__(self, kind: MapKind, seed: int):
        self.kind, self.seed, self.batches = kind, seed, []

    def update(self, source: np.ndarray) -> None:
        self.batches.append(np.asarray(source))

    def state(self):
        return self.kind.fit(np.concatenate(self.batches), self.seed)


def register_map_kind(cls: type[MapKind]) -> type[MapKind]:
    """Class decorator: make a map kind available by its ``name`` (``-m NAME``)."""
    if cls.name in _KINDS:
        raise ValueError(f"map kind {cls.name!r} is registered twice")
    if "+" in cls.name or ":" in cls.name:
        raise UserError(f"map kind {cls.name!r}: '+' and ':' are reserved for combinations and partners")
    if cls.model_output not in MODEL_OUTPUTS or cls.image_score not in IMAGE_SCORES:
        raise UserError(f"map kind {cls.name!r}: model_output or image_score out of {MODEL_OUTPUTS} / {IMAGE_SCORES}")
    _KINDS[cls.name] = cls()
    return cls


def register_map_source(source: MapSource) -> MapSource:
    if source.name in _SOURCES:
        raise ValueError(f"map source {source.name!r} is registered twice")
    _SOURCES[source.name] = source
    return source


def map_kind_names() -> list[str]:
    """The registered kinds, in registration order."""
    return list(_KINDS)


def get_map_kind(name: str, flag: str = "--method") -> MapKind:
    if name not in _KINDS:
        raise UserError(f"{flag} {name!r}: expected one of {', '.join(_KINDS)}")
    return _KINDS[name]


def get_map_source(name: str) -> MapSource:
    return _SOURCES[name]


def kinds_for_model(model_output: str) -> list[str]:
    return [name for name, kind in _KINDS.items() if kind.model_output == model_output]


def either(names: list[str]) -> str:
    """'a', 'a or b', 'a, b or c'."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def default_kind_for_loss(loss: str | None) -> str | None:
    """The kind that declares itself the default map of `loss`; None when none does."""
    for name, kind in _KINDS.items():
        if loss in kind.default_for_losses:
            return name
    return None


def default_map_for_loss(loss: str | None) -> str:
    """finetune.py's map when -m is not given, for a model trained with `loss` (ssim otherwise)."""
    return default_kind_for_loss(loss) or "ssim"


def matching_map_for_loss(loss: str) -> str:
    """The map a model trained with `loss` was trained to make small (ssim for ssim/mssim, l2, feature)."""
    for name, kind in _KINDS.items():
        if loss in kind.matches_losses:
            return name
    raise UserError(f"--losses {loss!r}: expected some of {', '.join(losses_with_maps())}")


# What finetune.py -m auto tries, by the model's output (ties go to the earlier candidate):
# featureCAE's two densities, its own map and two combinations; for a pixel autoencoder both residual maps.
AUTO_CANDIDATES = {"map": ("padim", "knn", "feature", "padim+knn", "feature+padim"), "reconstruction": ("l2", "ssim")}


def auto_candidates(model_output: str, trained: bool = True) -> list[str]:
    """-m auto's candidates for a model; an untrained one (train.py --epochs 0) skips maps that need training."""
    return [spec for spec in AUTO_CANDIDATES[model_output] if trained or not parse_map_spec(spec).needs_training]


def losses_with_maps() -> list[str]:
    return [loss for kind in _KINDS.values() for loss in kind.matches_losses]


@dataclass(frozen=True)
class MapSpec:
    """One map kind, or the standardised mean of several (``padim+knn``)."""

    kinds: tuple[MapKind, ...]

    @property
    def name(self) -> str:
        return "+".join(kind.name for kind in self.kinds)

    @property
    def names(self) -> list[str]:
        return [kind.name for kind in self.kinds]

    @property
    def combined(self) -> bool:
        return len(self.kinds) > 1

    @property
    def bounded(self) -> bool:
        """Whether the maps have a fixed range (one bounded kind; a combination is standardised)."""
        return not self.combined and self.kinds[0].bounded

    @property
    def model_output(self) -> str:
        return self.kinds[0].model_output

    @property
    def sources(self) -> list[str]:
        return list(dict.fromkeys(kind.source for kind in self.kinds))

    @property
    def needs_training(self) -> bool:
        return any(kind.needs_training for kind in self.kinds)

    @property
    def fitted_kinds(self) -> list[MapKind]:
        return [kind for kind in self.kinds if kind.fitted]

    @property
    def image_score(self) -> str:
        return COMBINED_IMAGE_SCORE if self.combined else self.kinds[0].image_score

    @property
    def clear_border(self) -> bool:
        return COMBINED_CLEAR_BORDER if self.combined else self.kinds[0].clear_border

    def value_range(self, dtype: str = "float64") -> tuple[float, float] | None:
        """The range maps of `dtype` take: (0, 255) for uint8 maps, the kind's own for float64, None when unbounded."""
        if not self.bounded:
            return None
        return (0, 255) if dtype == "uint8" else self.kinds[0].value_range

    def check_dtype(self, dtype: str) -> None:
        """The -t/--dtype flag: one line naming the flag when the maps cannot take `dtype`."""
        if dtype not in MAP_DTYPES:
            raise UserError(f"--dtype {dtype!r}: expected one of {', '.join(MAP_DTYPES)}")
        if dtype != "float64" and (not self.bounded or dtype not in self.kinds[0].dtypes):
            raise UserError(f"--method {self.name} maps are unbounded: use --dtype float64, not {dtype}")

    def check_model(self, model_output: str, trained: bool = True) -> None:
        """One line when a kind does not apply to a model whose info.json says ``model.output``, or
        needs a trained network and the model holds only its statistics (`trained` False)."""
        for kind in self.kinds:
            if kind.needs_training and not trained:
                untrained = [name for name in kinds_for_model(model_output) if not _KINDS[name].needs_training]
                raise UserError(
                    f"--method {self.name}: the model was not trained (train.py --epochs 0 fits only its feature statistics), so its "
                    f"own map means nothing; use --method {either(untrained)}, or train it with --epochs N"
                )
            if kind.model_output == model_output:
                continue
            suitable = either(kinds_for_model(model_output))
            if model_output == "map":
                raise UserError(
                    f"--method {self.name}: the model outputs its anomaly map, not a reconstruction of its input; use --method {suitable}"
                )
            raise UserError(
                f"--method {self.name}: needs a featureCAE model (train.py -a featureCAE); this model reconstructs pixels, use {suitable}"
            )


def parse_map_spec(text, flag: str = "--method") -> MapSpec:
    """``"padim"`` or ``"padim+knn"`` -> MapSpec; ValueError (one line, naming `flag`) otherwise."""
    if not isinstance(text, str) or not text:
        raise UserError(f"{flag} {text!r}: expected a map name ({', '.join(_KINDS)}) or several joined by +")
    names = text.split("+")
    for name in names:
        if name not in _KINDS:
            what = f"{text!r}" if name == text else f"{text}: {name!r}"
            raise UserError(f"{flag} {what}: expected one of {', '.join(_KINDS)}, or several joined by + (e.g. padim+knn)")
    kinds = tuple(_KINDS[name] for name in names)
    if len(set(names)) != len(names):
        raise UserError(f"{flag} {text}: a map is listed twice")
    if len({kind.model_output for kind in kinds}) > 1:
        raise UserError(f"{flag} {text}: combines maps of pixel autoencoders with maps of feature models")
    return MapSpec(kinds)


def method_argument(text: str) -> str:
    """argparse ``type`` of -m/--method: a map spec; the parser's one-line error otherwise."""
    import argparse

    try:
        parse_map_spec(text, flag="")
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).strip()) from None
    return text


def method_or_auto_argument(text: str) -> str:
    """argparse ``type`` of finetune.py -m: a map spec or ``auto``."""
    return text if text == "auto" else method_argument(text)


def is_map_spec(text) -> bool:
    try:
        parse_map_spec(text)
    except ValueError:
        return False
    return True


def check_method_dtype(method: str, dtype: str) -> MapSpec:
    """The --method/--dtype flags of finetune.py and test.py; returns the parsed spec."""
    spec = parse_map_spec(method)
    spec.check_dtype(dtype)
    return spec


def fit_combination(component_maps: dict[str, np.ndarray]) -> dict[str, tuple[float, float]]:
    """Mean and standard deviation of each component's validation maps (every pixel pooled)."""
    return {name: (float(maps.mean()), float(max(maps.std(), 1e-12))) for name, maps in component_maps.items()}


def combine_maps(component_maps: dict[str, np.ndarray], combination: dict[str, tuple[float, float]]) -> np.ndarray:
    """The mean of the components' maps, each standardised by its validation mean and std."""
    total = None
    for name, maps in component_maps.items():
        mean, std = combination[name]
        standardized = (maps - mean) / std
        total = standardized if total is None else total + standardized
    return total / len(component_maps)
