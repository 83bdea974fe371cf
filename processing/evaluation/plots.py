"""Figures of training and inspection, written as PNG files.

A flat module of independent functions: each draws one figure with matplotlib's object API
(``matplotlib.figure.Figure``, no pyplot state, so it works under any backend and in threads),
writes it to a temporary file next to ``path`` and renames it into place, so a reader never sees
a half-written PNG, and returns ``path``.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

import numpy as np

from autoencoder.errors import UserError

logger = logging.getLogger(__name__)

__all__ = [
    "save_figure",
    "plot_loss_history",
    "plot_lr_finder",
    "plot_lr_schedule",
    "plot_inspection",
    "plot_threshold_vs_min_area",
    "plot_scores_vs_min_area",
]

# Entries of a Keras history that are not per-epoch quality metrics.
_NON_METRIC_KEYS = {"loss", "lr", "max_lr", "learning_rate"}


def Figure(*args, **kwargs):  # noqa: N802  (matplotlib's class, imported when a figure is drawn)
    """A matplotlib Figure; matplotlib is imported on the first figure, not with this module (the scripts check their flags
    without it)."""
    from matplotlib.figure import Figure as MatplotlibFigure

    return MatplotlibFigure(*args, **kwargs)


def save_figure(figure, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Write ``figure`` as a PNG to ``path`` atomically (temp file + rename) and return the path.

    The parent folder is created when missing. ValueError when ``path`` does not end in .png.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise UserError(f"plot path {path}: expected a .png file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique name in the same folder (so the rename is atomic); open() applies the umask.
    temporary = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        with open(temporary, "xb") as stream:
            figure.savefig(stream, format="png", dpi=dpi)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    logger.debug("wrote %s", path)
    return path


def _history_series(history: dict, key: str) -> np.ndarray:
    values = np.asarray(history[key], dtype=np.float64)
    if values.ndim != 1:
        raise UserError(f"history[{key!r}] must be a list of per-epoch numbers, got shape {values.shape}")
    return values


def plot_loss_history(
    history: dict, path: str | os.PathLike, best_epoch: int | None = None, monitor: str = "val_loss"
) -> Path:
    """Training and validation loss per epoch, with the best epoch marked.

    ``history`` is a Keras history dict (``{"loss": [...], "val_loss": [...], ...}``, one value
    per epoch). Other metrics with both a training and a validation series (e.g. ``ssim`` and
    ``val_ssim``) go to a second panel. ``best_epoch`` (1-based) defaults to the epoch with the
    lowest ``monitor`` value, when that series is present.
    """
    if "loss" not in history:
        raise UserError(f"history has no 'loss' series (keys: {sorted(history)})")
    loss = _history_series(history, "loss")
    epochs = np.arange(1, loss.size + 1)
    if best_epoch is None and monitor in history and len(history[monitor]):
        monitored = _history_series(history, monitor)
        if np.any(np.isfinite(monitored)):
            best_epoch = int(np.nanargmin(monitored)) + 1
    metrics = sorted(
        key for key in history if not key.startswith("val_") and key not in _NON_METRIC_KEYS and f"val_{key}" in history
    )
    if best_epoch is not None and not 1 <= best_epoch <= loss.size:
        raise UserError(f"best_epoch {best_epoch} is outside the {loss.size} epochs of the history")

    figure = Figure(figsize=(6.4 * (1 + bool(metrics)), 4.2), layout="constrained")
    panels = figure.subplots(1, 1 + bool(metrics), squeeze=False)[0]
    series_per_panel = [["loss"], metrics]
    for axes, keys, title in zip(panels, series_per_panel, ["loss", ", ".join(metrics)]):
        for key in keys:
            axes.plot(epochs, _history_series(history, key), marker="o", markersize=3, label=f"train {key}")
            if f"val_{key}" in history:
                validation = _history_series(history, f"val_{key}")
                axes.plot(epochs, validation, marker="o", markersize=3, label=f"validation {key}")
        if best_epoch is not None:
            axes.axvline(best_epoch, color="gray", linestyle="--", linewidth=1, label=f"best epoch {best_epoch}")
        axes.set_xlabel("epoch")
        axes.set_ylabel(title)
        axes.grid(alpha=0.3)
        axes.legend()
    if np.all(loss[np.isfinite(loss)] > 0) and loss.size > 1 and np.nanmax(loss) / np.nanmin(loss) > 20:
        panels[0].set_yscale("log")
    figure.suptitle("training history")
    return save_figure(figure, path)


def plot_lr_finder(lrs, losses, suggested_lr: float | None, path: str | os.PathLike) -> Path:
    """Loss against learning rate of a range test, log rate axis, suggested rate marked.

    ``lrs`` and ``losses`` are 1-D sequences of the same length (``losses`` the smoothed loss;
    the diverging tail, which would flatten the curve, is clipped to 1.5x the first loss).
    ``suggested_lr`` may be None (no suggestion).
    """
    lrs = np.asarray(lrs, dtype=np.float64)
    losses = np.asarray(losses, dtype=np.float64)
    if lrs.ndim != 1 or lrs.shape != losses.shape or lrs.size == 0:
        raise UserError(f"lrs and losses must be 1-D of the same non-zero length, got {lrs.shape} and {losses.shape}")
    if np.any(lrs <= 0):
        raise UserError("lrs must be positive to be drawn on a log axis")

    figure = Figure(figsize=(6.4, 4.2), layout="constrained")
    axes = figure.subplots()
    axes.plot(lrs, losses, color="C0")
    axes.set_xscale("log")
    finite = losses[np.isfinite(losses)]
    if finite.size:
        top = min(finite.max(), 1.5 * finite[0]) if np.isfinite(losses[0]) else finite.max()
        bottom = finite.min()
        margin = 0.05 * (top - bottom) if top > bottom else 0.05 * abs(top) + 1e-12
        axes.set_ylim(bottom - margin, top + margin)
    if suggested_lr is not None:
        axes.axvline(suggested_lr, color="C3", linestyle="--", label=f"suggested lr = {suggested_lr:.2e}")
        axes.legend()
    axes.set_xlabel("learning rate (log scale)")
    axes.set_ylabel("smoothed loss")
    axes.set_title("learning-rate range test")
    axes.grid(alpha=0.3, which="both")
    return save_figure(figure, path)


def plot_lr_schedule(lrs_per_batch, path: str | os.PathLike, steps_per_epoch: int | None = None) -> Path:
    """The learning rate of every training batch (e.g. the cyclical schedule).

    ``lrs_per_batch`` is a 1-D sequence of rates in batch order; with ``steps_per_epoch`` the
    epoch boundaries are drawn as faint vertical lines.
    """
    lrs = np.asarray(lrs_per_batch, dtype=np.float64)
    if lrs.ndim != 1 or lrs.size == 0:
        raise UserError(f"lrs_per_batch must be a non-empty 1-D sequence, got shape {lrs.shape}")
    figure = Figure(figsize=(8, 3.5), layout="constrained")
    axes = figure.subplots()
    axes.plot(np.arange(lrs.size), lrs, color="C2", linewidth=1)
    if steps_per_epoch:
        for boundary in range(steps_per_epoch, lrs.size, steps_per_epoch):
            axes.axvline(boundary, color="gray", alpha=0.25, linewidth=0.8)
    axes.set_xlabel("training batch")
    axes.set_ylabel("learning rate")
    axes.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    axes.set_title("learning-rate schedule")
    axes.grid(alpha=0.3)
    return save_figure(figure, path)


def plot_inspection(
    inputs,
    reconstructions,
    resmaps,
    path: str | os.PathLike,
    titles=None,
    max_images: int = 8,
    cmap: str = "inferno",
) -> Path:
    """One row per image: input, reconstruction, residual map (shared colour scale, colorbar).

    Parameters
    ----------
    inputs, reconstructions : array_like, shape (N, H, W, C), C 1 or 3, values in [0, 1]
        (values outside are clipped for display).
    resmaps : array_like, shape (N, H, W) (or (N, H, W, 1))
    titles : sequence of N str, optional
        Row labels, e.g. file names.
    max_images : int
        Only the first ``max_images`` images are drawn.
    """
    inputs = np.asarray(inputs)
    reconstructions = np.asarray(reconstructions)
    resmaps = np.asarray(resmaps)
    if resmaps.ndim == 4 and resmaps.shape[-1] == 1:
        resmaps = resmaps[..., 0]
    if inputs.ndim != 4 or inputs.shape[-1] not in (1, 3):
        raise UserError(f"inputs must have shape (N, H, W, C) with C 1 or 3, got {inputs.shape}")
    if reconstructions.shape != inputs.shape:
        raise UserError(f"reconstructions shape {reconstructions.shape} differs from inputs shape {inputs.shape}")
    if resmaps.shape != inputs.shape[:3]:
        raise UserError(f"resmaps must have shape {inputs.shape[:3]} (N, H, W), got {resmaps.shape}")
    if titles is not None and len(titles) != len(inputs):
        raise UserError(f"titles has {len(titles)} entries for {len(inputs)} images")
    if len(inputs) == 0:
        raise UserError("plot_inspection: no images")
    if max_images < 1:
        raise UserError(f"max_images must be at least 1, got {max_images}")

    count = min(len(inputs), max_images)
    finite = resmaps[:count][np.isfinite(resmaps[:count])]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    aspect = inputs.shape[1] / inputs.shape[2]  # rows as tall as the images are (a 4:1 strip needs a quarter of a square's)
    figure = Figure(figsize=(9.5, (0.6 + 2.3 * min(aspect, 1.0)) * count), layout="constrained")
    rows = figure.subplots(count, 3, squeeze=False)
    for index, (input_axes, reconstruction_axes, resmap_axes) in enumerate(rows):
        for axes, image, name in (
            (input_axes, inputs[index], "input"),
            (reconstruction_axes, reconstructions[index], "reconstruction"),
        ):
            _show_image(axes, image)
            axes.set_title(name if titles is None else f"{titles[index]}: {name}", fontsize=9)
        shown = resmap_axes.imshow(resmaps[index], cmap=cmap, vmin=vmin, vmax=vmax)
        resmap_axes.set_title("residual map", fontsize=9)
        resmap_axes.set_axis_off()
        figure.colorbar(shown, ax=resmap_axes, fraction=0.046, pad=0.02)
    return save_figure(figure, path)


def _show_image(axes, image: np.ndarray) -> None:
    """Draw an (H, W, 1) or (H, W, 3) image with values in [0, 1]."""
    image = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
    if image.shape[-1] == 1:
        axes.imshow(image[..., 0], cmap="gray", vmin=0.0, vmax=1.0)
    else:
        axes.imshow(image)
    axes.set_axis_off()


def _area_axis(axes, min_areas: np.ndarray) -> None:
    """A log x axis for geometric min_area candidates (the smoothed rule's 1 px to 5 % of the map)."""
    if min_areas.min() > 0 and min_areas.max() / min_areas.min() >= 100:
        axes.set_xscale("log")


def plot_threshold_vs_min_area(min_areas, thresholds, best_min_area: int | None, path: str | os.PathLike,
                               title: str = "lowest threshold keeping every validation image clean") -> Path:
    """The threshold chosen for every minimum defect area (by default: the original rule's title)."""
    min_areas = np.asarray(min_areas, dtype=np.float64)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if min_areas.ndim != 1 or min_areas.shape != thresholds.shape or min_areas.size == 0:
        raise UserError(f"min_areas and thresholds must be 1-D of the same non-zero length, got {min_areas.shape} and {thresholds.shape}")
    figure = Figure(figsize=(6.4, 4.2), layout="constrained")
    axes = figure.subplots()
    axes.plot(min_areas, thresholds, color="C0")
    if best_min_area is not None:
        axes.axvline(best_min_area, color="C3", linestyle="--", label=f"best min_area = {best_min_area}")
        axes.legend()
    axes.set_xlabel("minimum defect area (pixels)")
    axes.set_ylabel("threshold")
    axes.set_title(title)
    _area_axis(axes, min_areas)
    axes.grid(alpha=0.3)
    return save_figure(figure, path)


def plot_scores_vs_min_area(min_areas, tpr, tnr, scores, best_min_area: int | None, path: str | os.PathLike,
                            score_label: str = "balanced accuracy") -> Path:
    """True positive rate, true negative rate and the objective (by default the balanced accuracy) on
    the finetuning images."""
    min_areas = np.asarray(min_areas, dtype=np.float64)
    series = {"TPR": tpr, "TNR": tnr, score_label: scores}
    figure = Figure(figsize=(6.4, 4.2), layout="constrained")
    axes = figure.subplots()
    for (label, values), color in zip(series.items(), ["C1", "C2", "C0"]):
        values = np.asarray(values, dtype=np.float64)
        if values.shape != min_areas.shape:
            raise UserError(f"{label} has shape {values.shape}; expected {min_areas.shape} like min_areas")
        axes.plot(min_areas, values, label=label, color=color, linewidth=2 if label == score_label else 1)
    if best_min_area is not None:
        axes.axvline(best_min_area, color="C3", linestyle="--", label=f"best min_area = {best_min_area}")
    axes.set_ylim(-0.02, 1.02)
    axes.set_xlabel("minimum defect area (pixels)")
    axes.set_ylabel("rate on the finetuning images")
    axes.set_title("finetuning: scores per minimum defect area")
    _area_axis(axes, min_areas)
    axes.grid(alpha=0.3)
    axes.legend()
    return save_figure(figure, path)


# --------------------------------------------------------------------------------------------
# Reconstructions and loss distributions of several models / test classes (digits-noise study)
# --------------------------------------------------------------------------------------------

__all__ += ["plot_reconstruction_pairs", "plot_loss_histograms"]


def plot_reconstruction_pairs(rows: dict, path: str | os.PathLike, title: str | None = None, max_pairs: int = 4) -> Path:
    """One row per entry of ``rows``: up to ``max_pairs`` input / reconstruction pairs side by side.

    ``rows`` maps a row label (e.g. "noise_0.3") to ``(inputs, reconstructions)``, two arrays of
    the same shape (N, H, W, C), C 1 or 3, values in [0, 1] (clipped for display); a row with
    fewer than ``max_pairs`` images leaves its last cells empty.
    """
    if not rows:
        raise UserError("plot_reconstruction_pairs: no rows")
    if max_pairs < 1:
        raise UserError(f"max_pairs must be at least 1, got {max_pairs}")
    checked = {}
    for label, (inputs, reconstructions) in rows.items():
        inputs, reconstructions = np.asarray(inputs), np.asarray(reconstructions)
        if inputs.ndim != 4 or inputs.shape[-1] not in (1, 3) or len(inputs) == 0:
            raise UserError(f"row {label!r}: inputs must have shape (N>0, H, W, C) with C 1 or 3, got {inputs.shape}")
        if reconstructions.shape != inputs.shape:
            raise UserError(f"row {label!r}: reconstructions shape {reconstructions.shape} differs from inputs shape {inputs.shape}")
        checked[label] = (inputs[:max_pairs], reconstructions[:max_pairs])
    pairs = max(len(inputs) for inputs, _ in checked.values())
    figure = Figure(figsize=(1.3 * 2 * pairs + 0.6, 1.45 * len(checked) + 0.4), layout="constrained")
    grid = figure.subplots(len(checked), 2 * pairs, squeeze=False)
    for axes_row, (label, (inputs, reconstructions)) in zip(grid, checked.items()):
        for pair in range(pairs):
            input_axes, reconstruction_axes = axes_row[2 * pair], axes_row[2 * pair + 1]
            if pair >= len(inputs):
                input_axes.set_axis_off()
                reconstruction_axes.set_axis_off()
                continue
            _show_image(input_axes, inputs[pair])
            _show_image(reconstruction_axes, reconstructions[pair])
            input_axes.set_title("input", fontsize=7)
            reconstruction_axes.set_title("reconstruction", fontsize=7)
        # _show_image hides the axes, so the row label is a text placed left of the first cell.
        axes_row[0].text(-0.08, 0.5, label, transform=axes_row[0].transAxes, rotation=90, ha="right", va="center", fontsize=9)
    if title:
        figure.suptitle(title)
    return save_figure(figure, path)


def plot_loss_histograms(
    losses: dict, reference: str, path: str | os.PathLike, bins: int = 30, title: str | None = None
) -> Path:
    """A grid of histograms: one row per model, one column per class other than ``reference``;
    each panel overlays the losses of ``reference`` (e.g. clean images) and of that class.

    ``losses`` maps a row label (e.g. an architecture name) to ``{class name: 1-D losses}``; every
    row must have the same classes, ``reference`` among them. Bins are shared within a row and
    spaced logarithmically when all of the row's losses are positive.
    """
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    if not losses:
        raise UserError("plot_loss_histograms: no rows")
    if bins < 1:
        raise UserError(f"bins must be at least 1, got {bins}")
    first_classes = list(next(iter(losses.values())))
    if reference not in first_classes:
        raise UserError(f"reference class {reference!r} not among the classes {first_classes}")
    columns = [name for name in first_classes if name != reference]
    if not columns:
        raise UserError(f"plot_loss_histograms: no class to compare with {reference!r}")
    for label, per_class in losses.items():
        if list(per_class) != first_classes:
            raise UserError(f"row {label!r} has classes {list(per_class)}; expected {first_classes} like the first row")

    figure = Figure(figsize=(2.6 * len(columns) + 0.6, 2.1 * len(losses) + 0.5), layout="constrained")
    grid = figure.subplots(len(losses), len(columns), squeeze=False)
    for axes_row, (label, per_class) in zip(grid, losses.items()):
        values = {name: np.asarray(v, dtype=np.float64).ravel() for name, v in per_class.items()}
        for name, v in values.items():
            if v.size == 0 or not np.all(np.isfinite(v)):
                raise UserError(f"row {label!r}, class {name!r}: expected a non-empty array of finite losses")
        pooled = np.concatenate(list(values.values()))
        low, high = float(pooled.min()), float(pooled.max())
        logarithmic = low > 0 and high > low
        if logarithmic:
            edges = np.geomspace(low, high, bins + 1)
        else:
            edges = np.linspace(low, high if high > low else low + 1.0, bins + 1)
        for axes, name in zip(axes_row, columns):
            axes.hist(values[reference], bins=edges, alpha=0.6, color="C0", label=reference)
            axes.hist(values[name], bins=edges, alpha=0.6, color="C3", label=name)
            if logarithmic:
                axes.set_xscale("log")
                # Ticks at 1, 2 and 5 per decade, plain numbers: the default minor-tick labels
                # of a narrow log range overlap.
                axes.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
                axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
                axes.xaxis.set_minor_formatter(NullFormatter())
            axes.tick_params(labelsize=7)
            axes.legend(fontsize=7)
        axes_row[0].set_ylabel(f"{label}\nimages", fontsize=9)
    for axes in grid[-1]:
        axes.set_xlabel("reconstruction loss", fontsize=8)
    if title:
        figure.suptitle(title)
    return save_figure(figure, path)


def plot_density_error_scatter(groups: dict, density_threshold: float, error_threshold: float, path: str | os.PathLike) -> Path:
    """Log density (x) against reconstruction error (y) per image, with the two kde thresholds.

    groups: {label: (log_density (N,), error (N,))}, e.g. validation / finetuning good /
    finetuning defective. A threshold of -inf / +inf (rule switched off) is not drawn. Images left
    of the density line or above the error line are called anomalous.
    """
    figure = Figure(figsize=(6.4, 4.8), layout="constrained")
    axes = figure.subplots()
    for index, (label, (log_density, error)) in enumerate(groups.items()):
        log_density = np.asarray(log_density, dtype=np.float64)
        error = np.asarray(error, dtype=np.float64)
        if log_density.shape != error.shape or log_density.ndim != 1:
            raise UserError(f"group {label!r}: expected 1-D log densities and errors of one length, got {log_density.shape} and "
                    f"{error.shape}")
        axes.scatter(log_density, error, s=14, alpha=0.7, color=f"C{index}", label=f"{label} ({log_density.size})")
    if np.isfinite(density_threshold):
        axes.axvline(density_threshold, color="k", linestyle="--", label=f"density threshold {density_threshold:.4g}")
    if np.isfinite(error_threshold):
        axes.axhline(error_threshold, color="k", linestyle=":", label=f"error threshold {error_threshold:.4g}")
    axes.set_xlabel("log density of the latent code")
    axes.set_ylabel("reconstruction error")
    axes.set_title("anomaly: left of the dashed line OR above the dotted line")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return save_figure(figure, path)
