"""Run an exported anomaly model: read images as the toolkit does, run the graph, finish the decision.

export.py writes this file beside every export (``runner.py`` in a SavedModel folder,
``<name>_runner.py`` beside a .tflite or .onnx file). It needs numpy and OpenCV, and the runtime of
the format: tensorflow for a SavedModel, ai_edge_litert or tensorflow for TFLite, onnxruntime for
ONNX; nothing from the toolkit that made the export.

    python runner.py IMAGE [IMAGE ...] [--masks DIR]    # one JSON line per image

    from runner import load_export
    export = load_export("model.onnx")                  # or the SavedModel folder
    for row in export.predict_files(["part_001.png"]): print(row["score"], row["defective"], row["bbox"])

Per image: ``score`` (higher = more anomalous), ``defective``, ``threshold``, ``min_area``, the
defect's area and bounding box at the image's original size (``bbox`` [x0, y0, x1, y1] inclusive,
null when no defect), ``width``/``height``, or ``error`` for a file that cannot be read.

What the graph leaves to this runner (export_info.json ``decision``):

- ``rule: components``: a pixel is a defect candidate when ``anomaly_map > threshold`` (the
  graph's ``above_threshold``); candidates form 8-connected regions; regions touching the image
  border are dropped when ``clear_border``; the image is defective when a region of at least
  ``min_area`` pixels remains, and those regions are its mask. The image score is the map's
  maximum (``image_score: max``, in the graph) or the highest threshold at which such a region
  survives (``image_score: component``, :func:`component_level`).
- ``rule: in_graph``: the graph outputs ``defective`` and ``image_score`` itself (kde).

This file is deliberately self-contained: it repeats, in a few lines of numpy/OpenCV, how the
toolkit reads an image (processing/data/images.py) and its component rule
(processing/decision/segmentation.py, thresholds.py). tests/test_export.py checks that the two
agree.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np

INFO_FILE = "export_info.json"
GRAY_WEIGHTS = np.array([0.2125, 0.7154, 0.0721], dtype=np.float32)  # skimage.color.rgb2gray's
MAX_VALUE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}
EIGHT_NEIGHBOURS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]


# ---- reading an image as the toolkit does --------------------------------------------------


def decode(path) -> np.ndarray:
    """float32 (H, W, 1) gray or (H, W, 3) RGB in [0, 1] of an 8- or 16-bit image file (alpha dropped),
    turned as its EXIF orientation says (JPEG, PNG); a JPEG cut short is refused."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"image {path} not found")
    data = path.read_bytes()
    if data[:3] == b"\xff\xd8\xff" and not jpeg_is_complete(data):
        raise ValueError(f"cannot read image {path}: truncated JPEG (no end-of-image marker)")
    raw = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if raw is None or raw.size == 0:
        raise ValueError(f"cannot read image {path}: corrupt or not an image")
    if raw.dtype not in MAX_VALUE:
        raise ValueError(f"image {path} has {raw.dtype} pixels: expected 8- or 16-bit integers")
    if raw.ndim == 3 and raw.shape[2] not in (1, 3, 4):
        raise ValueError(f"image {path} has {raw.shape[2]} channels: expected 1 (gray), 3 (RGB) or 4 (RGBA)")
    raw = oriented(raw, exif_orientation(data))
    if raw.ndim == 2:
        raw = raw[:, :, None]
    elif raw.shape[2] == 4:
        raw = raw[:, :, 2::-1]  # BGRA -> RGB
    elif raw.shape[2] == 3:
        raw = raw[:, :, ::-1]  # BGR -> RGB
    return raw.astype(np.float32) * np.float32(1.0 / MAX_VALUE[raw.dtype])


def jpeg_is_complete(data: bytes) -> bool:
    """Whether a JPEG's segments and scans run to its end-of-image marker (bytes after it allowed)."""
    end, pos = len(data), 2
    while True:
        pos = data.find(b"\xff", pos)
        while 0 <= pos < end and data[pos] == 0xFF:
            pos += 1
        if pos < 0 or pos >= end:
            return False
        marker = data[pos]
        pos += 1
        if marker == 0xD9:
            return True
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            continue
        if pos + 2 > end:
            return False
        pos += int.from_bytes(data[pos : pos + 2], "big")
        if marker != 0xDA:
            continue
        while True:  # the entropy-coded data of a scan, to the next real marker
            pos = data.find(b"\xff", pos)
            if pos < 0 or pos + 1 >= end:
                return False
            following = data[pos + 1]
            if following == 0x00 or 0xD0 <= following <= 0xD7:
                pos += 2
            elif following == 0xFF:
                pos += 1
            else:
                break


