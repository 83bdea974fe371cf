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
from processing.data.images import DatasetError, decode_image

ROI_FILE = "roi.png"  # in a model folder, and the dataset's own region when train.py is given none


def read_roi(path: str | os.PathLike, flag: str = "--roi") -> np.ndarray:
    """The region of a mask image as bool (H, W): True where it is light (>= half of white; a
    painted mask's soft edges count by their side of grey) and, with an alpha channel, opaque. One
    line naming `flag` and the file when it is not a readable image or covers nothing."""
    path = Path(path)
    try:
        is_file, is_dir = path.is_file(), path.is_dir()
    except OSError as error:  # a name too long for the file system
        raise DatasetError(f"{flag} {str(path)[:200]}: cannot be read ({error.strerror or error})") from None
    if is_dir:
        raise DatasetError(f"{flag} {path}: a folder; expected a mask image, white where the images are inspected")
    if not is_file:
        raise DatasetError(f"{flag} {path} not found: expected a mask image, white where the images are inspected")
    try:
        raw = decode_image(path)
    except (DatasetError, OSError, ValueError) as error:
        raise DatasetError(f"{flag} {path}: not a readable mask image ({str(error).splitlines()[0]})") from None
    scale = 65535.0 if raw.dtype == np.uint16 else 255.0
    pixels = raw.astype(np.float32) / scale
    if pixels.ndim == 2:
        region = pixels >= 0.5
    else:
        colour = pixels[:, :, :3] if pixels.shape[2] >= 3 else pixels[:, :, :1]
        region = colour.mean(axis=2) >= 0.5
        if pixels.shape[2] in (2, 4):  # an alpha channel: transparent pixels are outside
            region &= pixels[:, :, -1] >= 0.5
    if not region.any():
        raise DatasetError(f"{flag} {path}: covers nothing (no pixel is light): expected white where the images are inspected")
    return region


def check_roi_fits(region: np.ndarray, shape: tuple[int, int], flag: str = "--roi") -> None:
    """One line when the region, scaled to maps of `shape`, keeps no pixel (a thin region on a small model)."""
    if not roi_at(region, shape).any():
        raise DatasetError(f"{flag}: its region ({int(region.sum())} of {region.size} pixels) keeps no pixel of a "
                           f"{shape[1]}x{shape[0]} map; draw a larger region")


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
    if not inside.any():
        check_roi_fits(region, maps.shape[1:3], "the model's region of interest (roi.png)")  # raises: nothing left inside
    lowest = maps[:, inside].min(axis=1)
    maps[:, ~inside] = lowest[:, None].astype(maps.dtype)
    return maps
