"""Reading image datasets in the MVTec AD layout: listing, decoding, resizing, masks and splits.

Layout::

    <root>/train/good/*.png                       defect-free training images
    <root>/test/<good or defect type>/*.png       test images
    <root>/ground_truth/<defect type>/<stem>_mask.png

Images may be PNG, JPEG, BMP or TIFF (any case of extension), 8- or 16-bit, grayscale, RGB or
RGBA, of any size. Everything handed to the models is float32 in [0, 1], shape (H, W, C) with
C = 1 for ``"grayscale"`` and C = 3 for ``"rgb"``. Every problem with the data raises
:class:`DatasetError` (a ``ValueError``) with a one-line message that names the path.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm.auto import tqdm

from autoencoder.errors import UserError
from autoencoder.folders import naming
from autoencoder.image_size import ImageSize
from autoencoder.progress import on_terminal

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
COLOR_MODES = {"grayscale": 1, "rgb": 3}
# ITU-R BT.709 luma weights, the ones skimage.color.rgb2gray uses.
RGB_TO_GRAY_WEIGHTS = np.array([0.2125, 0.7154, 0.0721], dtype=np.float32)
_MAX_VALUE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


class DatasetError(UserError):
    """A dataset folder, image or mask is missing, unreadable or not what was expected."""


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def _is_image_file(path: Path) -> bool:
    # Hidden files are skipped: "._x.png" macOS resource forks carry an image extension but are
    # not images.
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside `folder` (not recursive), sorted by file name.

    Raises DatasetError when the folder does not exist or holds no image.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder} not found: expected a folder of images")
    images = sorted((p for p in folder.iterdir() if _is_image_file(p)), key=lambda p: (p.name, str(p)))
    if not images:
        raise DatasetError(f"{folder} holds no image: expected files ending in {'/'.join(IMAGE_EXTENSIONS)}")
    return images


# --------------------------------------------------------------------------------------------
# Single images and masks
# --------------------------------------------------------------------------------------------


def _check_color_mode(color_mode: str) -> int:
    if color_mode not in COLOR_MODES:
        raise DatasetError(f"color mode {color_mode!r} not supported: expected one of {sorted(COLOR_MODES)}")
    return COLOR_MODES[color_mode]


def _check_size(size) -> ImageSize:
    """A side or an ImageSize as an ImageSize; DatasetError when it is neither."""
    try:
        return ImageSize.of(size)
    except UserError:
        raise DatasetError(f"image size {size!r} not supported: expected a positive integer or (height, width)") from None


def _decode(path: str | os.PathLike) -> np.ndarray:
    """The file as cv2 decodes it, turned to its EXIF orientation: uint8 or uint16, (H, W) or
    (H, W, C) in BGR(A) order."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"image {path} not found")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DatasetError(f"cannot read image {path}: {error.strerror or error}") from None
    if is_jpeg(data) and not jpeg_is_complete(data):
        raise DatasetError(f"cannot read image {path}: truncated JPEG (no end-of-image marker)")
    # cv2.imdecode releases the GIL, so threads decode in parallel.
    raw = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if raw is None or raw.size == 0:
        raise DatasetError(f"cannot read image {path}: corrupt or not an image")
    if raw.dtype not in _MAX_VALUE:
        raise DatasetError(f"image {path} has {raw.dtype} pixels: expected 8- or 16-bit integers")
    if raw.ndim == 3 and raw.shape[2] not in (1, 3, 4):
        raise DatasetError(f"image {path} has {raw.shape[2]} channels: expected 1 (gray), 3 (RGB) or 4 (RGBA)")
    return apply_orientation(raw, exif_orientation(data))


def is_jpeg(data: bytes) -> bool:
    return data[:3] == b"\xff\xd8\xff"


# The first bytes of the formats the toolkit reads (what a file is, whatever its name or a request's Content-Type says).
IMAGE_SIGNATURES = {"png": (b"\x89PNG\r\n\x1a\n",), "jpeg": (b"\xff\xd8\xff",), "bmp": (b"BM",), "tiff": (b"II*\x00", b"MM\x00*")}


