"""Tests for processing.data.images: reading images and masks, the MVTec layout, the split, tf.data."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.color
import skimage.transform

from autoencoder.pipeline import apply_affine, augment_batch, augmentation_transforms, make_training_dataset, make_validation_dataset
from processing.data.images import (
    IMAGE_EXTENSIONS,
    DatasetError,
    MVTecLayout,
    check_masks,
    image_size,
    iter_batches,
    list_images,
    load_image,
    load_images,
    load_mask,
    load_masks,
    read_image,
    read_mask,
    scan_dataset,
    split_train_validation,
)


def smooth_image(height, width, channels=1, seed=0):
    """A smooth random float image (H, W, C) in [0.1, 0.9]: noise blurred at a large scale."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((max(2, height // 8), max(2, width // 8), channels))
    image = skimage.transform.resize(coarse, (height, width, channels), order=3, mode="edge")
    return 0.1 + 0.8 * (image - image.min()) / (image.max() - image.min())


def write(path, array):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array), path
    return path


def to_uint8(image):
    return np.round(np.asarray(image) * 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Reading single images
# ---------------------------------------------------------------------------------------------


def test_read_8bit_gray_png(tmp_path):
    pixels = np.random.default_rng(1).integers(0, 256, (17, 23), dtype=np.uint8)
    path = write(tmp_path / "a.png", pixels)
    image = read_image(path, "grayscale")
    assert image.dtype == np.float32 and image.shape == (17, 23, 1)
    np.testing.assert_allclose(image[:, :, 0], pixels / 255.0, atol=1e-7)


def test_read_16bit_png_scaled_by_65535(tmp_path):
    pixels = np.random.default_rng(2).integers(0, 65536, (12, 9), dtype=np.uint16)
    pixels[0, 0], pixels[0, 1] = 0, 65535
    path = write(tmp_path / "a.png", pixels)
    image = read_image(path, "grayscale")
    np.testing.assert_allclose(image[:, :, 0], pixels / 65535.0, atol=1e-7)
    assert image.min() == 0.0 and image.max() == 1.0


def test_pure_red_is_rgb_1_0_0(tmp_path):
    bgr = np.zeros((8, 8, 3), np.uint8)
    bgr[:, :, 2] = 255  # cv2 stores channels as BGR
    path = write(tmp_path / "red.png", bgr)
    image = read_image(path, "rgb")
    assert image.shape == (8, 8, 3)
    np.testing.assert_array_equal(image[3, 4], [1.0, 0.0, 0.0])


def test_rgba_drops_alpha_and_keeps_channel_order(tmp_path):
    rgb = to_uint8(smooth_image(10, 14, 3, seed=3))
    bgra = np.concatenate([rgb[:, :, ::-1], np.full((10, 14, 1), 7, np.uint8)], axis=2)
    path = write(tmp_path / "a.png", bgra)
    np.testing.assert_allclose(read_image(path, "rgb"), rgb / 255.0, atol=1e-7)


def test_rgb_to_gray_matches_skimage(tmp_path):
    rgb = np.random.default_rng(4).integers(0, 256, (15, 11, 3), dtype=np.uint8)
    path = write(tmp_path / "a.png", rgb[:, :, ::-1])
    expected = skimage.color.rgb2gray(rgb)
    gray = read_image(path, "grayscale")
    assert gray.shape == (15, 11, 1)
    np.testing.assert_allclose(gray[:, :, 0], expected, atol=1 / 255)


def test_gray_to_rgb_replicates(tmp_path):
    pixels = np.random.default_rng(5).integers(0, 256, (6, 7), dtype=np.uint8)
    path = write(tmp_path / "a.png", pixels)
    image = read_image(path, "rgb")
    for channel in range(3):
        np.testing.assert_allclose(image[:, :, channel], pixels / 255.0, atol=1e-7)


@pytest.mark.parametrize("extension", [".bmp", ".tif", ".tiff", ".PNG"])
def test_lossless_formats_round_trip(tmp_path, extension):
    rgb = np.random.default_rng(6).integers(0, 256, (9, 13, 3), dtype=np.uint8)
    path = write(tmp_path / f"a{extension}", rgb[:, :, ::-1])
    np.testing.assert_allclose(read_image(path, "rgb"), rgb / 255.0, atol=1e-7)
    assert list_images(tmp_path) == [path]


def test_jpeg_close_to_original(tmp_path):
    pixels = to_uint8(smooth_image(32, 32, 1, seed=7))[:, :, 0]
    path = tmp_path / "a.jpg"
    assert cv2.imwrite(str(path), pixels, [cv2.IMWRITE_JPEG_QUALITY, 98])
    image = read_image(path, "grayscale")
    assert image.shape == (32, 32, 1)
    assert np.abs(image[:, :, 0] - pixels / 255.0).max() < 4 / 255


def test_image_size_matches_decoded_shape(tmp_path):
    for name, array in [
        ("a.png", np.zeros((21, 34), np.uint8)),
        ("b.jpg", np.zeros((40, 19, 3), np.uint8)),
        ("c.bmp", np.zeros((5, 8, 3), np.uint8)),
        ("d.tif", np.zeros((13, 3), np.uint16)),
    ]:
        path = write(tmp_path / name, array)
        assert image_size(path) == array.shape[:2] == read_image(path, "grayscale").shape[:2]


def test_corrupt_file_names_the_file(tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(b"this is not a png at all" * 10)
    with pytest.raises(DatasetError, match=r"cannot read image .*x\.png: corrupt or not an image"):
        read_image(path, "grayscale")
    with pytest.raises(DatasetError, match=r"x\.png"):
        load_images([path], "grayscale", 16)
    with pytest.raises(DatasetError, match=r"x\.png"):
        image_size(path)


def test_missing_file_and_bad_color_mode(tmp_path):
    with pytest.raises(DatasetError, match=r"nothere\.png not found"):
        read_image(tmp_path / "nothere.png", "grayscale")
    path = write(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DatasetError, match="color mode 'cmyk'"):
        read_image(path, "cmyk")
    with pytest.raises(DatasetError, match="image size 0"):
        load_image(path, "grayscale", 0)


# ---------------------------------------------------------------------------------------------
# Resizing
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(40, 40), (20, 20), (10, 60), (60, 10), (33, 47)])
@pytest.mark.parametrize("color_mode,channels", [("grayscale", 1), ("rgb", 3)])
def test_load_image_shape_and_range(tmp_path, shape, color_mode, channels):
    path = write(tmp_path / "a.png", to_uint8(smooth_image(*shape, 3)))
    image = load_image(path, color_mode, 32)
    assert image.shape == (32, 32, channels) and image.dtype == np.float32
    assert 0.0 <= image.min() and image.max() <= 1.0


