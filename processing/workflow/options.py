"""The settings of train.py and test.py, which check themselves without TensorFlow.

Each config has a ``validate()`` that checks every setting that can be checked without the model
or TensorFlow (the architecture and map registries are TensorFlow-free): the scripts call it on
their flags before TensorFlow is imported (its start-up takes seconds), so a wrong flag, path or
combination answers at once with one line, and the workflow functions call the same method again
for library callers. (finetune.py's FinetuneConfig lives with the detectors that read it,
processing/detectors/base.py; benchmark.py's BenchmarkConfig in benchmarking.py.)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

from autoencoder import bundle
from autoencoder.checks import check_fraction, check_positive_int, check_positive_number
from autoencoder.errors import UserError
from autoencoder.folders import check_writable_dir
from autoencoder.image_size import ImageSize
from autoencoder.loss_rules import check_loss_color


@dataclass
class TrainConfig:
    """Every setting of a training run; saved in info.json."""

    input_dir: str
    architecture: str = "featureCAE"  # the best on magnetic_tile (docs/benchmarks.md); mvtecCAE is the best pixel autoencoder
    color_mode: str = "auto"  # auto: rgb when the training images carry colour, else grayscale (resolved())
    loss: str | None = None  # None: the architecture's default (l2 for pixel models, the best on magnetic_tile; feature for featureCAE)
    batch_size: int = 8
    epochs: int | None = None  # None: the architecture's default (100 for pixel autoencoders, 20 for featureCAE)
    image_size: ImageSize | int | str | None = None  # a side or WIDTHxHEIGHT; None: the architecture's square
    learning_rate: float | None = None  # None: run the learning-rate range test
    validation_split: float = 0.1
    augment: bool = True
    seed: int = 42
    inspect: bool = False
    output_dir: str = "saved_models"
    lr_finder_steps: int = 300
    patience: int = 12
    encoder_weights: str | None = None  # local VGG16 no-top weights file (vggCAE only)
    freeze_encoder: bool = False
    adversarial: bool = False  # adversarial autoencoder with rejection (autoencoder/adversarial.py)
    latent_dim: int = 16  # adversarial only
    reject_every: int = 5  # adversarial only: epochs between rejection checks, 0 = no rejection
    reject_fraction: float | None = None  # adversarial only: None = estimated (Tukey's fence)
    reject_by: str = "reconstruction"  # adversarial only: likelihood, reconstruction or combined
    distribute: str = "none"  # none (no strategy), mirrored or multiworker (processing/workflow/distribute.py)
    color_detected: bool = False  # set by resolved(): color_mode was chosen from the training images (-c auto)
    backbone: str | None = None  # featureCAE/stageCAE: the pretrained backbone (None: the architecture's, EfficientNet-Lite0)
    tile: int | None = None  # train on tiles of this side at the original resolution (processing/data/tiles.py)
    tile_overlap: int | None = None  # pixels two neighbouring tiles share; None: a quarter of the tile
    roi: str | None = None  # region of interest mask (white = inspect); None: <input_dir>/roi.png when present (resolved())
    roi_detected: bool = False  # set by resolved(): roi is the dataset's own roi.png (not --roi)

    @property
    def architecture_spec(self):
        from autoencoder.models import get_architecture

        return get_architecture(self.architecture)

    @property
    def size(self) -> ImageSize:
        """The model input: a tile, --image-size or the architecture's default square."""
        if self.tile is not None:
            return ImageSize.of(self.tile, "--tile")
        return ImageSize.of(self.architecture_spec.default_size if self.image_size is None else self.image_size, "--image-size")

    @property
    def settings(self) -> dict:
        """The settings as JSON (info.json's ``settings``): the input size as info.json writes sizes."""
        settings = asdict(self)
        if self.image_size is not None:
            settings["image_size"] = ImageSize.of(self.image_size, "--image-size").to_json()
        return settings

    @property
    def architecture_options(self) -> dict:
        """The builder options train.py sets (``backbone``), for Architecture.build and info.json."""
        return {} if self.backbone is None else {"backbone": self.backbone}

    @property
    def tile_grid(self):
        from processing.data.tiles import TileGrid

        if self.tile is None:
            return None
        return TileGrid(self.tile, self.tile // 4 if self.tile_overlap is None else self.tile_overlap)

    def resolved(self, detect_colour: bool = True) -> TrainConfig:
        """The config with its loss and epochs filled in: the architecture's defaults when none were asked for.
        `detect_colour`: -c auto reads the training images (False: left to a later resolved(), once they exist)."""
        architecture = self.architecture_spec
        config = self
        if config.color_mode == "auto" and detect_colour:
            config = replace(config, color_mode=resolve_color_mode(config.input_dir, "--input-dir"), color_detected=True)
        if config.loss is None:
            config = replace(config, loss=architecture.default_loss)
        if config.epochs is None:
            config = replace(config, epochs=architecture.default_epochs)
        if config.roi is None and detect_colour and (Path(config.input_dir) / "roi.png").exists():
            config = replace(config, roi=str(Path(config.input_dir) / "roi.png"), roi_detected=True)  # the dataset's own region
        return config

    def validate(self, dataset: bool = True) -> None:
        """Every setting of a resolved config that can be checked without TensorFlow; ValueError naming
        the flag. `dataset` False: not the dataset folder (demo.py checks its flags before generating it)."""
        from processing.workflow.distribute import check_distribute

        architecture = self.architecture_spec
        if self.image_size is not None:
            ImageSize.of(self.image_size, "--image-size")
        if self.tile is not None:
            if self.image_size is not None and ImageSize.of(self.image_size) != (self.tile, self.tile):
                raise UserError(
                    f"--image-size {self.image_size} with --tile {self.tile}: a tiled model's input is one tile; drop --image-size"
                )
            self.tile_grid  # noqa: B018  (checks --tile and --tile-overlap)
            if self.adversarial:
                raise UserError("--tile with --adversarial: the adversarial autoencoder trains on whole images; drop one of the two")
        elif self.tile_overlap is not None:
            raise UserError("--tile-overlap needs --tile SIZE")
        architecture.check_size(self.size, "--tile" if self.tile is not None else "--image-size")
        check_positive_int(self.batch_size, "--batch", "a batch size")
        if not isinstance(self.epochs, int) or isinstance(self.epochs, bool) or self.epochs < architecture.min_epochs:
            if architecture.min_epochs == 0:
                raise UserError(f"--epochs {self.epochs}: expected 0 (architecture {architecture.name}: its feature statistics only) "
                                 "or more")
            raise UserError(f"--epochs {self.epochs}: expected at least 1 epoch")
        if self.backbone is not None:
            from autoencoder.models.feature_cae import OFFLINE_BACKBONES

            if "backbone" not in architecture.options:
                raise UserError(f"--backbone {self.backbone}: architecture {architecture.name} has no pretrained backbone "
                                 "(featureCAE and stageCAE have)")
            if self.backbone not in OFFLINE_BACKBONES:
                raise UserError(f"--backbone {self.backbone!r}: expected one of {', '.join(OFFLINE_BACKBONES)} (weights shipped offline)")
        if self.learning_rate is not None:
            check_positive_number(self.learning_rate, "--lr", "learning rate")
        check_fraction(
            self.validation_split,
            "--validation-split",
            ": training holds out that part of train/good to stop early and to set finetune.py's thresholds",
        )
        check_positive_int(self.patience, "--patience", "epochs without improvement before training stops")
        if self.color_detected and self.color_mode == "rgb" and self.loss == "ssim":
            raise UserError("--loss ssim needs grayscale images, and the training images carry colour (-c auto chose rgb): "
                             "pass -c grayscale, or use --loss mssim or l2")
        check_loss_color(self.loss, self.color_mode)
        if self.roi is not None:
            from processing.data.roi import check_roi_fits, read_roi

            flag = "the dataset's region of interest" if self.roi_detected else "--roi"
            region = read_roi(self.roi, flag)  # unreadable, or covering nothing: said before TensorFlow
            if self.tile is None:  # a tiled model's maps are as large as its images
                check_roi_fits(region, tuple(self.size), flag)
        architecture.check_loss(self.loss)
        check_distribute(self.distribute)
        self.check_adversarial_flags()
        if self.adversarial:
            if architecture.output != "reconstruction":
                raise UserError(f"--adversarial: architecture {architecture.name} outputs an anomaly map, not a reconstruction")
            if self.distribute != "none":
                raise UserError(
                    f"--distribute {self.distribute} with --adversarial: the adversarial training step runs on one device "
                    "only; drop one of the two"
                )
            check_positive_int(self.latent_dim, "--latent-dim", "a latent code length")
            if self.reject_every < 0:
                raise UserError(f"--reject-every {self.reject_every}: expected 0 (no rejection) or a positive number of epochs")
        self.check_encoder_options()
        if dataset:
            check_dataset_root(self.input_dir)
        check_writable_dir(self.output_dir, "--output-dir")

    def check_adversarial_flags(self) -> None:
        """The --adversarial settings are refused without --adversarial, naming the flag (not silently ignored)."""
        if self.adversarial:
            return
        defaults = TrainConfig(input_dir="")
        for key, flag in (("latent_dim", "--latent-dim"), ("reject_every", "--reject-every"), ("reject_fraction", "--reject-fraction"),
                          ("reject_by", "--reject-by")):
            if getattr(self, key) != getattr(defaults, key):
                raise UserError(f"{flag} applies to --adversarial training only; add --adversarial or drop {flag}")

    def check_encoder_options(self) -> None:
        """--encoder-weights must name an existing file and suit the architecture; --freeze-encoder needs it."""
        from autoencoder.models.vgg_cae import NAME as VGG_CAE

        if self.encoder_weights is not None:
            if self.architecture != VGG_CAE:
                raise UserError(f"--encoder-weights: architecture {self.architecture} has no VGG16 encoder; use -a {VGG_CAE}")
            if not Path(self.encoder_weights).is_file():
                raise UserError(f"--encoder-weights {self.encoder_weights} not found: expected a Keras VGG16 no-top weights file")
        elif self.freeze_encoder:
            raise UserError("--freeze-encoder needs --encoder-weights (freezing a randomly initialised encoder)")


def config_from_args(args) -> TrainConfig:
    return TrainConfig(
        input_dir=args.input_dir,
        architecture=args.architecture,
        color_mode=args.color,
        loss=args.loss,
        batch_size=args.batch,
        epochs=args.epochs,
        image_size=args.image_size,
        learning_rate=args.lr,
        validation_split=args.validation_split,
        augment=not args.no_augment,
        seed=args.seed,
        inspect=args.inspect,
        output_dir=args.output_dir,
        patience=args.patience,
        encoder_weights=getattr(args, "encoder_weights", None),
        freeze_encoder=getattr(args, "freeze_encoder", False),
        adversarial=getattr(args, "adversarial", False),
        latent_dim=getattr(args, "latent_dim", 16),
        reject_every=getattr(args, "reject_every", 5),
        reject_fraction=getattr(args, "reject_fraction", None),
        reject_by=getattr(args, "reject_by", "reconstruction"),
        distribute=getattr(args, "distribute", "none"),
        tile=getattr(args, "tile", None),
        tile_overlap=getattr(args, "tile_overlap", None),
        roi=getattr(args, "roi", None),
        backbone=getattr(args, "backbone", None),
    )


def resolve_color_mode(input_dir, flag: str = "--input-dir") -> str:
    """-c auto: rgb when the dataset's train/good images carry colour, else grayscale (logged)."""
    import logging

    from processing.data.colour import detect_color_mode
    from processing.data.images import list_images

    check_dataset_root(input_dir, flag)
    mode = detect_color_mode(list_images(Path(input_dir) / "train" / "good"))
    logging.getLogger(__name__).info(
        "colour mode %s: the training images %s (-c auto; -c grayscale or -c rgb to choose)",
        mode, "carry colour" if mode == "rgb" else "are gray",
    )
    return mode


def check_dataset_root(path, flag: str = "--input-dir") -> None:
    """The cheap part of scan_dataset's checks: the folder and its train/good exist."""
    root = Path(path)
    if not (root / "train" / "good").is_dir():
        from processing.data.images import scan_dataset

        scan_dataset(root)  # raises its usual one-line message
        raise UserError(f"{flag} {root}: expected {root}/train/good/")  # not reached


def check_model_path(path, results_dir, data_dir=None) -> bundle.ModelFolder:
    """finetune.py / test.py: the model folder opened (info.json parsed, the .keras file checked),
    the results folder and --data-dir; return the opened folder (the run reads it no more)."""
    opened = bundle.open_model_folder(path)
    check_writable_dir(results_dir, "--results-dir")
    from processing.data.splits import check_dataset_location

    check_dataset_location(opened.info, data_dir)
    return opened


@dataclass
class TestConfig:
    """The settings of one test.py run."""

    path: str
    save_segmentation: bool = False
    heatmaps: bool = False  # write each test image under its anomaly map as a heat map (heatmaps/<class>/)
    include_finetune: bool = False
    method: str | None = None  # None: every finetuning result of the model
    dtype: str | None = None
    batch_size: int = 16
    results_root: str = "results"
    data_dir: str | None = None  # the dataset's folder when it moved since training (None: info.json's)
    overwrite: bool = False  # move an existing test result aside instead of stopping

    def validate(self) -> None:
        from processing.maps.kinds import check_method_dtype

        check_positive_int(self.batch_size, "-b/--batch", "an inference batch size")
        if self.method is not None or self.dtype is not None:
            check_method_dtype(self.method or "ssim", self.dtype or "float64")


def report_stale_results(opened: bundle.ModelFolder, results_dir, clean: bool) -> None:
    """finetune.py / test.py: staging folders killed runs left among the model's results."""
    from autoencoder.folders import report_stale_staging

    report_stale_staging([bundle.results_dir_of(opened.info, opened.folder, results_dir)], clean=clean, depth=2)
