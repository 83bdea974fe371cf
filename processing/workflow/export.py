"""export.py: one graph from raw pixels to anomaly map, image score and (where exact) decision.

The graph takes ``pixels``: uint8 (N, S, S, C) at the model's input size S, C = 1 for a grayscale
model and 3 for an RGB one, and does everything the toolkit does after reading and resizing an
image: ``* (1/255)`` in float32 (as processing/data/images.py), the model, the map (SSIM or L2 of
the grayscale input and reconstruction, clipped to [0, 1], or a featureCAE's own ``feature`` map),
Gaussian smoothing (a depthwise convolution with the taps and the mirrored border of
processing/maps/postprocess.py smooth_resmaps), per-pixel standardisation and the finetuned
threshold. A serving stack needs nothing from this repository: it resizes the image to S x S and
converts its colours (see docs/predict.md), then feeds the uint8 pixels.

Outputs (float32 and bool; N = batch):

- ``anomaly_map`` (N, S, S): the post-processed map, the one the threshold applies to;
- ``image_score`` (N,): the map's maximum (the toolkit's ``--image-score max``);
- ``above_threshold`` (N, S, S): ``anomaly_map > threshold``, the defect candidates *before* the
  connected-component rule;
- ``defective`` (N,): only when the toolkit's decision is exactly ``image_score > threshold``,
  i.e. min_area = 1 and border components kept (finetune.py --keep-border). Otherwise the
  component rule (components of ``above_threshold`` of at least min_area pixels, those touching the
  border dropped) is not in the graph: connected-component labelling has no counterpart in
  TFLite/ONNX's operator sets short of an unbounded loop, so the serving side applies it (a few
  lines of OpenCV: docs/predict.md), with the min_area and border rule written beside the export.

Supported: the segmentation detector with ``ssim``, ``l2`` (pixel autoencoders) or ``feature``
(featureCAE) maps, float64 maps and ``--image-score max``. Refused with one line: padim/knn and
their combinations (their scorers are numpy arrays of per-position Gaussians and memory banks, not
yet graphs), uint8 maps (their rounding at .5 would flip pixels between float32 and float64), the
component image score (a sweep over thresholds of the component rule) and the kde detector.

The SavedModel computes the map in float64 like the toolkit (its float32 outputs agree to ~1e-7);
TFLite and ONNX compute it in float32 (TFLite has no float64 convolution), which agrees to ~3e-5
(benchmarks/export_agreement.py).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from processing.detectors.base import ExportPlan

logger = logging.getLogger(__name__)

FORMATS = ("savedmodel", "tflite", "onnx")
INFO_FILE = "export_info.json"
INPUT_NAME = "pixels"
ONNX_OPSET = 17


@dataclass
class ExportConfig:
    path: str  # model folder
    output: str  # folder (savedmodel) or file (tflite, onnx)
    format: str = "savedmodel"
    result: str | None = None  # finetuning result name; None: the model's only one
    results_root: str = "results"
    overwrite: bool = False


@dataclass(frozen=True)
class InputShape:
    """The graph's input: uint8 (N, size, size, channels) pixels of `color_mode` images."""

    size: int
    channels: int
    color_mode: str

    @classmethod
    def of(cls, model) -> InputShape:
        info = model.info["model"]
        return cls(int(info["image_size"]), 1 if info["color_mode"] == "grayscale" else 3, info["color_mode"])


def check_format(name: str) -> str:
    if name not in FORMATS:
        raise ValueError(f"--format {name!r}: expected one of {', '.join(FORMATS)}")
    return name


# ---- the graph ---------------------------------------------------------------------------------


def smoothing_taps(sigma: float) -> np.ndarray:
    """The 1-D kernel smooth_resmaps uses: cv2's Gaussian of ksize 2 * int(4 sigma + 0.5) + 1."""
    import cv2

    from processing.maps.postprocess import TRUNCATE

    radius = int(TRUNCATE * sigma + 0.5)
    return cv2.getGaussianKernel(2 * radius + 1, sigma, cv2.CV_64F)[:, 0]


