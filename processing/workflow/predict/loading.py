"""Reading predict.py's input images in a thread pool, one batch ahead of the model."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def load_one(path: Path, read):
    """``read(path)``, the (model input, original image) of a detector (``Detector.read_input``: a
    tiled model's input is the whole image), or the error as one line."""
    try:
        return read(path)
    except Exception as error:  # a corrupt, unreadable or foreign file: a row with its error
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return message


def iter_loaded(paths: list[Path], read, batch_size: int, workers: int | None):
    """Yield (chunk, loaded) batch by batch (:func:`load_one` of each path); the next chunk is read
    (by a thread pool) while the caller works on the current one, so reading overlaps the model."""
    workers = workers or os.cpu_count() or 1
    chunks = [paths[start:start + batch_size] for start in range(0, len(paths), batch_size)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        def submit(chunk):
            return [pool.submit(load_one, path, read) for path in chunk]

        pending = submit(chunks[0]) if chunks else None
        for index, chunk in enumerate(chunks):
            loaded = [future.result() for future in pending]
            pending = submit(chunks[index + 1]) if index + 1 < len(chunks) else None
            yield chunk, loaded
