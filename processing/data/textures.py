"""Procedural textures of one generated "product": noise fields, fibres, stripes and grain, summed
into defect-free images of any size (gray or coloured), varied per image. Pure numpy / OpenCV;
nothing is downloaded.

The texture's features have fixed sizes in pixels (a fibre is about 2 px wide and 40-120 px long
whatever the image size), so a small image is a smaller field of view of the same surface at the
same resolution, and a defect of N pixels means the same thing at 128 px as at 2048 px.

    style = ProductStyle.sample(np.random.default_rng(0))       # one product
    image = product_texture((1536, 1536), style, rng)          # float32 (1536, 1536) in [0, 1]
    rgb = colorize(image, style, rng)                          # float32 (1536, 1536, 3), same luminance
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

# ITU-R BT.709 luma weights (skimage.color.rgb2gray; processing.data.images.RGB_TO_GRAY_WEIGHTS),
# in float64 so that luminance-preserving colour changes are exact to ~1e-16 before rounding.
LUMA_WEIGHTS = np.array([0.2125, 0.7154, 0.0721], dtype=np.float64)


def _normalized(field: np.ndarray) -> np.ndarray:
    """`field` shifted and scaled in place to mean 0, standard deviation 1 (a constant field stays
    0). The statistics come from every 4th row and column: 16 times cheaper, and for a smooth or
    stationary field as good."""
    sample = field[::4, ::4] if field.size > 4096 else field
    mean, std = float(sample.mean()), float(sample.std())
    field -= np.float32(mean)
    if std > 0:
        field *= np.float32(1 / std)
    return field


def oriented_noise(
    shape: tuple[int, int], along_px: float, across_px: float, angle: float, rng: np.random.Generator
) -> np.ndarray:
    """Gaussian noise whose features are about `along_px` long in direction `angle` (radians from
    the x axis) and `across_px` wide across it: float32 `shape`, mean 0, standard deviation 1.

    A coarse grid of white noise (one cell per half feature size, lightly blurred) is sampled
    through a rotated, anisotropically scaled affine map with cubic interpolation: the cost is one
    pass over the output whatever the feature size.
    """
    height, width = shape
    diagonal = float(np.hypot(height, width))
    step_along, step_across = max(along_px / 2, 0.5), max(across_px / 2, 0.5)
    grid_w, grid_h = int(np.ceil(diagonal / step_along)) + 6, int(np.ceil(diagonal / step_across)) + 6
    grid = cv2.GaussianBlur(rng.standard_normal((grid_h, grid_w), dtype=np.float32), (0, 0), 1.0)
    cos, sin = np.cos(angle), np.sin(angle)
    cx, cy = (width - 1) / 2, (height - 1) / 2
    # Output pixel (x, y) -> grid (u, v): rotate by -angle about the centre, scale to grid cells.
    to_grid = np.array(
        [
            [cos / step_along, sin / step_along, (grid_w - 1) / 2 - (cx * cos + cy * sin) / step_along],
            [-sin / step_across, cos / step_across, (grid_h - 1) / 2 - (-cx * sin + cy * cos) / step_across],
        ]
    )
    field = cv2.warpAffine(
        grid, to_grid, (width, height), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT
    )
    return _normalized(field)


def smooth_noise(shape: tuple[int, int], correlation_px: float, rng: np.random.Generator) -> np.ndarray:
    """Isotropic smooth Gaussian noise with features about `correlation_px` across: float32
    `shape`, mean 0, standard deviation 1."""
    if correlation_px <= 3:  # fine noise: blurring white noise is cheap and exact
        # Uniform white noise is drawn 5x faster than Gaussian and is Gaussian once blurred.
        white = rng.random(shape, dtype=np.float32)
        return _normalized(cv2.GaussianBlur(white, (0, 0), max(correlation_px / 2, 0.3)))
    return oriented_noise(shape, correlation_px, correlation_px, 0.0, rng)


def stripes(
    shape: tuple[int, int], period_px: float, angle: float, waviness: float, rng: np.random.Generator
) -> np.ndarray:
    """Parallel sinusoidal stripes (machining or rolling marks) of `period_px`, running in
    direction `angle`, their phase bent by smooth noise of `waviness` radians: float32 `shape`
    in [-1, 1]."""
    height, width = shape
    rows = np.arange(height, dtype=np.float32)[:, None]
    cols = np.arange(width, dtype=np.float32)[None, :]
    # Distance across the stripes (perpendicular to their direction).
    across = cols * np.float32(-np.sin(angle)) + rows * np.float32(np.cos(angle))
    phase = np.float32(rng.uniform(0, 2 * np.pi)) + np.float32(waviness) * smooth_noise(shape, 8 * period_px, rng)
    return np.sin(across * np.float32(2 * np.pi / period_px) + phase)


@dataclass(frozen=True)
class ProductStyle:
    """What every image of one product shares: levels, amplitudes and feature sizes (pixels), and
    for colour images its hue (degrees) and chroma. Each image varies around it (product_texture)."""

    level: float
    illumination: float
    cloud_px: float
    cloud: float
    fibre_length_px: float
    fibre_width_px: float
    fibre_angle: float
    fibre: float
    stripe_period_px: float
    stripe: float
    grain_px: float
    grain: float
    hue: float
    chroma: float

    @classmethod
    def sample(cls, rng: np.random.Generator) -> ProductStyle:
        """A random product: a mid-grey fibrous surface with faint stripes and grain."""
        return cls(
            level=float(rng.uniform(0.42, 0.58)),
            illumination=float(rng.uniform(0.02, 0.04)),
            cloud_px=float(rng.uniform(25, 60)),
            cloud=float(rng.uniform(0.03, 0.05)),
            fibre_length_px=float(rng.uniform(40, 120)),
            fibre_width_px=float(rng.uniform(1.5, 3.0)),
            fibre_angle=float(rng.uniform(0, np.pi)),
            fibre=float(rng.uniform(0.04, 0.07)),
            stripe_period_px=float(rng.uniform(18, 40)),
            stripe=float(rng.uniform(0.01, 0.025)),
            grain_px=float(rng.uniform(1.0, 2.0)),
            grain=float(rng.uniform(0.025, 0.045)),
            hue=float(rng.uniform(0, 360)),
            chroma=float(rng.uniform(0.08, 0.14)),
        )

    def as_dict(self) -> dict:
        return asdict(self)


def product_texture(shape: tuple[int, int], style: ProductStyle, rng: np.random.Generator) -> np.ndarray:
    """One defect-free gray image of the product `style`: float32 `shape` in [0, 1].

    The sum of a base level, a smooth illumination field over the whole image, cloudy mid-scale
    noise, fibres along the product's direction, stripes across them and fine grain; each image
    jitters the level, the amplitudes and the fibre direction (by a few degrees) and has its own
    noise.
    """
    height, width = shape
    jitter = lambda spread: float(rng.uniform(1 - spread, 1 + spread))  # noqa: E731
    angle = style.fibre_angle + rng.normal(0, np.radians(2))
    image = np.full(shape, style.level + rng.uniform(-0.03, 0.03), dtype=np.float32)
    image += np.float32(style.illumination * jitter(0.3)) * smooth_noise(shape, max(height, width) / 2, rng)
    image += np.float32(style.cloud * jitter(0.2)) * smooth_noise(shape, style.cloud_px, rng)
    image += np.float32(style.fibre * jitter(0.2)) * oriented_noise(
        shape, style.fibre_length_px, style.fibre_width_px, angle, rng
    )
    image += np.float32(style.stripe * jitter(0.3)) * stripes(shape, style.stripe_period_px, angle, 0.6, rng)
    image += np.float32(style.grain * jitter(0.2)) * smooth_noise(shape, style.grain_px, rng)
    return np.clip(image, 0.0, 1.0, out=image)


def chroma_basis() -> tuple[np.ndarray, np.ndarray]:
    """Two orthonormal RGB directions of zero luminance (LUMA_WEIGHTS . e == 0): e1 towards red,
    e2 towards green. Adding a * e1 + b * e2 to a colour changes its hue and saturation, not its
    luminance; the hue angle of a chroma vector is measured from e1 towards e2."""
    red = np.array([1.0, 0.0, 0.0]) - LUMA_WEIGHTS[0]  # red minus its gray: zero luminance
    green = np.array([0.0, 1.0, 0.0]) - LUMA_WEIGHTS[1]
    e1 = red / np.linalg.norm(red)
    e2 = green - (green @ e1) * e1
    return e1, e2 / np.linalg.norm(e2)


def chroma_vector(hue_degrees: float, peak: float) -> np.ndarray:
    """The zero-luminance RGB vector of hue `hue_degrees` whose largest channel change is `peak`."""
    e1, e2 = chroma_basis()
    angle = np.radians(hue_degrees)
    direction = np.cos(angle) * e1 + np.sin(angle) * e2
    return direction * (peak / np.abs(direction).max())


def hue_of(chroma: np.ndarray) -> float:
    """Hue angle in degrees [0, 360) of a zero-luminance RGB vector (see chroma_basis)."""
    e1, e2 = chroma_basis()
    hue = float(np.degrees(np.arctan2(chroma @ e2, chroma @ e1))) % 360.0
    return 0.0 if hue >= 360.0 else hue  # -1e-17 % 360 rounds to 360.0


def add_chroma(image: np.ndarray, chroma: np.ndarray) -> np.ndarray:
    """`image` (float (..., 3) RGB in [0, 1]) plus the zero-luminance change `chroma` (broadcast to
    it), shortened per pixel where needed to stay inside [0, 1]: float64, the luminance of every
    pixel unchanged (a pixel's change is scaled down along its own direction, never clipped per
    channel, which would change its luminance)."""
    image = np.asarray(image, dtype=np.float64)
    step = np.broadcast_to(np.asarray(chroma, dtype=np.float64), image.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        room = np.where(step > 0, (1.0 - image) / step, np.where(step < 0, image / -step, np.inf))
    fraction = np.clip(room.min(axis=-1, keepdims=True), 0.0, 1.0)
    return np.clip(image + fraction * step, 0.0, 1.0)


def colorize(gray: np.ndarray, style: ProductStyle, rng: np.random.Generator) -> np.ndarray:
    """A colour version of the gray texture `gray` (float (H, W) in [0, 1]) whose luminance is
    `gray` (to float32 precision): the product's hue (jittered by a few degrees per image and
    across the image) at its chroma, modulated by smooth noise. float32 (H, W, 3) RGB in [0, 1]."""
    shape = gray.shape
    hue = style.hue + rng.normal(0, 3) + 6 * smooth_noise(shape, 200, rng)
    strength = style.chroma * np.clip(1 + 0.25 * smooth_noise(shape, 80, rng), 0.3, None)
    e1, e2 = chroma_basis()
    angle = np.radians(hue)[..., None]
    direction = np.cos(angle) * e1 + np.sin(angle) * e2
    peak = np.abs(direction).max(axis=-1, keepdims=True)
    chroma = direction * (strength[..., None] / peak)
    rgb = add_chroma(np.repeat(np.asarray(gray, dtype=np.float64)[..., None], 3, axis=-1), chroma)
    return rgb.astype(np.float32)
