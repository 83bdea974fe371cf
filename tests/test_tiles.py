"""Tiling for images far larger than the model: the grid covers every pixel, stitching averages the
overlaps, and train.py --tile, finetune.py, test.py and predict.py work at the images' own size
(masks, boxes and min_area in original pixels); what cannot take tiles says so in one line."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest

import export as export_script
import finetune
import predict
import test as test_script
import train
from autoencoder import cli
from processing.data.images import image_size
from processing.data.synthetic_datasets import make_highres_dataset
from processing.data.tiles import TileGrid, stitch, tiles_of

TILE = 32


@pytest.mark.parametrize("length", [32, 33, 70, 96, 100])
def test_the_grid_covers_every_pixel_flush_with_the_edges(length):
    grid = TileGrid(32, 8)
    starts = grid.starts(length)
    covered = np.zeros(max(length, 32), bool)
    for start in starts:
        covered[start:start + 32] = True
    assert covered[:length].all() and starts[0] == 0 and starts[-1] == max(0, length - 32)
    assert all(b - a <= 24 for a, b in zip(starts, starts[1:]))


def test_stitching_the_tiles_of_an_image_gives_the_image_back():
    rng = np.random.default_rng(0)
    for height, width in ((70, 45), (20, 90), (32, 32)):
        image = rng.random((height, width, 1)).astype(np.float32)
        grid = TileGrid(32, 10)
        tiles = tiles_of(image, grid)
        assert tiles.shape == (grid.count(max(height, 32), max(width, 32)), 32, 32, 1)
        np.testing.assert_allclose(stitch(tiles[..., 0], grid, height, width), image[..., 0], rtol=1e-6)
    with pytest.raises(ValueError, match="--tile-overlap 32"):
        TileGrid(32, 32)


@pytest.fixture(scope="module")
def tiled(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiles")
    data = make_highres_dataset(root / "big", image_size=96, n_train=12, n_test_good=4, n_test_defect=1, defect_size_range=(5, 12), seed=2)
    model = train.main(["-d", str(data), "-a", "mvtecCAE", "-l", "l2", "--tile", str(TILE), "--tile-overlap", "8", "-b", "16",
                        "--epochs", "1", "--lr", "1e-3", "--output-dir", str(root / "models")])
    results = root / "results"
    finetune.main(["-p", str(model), "--results-dir", str(results)])
    return root, data, model, results


def test_a_tiled_model_decides_at_the_images_own_size(tiled):
    root, data, model, results = tiled
    info = json.loads((model / "info.json").read_text())
    assert info["model"]["tile"] == {"size": TILE, "overlap": 8} and info["model"]["image_size"] == TILE
    (test_dir,) = test_script.main(["-p", str(model), "--results-dir", str(results), "-s", "--heatmaps"])
    heat_maps = sorted((test_dir / "heatmaps").rglob("*_heatmap.png"))
    assert heat_maps and all(cv2.imread(str(path)).shape[:2] == image_size(data / "test" / path.parent.name /
                                                                              path.name.replace("_heatmap", "")) for path in heat_maps)
    tested = json.loads((test_dir / "test_result.json").read_text())
    assert tested["pixel_auroc"] is not None and tested["aupro"] is not None
    masks = sorted((test_dir / "segmentation").rglob("*_mask.png"))
    assert masks and all(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).shape == (96, 96) for path in masks)

    out = root / "predicted"
    predict.main(["-p", str(model), "-i", str(data / "test"), "-o", str(out), "--results-dir", str(results), "--masks"])
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    assert rows and all(row["width"] == "96" and row["height"] == "96" and not row["error"] for row in rows)
    result = json.loads(next((results).rglob("finetuning_result.json")).read_text())
    flagged = [row for row in rows if row["defective"] == "1"]
    assert all(int(row["defect_area_px"]) >= result["best_min_area"] for row in flagged)


def test_what_cannot_take_tiles_says_so(tiled, tmp_path, capsys):
    root, data, model, results = tiled
    assert cli.run(export_script.main, ["-p", str(model), "--format", "savedmodel", "-o", str(tmp_path / "e"),
                                        "--results-dir", str(results)]) == 2
    assert "tiled model" in capsys.readouterr().err
    assert cli.run(finetune.main, ["-p", str(model), "--normalize", "pixel", "--results-dir", str(tmp_path / "r")]) == 2
    assert "--normalize pixel: not for a tiled model" in capsys.readouterr().err
    assert cli.run(finetune.main, ["-p", str(model), "--detector", "kde", "-m", "l2", "--results-dir", str(tmp_path / "r")]) == 2
    assert "--detector kde: not for a tiled model" in capsys.readouterr().err
    argv = ["-d", str(data), "-a", "mvtecCAE", "--tile", "32", "--image-size", "64", "--output-dir", str(tmp_path / "m")]
    assert cli.run(train.main, argv) == 2
    assert "a tiled model's input is one tile" in capsys.readouterr().err
    assert cli.run(train.main, ["-d", str(data), "-a", "mvtecCAE", "--tile-overlap", "4", "--output-dir", str(tmp_path / "m")]) == 2
    assert "--tile-overlap needs --tile SIZE" in capsys.readouterr().err


def test_a_grid_too_large_for_the_machine_is_refused_before_any_tile_is_cut(tmp_path, monkeypatch, caplog):
    """--tile-overlap 31 on 32 px tiles: counted from the image headers first (issue 30, noted case)."""
    import cv2
    import numpy as np
    import pytest

    from processing.data import tiles

    paths = []
    for index in range(3):
        path = tmp_path / f"{index}.png"
        cv2.imwrite(str(path), np.zeros((200, 300), np.uint8))
        paths.append(path)
    grid = tiles.TileGrid(32, 31)
    expected = 3 * grid.count(200, 300)
    monkeypatch.setattr(tiles, "physical_memory", lambda: 2 * expected * 32 * 32 * 4 - 1)
    with pytest.raises(ValueError, match=rf"--tile 32 --tile-overlap 31: {expected} tiles of 3 images would take"):
        tiles.load_tiles(paths, "grayscale", grid)
    monkeypatch.setattr(tiles, "physical_memory", lambda: 2 * expected * 32 * 32 * 4)
    assert len(tiles.load_tiles(paths, "grayscale", grid)) == expected


def test_the_map_model_owns_the_tiling(tiled):
    """A tiled model's map model reads whole images, gives each map at its image's own size, equal
    to the stitched maps of its tiles, and the detector only asks it."""
    from autoencoder import bundle
    from processing.data.images import image_size, read_image
    from processing.maps.map_model import MapModel, refuse_tiled
    from processing.workflow.results import ResultsTree, load_detector

    root, data, model, results = tiled
    loaded = bundle.load_bundle(model)
    _, folder = ResultsTree.of_model(loaded, results).choose(None)
    detector = load_detector(loaded, folder)
    maps = detector.maps
    assert isinstance(maps, MapModel) and maps.grid == TileGrid(TILE, 8)
    paths = sorted((data / "test").rglob("*.png"))[:3]
    produced = maps.maps_of_files(paths)
    for path, resmap in zip(paths, produced):
        assert resmap.shape == image_size(path) == maps.map_shape(path) == detector.map_shape(path)
        image, original = maps.read_input(path)
        assert image.shape[:2] == original.shape[:2] == image_size(path)
        tiles = tiles_of(read_image(path, "grayscale"), maps.grid)
        expected = maps.postprocess(stitch(maps.raw_maps(tiles), maps.grid, *image.shape[:2])[None])[0]
        np.testing.assert_allclose(resmap, expected, rtol=1e-6)
    with pytest.raises(ValueError, match=rf"--thing: not for a tiled model \(train.py --tile {TILE}\): because"):
        refuse_tiled(loaded.info, "--thing", "because")


def test_the_training_tiles_a_density_is_fitted_on_are_read_batch_by_batch(tmp_path, monkeypatch):
    """At most MAX_FIT_TILES tiles drawn at random, the same ones as drawing from every tile at
    once (the former way, which held them all), in batches of the batch size."""
    from types import SimpleNamespace

    from processing.data.tiles import load_tiles
    from processing.maps import map_model

    data = make_highres_dataset(tmp_path / "big", image_size=80, n_train=5, n_test_good=1, n_test_defect=1, seed=1)
    paths = sorted((data / "train" / "good").glob("*.png"))
    tile = SimpleNamespace(size=TILE, overlap=8)
    model = SimpleNamespace(info=SimpleNamespace(model=SimpleNamespace(tile=tile, color_mode="grayscale", image_size=TILE)))
    every = load_tiles(paths, "grayscale", TileGrid(TILE, 8))
    monkeypatch.setattr(map_model, "MAX_FIT_TILES", 11)
    batches, total = map_model.training_inputs(model, paths, batch_size=4, seed=3)
    drawn = list(batches())
    expected = every[np.sort(np.random.default_rng(3).choice(len(every), 11, replace=False))]
    assert total == 11 and [len(batch) for batch in drawn] == [4, 4, 3]
    np.testing.assert_array_equal(np.concatenate(drawn), expected)
    monkeypatch.setattr(map_model, "MAX_FIT_TILES", 10_000)
    batches, total = map_model.training_inputs(model, paths, batch_size=4, seed=3)
    assert total == len(every)
    np.testing.assert_array_equal(np.concatenate(list(batches())), every)
