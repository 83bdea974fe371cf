"""The images predict.py is given: folders (recursively), files and glob patterns, in that order.

Every argument must contribute: a missing path, a folder without images or a pattern that matches
no image stops the run with one line naming it (:class:`DatasetError`). A file named explicitly is
taken whatever its extension (a corrupt or foreign file then becomes a row with an error); folders
and patterns contribute the files with an image extension (:data:`IMAGE_EXTENSIONS`, any case),
hidden files skipped. The same file reached twice is listed once, where it first appears.
"""

from __future__ import annotations

import glob
import logging
import os
from pathlib import Path

from processing.data.images import IMAGE_EXTENSIONS, DatasetError

logger = logging.getLogger(__name__)
_EXTENSIONS = "/".join(IMAGE_EXTENSIONS)


def _is_image_name(path: Path) -> bool:
    return not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def images_in_folder(folder: Path, skip_marked: tuple[str, ...] = ()) -> list[Path]:
    """Image files under `folder`, recursively, hidden files and folders skipped, sorted by path; a
    sub-folder holding a file named in `skip_marked` (an earlier run's output) is skipped whole."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if skip_marked and Path(root) != Path(folder) and any(name in files for name in skip_marked):
            logger.info("skipped %s: the output of an earlier run (it holds %s)", root, next(n for n in skip_marked if n in files))
            dirs[:] = []
            continue
        found.extend(Path(root) / name for name in files if _is_image_name(Path(name)))
    return sorted(found, key=lambda path: path.as_posix())


def collect_images(inputs: list[str], flag: str = "-i", skip_marked: tuple[str, ...] = ()) -> list[Path]:
    """The image files of every input (a folder, a file or a glob pattern), each file once; folders
    are searched without their sub-folders that hold a file named in `skip_marked`."""
    if not inputs:
        raise DatasetError(f"{flag}: expected at least one folder, file or glob pattern")
    collected: list[Path] = []
    seen: set[str] = set()
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = images_in_folder(path, skip_marked)
            if not files:
                raise DatasetError(f"{flag} {item}: the folder holds no image (expected files ending in {_EXTENSIONS}, searched "
                        "recursively)")
        elif path.is_file():
            files = [path]
        elif glob.has_magic(item):
            matches = [Path(match) for match in sorted(glob.glob(item, recursive=True))]
            files = [match for match in matches if match.is_file() and _is_image_name(match)]
            if not files:
                what = "no file" if not matches else f"{len(matches)} paths but no image (expected {_EXTENSIONS})"
                raise DatasetError(f"{flag} {item!r}: the pattern matches {what}")
        else:
            raise DatasetError(f"{flag} {item}: not found (expected a folder, an image file or a glob pattern)")
        for file in files:
            key = os.path.realpath(file)
            if key not in seen:
                seen.add(key)
                collected.append(file)
    return collected
