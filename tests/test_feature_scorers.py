"""autoencoder/features: per-position Gaussians (PaDiM) and the nearest-neighbour memory bank (PatchCore)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from processing.maps import feature_arrays
from processing.maps.knn import (
    MemoryBank,
    fit_memory_bank,
    greedy_coreset,
    load_memory_bank,
    random_subsample,
)
from processing.maps.padim import (
    fit_global_gaussian,
    fit_position_gaussians,
    load_position_gaussians,
)


def correlated_features(n: int, h: int, w: int, c: int, seed: int = 0, offset: float = 50.0) -> np.ndarray:
    """(n, h, w, c) float32: correlated channels, a position-dependent mean far from 0 (tests the shifted sums)."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(h, w, c, c))
    latent = rng.normal(size=(n, h, w, c))
    mean = offset + rng.normal(size=(h, w, c))
    return (np.einsum("nhwc,hwcd->nhwd", latent, mixing) + mean).astype(np.float32)


def naive_mahalanobis(train: np.ndarray, queries: np.ndarray, eps: float, channels=None) -> np.ndarray:
    """The reference: np.cov + eps * I and np.linalg.inv at each position, one query vector at a time."""
    if channels is not None:
        train, queries = train[..., channels], queries[..., channels]
    n, h, w, c = queries.shape
    out = np.empty((n, h, w))
    for i in range(h):
        for j in range(w):
            samples = train[:, i, j].astype(np.float64)
            inverse = np.linalg.inv(np.cov(samples, rowvar=False) + eps * np.eye(c))
            mean = samples.mean(axis=0)
            for k in range(n):
                delta = queries[k, i, j] - mean
                out[k, i, j] = np.sqrt(delta @ inverse @ delta)
    return out


