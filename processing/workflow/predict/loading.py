"""Reading predict.py's input images in a thread pool, one batch ahead of the model."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from processing.data.images import load_image_and_original, load_whole_and_original


def load_one(path: Path, color_mode: str, size: int, tiled: bool = False):
    """(model input, original image) or the error as one line. A tiled model's input is the whole
    image at its own size (its detector cuts the tiles)."""
    try:
        return load_whole_and_original(path, color_mode) if tiled else load_image_and_original(path, color_mode, size)
    except Exception as error:  # a corrupt, unreadable or foreign file: a row with its error
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return message


def iter_loaded(paths: list[Path], color_mode: str, size: int, batch_size: int, workers: int | None, tiled: bool = False):
    """Yield (chunk, loaded) batch by batch; the next chunk is read (by a thread pool) while the
    caller works on the current one, so reading overlaps the model."""
    workers = workers or os.cpu_count() or 1
    chunks = [paths[start:start + batch_size] for start in range(0, len(paths), batch_size)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        def submit(chunk):
            return [pool.submit(load_one, path, color_mode, size, tiled) for path in chunk]

        pending = submit(chunks[0]) if chunks else None
        for index, chunk in enumerate(chunks):
            loaded = [future.result() for future in pending]
            pending = submit(chunks[index + 1]) if index + 1 < len(chunks) else None
            yield chunk, loaded
