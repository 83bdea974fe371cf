"""Uploaded image bytes -> the model input, exactly as predict.py reads the same file.

predict.py reads files with ``processing.workflow.predict.loading.load_one`` (that is,
``processing.data.images.load_image_and_original``). To decode an upload to the same array, byte
for byte, it is written to a private temporary file (a folder only this process can read, removed
at close) and read by that same function; the error message, which names the file, then names the
upload instead. images.py is being changed elsewhere (EXIF orientation, truncated files): once it
has a decoder of bytes, that can replace the temporary file here with no change in behaviour.

Uploads are untrusted: the name is only a label (control characters replaced, cut to
MAX_NAME_CHARS, never used as a path), the file name's extension is kept only when it is an image
extension, and an image whose header declares more than ``max_pixels`` pixels is refused before it
is decoded (decompression bombs; a file Pillow cannot parse is left to OpenCV, whose own limit is
2^30 pixels).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from processing.data.images import IMAGE_EXTENSIONS
from processing.workflow.predict.loading import load_one

logger = logging.getLogger(__name__)
MAX_NAME_CHARS = 255
DEFAULT_NAME = "image"


@dataclass(frozen=True)
class DecodedUpload:
    name: str
    image: np.ndarray  # the model input, float32 (H, W, C) in [0, 1]
    height: int  # the image's original size
    width: int


def safe_name(name: str | None) -> str:
    """A printable label of an upload's name: control and format characters replaced by '?', at
    most MAX_NAME_CHARS characters; DEFAULT_NAME when empty."""
    text = "".join("?" if unicodedata.category(char)[0] == "C" else char for char in str(name or ""))
    text = text.strip()[:MAX_NAME_CHARS]
    return text or DEFAULT_NAME


def image_suffix(name: str) -> str:
    """The name's extension when it is an image extension (lower case), else ''."""
    suffix = os.path.splitext(name)[1].lower()
    return suffix if suffix in IMAGE_EXTENSIONS else ""


def too_many_pixels(path: Path, name: str, max_pixels: int) -> str | None:
    """Why the file is refused when its header (read by Pillow, nothing decoded) declares more than
    `max_pixels` pixels; None otherwise, or when Pillow cannot read the header."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            width, height = image.size
    except Image.DecompressionBombError:  # Pillow's own limit, far above any sensible max_pixels
        return f"image {name} has more than {2 * Image.MAX_IMAGE_PIXELS} pixels: more than --max-pixels {max_pixels}"
    except Exception:  # not a header Pillow knows: OpenCV decides (and reports errors)
        return None
    if width * height > max_pixels:
        return f"image {name} has {width} x {height} pixels: more than --max-pixels {max_pixels}"
    return None


UPLOAD_PREFIX = "serve-uploads-"  # + <pid>-: the temporary folder of one serve.py process


def remove_stale_upload_folders(root: Path | None = None) -> list[Path]:
    """Remove the upload folders that serve.py processes no longer running left in the temporary
    folder (a SIGKILLed server cannot clean up: its clients' images would stay); log them. Folders
    of running servers and of other users are left alone."""
    from autoencoder.folders import pid_running

    root = Path(root or tempfile.gettempdir())
    removed = []
    for folder in root.glob(f"{UPLOAD_PREFIX}*"):
        pid_text = folder.name[len(UPLOAD_PREFIX):].split("-", 1)[0]
        try:
            if not folder.is_dir() or folder.stat().st_uid != os.getuid() or not pid_text.isdigit() or pid_running(int(pid_text)):
                continue
        except OSError:
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    if removed:
        logger.warning("removed %d upload folder(s) left by serve.py processes that no longer run: %s",
                       len(removed), ", ".join(str(folder) for folder in removed[:5]) + (" ..." if len(removed) > 5 else ""))
    return removed


class UploadDecoder:
    """Decodes uploads in a thread pool (cv2 releases the GIL), through private temporary files."""

    def __init__(self, read, max_pixels: int, workers: int | None = None):
        self.read, self.max_pixels = read, max_pixels  # read(path) -> (model input, original): Detector.read_input
        remove_stale_upload_folders()
        self.folder = Path(tempfile.mkdtemp(prefix=f"{UPLOAD_PREFIX}{os.getpid()}-"))  # mode 0700
        self.pool = ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1, thread_name_prefix="decode")

    def decode_all(self, uploads: list[tuple[str, bytes]]) -> list[DecodedUpload | str]:
        """Each upload decoded, or its error as one line, in order."""
        futures = [self.pool.submit(self.decode, name, data) for name, data in uploads]
        return [future.result() for future in futures]

    def decode(self, name: str, data: bytes) -> DecodedUpload | str:
        handle, temporary = tempfile.mkstemp(prefix="upload-", suffix=image_suffix(name), dir=self.folder)
        path = Path(temporary)
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(data)
            refused = too_many_pixels(path, name, self.max_pixels)
            if refused is not None:
                return refused
            loaded = load_one(path, self.read)
        finally:
            path.unlink(missing_ok=True)
        if isinstance(loaded, str):
            return loaded.replace(str(path), name)
        image, original = loaded
        return DecodedUpload(name, image, int(original.shape[0]), int(original.shape[1]))

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        shutil.rmtree(self.folder, ignore_errors=True)