def make_module(keras_model, plan: ExportPlan, shape: InputShape, dtype: str):
    """A tf.Module whose ``serve(pixels)`` is the whole graph; `dtype` is the map's compute type."""
    import tensorflow as tf

    from autoencoder.ssim import mirrored_separable_filter
    from processing.maps.kinds import get_map_source, parse_map_spec

    (kind,) = parse_map_spec(plan.method).kinds
    compute = tf.float64 if dtype == "float64" else tf.float32
    scale = np.float32(1.0 / 255.0)  # processing/data/images.py multiplies by float32(1/255)
    taps = smoothing_taps(plan.sigma) if plan.sigma > 0 else None
    if taps is not None and (len(taps) - 1) // 2 >= shape.size:
        raise ValueError(f"smoothing sigma {plan.sigma} needs a kernel wider than the {shape.size} px map; export.py cannot mirror it")
    source = get_map_source(kind.source).tensor(keras_model)

    class Exported(tf.Module):
        def __init__(self):
            super().__init__()
            self.model = keras_model

        @tf.function(input_signature=[tf.TensorSpec((None, shape.size, shape.size, shape.channels), tf.uint8, name=INPUT_NAME)])
        def serve(self, pixels):
            images = tf.cast(pixels, tf.float32) * scale
            maps = kind.graph(images, source(images), plan.states.get(kind.name), compute)
            if taps is not None:
                maps = mirrored_separable_filter(maps[..., None], taps)[..., 0]
            if plan.mean is not None:
                maps = (maps - tf.constant(plan.mean, compute)) / tf.constant(plan.std, compute)
            threshold = tf.constant(plan.threshold, compute)
            score = tf.reduce_max(maps, axis=[1, 2])
            outputs = {
                "anomaly_map": tf.cast(maps, tf.float32),
                "image_score": tf.cast(score, tf.float32),
                "above_threshold": maps > threshold,
            }
            if plan.decision_in_graph:
                outputs["defective"] = score > threshold
            return outputs

    return Exported()


# ---- writing -----------------------------------------------------------------------------------


def export_info(model, name: str, plan: ExportPlan, shape: InputShape, fmt: str, dtype: str) -> dict:
    from autoencoder import bundle

    size = shape.size
    outputs = {
        "anomaly_map": f"float32 (N, {size}, {size}): the post-processed anomaly map (higher = more anomalous)",
        "image_score": "float32 (N,): the map's maximum",
        "above_threshold": f"bool (N, {size}, {size}): anomaly_map > threshold, before the component rule",
    }
    if plan.decision_in_graph:
        outputs["defective"] = "bool (N,): the toolkit's decision (min_area 1, border kept: image_score > threshold)"
    rule = (
        "defective = image_score > threshold (in the graph: output 'defective')"
        if plan.decision_in_graph
        else f"defective = a connected region (8-connectivity) of above_threshold of at least {plan.min_area} pixels"
        + (" not touching the image border" if plan.clear_border else "") + " (applied outside the graph)"
    )
    return {
        "format": fmt,
        "model_folder": str(model.folder.resolve()),
        "model_file": model.model_file.name,
        "result": name,
        "input": {"name": INPUT_NAME, "dtype": "uint8", "shape": [None, size, size, shape.channels],
                  "color_mode": shape.color_mode,
                  "preprocessing": f"resize to {size}x{size} (cv2.INTER_AREA when shrinking, INTER_LINEAR when enlarging)"
                  + ("; RGB to gray with 0.2125 R + 0.7154 G + 0.0721 B" if shape.channels == 1 else "; gray replicated to RGB")},
        "outputs": outputs,
        "map": {"method": plan.method, "smoothing_sigma": plan.sigma, "normalize": "pixel" if plan.mean is not None else "none",
                "compute_dtype": dtype},
        "threshold": plan.threshold,
        "min_area": plan.min_area,
        "clear_border": plan.clear_border,
        "decision_in_graph": plan.decision_in_graph,
        "decision_rule": rule,
        "created": bundle.timestamp(),
        "command": bundle.command_line(),
        "versions": bundle.environment_versions(),
    }


def _replace_file(final: Path, data: bytes) -> None:
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_output(config: ExportConfig) -> Path:
    out = Path(config.output)
    if out.exists() and not config.overwrite:
        raise ValueError(f"-o {out} already exists: pass --overwrite to replace it")
    if config.format == "savedmodel" and out.exists() and not out.is_dir():
        raise ValueError(f"-o {out} is a file; a SavedModel is a folder")
    if config.format != "savedmodel" and out.is_dir():
        raise ValueError(f"-o {out} is a folder; a {config.format} export is one file")
    return out