def image_format(data: bytes) -> str | None:
    """The format of image bytes from their signature (png, jpeg, bmp, tiff), or None."""
    return next((name for name, starts in IMAGE_SIGNATURES.items() if data.startswith(starts)), None)


def jpeg_is_complete(data: bytes) -> bool:
    """Whether a JPEG's segments and scans run to its end-of-image marker (bytes after it, such as
    a camera's trailer, are allowed). Walks the marker segments by their lengths (EXIF thumbnails,
    with their own end markers, are inside APP segments and skipped) and each scan's entropy-coded
    data to the next marker that is not a restart marker or a stuffed 0xFF."""
    end, pos = len(data), 2
    while True:
        pos = data.find(b"\xff", pos)
        while 0 <= pos < end and data[pos] == 0xFF:  # fill bytes before a marker
            pos += 1
        if pos < 0 or pos >= end:
            return False
        marker = data[pos]
        pos += 1
        if marker == 0xD9:  # EOI
            return True
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            continue
        if pos + 2 > end:
            return False
        pos += int.from_bytes(data[pos:pos + 2], "big")
        if marker != 0xDA:  # SOS: entropy-coded data follows its header
            continue
        while True:
            pos = data.find(b"\xff", pos)
            if pos < 0 or pos + 1 >= end:
                return False
            following = data[pos + 1]
            if following == 0x00 or 0xD0 <= following <= 0xD7:  # a stuffed 0xFF or a restart marker: still the scan
                pos += 2
            elif following == 0xFF:
                pos += 1
            else:
                break  # the next marker


# EXIF orientation (tag 0x0112) -> the numpy operations that turn the stored pixels as a viewer shows them.
ORIENTATION_TAG = 0x0112


def exif_orientation(data: bytes) -> int:
    """The EXIF orientation of an encoded image (1 to 8; 1 when it has none or it cannot be read).
    Pillow parses only the header here (no pixels are decoded) and only for files that may carry
    the tag: JPEG with an Exif segment, PNG with an eXIf chunk (OpenCV turns TIFF pixels itself)."""
    # TIFF is left out: OpenCV's TIFF decoder turns the pixels itself.
    maybe = (is_jpeg(data) and b"Exif\x00\x00" in data[:1 << 18]) or (data[:4] == b"\x89PNG" and b"eXIf" in data)
    if not maybe:
        return 1
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as image:
            value = image.getexif().get(ORIENTATION_TAG, 1)
    except Exception:  # no Pillow, or a header it cannot parse: the pixels as stored
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """(H, W[, C]) stored pixels -> as shown for EXIF `orientation` (what Pillow's ImageOps.exif_transpose does)."""
    if orientation == 2:
        image = image[:, ::-1]
    elif orientation == 3:
        image = image[::-1, ::-1]
    elif orientation == 4:
        image = image[::-1]
    elif orientation in (5, 6, 7, 8):
        image = np.swapaxes(image, 0, 1)  # transpose: orientation 5
        if orientation == 6:
            image = image[:, ::-1]  # 90 degrees clockwise
        elif orientation == 7:
            image = image[::-1, ::-1]
        elif orientation == 8:
            image = image[::-1]  # 90 degrees counter-clockwise
    return np.ascontiguousarray(image)


def _to_float_rgb_or_gray(raw: np.ndarray) -> np.ndarray:
    """Decoded cv2 array -> float32 (H, W, 1) gray or (H, W, 3) RGB in [0, 1]; alpha is dropped."""
    scale = np.float32(1.0 / _MAX_VALUE[raw.dtype])
    if raw.ndim == 2:
        raw = raw[:, :, None]
    elif raw.shape[2] == 4:
        raw = raw[:, :, 2::-1]  # BGRA -> RGB
    elif raw.shape[2] == 3:
        raw = raw[:, :, ::-1]  # BGR -> RGB
    return raw.astype(np.float32) * scale


def _convert_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """float32 (H, W, 1 or 3) -> (H, W, channels): gray replicated to RGB, or RGB to luminance."""
    if image.shape[2] == channels:
        return image
    if channels == 3:
        return np.repeat(image, 3, axis=2)
    gray = (image @ RGB_TO_GRAY_WEIGHTS)[:, :, None]
    return np.clip(gray, 0.0, 1.0, out=gray)  # the weights sum to 1 only up to float rounding