def test_shrinking_averages_blocks(tmp_path):
    pixels = np.random.default_rng(8).integers(0, 256, (32, 48), dtype=np.uint8)
    path = write(tmp_path / "a.png", pixels)
    expected = (pixels / 255.0).reshape(16, 2, 16, 3).mean(axis=(1, 3))  # 2x3 block means
    np.testing.assert_allclose(load_image(path, "grayscale", 16)[:, :, 0], expected, atol=1e-5)


def test_enlarging_is_bilinear(tmp_path):
    pixels = to_uint8(smooth_image(16, 16, 1, seed=9))[:, :, 0]
    path = write(tmp_path / "a.png", pixels)
    expected = skimage.transform.resize(pixels / 255.0, (40, 40), order=1, mode="edge", anti_aliasing=False)
    np.testing.assert_allclose(load_image(path, "grayscale", 40)[:, :, 0], expected, atol=1e-3)


def test_mixed_resize_shrinks_one_axis_and_enlarges_the_other(tmp_path):
    # 16 x 64 -> 32 x 32: the width is averaged in blocks of 2, the height interpolated.
    pixels = np.random.default_rng(10).integers(0, 256, (16, 64), dtype=np.uint8)
    path = write(tmp_path / "a.png", pixels)
    shrunk = (pixels / 255.0).reshape(16, 32, 2).mean(axis=2)
    expected = skimage.transform.resize(shrunk, (32, 32), order=1, mode="edge", anti_aliasing=False)
    np.testing.assert_allclose(load_image(path, "grayscale", 32)[:, :, 0], expected, atol=1e-3)


