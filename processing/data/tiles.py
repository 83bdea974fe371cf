"""Tiles of images far larger than the model: cut at the original resolution, maps stitched back.

A 20 px defect on a 2,048 px part becomes 2-3 px when the part is resized to a 256 px model input,
below what a feature grid of stride 8 can see. With ``train.py --tile SIZE`` the model's input is a
SIZE x SIZE tile of the original image instead: train.py trains on every tile of the training
images, and finetune.py, test.py and predict.py score every tile of an image, stitch the tiles'
maps into one map at the image's own size (overlapping tiles averaged) and decide on it, so that
``min_area`` is in original pixels and masks come out at the original size. Memory is bounded by a
batch of tiles, not by the image size (one image's map at a time).

The grid: tiles of `size` pixels every ``size - overlap`` pixels along each axis, the last one
flush with the far edge (so every pixel is covered and no tile hangs over the border); an image
side shorter than a tile is padded by mirroring to one tile (the pad is cut off the stitched map).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autoencoder.errors import UserError
from processing.data.images import image_size, read_image

logger = logging.getLogger(__name__)


def physical_memory() -> int | None:
    """Bytes of memory of this machine (None where the OS does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


@dataclass(frozen=True)
class TileGrid:
    """Square tiles of `size` pixels overlapping by `overlap` pixels."""

    size: int
    overlap: int = 0

    def __post_init__(self):
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 8:
            raise UserError(f"--tile {self.size}: expected a tile side of at least 8 pixels")
        if isinstance(self.overlap, bool) or not isinstance(self.overlap, int) or not 0 <= self.overlap < self.size:
            raise UserError(f"--tile-overlap {self.overlap}: expected a number of pixels from 0 to --tile - 1 ({self.size - 1})")

    @classmethod
    def of(cls, record: dict | None) -> TileGrid | None:
        """The grid info.json records (``model.tile``), or None for a model without tiles."""
        return None if not record else cls(int(record["size"]), int(record["overlap"]))

    def to_json(self) -> dict:
        return {"size": self.size, "overlap": self.overlap}

    def starts(self, length: int) -> list[int]:
        """The first pixel of each tile along an axis of `length` pixels."""
        if length <= self.size:
            return [0]
        stride = self.size - self.overlap
        starts = list(range(0, length - self.size, stride))
        return starts + [length - self.size]

    def boxes(self, height: int, width: int) -> list[tuple[int, int]]:
        """(top, left) of every tile of an image, row by row."""
        return [(top, left) for top in self.starts(height) for left in self.starts(width)]

    def count(self, height: int, width: int) -> int:
        return len(self.starts(height)) * len(self.starts(width))


def pad_to_tile(image: np.ndarray, size: int) -> np.ndarray:
    """An (H, W, C) image mirrored at its bottom and right edges until both sides are at least `size`."""
    pad_h, pad_w = max(0, size - image.shape[0]), max(0, size - image.shape[1])
    if not pad_h and not pad_w:
        return image
    return np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode="symmetric")


def tiles_of(image: np.ndarray, grid: TileGrid) -> np.ndarray:
    """The (T, size, size, C) tiles of an (H, W, C) image, in the order of ``grid.boxes``."""
    padded = pad_to_tile(image, grid.size)
    return np.stack([padded[top:top + grid.size, left:left + grid.size] for top, left in grid.boxes(*padded.shape[:2])])


def stitch(tile_maps: np.ndarray, grid: TileGrid, height: int, width: int) -> np.ndarray:
    """One (height, width) float64 map from the (T, size, size) maps of an image's tiles: the mean of
    the tiles covering each pixel."""
    padded_h, padded_w = max(height, grid.size), max(width, grid.size)
    total = np.zeros((padded_h, padded_w))
    cover = np.zeros((padded_h, padded_w))
    for tile_map, (top, left) in zip(tile_maps, grid.boxes(padded_h, padded_w)):
        total[top:top + grid.size, left:left + grid.size] += tile_map
        cover[top:top + grid.size, left:left + grid.size] += 1.0
    return (total / cover)[:height, :width]


def iter_tile_batches(paths: list[Path], color_mode: str, grid: TileGrid, batch_size: int) -> Iterator[np.ndarray]:
    """Batches of at most `batch_size` tiles of the images `paths` (float32 (B, size, size, C)), in order."""
    pending: list[np.ndarray] = []
    for path in paths:
        for tile in tiles_of(read_image(path, color_mode), grid):
            pending.append(tile)
            if len(pending) == batch_size:
                yield np.stack(pending)
                pending = []
    if pending:
        yield np.stack(pending)


def load_tiles(paths: list[Path], color_mode: str, grid: TileGrid) -> np.ndarray:
    """Every tile of the images `paths` as one float32 (N_tiles, size, size, C) array (training).

    The tiles are counted from the image headers first: a grid that would hold more than half of
    this machine's memory is refused in one line naming --tile and --tile-overlap (an overlap of 31
    on 32 px tiles cuts some 65,000 tiles from 27 images), and the estimate is logged."""
    channels = 1 if color_mode == "grayscale" else 3
    count = sum(grid.count(*(max(side, grid.size) for side in image_size(path))) for path in paths)
    needed = count * grid.size * grid.size * channels * 4
    available = physical_memory()
    logger.info("%d tiles of %d px (overlap %d) from %d images: %.2f GiB", count, grid.size, grid.overlap, len(paths), needed / 2**30)
    if available is not None and needed > available / 2:
        raise UserError(f"--tile {grid.size} --tile-overlap {grid.overlap}: {count} tiles of {len(paths)} images would take "
                         f"{needed / 2**30:.1f} GiB, more than half of this machine's {available / 2**30:.0f} GiB; lower "
                         "--tile-overlap or raise --tile")
    batches = list(iter_tile_batches(paths, color_mode, grid, 256))
    return np.concatenate(batches) if batches else np.zeros((0, grid.size, grid.size, channels), np.float32)


def iter_originals(paths: list[Path], color_mode: str, batch_size: int) -> Iterator[tuple[list[Path], list[np.ndarray]]]:
    """(paths, images at their original size, float32 (H_i, W_i, C)) in batches of `batch_size` images."""
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        yield chunk, [read_image(path, color_mode) for path in chunk]


def batch_of(images: list[np.ndarray]):
    """Inputs as one array when they share a shape (the usual case), else as a list (whole images of a tiled model)."""
    return np.stack(images) if len({image.shape for image in images}) <= 1 else list(images)