def _resize(image: np.ndarray, size: ImageSize, interpolation_shrink: int, interpolation_enlarge: int) -> np.ndarray:
    """(H, W, C) -> (size.height, size.width, C). Each axis is shrunk with `interpolation_shrink`
    and enlarged with `interpolation_enlarge`; when one axis shrinks and the other grows, the two
    are resized in two passes, because cv2 applies one method to both axes and area averaging only
    anti-aliases when both shrink."""
    height, width, channels = image.shape
    new_height, new_width = size
    if height == new_height and width == new_width:
        return image

    def resize(img: np.ndarray, new_h: int, new_w: int, interpolation: int) -> np.ndarray:
        out = cv2.resize(img, (new_w, new_h), interpolation=interpolation)
        return out.reshape(new_h, new_w, channels)  # cv2 drops a single channel axis

    if new_height <= height and new_width <= width:
        return resize(image, new_height, new_width, interpolation_shrink)
    if new_height >= height and new_width >= width:
        return resize(image, new_height, new_width, interpolation_enlarge)
    if height > new_height:  # the height shrinks and the width grows: shrink first, then enlarge
        image = resize(image, new_height, width, interpolation_shrink)
    else:
        image = resize(image, height, new_width, interpolation_shrink)
    return resize(image, new_height, new_width, interpolation_enlarge)


def decode_image(path: str | os.PathLike) -> np.ndarray:
    """The file's pixels as the toolkit reads every image (EXIF orientation, truncated files
    refused): uint8 or uint16, (H, W) or (H, W, C) in BGR(A) order, alpha kept."""
    return _decode(path)


def read_image(path: str | os.PathLike, color_mode: str = "grayscale") -> np.ndarray:
    """Read one image at its original size.

    Returns float32 (H, W, C) in [0, 1], C = 1 for "grayscale", 3 for "rgb". 8-bit files are
    scaled by 1/255 and 16-bit files by 1/65535; an alpha channel is dropped; gray images are
    replicated to RGB and RGB images turned to gray with the luminance weights of
    skimage.color.rgb2gray (0.2125 R + 0.7154 G + 0.0721 B).
    """
    channels = _check_color_mode(color_mode)
    return _convert_channels(_to_float_rgb_or_gray(_decode(path)), channels)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of an image file as shown (EXIF orientation applied), read from its header
    when Pillow can, else by decoding it."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"image {path} not found")
    try:
        from PIL import Image

        with Image.open(path) as img:
            width, height = img.size
            orientation = img.getexif().get(ORIENTATION_TAG, 1)
        return (int(width), int(height)) if orientation in (5, 6, 7, 8) else (int(height), int(width))
    except Exception:  # no Pillow, or a file it cannot parse: let cv2 decode it (and report errors)
        raw = _decode(path)
        return int(raw.shape[0]), int(raw.shape[1])


def load_image(path: str | os.PathLike, color_mode: str, size) -> np.ndarray:
    """Read one image and resize it to the model input `size` (a side or an ImageSize): float32
    (height, width, C) in [0, 1].

    The aspect ratio is not kept (the image is stretched to the model's input shape).
    Shrinking uses area averaging (cv2.INTER_AREA, no aliasing), enlarging bilinear
    interpolation (cv2.INTER_LINEAR).
    """
    channels = _check_color_mode(color_mode)
    size = _check_size(size)
    image = _resize(_to_float_rgb_or_gray(_decode(path)), size, cv2.INTER_AREA, cv2.INTER_LINEAR)
    # Resizing and the colour conversion are both linear, so converting after the resize gives
    # the same result at a fraction of the cost.
    return _convert_channels(image, channels)


def load_image_and_original(path: str | os.PathLike, color_mode: str, size) -> tuple[np.ndarray, np.ndarray]:
    """The model input of one file (exactly :func:`load_image`) and the file decoded once, at its
    original size: float32 (H, W, 1) gray or (H, W, 3) RGB in [0, 1], alpha dropped, colour as in
    the file (for masks and overlays at the original size)."""
    channels = _check_color_mode(color_mode)
    size = _check_size(size)
    original = _to_float_rgb_or_gray(_decode(path))
    image = _convert_channels(_resize(original, size, cv2.INTER_AREA, cv2.INTER_LINEAR), channels)
    return image, original