def test_masks_nearest_neighbour_and_binary(tmp_path):
    mask = np.random.default_rng(11).random((16, 16)) > 0.7
    path_255 = write(tmp_path / "m255.png", mask.astype(np.uint8) * 255)
    path_01 = write(tmp_path / "m01.png", mask.astype(np.uint8))
    enlarged = np.repeat(np.repeat(mask, 3, axis=0), 3, axis=1)
    for path in (path_255, path_01):
        np.testing.assert_array_equal(read_mask(path), mask)
        loaded = load_mask(path, 48)
        assert loaded.dtype == bool and loaded.shape == (48, 48)
        np.testing.assert_array_equal(loaded, enlarged)
    shrunk = load_mask(path_255, 10)
    assert shrunk.dtype == bool and shrunk.shape == (10, 10)
    assert 0 < shrunk.mean() < 1
    np.testing.assert_array_equal(load_masks([path_255, path_01], 48), np.stack([enlarged, enlarged]))


def test_mask_resize_samples_pixel_centres(tmp_path):
    mask = np.random.default_rng(12).random((15, 15)) > 0.5
    path = write(tmp_path / "m.png", mask.astype(np.uint8) * 255)
    # Output pixel d samples the input pixel under its centre: floor((d + 0.5) * 15 / 10).
    source = np.floor((np.arange(10) + 0.5) * 15 / 10).astype(int)
    np.testing.assert_array_equal(load_mask(path, 10), mask[np.ix_(source, source)])


def test_load_mask_of_smooth_blob_stays_binary(tmp_path):
    mask = np.zeros((50, 70), np.uint8)
    cv2.circle(mask, (30, 25), 12, 255, -1)
    loaded = load_mask(write(tmp_path / "m.png", mask), 32)
    assert set(np.unique(loaded)) == {False, True}
    assert abs(loaded.mean() - (mask > 0).mean()) < 0.03


# ---------------------------------------------------------------------------------------------
# Many images
# ---------------------------------------------------------------------------------------------


def test_load_images_parallel_matches_serial_and_keeps_order(tmp_path):
    paths = [write(tmp_path / f"{i:02d}.png", to_uint8(smooth_image(20 + i, 30, 3, seed=i))) for i in range(7)]
    serial = np.stack([load_image(p, "rgb", 24) for p in paths])
    for workers in (1, 3, None):
        images = load_images(paths[::-1], "rgb", 24, workers=workers, progress=workers == 3)
        assert images.shape == (7, 24, 24, 3) and images.dtype == np.float32
        np.testing.assert_array_equal(images, serial[::-1])
    assert load_images([], "grayscale", 8).shape == (0, 8, 8, 1)
    with pytest.raises(DatasetError, match="workers=0"):
        load_images(paths, "rgb", 24, workers=0)


def test_iter_batches_covers_all_paths_in_order(tmp_path):
    paths = [write(tmp_path / f"{i}.png", np.full((6, 6), 20 * i, np.uint8)) for i in range(5)]
    chunks = list(iter_batches(paths, "grayscale", 4, batch_size=2))
    assert [len(chunk) for chunk, _ in chunks] == [2, 2, 1]
    assert [p for chunk, _ in chunks for p in chunk] == paths
    values = np.concatenate([images[:, 0, 0, 0] for _, images in chunks])
    np.testing.assert_allclose(values, [20 * i / 255 for i in range(5)], atol=1e-6)


