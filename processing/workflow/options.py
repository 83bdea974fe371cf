"""The scripts' settings checks that need no TensorFlow, and train.py's settings.

train.py, finetune.py and test.py run these checks on their flags before TensorFlow is imported
(its start-up takes seconds), so a wrong flag, path or combination answers at once with one line.
The workflow functions run them again (library callers get the same messages), followed by the
checks that need the model registries (architecture names and sizes, detector names).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from autoencoder import bundle
from autoencoder.folders import check_writable_dir

# The loss/colour rule of autoencoder.losses.check_loss_color (which needs TensorFlow), for the
# early check; tests/test_reliability.py checks that the two agree.
LOSS_NEEDS_COLOR = {"ssim": "grayscale", "mssim": "rgb"}
OTHER_LOSS_FOR_COLOR = {"grayscale": "ssim", "rgb": "mssim"}


@dataclass
class TrainConfig:
    """Every setting of a training run; saved in info.json."""

    input_dir: str
    architecture: str = "featureCAE"  # the best on magnetic_tile (docs/benchmarks.md); mvtecCAE is the best pixel autoencoder
    color_mode: str = "grayscale"
    loss: str | None = None  # None: the architecture's default (l2 for pixel models, the best on magnetic_tile; feature for featureCAE)
    batch_size: int = 8
    epochs: int | None = None  # None: the architecture's default (100 for pixel autoencoders, 20 for featureCAE)
    image_size: int | None = None
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
    )


def check_positive_int(value, flag: str, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{flag} {value}: expected {what} (a positive integer)")


def check_fraction(value, flag: str, why: str = "") -> None:
    """`value` in the open interval (0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        shown = f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else repr(value)
        raise ValueError(f"{flag} {shown}: expected a fraction in (0, 1){why}")


def check_dataset_root(path, flag: str = "--input-dir") -> None:
    """The cheap part of scan_dataset's checks: the folder and its train/good exist."""
    root = Path(path)
    if not (root / "train" / "good").is_dir():
        from processing.data.images import scan_dataset

        scan_dataset(root)  # raises its usual one-line message
        raise ValueError(f"{flag} {root}: expected {root}/train/good/")  # not reached


def check_loss_color(loss: str, color_mode: str) -> None:
    needed = LOSS_NEEDS_COLOR.get(loss)
    if needed is not None and color_mode != needed:
        other = OTHER_LOSS_FOR_COLOR.get(color_mode, "l2")
        hint = f"use --loss {other} for {'RGB' if color_mode == 'rgb' else 'grayscale'} images"
        raise ValueError(f"--loss {loss} needs --color {needed} (got {color_mode}); {hint}")


def check_train_settings(config: TrainConfig) -> None:
    """Everything about a training run that can be checked without TensorFlow; ValueError naming the flag."""
    if config.image_size is not None and (isinstance(config.image_size, bool) or not isinstance(config.image_size, int) or config.image_size < 1):
        raise ValueError(f"--image-size {config.image_size}: expected a positive number of pixels (the side of the square model input)")
    check_positive_int(config.batch_size, "--batch", "a batch size")
    if config.epochs is not None and (not isinstance(config.epochs, int) or config.epochs < 1):
        raise ValueError(f"--epochs {config.epochs}: expected at least 1 epoch")
    if config.learning_rate is not None and not (config.learning_rate > 0 and math.isfinite(config.learning_rate)):
        raise ValueError(f"--lr {config.learning_rate}: expected a positive learning rate")
    check_fraction(
        config.validation_split, "--validation-split",
        ": training holds out that part of train/good to stop early and to set finetune.py's thresholds",
    )
    if config.patience < 0:
        raise ValueError(f"--patience {config.patience}: expected a number of epochs >= 0")
    check_loss_color(config.loss, config.color_mode)
    from processing.workflow.distribute import check_distribute

    check_distribute(config.distribute)
    if config.adversarial and config.distribute != "none":
        raise ValueError(f"--distribute {config.distribute} with --adversarial: the adversarial training step runs on one device only; drop one of the two")
    if config.adversarial:
        check_positive_int(config.latent_dim, "--latent-dim", "a latent code length")
        if config.reject_every < 0:
            raise ValueError(f"--reject-every {config.reject_every}: expected 0 (no rejection) or a positive number of epochs")
    if config.encoder_weights is not None and not Path(config.encoder_weights).is_file():
        raise ValueError(f"--encoder-weights {config.encoder_weights} not found: expected a Keras VGG16 no-top weights file")
    check_dataset_root(config.input_dir)
    check_writable_dir(config.output_dir, "--output-dir")


def check_benchmark_settings(config) -> None:
    """benchmark.py's settings (a BenchmarkConfig) that need no TensorFlow."""
    for flag, values in (("--architectures", config.architectures), ("--losses", config.losses), ("--image-sizes", config.image_sizes)):
        if not values:
            raise ValueError(f"{flag}: expected at least one value")
    for size in config.image_sizes:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"--image-sizes {size}: expected positive numbers of pixels")
    check_positive_int(config.batch_size, "--batch", "a batch size")
    if not isinstance(config.epochs, int) or config.epochs < 1:
        raise ValueError(f"--epochs {config.epochs}: expected at least 1 epoch")
    if config.learning_rate is not None and not (config.learning_rate > 0 and math.isfinite(config.learning_rate)):
        raise ValueError(f"--lr {config.learning_rate}: expected a positive learning rate")
    for loss in config.losses:
        check_loss_color(loss, config.color_mode)
    check_dataset_root(config.input_dir)
    check_writable_dir(config.output_dir, "--output-dir")
    check_writable_dir(config.models_dir, "--models-dir")


