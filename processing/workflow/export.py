"""export.py: any finetuning result as one graph (SavedModel, TFLite or ONNX), with a runner beside it.

The graph takes ``images``: float32 (N, H, W, C) in [0, 1] at the model's input size, C = 1 for
a grayscale model and 3 for an RGB one: the model input exactly as the toolkit makes it from a
file. What happens after that is the detector's export plan (``Detector.export_plan``):

- segmentation: every map kind of the result's map spec as tensor ops (``MapKind.graph``: SSIM or
  L2 of input and reconstruction, a featureCAE's own map, padim as a batched Mahalanobis distance,
  knn as the distance to the memory bank), other models' maps (``--combine-with``), the
  combination's standardisation, smoothing, per-pixel normalisation and the threshold. Outputs
  ``anomaly_map``, ``above_threshold``, ``image_score`` (the map's maximum, when that is the
  result's image score) and ``defective`` (when the decision is the maximum against the
  threshold: min_area 1, border kept).
- kde: the bottleneck code's log density under the training codes' KDE and the reconstruction
  error; the whole decision is in the graph (``defective``, ``image_score``, ``log_density``,
  ``error``).

What a graph cannot express (the connected-component rule with min_area and the border, and the
``component`` image score, a sweep over thresholds) is done by the runner written beside the
export (processing/workflow/export_runner.py: numpy and OpenCV only, nothing from this
repository), which also reads and resizes image files exactly as the toolkit does.
``export_info.json`` says what is inside, the decision's settings and how to call both.

The SavedModel computes in float64 like the toolkit; TFLite and ONNX in float32 (TFLite has no
float64 convolution). benchmarks/export_agreement.py prints the agreement on a dataset.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autoencoder.errors import UserError
from processing.detectors.base import ExportPlan

logger = logging.getLogger(__name__)

FORMATS = ("savedmodel", "tflite", "onnx")
SUFFIX = {"tflite": ".tflite", "onnx": ".onnx"}
INFO_FILE = "export_info.json"
INPUT_NAME = "images"
LIFTED_PREFIX = "lifted_"  # graph inputs of large arrays while the ONNX converter runs (then initializers)
ONNX_OPSET = 17
STATISTICS_DTYPES = ("float32", "float16")  # how the lifted arrays are stored (export.py --statistics-dtype)
RUNNER_SOURCE = Path(__file__).with_name("export_runner.py")


@dataclass
class ExportConfig:
    path: str  # model folder
    output: str  # folder (savedmodel) or file (tflite, onnx)
    format: str = "savedmodel"
    result: str | None = None  # finetuning result name; None: the model's only one
    results_root: str = "results"
    overwrite: bool = False
    statistics_dtype: str = "float32"  # the lifted arrays' storage: float16 halves the file, the graph casts them to float32

    def validate(self) -> Path:
        """The output path, checked before anything is computed: the format, a file name that says
        it, a place that can be written, and no export replaced without --overwrite."""
        from autoencoder.folders import check_writable_dir

        check_format(self.format)
        if self.statistics_dtype not in STATISTICS_DTYPES:
            raise UserError(f"--statistics-dtype {self.statistics_dtype!r}: expected one of {', '.join(STATISTICS_DTYPES)}")
        out = Path(self.output)
        if self.format in SUFFIX and out.suffix.lower() != SUFFIX[self.format]:
            kind = {"tflite": "a TFLite", "onnx": "an ONNX"}[self.format]
            raise UserError(f"-o {out}: {kind} export is one file named *{SUFFIX[self.format]}, not {out.name}")
        if out.exists() and not self.overwrite:
            raise UserError(f"-o {out} already exists: pass --overwrite to replace it")
        if self.format == "savedmodel" and out.exists() and not out.is_dir():
            raise UserError(f"-o {out} is a file; a SavedModel is a folder")
        if self.format != "savedmodel" and out.is_dir():
            raise UserError(f"-o {out} is a folder; a {self.format} export is one file")
        check_writable_dir(out.parent, "-o")
        self.check_model()
        return out

    def check_model(self) -> None:
        """What info.json alone tells: a tiled model cannot be one graph of a fixed input size (before TensorFlow)."""
        from autoencoder import bundle
        from processing.maps.map_model import TILED_GRAPH_WHY, refuse_tiled

        folder, _ = bundle.resolve_model_path(self.path)
        refuse_tiled(bundle.read_info(folder), f"-p {self.path}", TILED_GRAPH_WHY)


@dataclass(frozen=True)
class InputShape:
    """The graph's input: float32 (N, height, width, channels) images of `color_mode`."""

    height: int
    width: int
    channels: int
    color_mode: str

    @classmethod
    def of(cls, model) -> InputShape:
        info = model.info.model
        return cls(*info.image_size, info.channels, info.color_mode)