def test_list_images_sorted_filtered_and_errors(tmp_path):
    for name in ["b.png", "a.JPG", "c.txt", "._d.png", "e.jpeg"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.png").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["a.JPG", "b.png", "e.jpeg"]
    assert ".png" in IMAGE_EXTENSIONS and ".tiff" in IMAGE_EXTENSIONS
    with pytest.raises(DatasetError, match=r"missing not found: expected a folder of images"):
        list_images(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"empty holds no image"):
        list_images(tmp_path / "empty")


# ---------------------------------------------------------------------------------------------
# MVTec layout
# ---------------------------------------------------------------------------------------------


def make_layout(root, n_train=3, test=None, masks=True, size=(16, 16)):
    """Write a tiny MVTec-style dataset; test maps class -> number of images."""
    test = {"good": 2, "crack": 2, "hole": 1} if test is None else test
    image = np.full(size, 128, np.uint8)
    for i in range(n_train):
        write(root / "train" / "good" / f"{i:03d}.png", image)
    for name, count in test.items():
        for i in range(count):
            write(root / "test" / name / f"{i:03d}.png", image)
            if masks and name != "good":
                write(root / "ground_truth" / name / f"{i:03d}_mask.png", np.zeros(size, np.uint8))
    return root


def test_scan_dataset_lists_files(tmp_path):
    root = make_layout(tmp_path / "ds")
    layout = scan_dataset(root, require_test=True)
    assert isinstance(layout, MVTecLayout) and layout.root == root
    assert [p.name for p in layout.train_good] == ["000.png", "001.png", "002.png"]
    assert sorted(layout.test) == ["crack", "good", "hole"]
    assert layout.defect_types == ["crack", "hole"]
    files = layout.test_files()
    assert [(p.parent.name, p.name) for p, _ in files] == [
        ("good", "000.png"),
        ("good", "001.png"),
        ("crack", "000.png"),
        ("crack", "001.png"),
        ("hole", "000.png"),
    ]
    assert [c for _, c in files] == ["good", "good", "crack", "crack", "hole"]
    assert layout.mask_path(layout.test["crack"][1]) == root / "ground_truth" / "crack" / "001_mask.png"
    assert layout.mask_path(layout.test["good"][0]) is None
    assert check_masks(layout) == 3


def test_mask_path_none_without_ground_truth_folder(tmp_path):
    layout = scan_dataset(make_layout(tmp_path / "ds", masks=False), require_test=True)
    assert layout.mask_path(layout.test["crack"][0]) is None
    assert check_masks(layout) == 0


def test_scan_dataset_without_test_folder(tmp_path):
    layout = scan_dataset(make_layout(tmp_path / "ds", test={}))
    assert layout.test == {} and layout.test_files() == [] and layout.defect_types == []
    with pytest.raises(DatasetError, match=r"test not found"):
        scan_dataset(tmp_path / "ds", require_test=True)


def test_scan_dataset_errors(tmp_path):
    with pytest.raises(DatasetError, match=r"dataset folder .*nowhere not found"):
        scan_dataset(tmp_path / "nowhere")
    (tmp_path / "a").mkdir()
    with pytest.raises(DatasetError, match=r"a/train/good not found: expected MVTec AD layout"):
        scan_dataset(tmp_path / "a")
    (tmp_path / "a" / "train" / "good").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"good holds no image"):
        scan_dataset(tmp_path / "a")
    root = make_layout(tmp_path / "b", test={"crack": 1})
    scan_dataset(root)  # test/good is only needed when required
    with pytest.raises(DatasetError, match=r"test/good not found or empty"):
        scan_dataset(root, require_test=True)
    root = make_layout(tmp_path / "c", test={"good": 2})
    with pytest.raises(DatasetError, match=r"holds no defect class"):
        scan_dataset(root, require_test=True)


def test_check_masks_size_mismatch_names_the_mask(tmp_path):
    root = make_layout(tmp_path / "ds", size=(128, 128))
    bad_mask = root / "ground_truth" / "crack" / "001_mask.png"
    write(bad_mask, np.zeros((100, 120), np.uint8))
    layout = scan_dataset(root, require_test=True)
    with pytest.raises(DatasetError) as error:
        check_masks(layout)
    message = str(error.value)
    assert "\n" not in message
    assert f"mask {bad_mask} is 100x120, image {root / 'test' / 'crack' / '001.png'} is 128x128" == message


