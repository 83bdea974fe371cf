"""Tests for the autoencoder architectures in autoencoder/models/."""

import math

import keras
import numpy as np
import pytest

from autoencoder.models import (
    BOTTLENECK_LAYER,
    available_architectures,
    build_model,
    channels_for,
    get_architecture,
)

ARCHITECTURES = available_architectures()
# The pixel autoencoders: their output reconstructs the input through a `bottleneck` layer.
# featureCAE outputs its own anomaly map instead (tests/test_feature_models.py).
RECONSTRUCTING = [name for name in ARCHITECTURES if get_architecture(name).output == "reconstruction"]
COLOR_MODES = ("grayscale", "rgb")
EXPECTED_ARCHITECTURES = {
    "mvtecCAE",
    "baselineCAE",
    "inceptionCAE",
    "resnetCAE",
    "skipCAE",
    "fcnSimpleAE",
    "fcnImprovedAE",
    "cnnAE",
    "featureCAE",
}


def smallest_test_size(name: str) -> int:
    """The smallest valid size that is still a sensible image (>= 32) for the size-generic models."""
    architecture = get_architecture(name)
    if architecture.fixed_size is not None:
        return architecture.fixed_size
    return math.ceil(32 / architecture.size_multiple) * architecture.size_multiple


def test_all_expected_architectures_are_registered():
    assert EXPECTED_ARCHITECTURES <= set(ARCHITECTURES)


@pytest.mark.parametrize("color_mode", COLOR_MODES)
@pytest.mark.parametrize("name", RECONSTRUCTING)
def test_build_train_save_load_round_trip(name, color_mode, tmp_path):
    size = smallest_test_size(name)
    channels = channels_for(color_mode)
    model = build_model(name, color_mode, size)
    assert model.name == name
    assert tuple(model.input_shape) == (None, size, size, channels)
    assert tuple(model.output_shape) == (None, size, size, channels)

    rng = np.random.default_rng(0)
    images = rng.random((2, size, size, channels), dtype=np.float32)
    reconstruction = keras.ops.convert_to_numpy(model(images, training=False))
    assert reconstruction.shape == images.shape
    assert np.all((reconstruction >= 0.0) & (reconstruction <= 1.0))

    encoder = keras.Model(model.input, model.get_layer(BOTTLENECK_LAYER).output)
    codes = keras.ops.convert_to_numpy(encoder(images, training=False))
    assert codes.shape[0] == 2 and np.all(np.isfinite(codes))

    # Eager: tracing the train step of the deeper models costs 10-25 s each on 2 CPU cores; graph mode
    # is covered by test_graph_mode_training_step_lowers_the_loss.
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse", run_eagerly=True)
    # train_on_batch reports the loss of the forward pass before the update; BatchNorm layers use
    # batch statistics in that pass, as in model(images, training=True).
    expected_loss = float(np.mean((keras.ops.convert_to_numpy(model(images, training=True)) - images) ** 2))
    weights_before = [w.copy() for w in model.get_weights()]
    loss = model.train_on_batch(images, images)
    assert np.isfinite(loss)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-4)
    assert any(not np.array_equal(a, b) for a, b in zip(weights_before, model.get_weights()))

    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.name == name
    assert loaded.get_layer(BOTTLENECK_LAYER).output.shape == model.get_layer(BOTTLENECK_LAYER).output.shape
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(images, training=False)),
        keras.ops.convert_to_numpy(model(images, training=False)),
        atol=1e-6,
    )


def test_graph_mode_training_step_lowers_the_loss():
    model = build_model("cnnAE", "grayscale")
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")  # default: traced (and maybe XLA)
    images = np.random.default_rng(1).random((4, 28, 28, 1), dtype=np.float32)
    losses = [float(model.train_on_batch(images, images)) for _ in range(20)]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]


@pytest.mark.parametrize("name", RECONSTRUCTING)
def test_builds_at_default_and_other_valid_sizes(name):
    architecture = get_architecture(name)
    if architecture.fixed_size is not None:
        sizes = {architecture.fixed_size}
        assert architecture.default_size == architecture.fixed_size
    else:
        sizes = {architecture.default_size, 64, architecture.size_multiple}
    for size in sorted(sizes):
        for color_mode in COLOR_MODES:
            channels = channels_for(color_mode)
            model = build_model(name, color_mode, size)
            assert model.name == name
            assert tuple(model.output_shape) == (None, size, size, channels), (size, color_mode)
            assert model.get_layer(BOTTLENECK_LAYER).output.shape[0] is None
            if size == architecture.default_size and name != "vggCAE":  # VGG16's encoder alone has 14.7M
                assert model.count_params() < 5_000_000  # sensible for CPU training


def test_unknown_architecture_names_it_and_lists_known_ones():
    with pytest.raises(ValueError) as error:
        build_model("noSuchCAE", "grayscale")
    message = str(error.value)
    assert "noSuchCAE" in message and "\n" not in message
    for name in ARCHITECTURES:
        assert name in message