def check_format(name: str) -> str:
    if name not in FORMATS:
        raise UserError(f"--format {name!r}: expected one of {', '.join(FORMATS)}")
    return name


def make_module(plan: ExportPlan, shape: InputShape, dtype: str, lifted: dict | None = None, as_variables: bool = False):
    """A tf.Module whose ``serve(images)`` is the whole graph; `dtype` is the compute type.
    `lifted` ({input name: array} of :func:`lifted_arrays`): those arrays are not graph constants
    but inputs after ``images`` (:func:`onnx_model` and :func:`tflite_bytes` make them the file's
    weights again) or, `as_variables`, variables of the module (a SavedModel stores them beside the
    graph, as the model's weights)."""
    import tensorflow as tf

    lifted = lifted or {}
    signature = [tf.TensorSpec((None, shape.height, shape.width, shape.channels), tf.float32, name=INPUT_NAME)]
    if not as_variables:
        signature += [tf.TensorSpec(array.shape, tf.as_dtype(array.dtype), name=name) for name, array in lifted.items()]

    class Exported(tf.Module):
        def __init__(self):
            super().__init__()
            self.models = list(plan.models)  # tracked: their weights are saved with the graph
            self.lifted = [tf.Variable(array, trainable=False, name=name) for name, array in lifted.items()] if as_variables else []

        @tf.function(input_signature=signature)
        def serve(self, images, *arrays):
            arrays = arrays or [variable.read_value() for variable in self.lifted]
            arrays = [tf.cast(array, tf.float32) for array in arrays]  # float32, as the states hold them (stored maybe as float16)
            plan.bind({name.removeprefix(LIFTED_PREFIX): array for name, array in zip(lifted, arrays)})
            try:
                return plan.outputs(images, dtype)
            finally:
                plan.bind({})

    return Exported()


def lifted_arrays(plan: ExportPlan, dtype: str = "float32") -> dict[str, np.ndarray]:
    """{graph input name: array} of the plan's large arrays (:func:`make_module`'s `lifted`), stored
    as `dtype` (float32 or float16): each named ``lifted_<component>.<kind>.<field>`` after its key
    in :meth:`ExportPlan.large_arrays`."""
    return {f"{LIFTED_PREFIX}{key}": np.asarray(array, np.float32).astype(dtype) for key, array in plan.large_arrays().items()}


# ---- writing -----------------------------------------------------------------------------------


def runner_path(out: Path, fmt: str) -> Path:
    """Where the runner goes: inside a SavedModel folder, beside a one-file export as <stem>_runner.py."""
    return out / "runner.py" if fmt == "savedmodel" else out.with_name(f"{out.stem}_runner.py")


def export_info(model, name: str, plan: ExportPlan, shape: InputShape, fmt: str, dtype: str, runner: Path) -> dict:
    from autoencoder import bundle

    return {
        "format": fmt,
        "model_folder": str(model.folder.resolve()),
        "model_file": model.model_file.name,
        "result": name,
        "input": {
            "name": INPUT_NAME,
            "dtype": "float32",
            "shape": [None, shape.height, shape.width, shape.channels],
            "color_mode": shape.color_mode,
            "value_range": [0.0, 1.0],
            "preprocessing": (
                "decode the file (8-bit / 255, 16-bit / 65535, alpha dropped, RGB order); resize to "
                f"{shape.width}x{shape.height} (width x height) with cv2.INTER_AREA along axes that shrink and INTER_LINEAR "
                "along axes that grow; "
                + ("RGB to gray with 0.2125 R + 0.7154 G + 0.0721 B" if shape.channels == 1 else "gray replicated to RGB")
                + " (the runner's model_input does exactly this)"
            ),
        },
        "outputs": plan.describe_outputs((shape.height, shape.width)),
        "decision": plan.decision(),
        "compute_dtype": dtype,
        "runner": {
            "file": runner.name,
            "command": f"python {runner.name} IMAGE [IMAGE ...]",
            "python": f"from {runner.stem} import load_export; load_export(PATH).predict_files([...])",
            "needs": ["numpy", "opencv-python-headless", {"savedmodel": "tensorflow", "tflite": "ai-edge-litert or tensorflow",
                                                          "onnx": "onnxruntime"}[fmt]],
        },
        "created": bundle.timestamp(),
        "command": bundle.command_line(),
        "versions": bundle.environment_versions(),
    }


