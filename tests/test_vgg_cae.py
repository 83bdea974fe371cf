"""vggCAE: architecture, loading a local VGG16 no-top weights file, freezing the encoder."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from autoencoder.models import BOTTLENECK_LAYER, build_model, get_architecture
from autoencoder.models.vgg_cae import (
    NAME,
    fold_caffe_preprocessing,
    freeze_vgg16_encoder,
    load_vgg16_encoder_weights,
    vgg16_conv_layer_names,
)
from processing.workflow.options import TrainConfig

SIZE = 32


@pytest.fixture(scope="module")
def vgg_weights(tmp_path_factory):
    """(path, model) of a randomly initialised keras.applications VGG16 no-top, saved locally."""
    keras.utils.set_random_seed(7)
    vgg = keras.applications.VGG16(include_top=False, weights=None, input_shape=(SIZE, SIZE, 3))
    path = tmp_path_factory.mktemp("vgg") / "vgg16_notop.weights.h5"
    vgg.save_weights(path)
    return path, vgg


def test_registered_with_a_7x7x7_code_at_224():
    architecture = get_architecture(NAME)
    assert architecture.default_size == 224 and architecture.size_multiple == 32 and architecture.has_bottleneck
    model = build_model(NAME, "rgb")
    assert tuple(model.get_layer(BOTTLENECK_LAYER).output.shape) == (None, 7, 7, 7)
    assert tuple(model.output_shape) == (None, 224, 224, 3)
    vgg = keras.applications.VGG16(include_top=False, weights=None, input_shape=(224, 224, 3))
    for name in vgg16_conv_layer_names():  # same layers as VGG16, so its weights fit
        assert model.get_layer(name).kernel.shape == vgg.get_layer(name).kernel.shape
    with pytest.raises(ValueError, match="--image-size 48: architecture vggCAE needs a multiple of 32"):
        get_architecture(NAME).check_size(48)


def test_fold_matches_keras_caffe_preprocessing(vgg_weights):
    """conv(preprocess_input(255 x)) of VGG16 == conv(x) of vggCAE away from the zero-padded border."""
    _, vgg = vgg_weights
    kernel, bias = vgg.get_layer("block1_conv1").get_weights()
    rng = np.random.default_rng(0)
    images = rng.random((2, 8, 8, 3)).astype(np.float32)
    gray = images[..., :1]

    def conv(x, k, b):
        out = keras.ops.conv(x, k, padding="same") + b
        return keras.ops.convert_to_numpy(out)[:, 1:-1, 1:-1]

    caffe = keras.applications.vgg16.preprocess_input(images * 255.0)
    caffe_gray = keras.applications.vgg16.preprocess_input(np.repeat(gray, 3, axis=-1) * 255.0)
    for x, reference_input, channels in ((images, caffe, 3), (gray, caffe_gray, 1)):
        folded_kernel, folded_bias = fold_caffe_preprocessing(kernel, bias, channels)
        assert folded_kernel.shape == (3, 3, channels, 64)
        np.testing.assert_allclose(conv(x, folded_kernel, folded_bias), conv(reference_input, kernel, bias), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("color_mode", ["grayscale", "rgb"])
def test_load_weights_copies_every_encoder_layer(vgg_weights, color_mode):
    path, vgg = vgg_weights
    model = build_model(NAME, color_mode, SIZE)
    assert load_vgg16_encoder_weights(model, path) == 13
    names = vgg16_conv_layer_names()
    for name in names[1:]:
        for ours, theirs in zip(model.get_layer(name).get_weights(), vgg.get_layer(name).get_weights()):
            np.testing.assert_array_equal(ours, theirs)
    channels = 1 if color_mode == "grayscale" else 3
    expected = fold_caffe_preprocessing(*vgg.get_layer(names[0]).get_weights(), channels)
    for ours, theirs in zip(model.get_layer(names[0]).get_weights(), expected):
        np.testing.assert_array_equal(ours, theirs)


def test_frozen_encoder_does_not_train(vgg_weights):
    path, _ = vgg_weights
    model = build_model(NAME, "grayscale", SIZE)
    load_vgg16_encoder_weights(model, path)
    assert freeze_vgg16_encoder(model) == 13
    encoder_before = [w.copy() for name in vgg16_conv_layer_names() for w in model.get_layer(name).get_weights()]
    bottleneck_before = model.get_layer(BOTTLENECK_LAYER).get_weights()[0].copy()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse", run_eagerly=True)
    images = np.random.default_rng(1).random((2, SIZE, SIZE, 1)).astype(np.float32)
    model.train_on_batch(images, images)
    encoder_after = [w for name in vgg16_conv_layer_names() for w in model.get_layer(name).get_weights()]
    for before, after in zip(encoder_before, encoder_after):
        np.testing.assert_array_equal(before, after)
    assert not np.array_equal(bottleneck_before, model.get_layer(BOTTLENECK_LAYER).get_weights()[0])


def test_weight_file_errors(tmp_path):
    model = build_model(NAME, "rgb", SIZE)
    with pytest.raises(ValueError, match=r"--encoder-weights .*missing\.weights\.h5 not found"):
        load_vgg16_encoder_weights(model, tmp_path / "missing.weights.h5")

    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    wrong = tmp_path / "dense.weights.h5"
    other.save_weights(wrong)
    with pytest.raises(ValueError, match=r"--encoder-weights .*dense\.weights\.h5: not a Keras VGG16 no-top weights file") as info:
        load_vgg16_encoder_weights(model, wrong)
    assert "\n" not in str(info.value)

    mvtec = build_model("mvtecCAE", "grayscale", SIZE)
    with pytest.raises(ValueError, match="has no VGG16 encoder layer 'block1_conv1'"):
        load_vgg16_encoder_weights(mvtec, wrong)
    with pytest.raises(ValueError, match="--freeze-encoder: model mvtecCAE has no VGG16 encoder layers"):
        freeze_vgg16_encoder(mvtec)


def test_train_config_encoder_options(vgg_weights, tmp_path):
    path, _ = vgg_weights
    TrainConfig(input_dir="x", architecture=NAME, encoder_weights=str(path), freeze_encoder=True).check_encoder_options()
    with pytest.raises(ValueError, match="--encoder-weights: architecture mvtecCAE has no VGG16 encoder; use -a vggCAE"):
        TrainConfig(input_dir="x", architecture="mvtecCAE", encoder_weights=str(path)).check_encoder_options()
    with pytest.raises(ValueError, match="--encoder-weights .*nope.h5 not found"):
        TrainConfig(input_dir="x", architecture=NAME, encoder_weights=str(tmp_path / "nope.h5")).check_encoder_options()
    with pytest.raises(ValueError, match="--freeze-encoder needs --encoder-weights"):
        TrainConfig(input_dir="x", architecture=NAME, freeze_encoder=True).check_encoder_options()