def clustered_vectors(n_clusters: int, dim: int, seed: int = 0) -> np.ndarray:
    """Tight clusters of very unequal sizes (a random subset tends to miss the small ones)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 10.0, (n_clusters, dim))
    sizes = np.maximum(1, (200 * 0.8 ** np.arange(n_clusters)).astype(int))
    labels = np.repeat(np.arange(n_clusters), sizes)
    return (centres[labels] + rng.normal(0.0, 0.1, (len(labels), dim))).astype(np.float32)


def covering_radius(vectors: np.ndarray, subset: np.ndarray) -> float:
    """The largest distance from any vector to its nearest vector of the subset."""
    return float(cdist(vectors, vectors[subset]).min(axis=1).max())


# --------------------------------------------------------------------------------------------
# Gaussians
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("eps", [0.01, 1.0])
def test_mahalanobis_matches_naive_per_position_loop(eps, monkeypatch):
    train = correlated_features(40, 3, 4, 5)
    queries = correlated_features(6, 3, 4, 5, seed=1)
    expected = naive_mahalanobis(train, queries, eps)
    model = fit_position_gaussians(train, regularization=eps)
    assert model.mean.shape == (3, 4, 5) and model.inv_covariance.shape == (3, 4, 5, 5)
    assert model.mean.dtype == model.inv_covariance.dtype == np.float32
    scores = model.score(queries)
    assert scores.shape == (6, 3, 4) and scores.dtype == np.float32
    np.testing.assert_allclose(scores, expected, rtol=2e-4)
    monkeypatch.setattr(feature_arrays, "CHUNK_BYTES", 1)  # one image and one position per chunk
    chunked = fit_position_gaussians(train, regularization=eps)
    np.testing.assert_allclose(chunked.inv_covariance, model.inv_covariance, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(chunked.score(queries), expected, rtol=2e-4)


def test_channel_subset_random_or_explicit():
    train = correlated_features(30, 2, 3, 8)
    queries = correlated_features(4, 2, 3, 8, seed=1)
    model = fit_position_gaussians(train, channel_subset=3, seed=5)
    assert model.channel_subset.shape == (3,) and len(set(model.channel_subset)) == 3
    assert model.mean.shape == (2, 3, 3) and model.n_channels == 8
    np.testing.assert_array_equal(model.channel_subset, fit_position_gaussians(train, channel_subset=3, seed=5).channel_subset)
    np.testing.assert_allclose(model.score(queries), naive_mahalanobis(train, queries, 0.01, model.channel_subset), rtol=2e-4)
    explicit = fit_position_gaussians(train, channel_subset=[6, 1])
    np.testing.assert_allclose(explicit.score(queries), naive_mahalanobis(train, queries, 0.01, [6, 1]), rtol=2e-4)


def test_global_gaussian_is_one_gaussian_over_all_positions():
    train = correlated_features(10, 3, 3, 4)
    model = fit_global_gaussian(train)
    assert model.mean.shape == (1, 1, 4) and model.grid == (1, 1)
    queries = correlated_features(2, 5, 6, 4, seed=1)  # any grid
    pooled = train.reshape(-1, 1, 1, 4)
    expected = naive_mahalanobis(pooled, queries.reshape(-1, 1, 1, 4), 0.01).reshape(2, 5, 6)
    np.testing.assert_allclose(model.score(queries), expected, rtol=2e-4)


def test_gaussian_input_errors():
    with pytest.raises(ValueError, match="at least 2 images"):
        fit_position_gaussians(np.zeros((1, 2, 2, 3), np.float32))
    with pytest.raises(ValueError, match=r"expected a non-empty \(N, H, W, C\)"):
        fit_position_gaussians(np.zeros((5, 2, 3), np.float32))
    with pytest.raises(ValueError, match="channel_subset"):
        fit_position_gaussians(np.zeros((5, 2, 2, 3), np.float32), channel_subset=[0, 3])


# --------------------------------------------------------------------------------------------
# Memory bank
# --------------------------------------------------------------------------------------------


def test_memory_bank_distances_match_cdist_and_a_naive_loop():
    rng = np.random.default_rng(0)
    bank = (rng.normal(size=(300, 16)) + 20.0).astype(np.float32)  # large norms: cancellation-prone
    queries = (rng.normal(size=(5, 4, 6, 16)) + 20.0).astype(np.float32)
    queries[0, 0, 0] = bank[7]  # an exact match scores 0, not sqrt(rounding error)
    flat = queries.reshape(-1, 16)
    expected = cdist(flat.astype(np.float64), bank.astype(np.float64)).min(axis=1)
    naive = np.array([min(np.linalg.norm(q.astype(np.float64) - b) for b in bank) for q in flat[:20]])
    np.testing.assert_allclose(expected[:20], naive, rtol=1e-12)
    for block_bytes in (1, 300 * 4 * 7, 2**26):  # one query per block, 7 per block, all at once
        memory = MemoryBank(bank, block_bytes=block_bytes)
        scores = memory.score(queries)
        assert scores.shape == (5, 4, 6) and scores.dtype == np.float32
        np.testing.assert_allclose(scores.ravel(), expected, rtol=1e-5)
        assert scores[0, 0, 0] == 0.0
        _, indices = memory.nearest(flat)
        np.testing.assert_array_equal(indices, cdist(flat, bank).argmin(axis=1))


def test_fit_memory_bank_methods():
    features = np.random.default_rng(0).normal(size=(4, 5, 5, 6)).astype(np.float32)
    vectors = features.reshape(-1, 6)
    np.testing.assert_array_equal(fit_memory_bank(features, method="all").bank, vectors)
    np.testing.assert_array_equal(fit_memory_bank(features, size=1000).bank, vectors)  # size >= 100 vectors
    for method in ("coreset", "random"):
        memory = fit_memory_bank(features, size=30, method=method, seed=3)
        assert memory.bank.shape == (30, 6)
        assert (cdist(memory.bank, vectors).min(axis=1) == 0).all()  # rows of the input
        assert memory.score(features).min() == 0.0
    with pytest.raises(ValueError, match="method 'knn'"):
        fit_memory_bank(features, method="knn")


@pytest.mark.parametrize("dim, projection_dim", [(8, 128), (200, 128)])
def test_greedy_coreset_properties(dim, projection_dim):
    vectors = clustered_vectors(25, dim)
    coreset = greedy_coreset(vectors, 25, seed=1, projection_dim=projection_dim)
    assert coreset.shape == (25,) and coreset.dtype == np.int64
    assert len(np.unique(coreset)) == 25 and coreset.min() >= 0 and coreset.max() < len(vectors)
    np.testing.assert_array_equal(coreset, greedy_coreset(vectors, 25, seed=1, projection_dim=projection_dim))
    radius = covering_radius(vectors, coreset)
    assert radius < 0.5 * np.sqrt(dim)  # a point in every cluster: distances ~0.14 sqrt(dim) within one, ~14 sqrt(dim) between
    for seed in range(5):
        assert radius <= covering_radius(vectors, random_subsample(vectors, 25, seed=seed))


def test_subsets_with_duplicates_and_bad_sizes():
    vectors = np.repeat(np.eye(3, dtype=np.float32), 4, axis=0)  # 3 distinct rows, 12 vectors
    coreset = greedy_coreset(vectors, 5)
    assert len(np.unique(coreset)) == 5
    assert len({tuple(row) for row in vectors[coreset[:3]]}) == 3  # the 3 distinct rows first
    subsample = random_subsample(vectors, 12, seed=2)
    np.testing.assert_array_equal(subsample, np.arange(12))
    np.testing.assert_array_equal(random_subsample(vectors, 5, seed=4), random_subsample(vectors, 5, seed=4))
    for size in (0, 13):
        with pytest.raises(ValueError, match="expected 1..12"):
            greedy_coreset(vectors, size)


# --------------------------------------------------------------------------------------------
# Files and errors
# --------------------------------------------------------------------------------------------


def test_save_load_round_trips_give_identical_scores(tmp_path):
    train = correlated_features(20, 3, 3, 6)
    queries = correlated_features(3, 3, 3, 6, seed=1)
    for model in (fit_position_gaussians(train), fit_position_gaussians(train, channel_subset=4), fit_global_gaussian(train)):
        path = model.save(tmp_path / "gaussians.npz")
        loaded = load_position_gaussians(path)
        np.testing.assert_array_equal(loaded.score(queries), model.score(queries))
        assert loaded.regularization == model.regularization and loaded.n_channels == 6
    memory = fit_memory_bank(train, size=40)
    loaded = load_memory_bank(memory.save(tmp_path / "bank.npz"))
    np.testing.assert_array_equal(loaded.bank, memory.bank)
    np.testing.assert_array_equal(loaded.score(queries), memory.score(queries))
    with np.load(tmp_path / "bank.npz", allow_pickle=False) as data:  # plain arrays, no pickles
        assert set(data.files) == {"kind", "format_version", "bank"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bank.npz", "gaussians.npz"]  # no temporary files left


def test_bad_files_raise_value_error_naming_the_file(tmp_path):
    corrupt = tmp_path / "corrupt_scorer.npz"
    corrupt.write_bytes(b"PK\x03\x04 definitely not a zip archive")
    for load in (load_position_gaussians, load_memory_bank):
        for path in (corrupt, tmp_path / "missing_scorer.npz"):
            with pytest.raises(ValueError, match=path.name):
                load(path)
    memory_file = MemoryBank(np.ones((3, 2), np.float32)).save(tmp_path / "bank_file.npz")
    with pytest.raises(ValueError, match="bank_file.npz.*expected position_gaussians"):
        load_position_gaussians(memory_file)
    other = tmp_path / "other.npz"
    np.savez(other, bank=np.ones((3, 2)))
    with pytest.raises(ValueError, match="other.npz: not a memory_bank file"):
        load_memory_bank(other)


def test_channel_mismatch_is_one_clear_line():
    train = correlated_features(10, 2, 2, 6)
    wrong = np.zeros((1, 2, 2, 5), np.float32)
    for model in (fit_position_gaussians(train), fit_global_gaussian(train), fit_memory_bank(train, size=8)):
        with pytest.raises(ValueError) as info:
            model.score(wrong)
        message = str(info.value)
        assert "\n" not in message and "5 channels" in message and "fit on 6" in message
    with pytest.raises(ValueError, match="3x2 grid; the scorer was fit on 2x2"):
        fit_position_gaussians(train).score(np.zeros((1, 3, 2, 6), np.float32))