def _replace_file(final: Path, data: bytes) -> None:
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, final)
    except OSError as error:  # a full disk: name the file the user asked for, not the temporary one
        tmp.unlink(missing_ok=True)
        raise OSError(error.errno, error.strerror or str(error), str(final)) from error
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def export(config: ExportConfig) -> Path:
    """Write the graph of the chosen finetuning result, its export_info.json and its runner; return the path written."""
    out = config.validate()
    from autoencoder.folders import FolderLock, report_stale_staging

    report_stale_staging([out.parent], depth=1)  # a killed savedmodel export's staging folder
    out.parent.mkdir(parents=True, exist_ok=True)
    # One export.py at a time per -o: a second one answers at once instead of replacing the first.
    with FolderLock(out.parent, "export.py run", lock_name=f".{out.name}.lock"):
        config.validate()  # again under the lock: another run may have finished meanwhile
        if config.format != "savedmodel" and not out.exists() and sidecar(out).exists():
            logger.warning("-o %s: %s without its graph, left by an export killed before it finished: replaced", out, sidecar(out).name)
        return write_export(config, out)


def write_export(config: ExportConfig, out: Path) -> Path:
    from autoencoder import bundle
    from processing.workflow.results import ResultsTree, load_detector

    model = bundle.load_bundle(config.path)
    name, folder = ResultsTree.of_model(model, config.results_root).choose(config.result)
    plan = load_detector(model, folder).export_plan()
    dtype = "float64" if config.format == "savedmodel" else "float32"
    plan.check_format(config.format, dtype)
    shape = InputShape.of(model)
    lifted = lifted_arrays(plan, config.statistics_dtype)
    module = make_module(plan, shape, dtype, lifted, as_variables=config.format == "savedmodel")
    runner = runner_path(out, config.format)
    info = export_info(model, name, plan, shape, config.format, dtype, runner)
    if lifted:
        info["statistics_dtype"] = config.statistics_dtype
    out.parent.mkdir(parents=True, exist_ok=True)
    if config.format == "savedmodel":
        import tensorflow as tf

        with bundle.staging_folder(out, replace=config.overwrite) as staging:
            try:
                tf.saved_model.save(module, str(staging), signatures={"serving_default": module.serve})
            except tf.errors.OpError as error:  # a full disk, a folder that vanished: TensorFlow's own errors, pages long
                text = str(error.message or error)
                if "No space left" in text or isinstance(error, tf.errors.ResourceExhaustedError):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out)) from None
                first = re.sub(r"\{\{[^}]*\}\}\s*", "", text).strip().splitlines()[0][:200]
                raise OSError(errno.EIO, f"cannot write the SavedModel ({first})", str(out)) from None
            bundle.write_json(staging / INFO_FILE, info)
            shutil.copyfile(RUNNER_SOURCE, staging / runner.name)
        info_file = out / INFO_FILE
    else:
        data = tflite_bytes(module, lifted) if config.format == "tflite" else onnx_model(module, info, lifted).SerializeToString()
        # The sidecar names the graph's SHA-256 (the runner checks it) and the graph is renamed into
        # place last: a run killed half way leaves no graph beside a sidecar that is not its own.
        info["graph_sha256"] = hashlib.sha256(data).hexdigest()
        _replace_file(runner, RUNNER_SOURCE.read_bytes())
        info_file = bundle.write_json(sidecar(out), info)
        _replace_file(out, data)
    logger.info("%s export of %s (%s) in %s; %s; settings in %s; run it with %s", config.format, model.folder, name, out,
                info["decision"]["text"], info_file, runner)
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
        def serve(self, *inputs):
            return dict(zip(names, frozen(*inputs)))

    return Frozen()


