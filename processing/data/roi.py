"""A region of interest: the part of every image that is inspected (a mask image, white = inspect).

A fixture, a label, a printed serial number or the background around a part differ from image to
image without being defects. Given at training (train.py --roi, or a `roi.png` beside the dataset's
train/ folder), the region is stored with the model (`roi.png` in the model folder, recorded in
info.json's `model.roi`) and applied to every anomaly map before any decision (the map model,
processing/maps/map_model.py): outside it a map holds its lowest value inside it, so nothing there
is ever flagged, and test.py's pixel metrics count the pixels inside it only.

A mask of another size than the images is scaled to each map (nearest neighbour); a mask that
cannot be read or covers nothing is refused in one line.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from autoencoder.folders import write_bytes_atomic
from processing.data.images import DatasetError, read_image

ROI_FILE = "roi.png"  # in a model folder, and the dataset's own region when train.py is given none


def read_roi(path: str | os.PathLike, flag: str = "--roi") -> np.ndarray:
    """The region of a mask image as bool (H, W): True where it is light (>= half of white; a
    painted mask's soft edges count by their side of grey). One line naming `flag` and the file when
    it cannot be read or covers nothing."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{flag} {path} not found: expected a mask image, white where the images are inspected")
    try:
        grey = read_image(path, "grayscale")[:, :, 0]
    except (DatasetError, OSError, ValueError) as error:
        raise DatasetError(f"{flag} {path}: not a readable mask image ({str(error).splitlines()[0]})") from None
    region = grey >= 0.5
    if not region.any():
        raise DatasetError(f"{flag} {path}: covers nothing (no pixel is light): expected white where the images are inspected")
    return region


def roi_at(region: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The region scaled to (H, W) by nearest neighbour (the same region on an image of any size)."""
    height, width = shape
    if region.shape == (height, width):
        return region
    return cv2.resize(region.view(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST_EXACT).astype(bool)


def write_roi(path: str | os.PathLike, region: np.ndarray) -> Path:
    """The region as a 0/255 PNG (through a temporary file)."""
    ok, encoded = cv2.imencode(".png", region.astype(np.uint8) * 255)
    if not ok:
        raise DatasetError(f"cannot encode the region of interest {path} as PNG")
    return write_bytes_atomic(path, encoded.tobytes())


def below_outside(maps, region: np.ndarray, threshold: float):
    """Maps (N, H, W) or a list, with every pixel outside `region` set below `threshold` (and
    below every map value): what the decision thresholds, so that nothing outside is ever flagged,
    even where the whole region is above the threshold."""
    if isinstance(maps, list):
        return [below_outside(resmap[None], region, threshold)[0] for resmap in maps]
    maps = np.array(maps, dtype=np.float64, copy=True)
    if len(maps):
        maps[:, ~roi_at(region, maps.shape[1:3])] = min(float(threshold), float(maps.min())) - 1.0
    return maps


def restrict_maps(maps, region: np.ndarray):
    """Maps (N, H, W) or a list of (H_i, W_i) with every pixel outside `region` (scaled to each map)
    set to that map's lowest value inside it: nothing outside is ever above a threshold that
    something inside is not."""
    if isinstance(maps, list):
        return [restrict_maps(resmap[None], region)[0] for resmap in maps]
    maps = np.array(maps, copy=True)
    inside = roi_at(region, maps.shape[1:3])
    if inside.all() or len(maps) == 0:
        return maps
    lowest = maps[:, inside].min(axis=1)
    maps[:, ~inside] = lowest[:, None].astype(maps.dtype)
    return maps
