"""Tests for processing.evaluation.plots: every function writes a readable PNG atomically."""

import matplotlib.image
import numpy as np
import pytest

from processing.evaluation.plots import plot_inspection, plot_loss_history, plot_lr_finder, plot_lr_schedule, save_figure


def read_png(path):
    """The written image, checked to be a non-trivial RGB(A) PNG with no temp files beside it."""
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert np.ptp(image[..., :3]) > 0.5  # something was drawn on the white background
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    return image


def test_plot_loss_history_with_metric_panel(tmp_path):
    history = {
        "loss": [0.9, 0.5, 0.3, 0.25],
        "val_loss": [1.0, 0.6, 0.4, 0.45],
        "ssim": [0.2, 0.5, 0.7, 0.75],
        "val_ssim": [0.1, 0.4, 0.6, 0.55],
        "lr": [1e-3] * 4,
    }
    path = tmp_path / "history.png"
    assert plot_loss_history(history, path) == path
    wide = read_png(path)
    narrow_path = tmp_path / "sub" / "loss.png"
    plot_loss_history({"loss": history["loss"], "val_loss": history["val_loss"]}, narrow_path, best_epoch=2)
    narrow = matplotlib.image.imread(narrow_path)
    assert wide.shape[1] > 1.5 * narrow.shape[1]  # the metric got its own panel


def test_plot_lr_finder_marks_suggestion(tmp_path):
    lrs = np.geomspace(1e-5, 1.0, 80)
    losses = 1 + 9 / (1 + (lrs / 1e-2) ** 2)
    losses[-3:] = [20, 200, np.nan]
    path = plot_lr_finder(lrs, losses, 3e-3, tmp_path / "lr_finder.png")
    read_png(path)
    plot_lr_finder(lrs, losses, None, tmp_path / "lr_finder.png")  # overwrite, no suggestion
    read_png(path)


def test_plot_lr_schedule(tmp_path):
    lrs = np.tile(np.r_[np.linspace(1e-4, 1e-3, 5), np.linspace(1e-3, 1e-4, 5)[1:-1]], 4)
    read_png(plot_lr_schedule(lrs, tmp_path / "schedule.png", steps_per_epoch=8))


@pytest.mark.parametrize("channels", [1, 3])
def test_plot_inspection_one_row_per_image(tmp_path, channels):
    rng = np.random.default_rng(0)
    inputs = rng.uniform(size=(5, 32, 32, channels)).astype("float32")
    reconstructions = np.clip(inputs + rng.normal(scale=0.1, size=inputs.shape), 0, 1)
    resmaps = np.abs(inputs - reconstructions).mean(axis=-1)
    three = read_png(plot_inspection(inputs, reconstructions, resmaps, tmp_path / "three.png", max_images=3))
    (tmp_path / "three.png").unlink()
    five = read_png(plot_inspection(inputs, reconstructions, resmaps, tmp_path / "five.png", titles=list("abcde")))
    assert five.shape[0] > 1.5 * three.shape[0]


def test_bad_inputs_give_clear_errors(tmp_path):
    images = np.zeros((2, 8, 8, 1))
    with pytest.raises(ValueError, match="resmaps must have shape"):
        plot_inspection(images, images, np.zeros((2, 8, 7)), tmp_path / "x.png")
    with pytest.raises(ValueError, match="C 1 or 3"):
        plot_inspection(np.zeros((2, 8, 8, 2)), np.zeros((2, 8, 8, 2)), np.zeros((2, 8, 8)), tmp_path / "x.png")
    with pytest.raises(ValueError, match="expected a .png"):
        plot_lr_schedule([1e-3, 2e-3], tmp_path / "schedule.jpg")
    with pytest.raises(ValueError, match="no 'loss'"):
        plot_loss_history({"val_loss": [1.0]}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="same non-zero length"):
        plot_lr_finder([1e-3, 1e-2], [1.0], None, tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


def test_failed_save_leaves_no_temp_file(tmp_path):
    class BrokenFigure:
        def savefig(self, stream, **kwargs):
            stream.write(b"partial")
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_figure(BrokenFigure(), tmp_path / "broken.png")
    assert list(tmp_path.iterdir()) == []


def test_a_heat_map_is_at_the_images_size_with_the_threshold_outlined():
    from processing.evaluation.overlays import THRESHOLD_COLOR, draw_heatmap

    image = np.full((40, 60, 1), 0.5, np.float32)
    anomaly = np.zeros((10, 15))
    anomaly[3:7, 5:10] = 4.0  # one hot region, at a quarter of the image's size
    heat = draw_heatmap(image, anomaly, threshold=2.0, scale=(0.0, 4.0))
    assert heat.shape == (40, 60, 3) and heat.dtype == np.uint8
    white = np.all(heat == THRESHOLD_COLOR, axis=2)
    rows, cols = np.nonzero(white)
    # The outline is where the bilinearly upsampled map crosses the threshold: around the hot region only.
    assert white.any() and 8 <= rows.min() and rows.max() <= 30 and 16 <= cols.min() and cols.max() <= 42
    assert heat[20, 30].sum() > heat[2, 2].sum()  # bright inside, dark outside (INFERNO)
    cold = draw_heatmap(image, np.zeros((40, 60)), threshold=2.0, scale=(0.0, 4.0))
    assert not np.all(cold == THRESHOLD_COLOR, axis=2).any()  # nothing above the threshold: no outline
    np.testing.assert_array_equal(cold[0, 0], cold[20, 30])  # one colour for one value, anywhere