def tflite_bytes(module, lifted: dict | None = None) -> bytes:
    """The TFLite model of `module`; the `lifted` arrays (inputs of `module`, :func:`make_module`)
    are converted as inputs, then become constant buffers (:func:`weights_into_tflite`): the
    converter never folds them, which costs many copies (8.6 GiB for a 220 MB padim state)."""
    import tensorflow as tf

    frozen = frozen_module(module)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen.serve.get_concrete_function()], frozen)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        data = converter.convert()
    except Exception as error:  # the converter raises its own types, with pages of MLIR
        ops = sorted(set(re.findall(r"'(tf\.\w+)' op is neither a custom op nor a flex op", str(error))))
        raise UserError(f"the TFLite converter cannot express this graph ({', '.join(ops) or type(error).__name__}); "
                         "export it as savedmodel or onnx") from None
    return weights_into_tflite(data, lifted) if lifted else data


def weights_into_tflite(data: bytes, lifted: dict) -> bytes:
    """The TFLite model `data` with its inputs named as `lifted`'s keys turned into constant tensors
    holding those arrays (removed from the subgraph's and the signature's inputs)."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(data)
    (signature,) = model.signatureDefs
    subgraph = model.subgraphs[signature.subgraphIndex]
    by_name = {entry.name.decode(): entry.tensorIndex for entry in signature.inputs}
    for name, array in lifted.items():
        index = by_name[name]
        buffer = flatbuffer_utils.schema_fb.BufferT()
        buffer.data = np.frombuffer(np.ascontiguousarray(array, array.dtype.newbyteorder("<")).tobytes(), np.uint8)
        model.buffers.append(buffer)
        subgraph.tensors[index].buffer = len(model.buffers) - 1
        subgraph.inputs = [i for i in subgraph.inputs if i != index]
        signature.inputs = [entry for entry in signature.inputs if entry.tensorIndex != index]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def onnx_model(module, info: dict, lifted: dict | None = None):
    """The ONNX model of `module`. The `lifted` arrays (inputs of `module`, :func:`make_module`) are
    converted as inputs, then become initializers under the same names: tf2onnx never holds them as
    constants, which it copies many times over (a 220 MB padim state took 11 GiB, as inputs 1.7)."""
    try:
        import tf2onnx
        from onnx import numpy_helper
    except ImportError:
        raise UserError("--format onnx needs tf2onnx: pip install tf2onnx onnxruntime") from None
    import tensorflow as tf

    lifted = lifted or {}
    logging.getLogger("tf2onnx").setLevel(logging.WARNING)  # its INFO lines describe the conversion, not the result
    spec = [tf.TensorSpec(module.serve.input_signature[0].shape, tf.float32, name=INPUT_NAME)]
    spec += [tf.TensorSpec(array.shape, tf.as_dtype(array.dtype), name=name) for name, array in lifted.items()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            proto, _ = tf2onnx.convert.from_function(frozen_module(module).serve, input_signature=spec, opset=ONNX_OPSET)
        except Exception as error:  # tf2onnx raises many types for an op it cannot convert
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise UserError(f"tf2onnx cannot convert this graph ({first[:200]}); export it as savedmodel") from None
    inputs = {entry.name.split(":")[0]: entry for entry in proto.graph.input}
    for name, array in lifted.items():
        entry = inputs[name]
        proto.graph.input.remove(entry)
        proto.graph.initializer.append(numpy_helper.from_array(array, entry.name))
    for key in ("result", "model_folder", "decision"):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, info[key] if isinstance(info[key], str) else json.dumps(info[key])
    return proto


# ---- running an export (tests, benchmarks) -----------------------------------------------------


def load_exported(path: str | os.PathLike, fmt: str):
    """A function images (float32 (N, H, W, C)) -> {output name: numpy array} for an exported graph
    (the runner's own loader)."""
    from processing.workflow.export_runner import graph_function

    check_format(fmt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return graph_function(Path(path), fmt)[0]


def remove_export(path: Path) -> None:
    """Remove an export, its sidecar and its runner (used by tests)."""
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
        sidecar(path).unlink(missing_ok=True)
        runner_path(path, "onnx").unlink(missing_ok=True)