def exif_orientation(data: bytes) -> int:
    """The EXIF orientation (tag 0x0112, 1 to 8) of a JPEG's Exif segment or a PNG's eXIf chunk; 1 without one."""
    if data[:3] == b"\xff\xd8\xff":
        start = data.find(b"Exif\x00\x00", 0, 1 << 18)
        tiff = data[start + 6 :] if start >= 0 else b""
    elif data[:4] == b"\x89PNG":
        start = data.find(b"eXIf")
        tiff = data[start + 4 : start + 4 + int.from_bytes(data[start - 4 : start], "big")] if start >= 4 else b""
    else:
        return 1
    if tiff[:2] not in (b"II", b"MM"):
        return 1
    order = "little" if tiff[:2] == b"II" else "big"
    try:
        offset = int.from_bytes(tiff[4:8], order)
        for index in range(int.from_bytes(tiff[offset : offset + 2], order)):
            entry = tiff[offset + 2 + 12 * index : offset + 14 + 12 * index]
            if int.from_bytes(entry[:2], order) == 0x0112:
                value = int.from_bytes(entry[8:10], order)
                return value if 1 <= value <= 8 else 1
    except (ValueError, IndexError):
        return 1
    return 1


def oriented(image: np.ndarray, orientation: int) -> np.ndarray:
    """Stored pixels (H, W[, C]) -> as a viewer shows them for EXIF `orientation`."""
    if orientation in (5, 6, 7, 8):
        image = np.swapaxes(image, 0, 1)
        orientation = {5: 1, 6: 2, 7: 3, 8: 4}[orientation]
    flips = {2: (slice(None), slice(None, None, -1)), 3: (slice(None, None, -1), slice(None, None, -1)), 4: (slice(None, None, -1),)}
    return np.ascontiguousarray(image[flips[orientation]] if orientation in flips else image)


def resize(image: np.ndarray, size) -> np.ndarray:
    """(H, W, C) -> (height, width, C) of `size` ((height, width), or one side for a square): area
    averaging where an axis shrinks, bilinear where it grows (in two passes when one axis shrinks
    and the other grows)."""
    height, width, channels = image.shape
    new_height, new_width = (size, size) if isinstance(size, int) else size

    def to(img, new_h, new_w, interpolation):
        return cv2.resize(img, (new_w, new_h), interpolation=interpolation).reshape(new_h, new_w, channels)

    if height == new_height and width == new_width:
        return image
    if new_height <= height and new_width <= width:
        return to(image, new_height, new_width, cv2.INTER_AREA)
    if new_height >= height and new_width >= width:
        return to(image, new_height, new_width, cv2.INTER_LINEAR)
    if height > new_height:
        image = to(image, new_height, width, cv2.INTER_AREA)
    else:
        image = to(image, height, new_width, cv2.INTER_AREA)
    return to(image, new_height, new_width, cv2.INTER_LINEAR)


def model_input(original: np.ndarray, size, channels: int) -> np.ndarray:
    """The graph's input of one decoded image: resized, then gray replicated to RGB or RGB to gray."""
    image = resize(original, size)
    if image.shape[2] == channels:
        return image
    if channels == 3:
        return np.repeat(image, 3, axis=2)
    return np.clip((image @ GRAY_WEIGHTS)[:, :, None], 0.0, 1.0)


# ---- the decision the graph leaves to the runner -------------------------------------------