def load_whole_and_original(path: str | os.PathLike, color_mode: str) -> tuple[np.ndarray, np.ndarray]:
    """A tiled model's input of one file (the whole image at its own size, in `color_mode`) and the
    file decoded once (as :func:`load_image_and_original` returns it)."""
    channels = _check_color_mode(color_mode)
    original = _to_float_rgb_or_gray(_decode(path))
    return _convert_channels(original, channels), original


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """A ground-truth mask at its original size: bool (H, W), True where any colour channel is > 0
    (masks may hold 0/255 or 0/1; an alpha channel is ignored)."""
    raw = _decode(path)
    if raw.ndim == 3:
        raw = raw[:, :, :3].max(axis=2)
    return raw > 0


def load_mask(path: str | os.PathLike, size) -> np.ndarray:
    """A ground-truth mask resized with nearest-neighbour interpolation: bool (height, width) of `size`."""
    size = _check_size(size)
    mask = read_mask(path).view(np.uint8)[:, :, None]
    # INTER_NEAREST_EXACT samples pixel centres (like scikit-image / Pillow); INTER_NEAREST is
    # shifted by half a pixel.
    mask = _resize(mask, size, cv2.INTER_NEAREST_EXACT, cv2.INTER_NEAREST_EXACT)
    return mask[:, :, 0].astype(bool)


def load_mask_at(path: str | os.PathLike, shape: tuple[int, int]) -> np.ndarray:
    """A ground-truth mask at `shape` (H, W): as read when it has that size, else resized as
    :func:`load_mask` does (test.py checks first that each mask has its image's size)."""
    mask = read_mask(path)
    if mask.shape == tuple(shape):
        return mask
    resized = _resize(mask.view(np.uint8)[:, :, None], ImageSize(*shape), cv2.INTER_NEAREST_EXACT, cv2.INTER_NEAREST_EXACT)
    return resized[:, :, 0].astype(bool)


# --------------------------------------------------------------------------------------------
# Many images, in parallel
# --------------------------------------------------------------------------------------------


def _load_parallel(paths: Sequence[Path], out: np.ndarray, load_one, workers: int | None, progress: bool, desc: str):
    """Fill out[i] = load_one(paths[i]) using a thread pool (cv2 decodes without the GIL)."""
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    if workers < 1:
        raise DatasetError(f"workers={workers} not supported: expected a positive number of threads")
    workers = min(workers, len(paths)) or 1

    def fill(index: int) -> None:
        out[index] = load_one(paths[index])

    bar = tqdm(total=len(paths), desc=desc, unit="img", disable=not progress or not on_terminal())
    try:
        if workers == 1:
            for index in range(len(paths)):
                fill(index)
                bar.update()
        else:
            executor = ThreadPoolExecutor(max_workers=workers)
            try:
                for _ in executor.map(fill, range(len(paths))):
                    bar.update()
            finally:
                # After an error, do not decode the rest of the files before raising it.
                executor.shutdown(wait=True, cancel_futures=True)
    finally:
        bar.close()
    return out