@pytest.mark.parametrize(
    "name, size",
    [("mvtecCAE", 30), ("mvtecCAE", 8), ("baselineCAE", 48), ("resnetCAE", 40), ("fcnSimpleAE", 32), ("cnnAE", 56)],
)
def test_bad_size_is_rejected_with_one_line_error(name, size):
    with pytest.raises(ValueError, match="--image-size") as error:
        build_model(name, "grayscale", size)
    assert str(size) in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("name", [n for n in ARCHITECTURES if get_architecture(n).fixed_size is None])
def test_size_multiple_is_needed_and_sufficient(name):
    multiple = get_architecture(name).size_multiple
    assert multiple > 1
    build_model(name, "grayscale", 2 * multiple)
    for bad_size in (2 * multiple - 1, multiple + multiple // 2):
        with pytest.raises(ValueError, match="--image-size"):
            build_model(name, "grayscale", bad_size)


def test_builder_rejects_non_multiple_shape_when_called_directly():
    with pytest.raises(ValueError, match="multiples of 16"):
        get_architecture("mvtecCAE").builder((128, 120, 1))
    with pytest.raises(ValueError, match="28x28"):
        get_architecture("cnnAE").builder((32, 32, 1))


def _conv_params(kernel, c_in, c_out):
    return kernel * kernel * c_in * c_out + c_out


def test_mvtec_cae_follows_bergmann_table_1():
    # Table 1 of Bergmann et al. 2018 at 128x128x1: (kernel, stride, output shape) per layer.
    table = [
        (4, 2, (64, 64, 32)),
        (4, 2, (32, 32, 32)),
        (3, 1, (32, 32, 32)),
        (4, 2, (16, 16, 64)),
        (3, 1, (16, 16, 64)),
        (4, 2, (8, 8, 128)),
        (3, 1, (8, 8, 64)),
        (3, 1, (8, 8, 32)),
        (8, 1, (1, 1, 100)),
    ]
    model = build_model("mvtecCAE", "grayscale", 128)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    encoder_convs = [layer for layer in convs if not isinstance(layer, keras.layers.Conv2DTranspose)][: len(table)]
    for layer, (kernel, stride, shape) in zip(encoder_convs, table):
        assert layer.kernel_size == (kernel, kernel) and layer.strides == (stride, stride), layer.name
        assert tuple(layer.output.shape[1:]) == shape, layer.name
    assert encoder_convs[-1].name == BOTTLENECK_LAYER
    assert tuple(model.get_layer(BOTTLENECK_LAYER).output.shape) == (None, 1, 1, 100)
    assert model.get_layer(BOTTLENECK_LAYER).activation is keras.activations.linear

    # Parameter count: the encoder table, its mirror in the decoder, and the 3x3 output convolution.
    channels_in = [1] + [shape[-1] for _, _, shape in table[:-1]]
    encoder = sum(_conv_params(k, c, shape[-1]) for (k, _, shape), c in zip(table, channels_in))
    decoder = sum(_conv_params(k, shape[-1], c) for (k, _, shape), c in zip(table, channels_in) if c != 1)
    first_layer_mirror = _conv_params(4, 32, 32)  # upsample back to 128x128 with 32 channels
    output_conv = _conv_params(3, 32, 1)
    assert model.count_params() == encoder + decoder + first_layer_mirror + output_conv


def test_skip_cae_adds_every_second_encoder_map_except_innermost():
    model = build_model("skipCAE", "grayscale", 64)
    adds = [layer for layer in model.layers if isinstance(layer, keras.layers.Add)]
    # Eight encoder convolutions at 64, 32, 32, 16, 16, 8, 8, 4 px: skips at the 2nd, 4th, 6th.
    assert sorted(tuple(add.output.shape[1:]) for add in adds) == [(8, 8, 128), (16, 16, 64), (32, 32, 32)]
    # Each sum joins an encoder convolution's output with a decoder transposed convolution's.
    for add in adds:
        sources = {type(t._keras_history.operation) for t in add._inbound_nodes[0].input_tensors}
        assert sources == {keras.layers.Conv2D, keras.layers.Conv2DTranspose}, add.name


def test_resnet_cae_has_a_residual_add_per_block():
    model = build_model("resnetCAE", "grayscale", 64)
    adds = [layer for layer in model.layers if isinstance(layer, keras.layers.Add)]
    assert len(adds) == 8  # four encoder and four decoder blocks
    assert tuple(model.get_layer(BOTTLENECK_LAYER).output.shape) == (None, 4, 4, 16)


def test_small_aes_match_their_layer_widths():
    simple = build_model("fcnSimpleAE", "grayscale")
    widths = [layer.units for layer in simple.layers if isinstance(layer, keras.layers.Dense)]
    assert widths == [128, 64, 16, 64, 128, 784]
    improved = build_model("fcnImprovedAE", "rgb")
    widths = [layer.units for layer in improved.layers if isinstance(layer, keras.layers.Dense)]
    assert widths == [512, 256, 128, 16, 128, 256, 512, 28 * 28 * 3]
    cnn = build_model("cnnAE", "grayscale")
    assert tuple(cnn.get_layer(BOTTLENECK_LAYER).output.shape) == (None, 7, 7, 32)