def kept_regions(candidates: np.ndarray, min_area: int, clear_border: bool) -> np.ndarray:
    """The mask of the 8-connected regions of `candidates` (H, W) bool of at least `min_area` pixels,
    without those touching the border when `clear_border`."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(candidates.astype(np.uint8), connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_area
    keep[0] = False
    if clear_border:
        edges = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
        keep[edges] = False
    return keep[labels]


def component_level(score_map: np.ndarray, min_area: int, clear_border: bool, empty_score: float) -> float:
    """The highest threshold t at which ``score_map > t`` has an 8-connected region of at least
    `min_area` pixels (not touching the border when `clear_border`); `empty_score` when there is none.

    Pixels are added from the highest value down, joined to their added neighbours (union-find);
    after each group of equal values, a region that is large enough and off the border ends the
    search: the group's value is the answer (the supremum of the thresholds just below it).
    """
    height, width = score_map.shape
    flat = score_map.ravel()
    order = np.argsort(flat, kind="stable")[::-1]
    values = flat[order].tolist()
    rows, cols = np.divmod(order, width)
    parent = list(range(height * width))
    area = [1] * (height * width)
    on_border = [False] * (height * width)
    added = bytearray(height * width)
    for r in range(height):
        for c in (0, width - 1):
            on_border[r * width + c] = True
    for c in range(width):
        on_border[c] = on_border[(height - 1) * width + c] = True

    def find(p):
        root = p
        while parent[root] != root:
            root = parent[root]
        while parent[p] != root:
            parent[p], p = root, parent[p]
        return root

    group = []
    for k, (p, r, c) in enumerate(zip(order.tolist(), rows.tolist(), cols.tolist())):
        added[p] = 1
        root = p
        for dr, dc in EIGHT_NEIGHBOURS:
            rr, cc = r + dr, c + dc
            if 0 <= rr < height and 0 <= cc < width and added[rr * width + cc]:
                other = find(rr * width + cc)
                if other != root:
                    if area[root] < area[other]:
                        root, other = other, root
                    parent[other] = root
                    area[root] += area[other]
                    on_border[root] = on_border[root] or on_border[other]
        group.append(root)
        if k + 1 == len(values) or values[k + 1] != values[k]:
            for member in group:
                top = find(member)
                if area[top] >= min_area and not (clear_border and on_border[top]):
                    return float(values[k])
            group = []
    return float(empty_score)


# ---- the export ----------------------------------------------------------------------------


def info_path(path: Path) -> Path:
    return path / INFO_FILE if path.is_dir() else path.with_name(path.name + ".json")


FORMATS = {"savedmodel": None, "tflite": ".tflite", "onnx": ".onnx"}  # format -> file suffix (None: a folder)
DECISION_RULES = ("components", "in_graph")
IMAGE_SCORES = ("max", "component")


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


def read_info(source: Path) -> dict:
    """export_info.json, every field the runner uses checked (one line naming the file and the key):
    a hand-edited sidecar must not change what the graph decides."""
    def refuse(constant):
        raise ValueError(f"{constant} is not a number")

    try:
        info = json.loads(source.read_text(), parse_constant=refuse)
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{source}: not valid JSON ({error}); export it again") from None
    if not isinstance(info, dict):
        raise ValueError(f"{source}: holds {type(info).__name__}, not the object export.py writes; export it again")

    def bad(key, expected):
        return ValueError(f"{source}: {key}: expected {expected}; edited by hand? export it again")

    if info.get("format") not in FORMATS:
        raise bad("format", f"one of {', '.join(FORMATS)}")
    shape = (info.get("input") or {}).get("shape") if isinstance(info.get("input"), dict) else None
    if not (isinstance(shape, list) and len(shape) == 4 and all(isinstance(v, int) and not isinstance(v, bool) for v in shape[1:])
            and 1 <= shape[1] <= 8192 and 1 <= shape[2] <= 8192 and shape[3] in (1, 3)):
        raise bad("input.shape", "[null, HEIGHT, WIDTH, 1 or 3]")
    decision = info.get("decision")
    if not isinstance(decision, dict):
        raise bad("decision", "an object")
    if decision.get("rule") not in DECISION_RULES:
        raise bad("decision.rule", f"one of {', '.join(DECISION_RULES)}")
    if decision["rule"] == "components":
        min_area = decision.get("min_area")
        if isinstance(min_area, bool) or not isinstance(min_area, int) or min_area < 1:
            raise bad("decision.min_area", "a whole number >= 1")
        if not _finite(decision.get("threshold")):
            raise bad("decision.threshold", "a finite number")
        if not isinstance(decision.get("clear_border"), bool):
            raise bad("decision.clear_border", "true or false")
        if decision.get("image_score") not in IMAGE_SCORES:
            raise bad("decision.image_score", f"one of {', '.join(IMAGE_SCORES)}")
        if decision["image_score"] == "component" and not _finite(decision.get("no_defect_score")):
            raise bad("decision.no_defect_score", "a finite number")
    elif decision.get("threshold") is not None and not _finite(decision.get("threshold")):
        raise bad("decision.threshold", "a finite number or null")
    return info


def check_format(path: Path, fmt: str, source: Path) -> None:
    """The graph's file is of the format export_info.json names (a folder for savedmodel)."""
    suffix = FORMATS[fmt]
    if suffix is None and not path.is_dir():
        raise ValueError(f"{source}: format savedmodel, but {path} is not a folder; export it again")
    if suffix is not None and (path.is_dir() or path.suffix.lower() != suffix):
        raise ValueError(f"{source}: format {fmt}, but {path} is not a {suffix} file; export it again")