def export(config: ExportConfig) -> Path:
    """Write the graph of the chosen finetuning result; return the path written."""
    check_format(config.format)
    out = check_output(config)
    from autoencoder import bundle
    from processing.workflow.results import ResultsTree, load_detector

    model = bundle.load_bundle(config.path)
    name, folder = ResultsTree.of_model(model, config.results_root).choose(config.result)
    plan = load_detector(model, folder).export_plan()
    shape = InputShape.of(model)
    dtype = "float64" if config.format == "savedmodel" else "float32"
    module = make_module(model.model, plan, shape, dtype)
    info = export_info(model, name, plan, shape, config.format, dtype)
    out.parent.mkdir(parents=True, exist_ok=True)
    if config.format == "savedmodel":
        import tensorflow as tf

        with bundle.staging_folder(out, replace=config.overwrite) as staging:
            tf.saved_model.save(module, str(staging), signatures={"serving_default": module.serve})
            bundle.write_json(staging / INFO_FILE, info)
        info_path = out / INFO_FILE
    elif config.format == "tflite":
        import tensorflow as tf

        frozen = frozen_module(module)
        converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen.serve.get_concrete_function()], frozen)
        _replace_file(out, converter.convert())
        info_path = bundle.write_json(sidecar(out), info)
    else:
        proto = onnx_model(module, info)
        _replace_file(out, proto.SerializeToString())
        info_path = bundle.write_json(sidecar(out), info)
    logger.info("%s export of %s (%s) in %s; %s; settings in %s", config.format, model.folder, name, out, info["decision_rule"], info_path)
    return out


def sidecar(path: Path) -> Path:
    """export_info.json of a one-file export: `<file>.json` beside it."""
    return path.with_name(path.name + ".json")


def frozen_module(module):
    """The module with the Keras variables folded into constants, outputs still named.

    TFLite and tf2onnx otherwise keep Keras 3's variables as resource variables: the TFLite
    interpreter then reads them as NaN (TF 2.21).
    """
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    concrete = module.serve.get_concrete_function()
    names = sorted(concrete.structured_outputs)  # the order of the flattened outputs of a dict
    frozen = convert_variables_to_constants_v2(concrete)
    spec = module.serve.input_signature

    class Frozen(tf.Module):
        @tf.function(input_signature=spec)
        def serve(self, pixels):
            return dict(zip(names, frozen(pixels)))

    return Frozen()


def onnx_model(module, info: dict):
    try:
        import tf2onnx
    except ImportError:
        raise ValueError("--format onnx needs tf2onnx: pip install tf2onnx onnxruntime") from None
    import tensorflow as tf

    spec = [tf.TensorSpec(module.serve.input_signature[0].shape, tf.uint8, name=INPUT_NAME)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        proto, _ = tf2onnx.convert.from_function(frozen_module(module).serve, input_signature=spec, opset=ONNX_OPSET)
    for key in ("threshold", "min_area", "clear_border", "decision_rule", "result", "model_folder"):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(info[key]) if not isinstance(info[key], str) else info[key]
    return proto


# ---- running an export (tests, docs, a serving sketch) -----------------------------------------


def load_exported(path: str | os.PathLike, fmt: str):
    """A function pixels (uint8 (N, S, S, C)) -> {output name: numpy array} for an exported graph."""
    check_format(fmt)
    path = str(path)
    if fmt == "savedmodel":
        import tensorflow as tf

        serve = tf.saved_model.load(path).signatures["serving_default"]
        return lambda pixels: {key: value.numpy() for key, value in serve(**{INPUT_NAME: tf.constant(pixels)}).items()}
    if fmt == "tflite":
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import tensorflow as tf

                Interpreter = tf.lite.Interpreter
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            interpreter = Interpreter(model_path=path)
        runner = interpreter.get_signature_runner()
        return lambda pixels: {key: np.asarray(value) for key, value in runner(**{INPUT_NAME: pixels}).items()}
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    input_name = session.get_inputs()[0].name
    return lambda pixels: dict(zip(names, session.run(names, {input_name: pixels})))


def remove_export(path: Path) -> None:
    """Remove an export and its sidecar (used by tests)."""
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
        sidecar(path).unlink(missing_ok=True)