def load_images(
    paths: Sequence[str | os.PathLike],
    color_mode: str,
    size,
    workers: int | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Load and resize many images to `size` (a side or an ImageSize) with `workers` threads
    (default: one per CPU core).

    Returns float32 (N, height, width, C) in [0, 1], in the order of `paths`.
    """
    channels = _check_color_mode(color_mode)
    size = _check_size(size)
    paths = [Path(p) for p in paths]
    out = np.empty((len(paths), *size, channels), dtype=np.float32)
    return _load_parallel(paths, out, lambda p: load_image(p, color_mode, size), workers, progress, "loading images")


def load_masks(
    paths: Sequence[str | os.PathLike],
    size,
    workers: int | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Load and resize many masks in parallel: bool (N, height, width) of `size`, in the order of `paths`."""
    size = _check_size(size)
    paths = [Path(p) for p in paths]
    out = np.empty((len(paths), *size), dtype=bool)
    return _load_parallel(paths, out, lambda p: load_mask(p, size), workers, progress, "loading masks")


def iter_batches(
    paths: Sequence[str | os.PathLike],
    color_mode: str,
    size,
    batch_size: int,
    workers: int | None = None,
) -> Iterator[tuple[list[Path], np.ndarray]]:
    """Yield (paths_chunk, images) with images float32 (len(chunk), height, width, C), chunk by
    chunk of at most `batch_size` files, so that only one chunk is in memory at a time."""
    if batch_size < 1:
        raise DatasetError(f"batch size {batch_size} not supported: expected a positive integer")
    paths = [Path(p) for p in paths]
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        yield chunk, load_images(chunk, color_mode, size, workers=workers)


# --------------------------------------------------------------------------------------------
# MVTec AD layout
# --------------------------------------------------------------------------------------------

GOOD_CLASS = "good"
_LAYOUT_HINT = "expected MVTec AD layout <root>/train/good/*.png, <root>/test/<type>/*.png"


@dataclass
class MVTecLayout:
    """The files of one dataset in the MVTec AD layout.

    `test` maps a test class ("good" or a defect type) to its image files, sorted by name.
    """

    root: Path
    train_good: list[Path]
    test: dict[str, list[Path]] = field(default_factory=dict)

    @property
    def defect_types(self) -> list[str]:
        """Test classes other than "good", sorted."""
        return sorted(name for name in self.test if name != GOOD_CLASS)

    @property
    def ground_truth_dir(self) -> Path:
        return self.root / "ground_truth"

    def mask_path(self, image_path: str | os.PathLike) -> Path | None:
        """ground_truth/<type>/<stem>_mask.png for a test image of a defect type (the file may be
        missing: see check_masks); None for a "good" image or a type without a ground_truth folder."""
        image_path = Path(image_path)
        defect_type = image_path.parent.name
        if defect_type == GOOD_CLASS:
            return None
        mask_dir = self.ground_truth_dir / defect_type
        if not mask_dir.is_dir():
            return None
        return mask_dir / f"{image_path.stem}_mask.png"

    def test_files(self) -> list[tuple[Path, str]]:
        """(file, class) for every test image: "good" first, then the defect types alphabetically,
        each sorted by file name."""
        classes = ([GOOD_CLASS] if GOOD_CLASS in self.test else []) + self.defect_types
        return [(path, name) for name in classes for path in self.test[name]]


def scan_dataset(root: str | os.PathLike, require_test: bool = False) -> MVTecLayout:
    """List the files of a dataset in the MVTec AD layout.

    train/good must hold images. test/ is optional unless `require_test`, in which case it must
    hold a "good" class and at least one defect class. Empty test sub-folders are skipped.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} not found: {_LAYOUT_HINT}")
    train_dir = root / "train" / GOOD_CLASS
    if not train_dir.is_dir():
        raise DatasetError(f"{train_dir} not found: {_LAYOUT_HINT}")
    train_good = list_images(train_dir)

    test: dict[str, list[Path]] = {}
    test_dir = root / "test"
    if test_dir.is_dir():
        for class_dir in sorted(p for p in test_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            files = sorted((p for p in class_dir.iterdir() if _is_image_file(p)), key=lambda p: (p.name, str(p)))
            if files:
                test[class_dir.name] = files
            else:
                logger.warning("skipping %s: it holds no image", class_dir)
    if require_test:
        if not test_dir.is_dir():
            raise DatasetError(f"{test_dir} not found: expected test images in {test_dir}/<good or defect type>/")
        if GOOD_CLASS not in test:
            raise DatasetError(f"{test_dir / GOOD_CLASS} not found or empty: expected defect-free test images there")
        if len(test) < 2:
            raise DatasetError(f"{test_dir} holds no defect class: expected {test_dir}/<defect type>/ with images")
    layout = MVTecLayout(root=root, train_good=train_good, test=test)
    logger.info(
        "dataset %s: %d training images, test classes %s",
        root,
        len(train_good),
        {name: len(files) for name, files in test.items()},
    )
    return layout


def check_masks(layout: MVTecLayout) -> int:
    """Check that every defect image whose type has a ground_truth folder has a mask of its size.

    Returns the number of masks checked; raises DatasetError naming the first missing or
    mis-sized mask.
    """
    checked = 0
    for defect_type in layout.defect_types:
        for image_path in layout.test[defect_type]:
            mask_path = layout.mask_path(image_path)
            if mask_path is None:
                break  # no ground_truth folder for this type
            if not mask_path.is_file():
                raise DatasetError(f"mask {mask_path} not found: expected a mask for image {image_path}")
            mask_hw, image_hw = image_size(mask_path), image_size(image_path)
            if mask_hw != image_hw:
                raise DatasetError(
                    f"mask {mask_path} is {mask_hw[0]}x{mask_hw[1]}, image {image_path} is {image_hw[0]}x{image_hw[1]}"
                )
            checked += 1
    return checked


# --------------------------------------------------------------------------------------------
# Train / validation split
# --------------------------------------------------------------------------------------------


def _split_key(path: Path, seed: int) -> bytes:
    # A hash of (seed, file name) orders the files: the split depends only on the names and the
    # seed, not on the input order, the folder's location or the NumPy version.
    return hashlib.sha256(f"{seed}:{path.name}".encode()).digest()


def split_train_validation(
    files: Sequence[str | os.PathLike], validation_split: float = 0.1, seed: int = 42
) -> tuple[list[Path], list[Path]]:
    """Split files into (train_files, val_files), both sorted by name.

    Deterministic: the same files and seed give the same split whatever their order. The
    validation part has round(validation_split * n) files, at least 1 when n >= 2 and
    validation_split > 0, and at most n - 1 so that training keeps a file.
    """
    if not 0.0 <= validation_split < 1.0:
        raise DatasetError(f"--validation-split {validation_split} not supported: expected a fraction in [0, 1)")
    paths = sorted((Path(p) for p in files), key=lambda p: (p.name, p.as_posix()))
    n = len(paths)
    n_val = round(validation_split * n)
    if validation_split > 0 and n >= 2:
        n_val = max(n_val, 1)
    n_val = min(n_val, max(n - 1, 0))
    shuffled = sorted(range(n), key=lambda i: _split_key(paths[i], seed))  # stable for equal names
    val_indices = set(shuffled[:n_val])
    train = [p for i, p in enumerate(paths) if i not in val_indices]
    val = [p for i, p in enumerate(paths) if i in val_indices]
    return train, val


@contextmanager
def writing_dataset(out_dir: str | os.PathLike, settings: dict, settings_file: str, kind: str, overwrite: bool = False):
    """Yield a temporary sibling of `out_dir` to write a generated dataset into; rename it into place.

    A non-empty `out_dir` is replaced only with `overwrite`, and only when it holds `settings_file`
    (i.e. is itself a generated dataset of this `kind`), so a typo cannot delete unrelated files.
    `settings` is written to `settings_file` inside the new folder. On any error the temporary
    folder is removed and `out_dir` is left as it was.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DatasetError(f"{out_dir} is a file: expected a folder for the {kind} dataset")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise DatasetError(f"{out_dir} is not empty: pass --overwrite to replace it")
        if not (out_dir / settings_file).is_file():
            raise DatasetError(f"refusing to replace {out_dir}: it is not a {kind} dataset (no {settings_file})")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    left = sorted(out_dir.parent.glob(f".{glob.escape(out_dir.name)}.*.tmp"))
    if left:  # a killed run's: it may still run elsewhere, so reported, not removed
        logger.warning("%d temporary folder(s) of earlier runs that did not finish are beside %s (%s): remove them if no run "
                       "writes them", len(left), out_dir, ", ".join(path.name for path in left[:3]))
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        yield staging
        (staging / settings_file).write_text(json.dumps(settings, indent=2) + "\n")
        staging.chmod(0o755)  # mkdtemp makes it private
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    except OSError as error:  # numpy and OpenCV raise "[Errno 28]" without a path: name the dataset
        shutil.rmtree(staging, ignore_errors=True)
        raise naming(out_dir, error) from error
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