def test_check_masks_missing_mask(tmp_path):
    root = make_layout(tmp_path / "ds")
    (root / "ground_truth" / "hole" / "000_mask.png").unlink()
    with pytest.raises(DatasetError, match=r"mask .*hole/000_mask\.png not found"):
        check_masks(scan_dataset(root))


# ---------------------------------------------------------------------------------------------
# Train / validation split
# ---------------------------------------------------------------------------------------------


def test_split_deterministic_disjoint_and_sized():
    files = [Path(f"/data/train/good/{i:04d}.png") for i in range(50)]
    train, val = split_train_validation(files, 0.1, seed=42)
    assert len(val) == 5 and len(train) == 45
    assert set(train).isdisjoint(val) and set(train) | set(val) == set(files)
    assert train == sorted(train) and val == sorted(val)
    rng = np.random.default_rng(0)
    shuffled = [files[i] for i in rng.permutation(len(files))]
    assert split_train_validation(shuffled, 0.1, seed=42) == (train, val)
    assert split_train_validation([str(f) for f in files], 0.1, seed=42) == (train, val)
    assert split_train_validation(files, 0.1, seed=43)[1] != val
    # The split follows the file names, not where the dataset lies.
    moved_train, moved_val = split_train_validation([Path("elsewhere") / f.name for f in files], 0.1, seed=42)
    assert [p.name for p in moved_val] == [p.name for p in val]


def test_split_sizes_at_the_edges():
    files = [Path(f"{i}.png") for i in range(10)]
    assert split_train_validation(files, 0.0) == (files, [])
    assert len(split_train_validation(files, 0.01)[1]) == 1  # at least one
    assert len(split_train_validation(files, 0.26)[1]) == 3  # round(2.6)
    assert len(split_train_validation(files, 0.99)[1]) == 9  # training keeps one file
    assert split_train_validation(files[:1], 0.5) == (files[:1], [])
    train, val = split_train_validation(files[:2], 0.1)
    assert len(train) == len(val) == 1


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_split_rejects_bad_fraction(fraction):
    with pytest.raises(ValueError, match=r"--validation-split"):
        split_train_validation([Path("a.png")], fraction)


# ---------------------------------------------------------------------------------------------
# tf.data pipeline
# ---------------------------------------------------------------------------------------------


def smooth_batch(n, size=32, channels=1):
    return np.stack([smooth_image(size, size, channels, seed=i) for i in range(n)]).astype(np.float32)


def collect(dataset):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in dataset])
    return xs, ys


def test_affine_transform_matches_skimage_warp():
    image = smooth_image(20, 30, 1, seed=12).astype(np.float32)
    angle, shift_x, shift_y = 4.0, 1.3, -0.7
    transforms = augmentation_transforms(np.array([angle]), np.array([[shift_x, shift_y]]), 20, 30)
    warped = apply_affine(image[None], transforms).numpy()[0, :, :, 0]
    theta = np.deg2rad(angle)
    rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    center = np.array([(30 - 1) / 2, (20 - 1) / 2])
    matrix = np.eye(3)
    matrix[:2, :2] = rotation
    matrix[:2, 2] = center + np.array([shift_x, shift_y]) - rotation @ center
    expected = skimage.transform.warp(
        image[:, :, 0].astype(np.float64), skimage.transform.AffineTransform(matrix=matrix).inverse, order=1, mode="edge"
    )
    np.testing.assert_allclose(warped, expected, atol=1e-5)
    identity = augmentation_transforms(np.zeros(1), np.zeros((1, 2)), 20, 30)
    np.testing.assert_array_equal(apply_affine(image[None], identity).numpy()[0], image)


def test_training_dataset_yields_pairs_of_right_shape():
    images = smooth_batch(10, 16, 3)
    xs, ys = collect(make_training_dataset(images, batch_size=4, seed=3))
    assert [x.shape for x in xs] == [(4, 16, 16, 3), (4, 16, 16, 3), (2, 16, 16, 3)]
    for x, y in zip(xs, ys):
        assert x.dtype == np.float32
        np.testing.assert_array_equal(x, y)  # the target is the same augmented image
        assert 0.0 <= x.min() and x.max() <= 1.0


