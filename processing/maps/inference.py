"""Run a model over image files in batches and turn its output into maps of one map kind.

The model's output is the ``output`` map source (processing/maps/kinds.py) of the pixel maps and
of the maps a model makes itself.
"""

from __future__ import annotations

import logging

import numpy as np

from autoencoder.image_size import ImageSize
from autoencoder.progress import progress_bar
from processing.data.images import iter_batches
from processing.maps.kinds import MapKind, MapSource, MapSpec, get_map_kind, get_map_source, register_map_source

logger = logging.getLogger(__name__)


def reconstruct(model, images: np.ndarray, batch_size: int) -> np.ndarray:
    """The model's output for one batch; a short last batch is padded so the graph is traced once."""
    n = len(images)
    if n < batch_size:
        padding = np.zeros((batch_size - n, *images.shape[1:]), dtype=images.dtype)
        images = np.concatenate([images, padding])
    return np.asarray(model.predict_on_batch(images), dtype=np.float32)[:n]


register_map_source(MapSource(
    "output",
    bind=lambda model: (lambda images, batch_size: reconstruct(model, images, batch_size)),
    tensor=lambda model: (lambda images: model(images, training=False)),
))


def compute_resmaps(model, paths, color_mode, size, method, dtype, batch_size: int = 16) -> np.ndarray:
    """All maps of kind `method` (one computed from the model's output) of `paths` as one (N, H, W) array."""
    kind = get_map_kind(method)
    batches = [
        kind.maps(images, reconstruct(model, images, batch_size), dtype)
        for _, images in iter_batches(paths, color_mode, size, batch_size)
    ]
    if not batches:
        return np.zeros((0, *ImageSize.of(size)), dtype=np.uint8 if dtype == "uint8" else np.float64)
    return np.concatenate(batches)


def bind_sources(spec: MapSpec, model) -> dict[str, object]:
    """{source name: f(images, batch_size)} of the sources the spec's kinds are computed from."""
    return {name: get_map_source(name).bind(model) for name in spec.sources}


def source_values(sources: dict, images: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
    """Each source's values for one batch, computed once for all kinds."""
    return {name: compute(images, batch_size) for name, compute in sources.items()}


def fit_states(kinds: list[MapKind], model, batches, batch_size: int, seed: int, total: int | None = None) -> dict:
    """{kind name: fitted state} of the fitted `kinds`, each fitted on the source values of the
    training images: `batches` is a function returning an iterable of (N, S, S, C) model inputs
    (called once per source; `total` inputs, for the progress bar). Each batch's source values go to
    every kind's fitter and are dropped: memory does not grow with the number of training images
    (MapKind.fitter)."""
    fitters = {kind.name: kind.fitter(seed) for kind in kinds}
    run_fitters(fitters, kinds, model, batches, batch_size, total)
    return {name: fitter.state() for name, fitter in fitters.items()}


def run_fitters(fitters: dict, kinds: list[MapKind], model, batches, batch_size: int, total: int | None = None) -> None:
    """Update each fitter ({kind name: Fitter} of `kinds`) with the source values of every batch of
    model inputs `batches()` gives, one pass over the images per source."""
    by_source: dict[str, list[MapKind]] = {}
    for kind in kinds:
        by_source.setdefault(kind.source, []).append(kind)
    for name, group in by_source.items():
        compute = get_map_source(name).bind(model)
        count, shape = 0, None
        with progress_bar(total=total, desc=f"fitting {'+'.join(kind.name for kind in group)}", unit="input") as bar:
            for images in batches():
                values = compute(images, batch_size)
                for kind in group:
                    fitters[kind.name].update(values)
                count, shape = count + len(values), values.shape[1:]
                bar.update(len(images))
        for kind in group:
            logger.info("%s: fitted on %d training inputs (%s of shape %s)", kind.name, count, name, tuple(shape or ()))
