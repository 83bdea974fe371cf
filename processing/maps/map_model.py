"""The map model: a trained network that turns images into anomaly maps.

A map model is the trained network (a :class:`~autoencoder.bundle.ModelBundle`), the map spec it is
read with (processing/maps/kinds.py: ``ssim``, ``padim``, ``padim+knn``, ...), the fitted states of
the spec's fitted kinds (padim's Gaussians, knn's memory bank), the partner map models whose maps are
averaged in (``--combine-with``), the standardisation that combines them, the post-processing
(smoothing, per-pixel normalisation) and, for a model trained on tiles (``train.py --tile``), the
tiling. It gives each image's map: at the model's resolution, or for a tiled model at the image's
own size, stitched from its tiles. Detectors (processing/detectors/) decide on top of it; they never
see tiles, partners or the combination.

Everything tiling changes lives here: which inputs a file becomes (:meth:`MapModel.read_input`,
:meth:`MapModel.iter_inputs`), the shape of its map (:meth:`MapModel.map_shape`), the training
inputs states are fitted on, and what cannot be done with tiles (:func:`refuse_tiled`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from autoencoder import bundle
from autoencoder.errors import UserError
from autoencoder.image_size import ImageSize
from autoencoder.model_info import ModelInfo
from processing.data import splits
from processing.data.images import (
    image_size,
    iter_batches,
    load_image_and_original,
    load_whole_and_original,
    read_image,
    scan_dataset,
)
from processing.data.roi import read_roi, restrict_maps, roi_at
from processing.data.tiles import TileGrid, iter_originals, iter_tile_batches, stitch, tiles_of
from processing.maps.feature_arrays import load_arrays, save_arrays
from processing.maps.inference import bind_sources, fit_states, run_fitters, source_values
from processing.maps.kinds import (
    MapSpec,
    combine_maps,
    default_map_for_loss,
    fit_combination,
    get_map_source,
    is_map_spec,
    parse_map_spec,
)
from processing.maps.postprocess import PixelMoments, ResmapPostprocessor, check_smoothing_fits, smooth_resmaps

logger = logging.getLogger(__name__)

TILED_GRAPH_WHY = ("its maps are stitched from tiles at each image's own size, which one graph of a fixed input size cannot hold; "
                   "use predict.py or serve.py")
MAX_FIT_TILES = 4000  # tiles of the training images a fitted map (padim, knn) is fitted on, at most


def grid_of(model: bundle.ModelBundle) -> TileGrid | None:
    """The tile grid a model was trained on (None: whole resized images)."""
    tile = model.info.model.tile
    return None if tile is None else TileGrid(tile.size, tile.overlap)


def refuse_tiled(info: ModelInfo, what: str, why: str) -> None:
    """One line when `what` (a flag, a detector, an export) cannot work on a tiled model (`info`
    its info.json): `why`. Every such refusal is made here, from info.json alone (no TensorFlow)."""
    if info.tiled:
        raise UserError(f"{what}: not for a tiled model (train.py --tile {info.model.tile.size}): {why}")


def parse_partner(spec: str) -> tuple[str, str | None]:
    """--combine-with PATH[:METHOD] -> (PATH, METHOD, or None for the model's default map)."""
    path, _, method = spec.rpartition(":")
    if path and is_map_spec(method):
        return path, method
    return spec, None


@dataclass
class MapModel:
    """A trained network read through a map spec; see the module docstring."""

    model: bundle.ModelBundle
    spec: MapSpec
    dtype: str = "float64"
    states: dict = field(default_factory=dict)  # {kind name: fitted state}
    partners: list[MapModel] = field(default_factory=list)  # --combine-with map models (raw maps, float64)
    combination: dict = field(default_factory=dict)  # {component: (mean, std)} of combined maps
    postprocess: ResmapPostprocessor = field(default_factory=ResmapPostprocessor)
    batch_size: int = 16
    sums: dict = field(default_factory=dict)  # {kind name: running sums} of the kinds that can take more images (add_good.py)

    def __post_init__(self):
        self.sources = bind_sources(self.spec, self.model.model)
        self.grid = grid_of(self.model)
        self.roi = region_of(self.model)  # the region of interest stored with the model (None: every pixel)

    # ---- opening, fitting, saving ------------------------------------------------------------

    @classmethod
    def load(cls, model: bundle.ModelBundle, method: str, dtype: str, folder, *, partners=(), combination=None,
             smoothing_sigma: float = 0.0, normalize: str = "none", batch_size: int = 16) -> MapModel:
        """The map model a finetuning result saved in `folder` (fitted states, per-pixel statistics,
        partners' states in ``partner_<i>/``); `partners` the result's ``{"model", "method"}`` records."""
        spec = parse_map_spec(method)
        folder = Path(folder)
        states = {kind.name: load_state(kind, folder) for kind in spec.fitted_kinds}
        partner_models = [
            cls.load(bundle.load_bundle(record["model"]), record["method"], "float64", folder / f"partner_{index}", batch_size=batch_size)
            for index, record in enumerate(partners)
        ]
        return cls(model, spec, dtype, states, partner_models, {name: tuple(value) for name, value in (combination or {}).items()},
                   ResmapPostprocessor.from_finetuning(folder, smoothing_sigma, normalize), batch_size)

    @classmethod
    def fit(cls, model: bundle.ModelBundle, method: str, dtype: str, *, training_files: list, validation_files: list,
            smoothing_sigma: float = 0.0, normalize: str = "none", combine_with=(), batch_size: int = 16, seed: int = 42) -> MapModel:
        """Fit the spec's states on `training_files` (or their tiles), the --combine-with partners on
        their own training images, the combination on `validation_files` and, with ``normalize
        "pixel"``, the per-pixel statistics on the training images' smoothed maps."""
        spec = parse_map_spec(method)
        spec.check_model(model.info.model.output, model.info.was_trained)
        if normalize != "none":
            refuse_tiled(model.info, "--normalize pixel", "its images and maps have their own sizes")
        if combine_with:
            refuse_tiled(model.info, "--combine-with", "its images and maps have their own sizes")
        batches, total = training_inputs(model, training_files, batch_size, seed)
        fitters = {kind.name: kind.fitter(seed) for kind in spec.fitted_kinds}
        run_fitters(fitters, spec.fitted_kinds, model.model, batches, batch_size, total)
        maps = cls(model, spec, dtype, postprocess=ResmapPostprocessor(smoothing_sigma), batch_size=batch_size)
        maps.take_fits(fitters)
        maps.partners = [fit_partner(partner, model, batch_size, seed) for partner in combine_with]
        maps.fit_combination(validation_files)
        if normalize == "pixel":  # the training images' smoothed maps, batch by batch
            moments = PixelMoments()
            for _, images in iter_batches(training_files, maps.color_mode, maps.size, batch_size):
                moments.update(smooth_resmaps(maps.raw_maps(images), smoothing_sigma))
            maps.postprocess = ResmapPostprocessor(smoothing_sigma, *moments.statistics())
        return maps

    def take_fits(self, fitters: dict) -> None:
        """The states of fitters ({kind name: Fitter}) that have seen every training image, and the
        running sums of those that can take more images later (:meth:`with_training_images`)."""
        self.states = {name: fitter.state() for name, fitter in fitters.items()}
        self.sums = {name: sums for name, fitter in fitters.items() if (sums := fitter.running_sums()) is not None}

    def fit_combination(self, validation_files) -> None:
        """The mean and standard deviation of each component's maps on the validation images, which
        combined maps are standardised by (nothing to fit for a single map)."""
        if len(self.spec.kinds) + len(self.partners) > 1:
            self.combination = fit_combination(self.component_maps_of_files(validation_files))

    def with_training_images(self, folder, paths: list, seed: int) -> MapModel:
        """This map model with the images `paths` added to its training images: each fitted kind
        continues from the running sums its finetuning result kept in `folder`, so only the new images
        are read, and its state equals a fit on the earlier images and these together (add_good.py).
        The combination of a combined map is left to :meth:`fit_combination`."""
        check_growable(folder, self.spec, bool(self.partners), self.postprocess.normalization)
        fitters = {kind.name: kind.resume(load_arrays(Path(folder) / kind.sums_file, f"{kind.name}_sums", []), seed,
                                          str(Path(folder) / kind.sums_file), self.states[kind.name])
                   for kind in self.spec.fitted_kinds}
        batches, total = training_inputs(self.model, paths, self.batch_size, seed)
        run_fitters(fitters, self.spec.fitted_kinds, self.model.model, batches, self.batch_size, total)
        updated = replace(self, states={}, sums={}, combination={})
        updated.take_fits(fitters)
        return updated

    def save(self, folder) -> None:
        """The fitted states, their running sums, per-pixel statistics and partners' states into
        `folder` (:meth:`load` reads them)."""
        folder = Path(folder)
        self.postprocess.save_statistics(folder)
        for kind in self.spec.fitted_kinds:
            self.states[kind.name].save(folder / kind.state_file)
            if kind.name in self.sums:
                save_arrays(folder / kind.sums_file, f"{kind.name}_sums", self.sums[kind.name])
        for index, partner in enumerate(self.partners):
            (folder / f"partner_{index}").mkdir()
            partner.save(folder / f"partner_{index}")

    def partner_records(self) -> list[dict]:
        return [{"model": str(partner.model.folder), "method": partner.spec.name} for partner in self.partners]

    # ---- what a file becomes ---------------------------------------------------------------

    @property
    def size(self) -> ImageSize:
        """The model input (a tile, for a tiled model)."""
        return self.model.info.model.image_size

    @property
    def color_mode(self) -> str:
        return self.model.info.model.color_mode

    def read_input(self, path) -> tuple[np.ndarray, np.ndarray]:
        """(model input, original image) of one file: resized to the model, or for a tiled model
        the whole image at its own size (the tiles are cut when it is scored)."""
        if self.grid is not None:
            return load_whole_and_original(path, self.color_mode)
        return load_image_and_original(path, self.color_mode, self.size)

    def iter_inputs(self, paths):
        """(paths, model inputs) batch by batch: (N, H, W, C) resized images, or for a tiled model a
        list of whole images, each at its own size."""
        if self.grid is not None:
            yield from iter_originals(paths, self.color_mode, self.batch_size)
        else:
            yield from iter_batches(paths, self.color_mode, self.size, self.batch_size)

    @property
    def largest_area(self) -> int | None:
        """Pixels of the largest map (None: a tiled model's maps are as large as its images)."""
        return None if self.grid is not None else self.size.height * self.size.width

    def map_shape(self, path) -> tuple[int, int]:
        """(H, W) of the map of image file `path`: the model's, or a tiled model's image's own size."""
        return image_size(path) if self.grid is not None else tuple(self.size)

    # ---- maps ------------------------------------------------------------------------------

    def component_maps(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Each component's anomaly maps (N, H, W) of a batch of model inputs."""
        values = source_values(self.sources, images, self.batch_size)  # one model pass per source
        maps = {kind.name: kind.maps(images, values[kind.source], self.dtype, self.states.get(kind.name)) for kind in self.spec.kinds}
        for index, partner in enumerate(self.partners):
            partner_maps = partner.raw_maps(resize_images(images, partner.size))
            maps[f"partner_{index}"] = resize_maps(partner_maps, ImageSize(*images.shape[1:3]))
        return maps

    def raw_maps(self, images: np.ndarray) -> np.ndarray:
        """The anomaly maps (N, H, W) of a batch of model inputs (tiles), before post-processing."""
        maps = self.component_maps(images)
        if len(maps) == 1:
            return maps[self.spec.names[0]]
        return combine_maps(maps, self.combination)

    def maps(self, images) -> np.ndarray | list[np.ndarray]:
        """The post-processed maps of a batch of inputs (:meth:`iter_inputs`): (N, H, W), or for a
        tiled model a list of (H_i, W_i) maps, each at its image's own size; outside the region of
        interest each holds its lowest value inside it."""
        if self.grid is None:
            return self.restrict(self.postprocess(self.raw_maps(images)))
        return self.restrict([self.postprocess(self.stitched_map(image)[None])[0] for image in images])

    def restrict(self, maps):
        """`maps` with the region of interest applied (unchanged without one)."""
        return maps if self.roi is None else restrict_maps(maps, self.roi)

    def roi_mask(self, path) -> np.ndarray | None:
        """The region of interest at the shape of the map of image file `path` (None: every pixel)."""
        return None if self.roi is None else roi_at(self.roi, self.map_shape(path))

    def stitched_map(self, image: np.ndarray) -> np.ndarray:
        """The raw map (H, W) of one whole image of a tiled model: its tiles' maps, stitched."""
        tiles = tiles_of(image, self.grid)
        maps = np.concatenate([self.raw_maps(tiles[start:start + self.batch_size]) for start in range(0, len(tiles), self.batch_size)])
        return stitch(maps, self.grid, *image.shape[:2])

    def maps_of_files(self, paths) -> np.ndarray | list[np.ndarray]:
        """Post-processed maps of image files, as test.py makes them: (N, H, W), or a list for a tiled model."""
        if self.grid is None:
            return self.restrict(self.postprocess(self.raw_maps_of_files(paths)))
        return [resmap for _, images in self.iter_inputs(paths) for resmap in self.maps(images)]

    def component_maps_of_files(self, paths) -> dict[str, np.ndarray]:
        """Each component's maps of image files (of every tile of them, for a tiled model), pooled."""
        if self.grid is None:
            inputs = (images for _, images in self.iter_inputs(paths))
        else:
            inputs = iter_tile_batches(paths, self.color_mode, self.grid, self.batch_size)
        batches = [self.component_maps(images) for images in inputs]
        return {name: np.concatenate([batch[name] for batch in batches]) for name in batches[0]}

    def raw_maps_of_files(self, paths) -> np.ndarray:
        """The raw maps (N, H, W) of image files (not for a tiled model: their maps have their images' sizes)."""
        batches = [self.raw_maps(images) for _, images in iter_batches(paths, self.color_mode, self.size, self.batch_size)]
        return np.concatenate(batches) if batches else np.zeros((0, *self.size))

    # ---- export.py -------------------------------------------------------------------------

    def graph(self, name: str) -> MapModelGraph:
        """The raw maps and post-processing as tensor ops (export.py); one line when they cannot be one graph."""
        refuse_tiled(self.model.info, f"result {name}", TILED_GRAPH_WHY)
        return MapModelGraph(self, name)


class SpecGraph:
    """The raw maps of one model's map spec as tensor ops, at `size` (each map source computed once)."""

    def __init__(self, keras_model, spec: MapSpec, states: dict, size: ImageSize):
        self.spec, self.states, self.size = spec, states, size
        self.sources = {name: get_map_source(name).tensor(keras_model) for name in spec.sources}
        self.bound: dict = {}  # {"<kind>.<field>": tensor} of lifted state fields while a graph with them as inputs is traced

    def large_arrays(self) -> dict[str, np.ndarray]:
        """{"<kind>.<field>": array} of the states' fields too large to be graph constants (MapKind.lift_fields)."""
        return {f"{kind.name}.{name}": array
                for kind in self.spec.kinds if kind.name in self.states for name, array in kind.lifted(self.states[kind.name]).items()}

    def state_of(self, kind):
        """The fitted state of `kind` for tracing: with the tensors bound in place of its lifted arrays."""
        state = self.states.get(kind.name)
        head = f"{kind.name}."
        lifted = {key.removeprefix(head): tensor for key, tensor in self.bound.items() if key.startswith(head)}
        return replace(state, **lifted) if lifted else state

    def maps(self, images, dtype: str) -> dict:
        values = {name: compute(images) for name, compute in self.sources.items()}
        return {kind.name: kind.graph(images, values[kind.source], self.state_of(kind), dtype) for kind in self.spec.kinds}


class MapModelGraph:
    """A map model's maps (partners and combination included) and post-processing as keras.ops."""

    def __init__(self, maps: MapModel, name: str):
        self.size, self.postprocess, self.combination = maps.size, maps.postprocess, maps.combination
        self.roi = None if maps.roi is None else roi_at(maps.roi, tuple(maps.size))
        self.graphs = [("", SpecGraph(maps.model.model, maps.spec, maps.states, self.size))]
        self.models = [maps.model.model]
        for index, partner in enumerate(maps.partners):
            shrinks = all(theirs <= ours for theirs, ours in zip(partner.size, self.size))
            if shrinks and any(ours % theirs for theirs, ours in zip(partner.size, self.size)):
                raise UserError(
                    f"result {name}: the {partner.size} px partner model {partner.model.folder} would need a non-integer "
                    f"area resize from {self.size} px, which export.py cannot reproduce exactly"
                )
            self.graphs.append((f"partner_{index}", SpecGraph(partner.model.model, partner.spec, partner.states, partner.size)))
            self.models.append(partner.model.model)
        check_smoothing_fits(self.postprocess.sigma, self.size)

    def large_arrays(self) -> dict[str, np.ndarray]:
        """{name: array} of every state field too large to be a graph constant (SpecGraph.large_arrays), by component."""
        return {f"{prefix or 'model'}.{key}": array for prefix, graph in self.graphs for key, array in graph.large_arrays().items()}

    def bind(self, tensors: dict) -> None:
        """Trace with these tensors (named as :meth:`large_arrays`) in place of the arrays."""
        for prefix, graph in self.graphs:
            head = f"{prefix or 'model'}."
            graph.bound = {key.removeprefix(head): tensor for key, tensor in tensors.items() if key.startswith(head)}

    def raw_maps(self, images, dtype: str):
        from keras import ops

        maps = {}
        for prefix, graph in self.graphs:
            inputs = resize_images_tensor(images, graph.size)
            component = graph.maps(inputs, dtype)
            if prefix:  # a partner model: its one map, back at our size
                (partner_map,) = component.values()
                partner_map = ops.image.resize(ops.cast(partner_map, "float32")[..., None], tuple(self.size),
                                               interpolation="bilinear", antialias=False)[..., 0]
                component = {prefix: ops.cast(partner_map, dtype)}
            maps |= component
        if len(maps) == 1:
            return next(iter(maps.values()))
        total = sum((maps[name] - mean) / std for name, (mean, std) in self.combination.items())
        return total / len(maps)


def restrict_tensor(maps, roi: np.ndarray | None):
    """:func:`processing.data.roi.restrict_maps` as tensor ops: outside the region, each map's lowest value inside it."""
    if roi is None or roi.all():
        return maps
    from keras import ops

    inside = ops.convert_to_tensor(roi[None])
    lowest = ops.min(ops.where(inside, maps, ops.max(maps)), axis=(1, 2), keepdims=True)
    return ops.where(inside, maps, lowest)


def resize_images_tensor(images, size: ImageSize):
    """:func:`resize_images` as tensor ops, for the sizes it can reproduce exactly: integer shrink
    factors when no axis grows (area averaging = average pooling), else bilinear."""
    from keras import ops

    height, width = int(images.shape[1]), int(images.shape[2])
    if (height, width) == tuple(size):
        return images
    if not (size.height <= height and size.width <= width):
        return ops.image.resize(images, tuple(size), interpolation="bilinear", antialias=False)
    pool = (height // size.height, width // size.width)
    return ops.average_pool(images, pool_size=pool, strides=pool, padding="valid")


def check_growable(folder, spec: MapSpec, partners: bool, normalization: str) -> None:
    """One line when the finetuning result in `folder` (its map spec, whether it has --combine-with
    partners, its per-pixel normalisation) cannot take more training images from its kept sums
    (:meth:`MapModel.with_training_images`); add_good.py asks this before TensorFlow."""
    what = f"finetuning result {Path(folder).name}"
    if not spec.fitted_kinds:
        raise UserError(f"{what}: {spec.name} maps are the trained network's own, with nothing fitted on the training images to add "
                        "to: pass --epochs N to continue training the network on them (e.g. --epochs 5), or select a padim or knn "
                        "result with -m")
    if partners:
        raise UserError(f"{what}: its maps are combined with other models' (--combine-with), each fitted on its own training images")
    if normalization != "none":
        raise UserError(f"{what}: --normalize {normalization} standardises by the training images' maps, which are not kept")
    for kind in spec.fitted_kinds:
        if kind.sums_file is None:
            raise UserError(f"{what}: {kind.name} maps cannot take more training images without a new fit")
        if not (Path(folder) / kind.sums_file).is_file():
            raise UserError(f"{Path(folder) / kind.sums_file} not found: {what} was written before finetune.py kept the sums "
                            "add_good.py continues from; rerun finetune.py on this model first")


def region_of(model: bundle.ModelBundle) -> np.ndarray | None:
    """The region of interest a model folder holds (info.json model.roi), or None; one line when its file is gone or unreadable."""
    spec = model.info.model.roi
    if spec is None:
        return None
    return read_roi(Path(model.folder) / spec.file, flag=f"{Path(model.folder) / bundle.INFO_FILE}: model.roi")


def load_state(kind, folder):
    """The fitted state of a map kind, saved beside the finetuning result."""
    path = Path(folder) / kind.state_file
    if not path.is_file():
        raise UserError(f"{path} not found: the finetuning result needs its {kind.name} scorer; rerun finetune.py")
    return kind.load_state(path)


def fit_partner(spec: str, model: bundle.ModelBundle, batch_size: int, seed: int) -> MapModel:
    """The map model of a --combine-with model, its fitted kinds fitted on its own training images."""
    path, method = parse_partner(spec)
    partner = bundle.load_bundle(path)
    ours, theirs = (Path(m.info.dataset.path).resolve() for m in (model, partner))
    if ours != theirs:
        raise UserError(f"--combine-with {path}: that model was trained on {theirs}, this one on {ours}")
    method = method or default_map_for_loss(partner.info.training.loss)
    partner_spec = parse_map_spec(method, "--combine-with")
    if partner_spec.combined:
        raise UserError(f"--combine-with {spec}: give a partner model one map (e.g. :padim), not {method}")
    partner_spec.check_model(partner.info.model.output, partner.info.was_trained)
    states = {}
    if partner_spec.fitted_kinds:
        train_files = splits.training_files(scan_dataset(partner.info.dataset.path), partner.info)
        batches, total = training_inputs(partner, train_files, batch_size, seed)
        states = fit_states(partner_spec.fitted_kinds, partner.model, batches, batch_size, seed, total)
    logger.info("combining with %s (%s maps at %s px)", partner.folder, method, partner.info.model.image_size)
    return MapModel(partner, partner_spec, "float64", states, batch_size=batch_size)


def training_inputs(model: bundle.ModelBundle, paths: list, batch_size: int, seed: int) -> tuple:
    """(a function returning batches of model inputs of the training images `paths`, their count):
    the images resized, or for a tiled model their tiles, at most MAX_FIT_TILES of them drawn at
    random (the densities need a sample, not every tile of every image). Read batch by batch: one
    batch in memory, whatever the number of images and tiles."""
    info, grid = model.info.model, grid_of(model)
    if grid is None:
        return (lambda: (images for _, images in iter_batches(paths, info.color_mode, info.image_size, batch_size))), len(paths)
    counts = [grid.count(*(max(side, grid.size) for side in image_size(path))) for path in paths]
    total = sum(counts)
    chosen = None
    if total > MAX_FIT_TILES:
        chosen = np.zeros(total, bool)
        chosen[np.random.default_rng(seed).choice(total, MAX_FIT_TILES, replace=False)] = True
    logger.info("fitting on %d of the %d tiles of %d px of %d images", MAX_FIT_TILES if chosen is not None else total, total, grid.size,
                len(paths))

    def batches():
        pending, start = [], 0
        for path, count in zip(paths, counts):
            keep = None if chosen is None else chosen[start:start + count]
            start += count
            if keep is not None and not keep.any():
                continue
            tiles = tiles_of(read_image(path, info.color_mode), grid)
            pending.extend(tiles if keep is None else tiles[keep])
            while len(pending) >= batch_size:
                yield np.stack(pending[:batch_size])
                pending = pending[batch_size:]
        if pending:
            yield np.stack(pending)

    return batches, min(total, MAX_FIT_TILES)


def resize_images(images: np.ndarray, size: ImageSize) -> np.ndarray:
    """A batch (N, H, W, C) float32 resized to (N, height, width, C) of `size`: area averaging to
    shrink, bilinear to enlarge."""
    if images.shape[1:3] == tuple(size):
        return images
    interpolation = cv2.INTER_AREA if size.height <= images.shape[1] and size.width <= images.shape[2] else cv2.INTER_LINEAR
    out = np.empty((len(images), *size, images.shape[-1]), dtype=np.float32)
    for index, image in enumerate(images):
        out[index] = cv2.resize(image, size.cv2_size, interpolation=interpolation).reshape(*size, -1)
    return out


def resize_maps(maps: np.ndarray, size: ImageSize) -> np.ndarray:
    """(N, h, w) maps resized bilinearly to (N, height, width) of `size`, float64."""
    if maps.shape[1:3] == tuple(size):
        return maps
    return np.stack([cv2.resize(np.asarray(m, dtype=np.float64), size.cv2_size, interpolation=cv2.INTER_LINEAR) for m in maps])