def test_validation_dataset_is_the_images_in_order():
    images = smooth_batch(7, 16)
    xs, ys = collect(make_validation_dataset(images, batch_size=3))
    np.testing.assert_array_equal(np.concatenate(xs), images)
    np.testing.assert_array_equal(np.concatenate(ys), images)
    xs, _ = collect(make_training_dataset(images, batch_size=3, shuffle=False, augment=False))
    np.testing.assert_array_equal(np.concatenate(xs), images)


def test_shuffle_without_augment_permutes_and_reshuffles():
    images = smooth_batch(12, 16)
    dataset = make_training_dataset(images, batch_size=5, augment=False, seed=1)
    epoch1 = np.concatenate(collect(dataset)[0])
    epoch2 = np.concatenate(collect(dataset)[0])
    ids = lambda batch: [int(np.argmin(np.abs(images - x).sum(axis=(1, 2, 3)))) for x in batch]  # noqa: E731
    order1, order2 = ids(epoch1), ids(epoch2)
    assert sorted(order1) == sorted(order2) == list(range(12))
    np.testing.assert_array_equal(epoch1, images[order1])
    assert order1 != order2 and order1 != list(range(12))


def test_augmentation_changes_images_slightly():
    images = smooth_batch(16, 32)
    xs, _ = collect(make_training_dataset(images, batch_size=16, shuffle=False, seed=5))
    augmented = xs[0]
    differences = np.abs(augmented - images).mean(axis=(1, 2, 3))
    assert (differences > 1e-4).all()  # every image changed
    assert differences.max() < 0.1  # but only slightly


def test_augmentation_reproducible_and_fresh_each_epoch():
    images = smooth_batch(8, 16)
    first = make_training_dataset(images, batch_size=4, seed=7)
    second = make_training_dataset(images, batch_size=4, seed=7)
    epoch_a1, epoch_a2 = collect(first)[0], collect(first)[0]
    epoch_b1, epoch_b2 = collect(second)[0], collect(second)[0]
    for a, b in zip(epoch_a1 + epoch_a2, epoch_b1 + epoch_b2):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(np.concatenate(epoch_a1), np.concatenate(epoch_a2))
    unshuffled = make_training_dataset(images, batch_size=8, shuffle=False, seed=7)
    assert not np.array_equal(collect(unshuffled)[0][0], collect(unshuffled)[0][0])
    other = collect(make_training_dataset(images, batch_size=4, seed=8))[0]
    assert not np.array_equal(np.concatenate(other), np.concatenate(epoch_a1))


def test_augment_batch_ranges():
    # A bright flat image: rotation and shift leave it unchanged, so only brightness acts.
    flat = np.full((64, 8, 8, 1), 0.5, np.float32)
    out = augment_batch(flat, np.array([1, 2], np.int64)).numpy()
    factors = out[:, 0, 0, 0] / 0.5
    np.testing.assert_allclose(out, np.broadcast_to(out[:, :1, :1, :], out.shape), atol=1e-6)
    assert 0.95 - 1e-6 <= factors.min() and factors.max() <= 1.05 + 1e-6
    assert factors.std() > 0.01  # one draw per image
    saturated = augment_batch(np.ones((8, 8, 8, 1), np.float32), np.array([3, 4], np.int64)).numpy()
    assert saturated.max() <= 1.0


def test_training_dataset_rejects_bad_input():
    with pytest.raises(ValueError, match="expected \\(N>0, H, W, C\\)"):
        make_training_dataset(np.zeros((4, 4, 1), np.float32), 2)
    with pytest.raises(ValueError, match="--batch-size 0"):
        make_training_dataset(np.zeros((2, 4, 4, 1), np.float32), 0)


# ---------------------------------------------------------------------------------------------
# The real dataset, when present
# ---------------------------------------------------------------------------------------------