@contextlib.contextmanager
def quiet_native_stderr():
    """Hide what TensorFlow's C++ side prints on file descriptor 2 (absl, oneDNN, XNNPACK lines) while
    the block runs; Python exceptions are untouched. Where stderr is not a file descriptor, nothing."""
    try:
        descriptor = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(descriptor)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), descriptor)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, descriptor)
            os.close(saved)


def graph_function(path: Path, fmt: str):
    """(images float32 (N, H, W, C) -> {output name: numpy array}, the graph's input shape or None)
    for an exported graph."""
    if fmt in ("savedmodel", "tflite"):  # TensorFlow's deprecation warnings are not the runner's output
        import warnings

        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module="tensorflow")
    if fmt == "savedmodel":
        with quiet_native_stderr():
            import tensorflow as tf

            serve = tf.saved_model.load(str(path)).signatures["serving_default"]
        spec = serve.structured_input_signature[1].get("images")
        shape = None if spec is None else [None if v is None else int(v) for v in spec.shape.as_list()]

        def run_savedmodel(images):
            with quiet_native_stderr():
                return {key: value.numpy() for key, value in serve(images=tf.constant(images)).items()}

        return run_savedmodel, shape
    if fmt == "tflite":
        with quiet_native_stderr():
            try:
                from ai_edge_litert.interpreter import Interpreter
            except ImportError:
                import tensorflow as tf

                Interpreter = tf.lite.Interpreter
            runner = Interpreter(model_path=str(path)).get_signature_runner()
        details = runner.get_input_details().get("images")
        shape = None if details is None else [None, *(int(v) for v in details["shape"][1:])]

        def run_tflite(images):
            with quiet_native_stderr():  # the XNNPACK delegate's INFO line at the first call
                return {key: np.asarray(value) for key, value in runner(images=images).items()}

        return run_tflite, shape
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    graph_input = session.get_inputs()[0]
    shape = [v if isinstance(v, int) else None for v in graph_input.shape]
    return (lambda images: dict(zip(names, session.run(names, {graph_input.name: images})))), shape