def check_model_path(path, results_dir, data_dir=None) -> tuple[Path, dict]:
    """finetune.py / test.py: the model folder and its info.json (checked), the results folder and
    --data-dir; return (model folder, info)."""
    folder, _ = bundle.resolve_model_path(path)
    info = bundle.read_info(folder)
    check_writable_dir(results_dir, "--results-dir")
    from processing.data.splits import check_dataset_location

    check_dataset_location(info, data_dir)
    return folder, info


def check_finetune_flags(args) -> tuple[Path, dict]:
    """finetune.py's flags (the argparse namespace), before TensorFlow is imported."""
    from processing.maps.postprocess import check_normalization, check_sigma

    check_positive_int(args.batch, "-b/--batch", "an inference batch size")
    check_fraction(args.finetune_split, "--finetune-split")
    check_sigma(args.smoothing)
    check_normalization(args.normalize, args.dtype)
    if args.bandwidth is not None and not (args.bandwidth > 0 and math.isfinite(args.bandwidth)):
        raise ValueError(f"--bandwidth {args.bandwidth}: expected a positive kernel width")
    if args.pca_components is not None and args.pca_components < 0:
        raise ValueError(f"--pca-components {args.pca_components}: expected a number of components >= 0")
    return check_model_path(args.path, args.results_dir, args.data_dir)


def check_test_flags(args) -> tuple[Path, dict]:
    """test.py's flags (the argparse namespace), before TensorFlow is imported."""
    check_positive_int(args.batch, "-b/--batch", "an inference batch size")
    if args.method is not None or args.dtype is not None:
        from processing.maps.resmaps import check_method_dtype

        check_method_dtype(args.method or "ssim", args.dtype or "float64")
    return check_model_path(args.path, args.results_dir, args.data_dir)


def report_stale_results(folder: Path, info: dict, results_dir, clean: bool) -> None:
    """finetune.py / test.py: staging folders killed runs left among the model's results."""
    from autoencoder.folders import report_stale_staging

    report_stale_staging([bundle.results_dir_of(info, folder, results_dir)], clean=clean, depth=2)