MAGNETIC_TILE = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "magnetic_tile"


@pytest.mark.skipif(not MAGNETIC_TILE.is_dir(), reason="magnetic_tile dataset not present")
def test_magnetic_tile_layout_and_masks():
    layout = scan_dataset(MAGNETIC_TILE, require_test=True)
    assert len(layout.train_good) == 761 and len(layout.test["good"]) == 191
    assert layout.defect_types == ["blowhole", "break", "crack", "fray", "uneven"]
    assert check_masks(layout) == sum(len(layout.test[t]) for t in layout.defect_types)
    defect_image = layout.test["crack"][0]
    images = load_images([layout.train_good[0], defect_image], "grayscale", 64)
    assert images.shape == (2, 64, 64, 1) and 0 <= images.min() and images.max() <= 1
    mask = load_mask(layout.mask_path(defect_image), 64)
    assert mask.any() and not mask.all()


# --------------------------------------------------------------------------------------------
# Truncated files and EXIF orientation, the same in every reader
# --------------------------------------------------------------------------------------------


def jpeg_bytes(array, **save) -> bytes:
    from io import BytesIO

    from PIL import Image

    buffer = BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", **save)
    return buffer.getvalue()


@pytest.mark.parametrize("progressive", [False, True])
def test_a_truncated_jpeg_is_an_error_in_every_reader(tmp_path, progressive):
    from PIL import Image

    array = (smooth_image(48, 40, 3) * 255).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 1
    data = jpeg_bytes(array, progressive=progressive, exif=exif.tobytes())
    # An APP segment holding a thumbnail's own start and end markers, as cameras write them.
    thumbnail = b"Exif\x00\x00" + jpeg_bytes(array[:8, :8])
    data = data[:2] + b"\xff\xe2" + (len(thumbnail) + 2).to_bytes(2, "big") + thumbnail + data[2:]
    for name, content in {"half": data[: len(data) // 2], "no_end_marker": data[:-2], "zero_padded": data[: len(data) // 2] +
                          bytes(len(data) // 2)}.items():
        path = tmp_path / f"{name}.jpg"
        path.write_bytes(content)
        for read in (lambda p: read_image(p), lambda p: load_image(p, "grayscale", 32), read_mask, lambda p: load_images([p], "rgb", 16)):
            with pytest.raises(DatasetError, match=f"{path}: truncated JPEG"):
                read(path)
    whole = tmp_path / "whole.jpg"
    whole.write_bytes(data + b"camera trailer after the end marker")
    assert read_image(whole, "rgb").shape == (48, 40, 3)


def oriented_files(tmp_path, array) -> dict[int, Path]:
    """The same stored pixels as JPEG and PNG files with EXIF orientations 1 to 8."""
    from PIL import Image

    files = {}
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        for extension, kind in (("jpg", "JPEG"), ("png", "PNG")):
            path = tmp_path / f"o{orientation}.{extension}"
            Image.fromarray(array).save(path, kind, exif=exif.tobytes(), quality=95)
            files[orientation, extension] = path
    return files


def test_exif_orientation_is_applied_as_viewers_do(tmp_path):
    from PIL import Image, ImageOps

    array = (smooth_image(24, 40, 3) * 255).astype(np.uint8)
    array[:4, :6] = (255, 0, 0)  # a red corner: where the top-left ends up tells the orientation
    for (orientation, extension), path in oriented_files(tmp_path, array).items():
        shown = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB")).astype(np.float32) / 255
        image = read_image(path, "rgb")
        assert image.shape == shown.shape and image_size(path) == shown.shape[:2], (orientation, extension)
        np.testing.assert_allclose(image, shown, atol=0 if extension == "png" else 0.02)
        if extension == "jpg":  # cv2's own EXIF handling (IMREAD_COLOR) agrees exactly
            expected = cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1]
            np.testing.assert_array_equal(np.round(image * 255).astype(np.uint8), expected)
        mask = read_mask(path)
        assert mask.shape == shown.shape[:2]
        assert load_image(path, "grayscale", 16).shape == (16, 16, 1)
