"""Fitting the default statistics batch by batch (issue 27): the streamed fits equal the fits on
every value at once, and their memory does not grow with the number of training images."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from autoencoder.moments import ChannelMoments
from processing.maps.feature_maps import KnnFitter, PadimFitter
from processing.maps.kinds import CollectingFitter, get_map_kind
from processing.maps.knn import VectorPool
from processing.maps.padim import PositionMoments, fit_position_gaussians
from processing.maps.postprocess import PixelMoments


def feature_batches(n_batches: int, batch: int = 8, grid: int = 4, channels: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    for _ in range(n_batches):  # each batch made fresh, as a model pass makes it
        yield (rng.normal(size=(batch, grid, grid, channels)) * 3 + 100).astype(np.float32)


def test_streamed_gaussians_equal_the_fit_on_every_image_and_can_take_more_later():
    batches = list(feature_batches(5))
    whole = fit_position_gaussians(np.concatenate(batches))
    moments = PositionMoments()
    for batch in batches[:3]:
        moments.update(batch)
    early = moments.gaussians()
    for batch in batches[3:]:
        moments.update(batch)  # images added after a first fit: the sums go on
    streamed = moments.gaussians()
    np.testing.assert_allclose(streamed.mean, whole.mean, rtol=1e-6)
    np.testing.assert_allclose(streamed.inv_covariance, whole.inv_covariance, rtol=1e-4, atol=1e-6)
    reference = fit_position_gaussians(np.concatenate(batches[:3]))
    np.testing.assert_allclose(early.inv_covariance, reference.inv_covariance, rtol=1e-4, atol=1e-6)
    # Against an independent reference: numpy's covariance of one position.
    vectors = np.concatenate(batches)[:, 1, 2].astype(np.float64)
    expected = np.linalg.inv(np.cov(vectors, rowvar=False) + 0.01 * np.eye(vectors.shape[1]))
    np.testing.assert_allclose(streamed.inv_covariance[1, 2], expected, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="scorer was fit on 6"):
        moments.update(np.zeros((2, 4, 4, 5), np.float32))


def test_the_knn_pool_is_a_bounded_uniform_sample_in_arrival_order():
    batches = list(feature_batches(6, batch=4, grid=4, channels=3))
    vectors = np.concatenate(batches).reshape(-1, 3)
    small = VectorPool(size=10_000, seed=1)
    for batch in batches:
        small.update(batch)
    np.testing.assert_array_equal(small.vectors, vectors)  # everything fits: all of it, in order
    pool = VectorPool(size=50, seed=1)
    for batch in batches:
        pool.update(batch)
    assert pool.vectors.shape == (50, 3) and pool.seen == len(vectors)
    rows = {tuple(row) for row in vectors}
    assert all(tuple(row) in rows for row in pool.vectors)
    again = VectorPool(size=50, seed=1)
    for batch in batches:
        again.update(batch)
    np.testing.assert_array_equal(again.vectors, pool.vectors)
    # Uniform: over many seeds, the vectors of the first and the last batch are kept about as often.
    first = last = 0
    for seed in range(200):
        drawn = VectorPool(size=50, seed=seed)
        for batch in batches:
            drawn.update(batch)
        kept = {tuple(row) for row in drawn.vectors}
        first += sum(tuple(row) in kept for row in batches[0].reshape(-1, 3))
        last += sum(tuple(row) in kept for row in batches[-1].reshape(-1, 3))
    assert abs(first - last) / (first + last) < 0.1


def test_channel_and_pixel_moments_equal_numpy():
    batches = list(feature_batches(4))
    values = np.concatenate(batches).astype(np.float64)
    moments = ChannelMoments()
    for batch in batches:
        moments.update(batch)
    mean, std = moments.mean_std()
    flat = values.reshape(-1, values.shape[-1])
    np.testing.assert_allclose(mean, flat.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(std, flat.std(axis=0), rtol=1e-9)
    maps = values[..., 0]
    pixels = PixelMoments()
    for start in range(0, len(maps), 5):
        pixels.update(maps[start:start + 5])
    mean, std = pixels.statistics()
    np.testing.assert_allclose(mean, maps.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(std, np.maximum(maps.std(axis=0), std.min()), rtol=1e-9)


def peak_bytes(fitter, n_batches: int) -> int:
    """The peak memory tracemalloc sees while `fitter` takes `n_batches` fresh batches and fits."""
    tracemalloc.start()
    try:
        for batch in feature_batches(n_batches, batch=16, grid=8, channels=16):
            fitter.update(batch)
            del batch
        fitter.state()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("make", [PadimFitter, lambda: KnnFitter(seed=0)], ids=["padim", "knn"])
def test_fitting_memory_does_not_grow_with_the_training_set(make, monkeypatch):
    """The peak of a fit on 4x the images stays within 1.2x of the peak on 1x (the fitted state and
    one batch); a fitter that keeps every batch, as fitting did before, grows with them."""
    import processing.maps.feature_maps as feature_maps

    monkeypatch.setattr(feature_maps, "CORESET_POOL", 1024)  # the pool's bound, below the 4x run's vectors
    monkeypatch.setattr(feature_maps, "MEMORY_BANK_SIZE", 256)
    small, large = peak_bytes(make(), 8), peak_bytes(make(), 32)
    assert large < 1.2 * small, (small, large)
    collecting = [peak_bytes(CollectingFitter(get_map_kind("padim"), 0), n) for n in (8, 32)]
    assert collecting[1] > 2.5 * collecting[0]  # what the bound above would catch


def test_kept_sums_continue_to_the_fit_on_every_image(tmp_path):
    """add_good.py: the compact sums a fit keeps, saved and read back, then updated with more images,
    give the Gaussians of a fit on all of them (and the knn pool one pass over every batch gives)."""
    from processing.maps.feature_arrays import load_arrays, save_arrays

    batches = list(feature_batches(5))
    first, later = PositionMoments(), batches[3:]
    for batch in batches[:3]:
        first.update(batch)
    save_arrays(tmp_path / "padim_sums.npz", "padim_sums", first.to_arrays())
    moments = PositionMoments.from_arrays(load_arrays(tmp_path / "padim_sums.npz", "padim_sums", []))
    for batch in later:
        moments.update(batch)
    whole = fit_position_gaussians(np.concatenate(batches))
    continued = moments.gaussians()
    assert moments.n == 40
    np.testing.assert_allclose(continued.mean, whole.mean, rtol=1e-6)
    np.testing.assert_allclose(continued.inv_covariance, whole.inv_covariance, rtol=1e-4, atol=1e-6)
    kept = first.to_arrays()
    assert kept["scatter"].shape == (16, 6 * 7 // 2)  # the upper triangle only
    with pytest.raises(ValueError, match=r"sums.npz: damaged padim sums \(no scatter\)"):
        PositionMoments.from_arrays({key: value for key, value in kept.items() if key != "scatter"}, "sums.npz")
    with pytest.raises(ValueError, match="sums.npz: damaged padim sums"):
        PositionMoments.from_arrays(kept | {"count": np.array("many")}, "sums.npz")

    vectors = list(feature_batches(6, batch=4, grid=4, channels=3))
    whole_pool, pool = VectorPool(size=50, seed=3), VectorPool(size=50, seed=3)
    for batch in vectors:
        whole_pool.update(batch)
    for batch in vectors[:4]:
        pool.update(batch)
    save_arrays(tmp_path / "knn_pool.npz", "knn_sums", pool.to_arrays())
    resumed = VectorPool.from_arrays(load_arrays(tmp_path / "knn_pool.npz", "knn_sums", []))
    for batch in vectors[4:]:
        resumed.update(batch)
    np.testing.assert_array_equal(resumed.vectors, whole_pool.vectors)
    assert resumed.seen == whole_pool.seen == 6 * 4 * 16
    with pytest.raises(ValueError, match="pool.npz: a damaged knn pool"):
        VectorPool.from_arrays(pool.to_arrays() | {"rng_state": np.array('{"bit_generator": "MT19937"}')}, "pool.npz")