class Export:
    """An exported graph and its decision; see the module docstring."""

    def __init__(self, path, batch_size: int = 16):
        self.path = Path(path)
        if not self.path.exists():
            raise ValueError(f"{self.path} not found: expected a SavedModel folder, .tflite or .onnx file written by export.py")
        source = info_path(self.path)
        if not source.is_file():
            raise ValueError(f"{self.path}: no {source.name} beside it; expected a folder or file written by export.py")
        self.info = read_info(source)
        self.decision = self.info["decision"]
        check_format(self.path, self.info["format"], source)
        recorded = self.info.get("graph_sha256")
        if recorded is not None and self.path.is_file():
            digest = hashlib.sha256()
            with open(self.path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            if digest.hexdigest() != recorded:
                raise ValueError(f"{source}: describes another graph than {self.path} (its SHA-256 differs): an export killed half "
                                 "way, or a file replaced by hand; export it again")
        shape = self.info["input"]["shape"]
        self.size, self.channels = (int(shape[1]), int(shape[2])), int(shape[3])  # size: (height, width)
        self.batch_size = batch_size
        try:
            self.run, graph_shape = graph_function(self.path, self.info["format"])
        except ImportError:
            raise
        except Exception as error:  # a truncated or foreign graph: each runtime raises its own kind
            first = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
            raise ValueError(f"{self.path}: cannot load the {self.info['format']} graph ({first}); export it again") from None
        if graph_shape is not None and list(graph_shape[1:]) != [*self.size, self.channels]:
            raise ValueError(f"{source}: input shape {shape} differs from the graph's {list(graph_shape)}: edited by hand? export it again")

    def predict_images(self, originals: list[np.ndarray]) -> list[dict]:
        """Rows for decoded images (float32 (H, W, C) in [0, 1], as :func:`decode` returns them)."""
        rows = []
        for start in range(0, len(originals), self.batch_size):
            batch = originals[start : start + self.batch_size]
            inputs = np.stack([model_input(image, self.size, self.channels) for image in batch]).astype(np.float32)
            outputs = self.run(inputs)
            rows += [self.row(outputs, index, image) for index, image in enumerate(batch)]
        return rows

    def decide(self, outputs: dict, index: int) -> tuple[float, bool, np.ndarray | None]:
        """(score, defective, the defect mask at the model's size or None) of image `index` of a batch's outputs."""
        decision = self.decision
        if decision["rule"] == "in_graph":
            return float(outputs["image_score"][index]), bool(outputs["defective"][index]), None
        regions = kept_regions(outputs["above_threshold"][index], decision["min_area"], decision["clear_border"])
        if decision["image_score"] == "max":
            score = float(outputs["image_score"][index])
        else:
            score = component_level(outputs["anomaly_map"][index], decision["min_area"], decision["clear_border"],
                                    decision["no_defect_score"])
        return score, bool(regions.any()), regions

    def row(self, outputs: dict, index: int, original: np.ndarray) -> dict:
        score, defective, regions = self.decide(outputs, index)
        height, width = original.shape[:2]
        row = {"score": score, "defective": defective, "threshold": self.decision.get("threshold"),
               "min_area": self.decision.get("min_area"), "defect_area_px": None, "bbox": None, "width": width, "height": height,
               "mask": None}
        if regions is None:
            return row
        mask = cv2.resize(regions.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST).astype(bool)
        area = int(np.count_nonzero(mask))
        row.update(defect_area_px=area, mask=mask)
        if area:
            x, y, w, h = cv2.boundingRect(mask.astype(np.uint8))
            row["bbox"] = [x, y, x + w - 1, y + h - 1]
        return row

    def predict_files(self, paths) -> list[dict]:
        """One row per file (its ``path`` added); a file that cannot be read gets ``error`` instead."""
        rows, readable = [], []
        for path in paths:
            try:
                readable.append((len(rows), decode(path)))
                rows.append({"path": str(path)})
            except ValueError as error:
                rows.append({"path": str(path), "error": str(error)})
        for (position, _), row in zip(readable, self.predict_images([image for _, image in readable])):
            rows[position] |= row
        return rows


def load_export(path, batch_size: int = 16) -> Export:
    return Export(path, batch_size)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Score images with an export of the anomaly toolkit (one JSON line per image).")
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--export", default=None, help="the export (default: the one this runner was written beside)")
    parser.add_argument("--masks", default=None, metavar="DIR", help="write each defect mask (PNG at the original size) here")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (ValueError, OSError) as error:  # one line, as the toolkit's scripts answer
        print(f"error: {error}", file=sys.stderr)
        return 2


def run(args) -> int:
    export = load_export(args.export or default_export())
    if args.masks:
        Path(args.masks).mkdir(parents=True, exist_ok=True)
    taken = set()
    for row in export.predict_files(args.images):
        mask = row.pop("mask", None)
        if args.masks and mask is not None:
            row["mask"] = str(write_mask(Path(args.masks), Path(row["path"]).stem, mask, taken))
        print(json.dumps(row))
    return 0


def write_mask(folder: Path, stem: str, mask: np.ndarray, taken: set) -> Path:
    """<stem>_mask.png in `folder` (<stem>_2_mask.png ... when an earlier input of this run had the
    same stem: inputs of two folders never share a mask file), written through a temporary name."""
    name, count = f"{stem}_mask.png", 1
    while name in taken:
        count += 1
        name = f"{stem}_{count}_mask.png"
    taken.add(name)
    target = folder / name
    encoded, data = cv2.imencode(".png", mask.astype(np.uint8) * 255)
    if not encoded:
        raise OSError(f"{target}: the mask could not be encoded as PNG")
    partial = target.with_name(f".{name}.partial")
    try:
        partial.write_bytes(data.tobytes())
        partial.replace(target)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise OSError(f"{target}: {error.strerror or error}") from None
    return target


def default_export() -> Path:
    """The export this file was written beside: the SavedModel folder it is in, or ``<stem>.onnx`` /
    ``<stem>.tflite`` for ``<stem>_runner.py``."""
    here = Path(__file__).resolve()
    if (here.parent / INFO_FILE).is_file():
        return here.parent
    stem = here.name[: -len("_runner.py")] if here.name.endswith("_runner.py") else here.stem
    found = [path for path in (here.with_name(f"{stem}.onnx"), here.with_name(f"{stem}.tflite")) if info_path(path).is_file()]
    if len(found) != 1:
        raise ValueError(f"{here}: cannot tell which export to run ({len(found)} beside it); pass --export")
    return found[0]


if __name__ == "__main__":
    sys.exit(main())
