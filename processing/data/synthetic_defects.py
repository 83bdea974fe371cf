"""Synthetic defects drawn into defect-free images, with their masks.

The toolkit draws them into held-out good images to choose its decision (min_area, threshold)
when a user has no defective images yet, so they are generic (not modelled on one dataset) and
varied. Pure numpy / OpenCV.

    rng = np.random.default_rng(0)
    defective, mask = draw_defect(image, "scratch", rng, size=12)        # a 12 px scratch
    defective, mask, params = random_defect(image, rng, size_range=(5, 30))

**Images.** Float arrays in [0, 1] of shape (H, W), (H, W, 1) or (H, W, 3) (RGB), any float
dtype, both sides >= 32 px. The input is never modified; the result has its shape and dtype and
stays in [0, 1]. The same image, arguments and Generator state give the same result.

**Kinds** (DEFECT_KINDS) and the outline each draws by default (SHAPES; ``shape=`` draws a kind's
change in another outline, e.g. a colour change along a line):

- ``scratch``: a thin curved line (1-4 px), brighter or darker; soft ones are anti-aliased and
  fade out towards their ends.
- ``crack``: a jagged line with a few branches, darker (a shadow), thinner branches.
- ``spot``: a small roundish blob at a flat dark or bright level, keeping a little texture.
- ``stain``: a large irregular region, soft-edged, low contrast, uneven inside.
- ``missing_material``: an angular patch where the texture is gone: a flat level with faint noise
  or the texture blurred away, shifted in level.
- ``added_material``: an angular patch of foreign texture: a region of the same image (or of
  `source`) rotated, flipped, rescaled (coarser or finer grain) and with a different texture
  amplitude, so it differs even on a stationary texture.
- ``brightness``: an elliptical region brighter or darker, soft-edged.
- ``color``: a region whose hue changes and whose luminance does not (each pixel keeps its
  0.2125 R + 0.7154 G + 0.0721 B to float precision); in a gray image it is a ``brightness``
  change (in its ``blob`` outline).

**Size.** `size` is the defect's extent in pixels of the image drawn into: the longer side of the
bounding box of its outline (a line's stroke width included), so a 2048 px image can get a 10 px
defect. `scale` gives it instead as a fraction of the shorter image side. A randomly placed
defect keeps a margin of 3 % of the image side (at least 3 px) from the border, because the
segmentation drops components that touch it.

**Contrast.** `contrast` is signed (> 0 brighter, < 0 darker): the change of intensity at the
defect's core on the [0, 1] scale (a shift of the texture for scratch, crack, stain, brightness;
the offset of the flat level from the local mean for spot and missing_material; the offset of the
pasted texture's mean for added_material; for color the largest per-channel change, its sign
unused). |contrast| <= 1; |contrast| >= MIN_CONTRAST except for added_material, which may be 0.

**Edges.** Hard edges are a binary outline (aliased lines). Soft edges ramp the defect's opacity
from 0 at its outline to 1 over a part of its radius, inside the outline, so a soft defect is no
larger than a hard one of the same size (soft lines are anti-aliased, half a pixel wider).

**Mask rule.** Every kind blends the image towards its appearance with an opacity ``alpha`` in
[0, 1] (0 outside the outline, where the image is left bit-identical). The mask is True where

    max over channels |defective - original| > tolerance    or    alpha >= 0.5

with tolerance = max(MIN_CHANGE, MASK_CONTRAST_FRACTION * |contrast|) = max(2/255, |contrast| / 5):
no pixel outside the mask changes by more than the tolerance, and inside it every pixel either
changed by more or is at least half covered by the defect (a flat patch crossing the texture's
value, a pixel already at 0 or 1 that a shift cannot move). On the textures of
processing.data.textures all mask pixels change by more than the tolerance for the kinds that
shift or recolour, and typically 95-100 % for missing_material, 85-95 % for added_material
(the pasted texture matches the original here and there). After rounding to 8 bits a pixel
outside the mask differs by at most tolerance * 255 + 1 grey levels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from autoencoder.errors import UserError
from processing.data.textures import LUMA_WEIGHTS, add_chroma, chroma_vector, hue_of, smooth_noise

DEFECT_KINDS = (
    "scratch",
    "crack",
    "spot",
    "stain",
    "missing_material",
    "added_material",
    "brightness",
    "color",
)
#: The kinds that differ in a gray image ("color" falls back to "brightness" there).
GRAY_DEFECT_KINDS = tuple(kind for kind in DEFECT_KINDS if kind != "color")
SHAPES = ("line", "crack", "blob", "stain", "patch", "ellipse")
KIND_SHAPES = {
    "scratch": "line",
    "crack": "crack",
    "spot": "blob",
    "stain": "stain",
    "missing_material": "patch",
    "added_material": "patch",
    "brightness": "ellipse",
    "color": "blob",
}

MIN_IMAGE_SIDE = 32
MIN_SIZE = 3.0  # px: smaller outlines degenerate to a pixel or two
MIN_CONTRAST = 0.02
MIN_CHANGE = 2 / 255
MASK_CONTRAST_FRACTION = 0.2
BORDER_MARGIN_FRACTION = 0.03

# Defaults when an argument is None. Sizes are fractions of the shorter image side, contrasts
# magnitudes; each is drawn uniformly (sizes log-uniformly) from its range.
DEFAULT_SCALE_RANGES = {
    "scratch": (0.08, 0.35),
    "crack": (0.08, 0.3),
    "spot": (0.015, 0.06),
    "stain": (0.08, 0.25),
    "missing_material": (0.03, 0.12),
    "added_material": (0.04, 0.15),
    "brightness": (0.06, 0.2),
    "color": (0.04, 0.15),
}
DEFAULT_CONTRAST_RANGES = {
    "scratch": (0.15, 0.45),
    "crack": (0.2, 0.5),
    "spot": (0.15, 0.45),
    "stain": (0.08, 0.2),
    "missing_material": (0.08, 0.3),
    "added_material": (0.03, 0.12),
    "brightness": (0.1, 0.3),
    "color": (0.1, 0.3),
}
SOFT_PROBABILITY = {
    "scratch": 0.5,
    "crack": 0.5,
    "spot": 0.5,
    "stain": 1.0,
    "missing_material": 0.3,
    "added_material": 0.5,
    "brightness": 1.0,
    "color": 0.5,
}
# Soft edges: the ramp from the outline inwards, as a fraction of the defect's radius.
SOFT_EDGE_RANGES = {"blob": (0.3, 0.6), "stain": (0.4, 0.7), "patch": (0.15, 0.3), "ellipse": (0.4, 0.8)}

_PAD = 2  # canvas pixels around the outline (anti-aliasing spills half a pixel)
_SHIFT = 4  # fractional bits of cv2 drawing coordinates
_SHIFT_SCALE = 1 << _SHIFT


@dataclass(frozen=True)
class DefectParams:
    """What was drawn: kind, outline, size (px), signed contrast, soft edges, centre (row, col)."""

    kind: str
    shape: str
    size: float
    contrast: float
    soft: bool
    center: tuple[float, float]

    def as_dict(self) -> dict:
        out = asdict(self)
        out["center"] = [round(float(v), 2) for v in self.center]
        out["size"], out["contrast"] = round(float(self.size), 3), round(float(self.contrast), 4)
        return out


# --------------------------------------------------------------------------------------------
# Checking arguments
# --------------------------------------------------------------------------------------------


def _check_image(image: np.ndarray, name: str = "image") -> np.ndarray:
    """`image` as a float (H, W, C) view, C = 1 or 3, after checking it."""
    if not isinstance(image, np.ndarray) or not np.issubdtype(image.dtype, np.floating):
        dtype = getattr(image, "dtype", type(image).__name__)
        raise UserError(f"{name} of type {dtype} not supported: expected a float numpy array in [0, 1]")
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3))):
        raise UserError(f"{name} of shape {image.shape} not supported: expected (H, W), (H, W, 1) or (H, W, 3)")
    if min(image.shape[:2]) < MIN_IMAGE_SIDE:
        raise UserError(f"{name} of shape {image.shape} too small: expected both sides >= {MIN_IMAGE_SIDE} px")
    low, high = float(image.min()), float(image.max())
    if not (0.0 <= low and high <= 1.0):
        raise UserError(f"{name} values in [{low:g}, {high:g}] not supported: expected values in [0, 1]")
    return image if image.ndim == 3 else image[:, :, None]


def _check_kind(kind: str, name: str = "kind") -> str:
    if kind not in DEFECT_KINDS:
        raise UserError(f"{name} {kind!r} not supported: expected one of {', '.join(DEFECT_KINDS)}")
    return kind


def _check_range(value, name: str, low: float, high: float) -> tuple[float, float]:
    try:
        first, last = (float(v) for v in value)
    except (TypeError, ValueError):
        raise UserError(f"{name} {value!r} not supported: expected (min, max) numbers") from None
    if not (low <= first <= last <= high):
        raise UserError(f"{name} {value!r} not supported: expected {low:g} <= min <= max <= {high:g}")
    return first, last


def border_margin(image_shape: Sequence[int]) -> int:
    """Pixels a randomly placed defect keeps from the image border."""
    return max(_PAD + 1, round(BORDER_MARGIN_FRACTION * min(image_shape[:2])))


def max_defect_size(image_shape: Sequence[int]) -> float:
    """The largest `size` (px) a defect may have in an image of `image_shape`."""
    return float(min(image_shape[:2]) - 2 * border_margin(image_shape))


def _check_size(size: float, image_shape: Sequence[int], name: str = "size") -> float:
    largest = max_defect_size(image_shape)
    if isinstance(size, bool) or not isinstance(size, (int, float, np.number)) or not np.isfinite(size):
        raise UserError(f"{name} {size!r} not supported: expected a number of pixels")
    if not MIN_SIZE <= size <= largest:
        raise UserError(
            f"{name} {size!r} not supported: expected {MIN_SIZE:g} to {largest:g} px "
            f"in a {image_shape[1]}x{image_shape[0]} image"
        )
    return float(size)


def _check_contrast(contrast: float, kind: str) -> float:
    if isinstance(contrast, bool) or not isinstance(contrast, (int, float, np.number)) or not np.isfinite(contrast):
        raise UserError(f"contrast {contrast!r} not supported: expected a number in [-1, 1]")
    lowest = 0.0 if kind == "added_material" else MIN_CONTRAST
    if not lowest <= abs(contrast) <= 1:
        raise UserError(f"contrast {contrast!r} not supported for {kind}: expected {lowest:g} <= |contrast| <= 1")
    return float(contrast)


# --------------------------------------------------------------------------------------------
# Choosing the parameters
# --------------------------------------------------------------------------------------------


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high)))) if high > low else float(low)


def _polarity(kind: str, rng: np.random.Generator) -> float:
    return -1.0 if kind == "crack" else (1.0 if rng.random() < 0.5 else -1.0)


def _random_center(image_shape: Sequence[int], size: float, rng: np.random.Generator) -> tuple[float, float]:
    margin = border_margin(image_shape)
    return tuple(  # type: ignore[return-value]
        float(rng.uniform(margin + size / 2, side - margin - size / 2)) for side in image_shape[:2]
    )


def _resolve_params(
    image_shape: Sequence[int],
    kind: str,
    rng: np.random.Generator,
    size: float | None,
    contrast: float | None,
    scale: float | None,
    soft: bool | None,
    center: tuple[float, float] | None,
    shape: str | None,
) -> DefectParams:
    """Fill in the arguments left None (in a fixed order, so the Generator's draws are fixed)."""
    _check_kind(kind)
    if shape is None:
        shape = KIND_SHAPES[kind]
    elif shape not in SHAPES:
        raise UserError(f"shape {shape!r} not supported: expected one of {', '.join(SHAPES)}")
    side = min(image_shape[:2])
    if size is not None and scale is not None:
        raise UserError(f"size {size!r} and scale {scale!r} both given: expected at most one of them")
    if scale is not None:
        if isinstance(scale, bool) or not isinstance(scale, (int, float, np.number)) or not 0 < scale <= 1:
            raise UserError(f"scale {scale!r} not supported: expected a fraction of the image side in (0, 1]")
        size = _check_size(scale * side, image_shape, name=f"scale {scale!r} gives size")
    elif size is None:
        low, high = DEFAULT_SCALE_RANGES[kind]
        largest = max_defect_size(image_shape)
        size = min(max(_log_uniform(rng, low * side, high * side), MIN_SIZE), largest)
    else:
        size = _check_size(size, image_shape)
    if contrast is None:
        contrast = _polarity(kind, rng) * float(rng.uniform(*DEFAULT_CONTRAST_RANGES[kind]))
    contrast = _check_contrast(contrast, kind)
    if soft is None:
        soft = bool(rng.random() < SOFT_PROBABILITY[kind])
    if center is None:
        center = _random_center(image_shape, size, rng)
    else:
        try:
            center = (float(center[0]), float(center[1]))
        except (TypeError, ValueError, IndexError):
            raise UserError(f"center {center!r} not supported: expected (row, col)") from None
    return DefectParams(kind=kind, shape=shape, size=size, contrast=contrast, soft=bool(soft), center=center)


# --------------------------------------------------------------------------------------------
# Outlines: opacity maps on a small square canvas around the defect
# --------------------------------------------------------------------------------------------


def _canvas_side(size: float) -> int:
    return int(np.ceil(size)) + 2 * _PAD


def _fit_points(points: np.ndarray, extent: float, side: int, reference: np.ndarray | None = None) -> np.ndarray:
    """(x, y) points scaled so that the bounding box of `reference` (default: the points) has its
    longer side `extent`, centred in a canvas of `side` pixels."""
    reference = points if reference is None else reference
    low, high = reference.min(axis=0), reference.max(axis=0)
    span = max(float((high - low).max()), 1e-9)
    return (points - (low + high) / 2) * (extent / span) + (side - 1) / 2


def _fixed(points: np.ndarray) -> np.ndarray:
    return np.round(points * _SHIFT_SCALE).astype(np.int32).reshape(-1, 1, 2)


def _rotate(points: np.ndarray, angle: float) -> np.ndarray:
    cos, sin = np.cos(angle), np.sin(angle)
    return points @ np.array([[cos, sin], [-sin, cos]])


def _stroke_width(size: float, rng: np.random.Generator, per_px: float, widest: int) -> int:
    return int(rng.integers(1, max(1, min(widest, round(size / per_px))) + 1))


def _line_alpha(size: float, rng: np.random.Generator, soft: bool) -> np.ndarray:
    """A thin curved stroke (a quadratic Bezier curve); soft: anti-aliased, fading at its ends."""
    width = _stroke_width(size, rng, per_px=20, widest=4)
    bend = rng.uniform(-0.35, 0.35)
    t = np.linspace(0.0, 1.0, int(np.clip(size / 2, 8, 64)))[:, None]
    start, control, end = np.array([0.0, 0.0]), np.array([0.5, 2 * bend]), np.array([1.0, 0.0])
    curve = (1 - t) ** 2 * start + 2 * (1 - t) * t * control + t**2 * end
    side = _canvas_side(size)
    points = _fit_points(_rotate(curve, rng.uniform(0, np.pi)), max(size - width, 1.0), side)
    canvas = np.zeros((side, side), dtype=np.uint8)
    if soft:
        fixed = _fixed(points)
        fade = np.minimum(1.0, 4 * np.minimum(t[:, 0], 1 - t[:, 0]) + 0.25)
        for i in range(len(fixed) - 1):
            level = int(round(255 * max(fade[i], fade[i + 1])))
            start_pt, end_pt = tuple(fixed[i, 0]), tuple(fixed[i + 1, 0])
            cv2.line(canvas, start_pt, end_pt, level, width, cv2.LINE_AA, _SHIFT)
    else:
        cv2.polylines(canvas, [_fixed(points)], False, 255, width, cv2.LINE_8, _SHIFT)
    return canvas.astype(np.float32) / 255


def _random_walk(start: np.ndarray, heading: float, steps: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A jagged polyline: unit steps along a slowly turning heading, each vertex pushed sideways.
    Returns (vertices (steps + 1, 2), heading at each vertex)."""
    point, vertices, headings = start, [start], [heading]
    for _ in range(steps):
        heading += rng.uniform(-0.35, 0.35)
        direction = np.array([np.cos(heading), np.sin(heading)])
        point = point + direction
        vertices.append(point + rng.uniform(-0.35, 0.35) * np.array([-direction[1], direction[0]]))
        headings.append(heading)
    return np.array(vertices), np.array(headings)


def _crack_alpha(size: float, rng: np.random.Generator, soft: bool) -> np.ndarray:
    """A jagged main line with 0-3 shorter, thinner branches."""
    width = _stroke_width(size, rng, per_px=25, widest=3)
    steps = int(np.clip(size / 4, 5, 30))
    main, headings = _random_walk(np.zeros(2), rng.uniform(0, 2 * np.pi), steps, rng)
    lines = [main]
    for _ in range(int(rng.integers(0 if size < 15 else 1, 4))):
        at = int(rng.integers(steps // 4, max(steps // 4 + 1, 3 * steps // 4)))
        turn = rng.choice([-1.0, 1.0]) * rng.uniform(0.4, 1.1)
        branch_steps = max(2, int(steps * rng.uniform(0.2, 0.5)))
        lines.append(_random_walk(main[at], headings[at] + turn, branch_steps, rng)[0])
    side = _canvas_side(size)
    everything = np.concatenate(lines)
    fitted = [_fit_points(line, max(size - width, 1.0), side, reference=everything) for line in lines]
    canvas = np.zeros((side, side), dtype=np.uint8)
    line_type = cv2.LINE_AA if soft else cv2.LINE_8
    cv2.polylines(canvas, [_fixed(fitted[0])], False, 255, width, line_type, _SHIFT)
    for branch in fitted[1:]:
        cv2.polylines(canvas, [_fixed(branch)], False, 255, max(1, width - 1), line_type, _SHIFT)
    return canvas.astype(np.float32) / 255


def _radial_outline(rng: np.random.Generator, harmonics: int, roughness: float, aspect: tuple[float, float]) -> np.ndarray:
    """A closed outline r(theta) = 1 + a few random harmonics, squashed and turned at random."""
    theta = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    radius = np.ones_like(theta)
    for k in range(2, harmonics + 1):
        radius += rng.uniform(0, roughness) / (k / 2) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    radius = np.maximum(radius, 0.3)
    points = np.stack([radius * np.cos(theta), radius * np.sin(theta) * rng.uniform(*aspect)], axis=1)
    return _rotate(points, rng.uniform(0, np.pi))


def _patch_outline(rng: np.random.Generator) -> np.ndarray:
    """An angular polygon of 5-9 vertices (a chipped or pasted piece)."""
    count = int(rng.integers(5, 10))
    theta = np.sort((np.arange(count) + rng.uniform(-0.3, 0.3, count)) * 2 * np.pi / count)
    radius = rng.uniform(0.6, 1.0, count)
    points = np.stack([radius * np.cos(theta), radius * np.sin(theta) * rng.uniform(0.6, 1.0)], axis=1)
    return _rotate(points, rng.uniform(0, np.pi))


def _smoothstep(x: np.ndarray) -> np.ndarray:
    return x * x * (3 - 2 * x)


def _filled_alpha(outline: np.ndarray, size: float, soft: bool, edge_range: tuple[float, float], rng) -> np.ndarray:
    side = _canvas_side(size)
    canvas = np.zeros((side, side), dtype=np.uint8)
    # fillPoly includes the pixels on the outline: fit it one pixel smaller to cover `size` pixels.
    cv2.fillPoly(canvas, [_fixed(_fit_points(outline, max(size - 1, 1.0), side))], 255, cv2.LINE_8, _SHIFT)
    if not soft:
        return (canvas > 0).astype(np.float32)
    # Opacity ramps from the outline inwards, so a soft outline is no larger than a hard one.
    depth = cv2.distanceTransform(canvas, cv2.DIST_L2, 5)
    ramp = max(rng.uniform(*edge_range) * size / 2, 0.5)
    alpha = _smoothstep(np.clip((depth - 0.5) / ramp, 0.0, 1.0))
    return np.where(canvas > 0, alpha, 0.0).astype(np.float32)


def _outline_alpha(shape: str, size: float, soft: bool, rng: np.random.Generator) -> np.ndarray:
    """Opacity float32 (side, side) in [0, 1] of a `shape` outline of extent `size`, centred."""
    if shape == "line":
        return _line_alpha(size, rng, soft)
    if shape == "crack":
        return _crack_alpha(size, rng, soft)
    if shape == "blob":
        outline = _radial_outline(rng, harmonics=4, roughness=0.12, aspect=(0.6, 1.0))
    elif shape == "stain":
        outline = _radial_outline(rng, harmonics=6, roughness=0.15, aspect=(0.5, 1.0))
    elif shape == "ellipse":
        outline = _radial_outline(rng, harmonics=0, roughness=0.0, aspect=(0.5, 1.0))
    else:
        outline = _patch_outline(rng)
    return _filled_alpha(outline, size, soft, SOFT_EDGE_RANGES[shape], rng)


# --------------------------------------------------------------------------------------------
# Appearances: what the defect turns the pixels under its outline into
# --------------------------------------------------------------------------------------------


def _local_mean(crop: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Mean colour (C,) of the crop under the outline."""
    return crop[alpha > 0].mean(axis=0)


def _foreign_texture(source: np.ndarray, side: int, rng: np.random.Generator) -> np.ndarray:
    """A (side, side, C) view of `source` (float (H, W, C)) through a random rotation, flip and
    zoom (coarser or finer grain) around a random point."""
    zoom = rng.uniform(0.4, 0.7) if rng.random() < 0.5 else rng.uniform(1.5, 2.5)  # source px per canvas px
    angle = rng.uniform(0, 2 * np.pi)
    flip = -1.0 if rng.random() < 0.5 else 1.0
    centre = np.array([rng.uniform(0, source.shape[1] - 1), rng.uniform(0, source.shape[0] - 1)])
    cos, sin = np.cos(angle) * zoom, np.sin(angle) * zoom
    linear = np.array([[cos, -sin * flip], [sin, cos * flip]])
    offset = centre - linear @ np.full(2, (side - 1) / 2)
    to_source = np.hstack([linear, offset[:, None]])
    warped = cv2.warpAffine(
        np.ascontiguousarray(source, dtype=np.float32),
        to_source,
        (side, side),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REFLECT_101,
    )
    return warped.reshape(side, side, source.shape[2]).astype(np.float64)


def _as_channels(source: np.ndarray, channels: int) -> np.ndarray:
    source = _check_image(source, name="source")
    if source.shape[2] == channels:
        return source
    if channels == 3:
        return np.repeat(source, 3, axis=2)
    return (source.astype(np.float64) @ LUMA_WEIGHTS)[:, :, None]


def _target(
    kind: str,
    crop: np.ndarray,
    alpha: np.ndarray,
    contrast: float,
    size: float,
    rng: np.random.Generator,
    source: np.ndarray,
) -> np.ndarray:
    """What the pixels of `crop` (float64 (h, w, C)) become where the defect is fully opaque."""
    if kind in ("scratch", "crack", "brightness") or (kind == "color" and crop.shape[2] == 1):
        return crop + contrast
    if kind == "stain":
        uneven = smooth_noise(alpha.shape, max(size / 4, 2.0), rng)
        uneven = 0.85 + 0.15 * np.clip(uneven, -1, 1)  # 0.7..1 of the contrast, varying inside
        return crop + contrast * uneven[:, :, None]
    mean = _local_mean(crop, alpha)
    if kind == "spot":
        keep = rng.uniform(0.0, 0.4)  # a little of the texture shows through
        return mean + contrast + keep * (crop - mean)
    if kind == "missing_material":
        if rng.random() < 0.5:  # a hole: a flat bottom with faint noise
            spread = 0.15 * float(crop[alpha > 0].std())
            noise = cv2.GaussianBlur(rng.standard_normal(alpha.shape).astype(np.float32), (0, 0), 0.7)
            return mean + contrast + spread * noise[:, :, None]
        blurred = cv2.GaussianBlur(crop.astype(np.float32), (0, 0), max(size / 4, 1.0))
        return blurred.reshape(crop.shape).astype(np.float64) + contrast  # the texture worn away
    if kind == "added_material":
        pasted = _foreign_texture(source, alpha.shape[0], rng)
        gain = rng.uniform(0.5, 0.7) if rng.random() < 0.5 else rng.uniform(1.4, 2.0)
        return mean + gain * (pasted - pasted.mean(axis=(0, 1))) + contrast
    raise AssertionError(kind)  # color in RGB is drawn by _color_change


def _color_change(crop: np.ndarray, alpha: np.ndarray, contrast: float, rng: np.random.Generator) -> np.ndarray:
    """`crop` (float64 (h, w, 3)) with its hue turned under the outline, luminance unchanged: a
    zero-luminance shift whose largest channel change is |contrast|, in a direction 120-240
    degrees from the region's mean hue (random when the region is nearly gray)."""
    chroma = _local_mean(crop, alpha) - _local_mean(crop, alpha) @ LUMA_WEIGHTS
    if np.abs(chroma).max() > 0.02:
        hue = hue_of(chroma) + rng.uniform(120, 240)
    else:
        hue = rng.uniform(0, 360)
    return add_chroma(crop, alpha[:, :, None] * chroma_vector(hue, abs(contrast)))


# --------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------


def mask_tolerance(contrast: float) -> float:
    """The change (on the [0, 1] scale) above which a pixel is in the mask (see the module docstring)."""
    return max(MIN_CHANGE, MASK_CONTRAST_FRACTION * abs(float(contrast)))


def _draw(
    image: np.ndarray, pixels: np.ndarray, params: DefectParams, rng: np.random.Generator, source: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Draw `params` into a copy of `image`, whose checked (H, W, C) view is `pixels`."""
    alpha = _outline_alpha(params.shape, params.size, params.soft, rng)
    side = alpha.shape[0]
    top = int(round(params.center[0] - (side - 1) / 2))
    left = int(round(params.center[1] - (side - 1) / 2))
    height, width = pixels.shape[:2]
    if top < 0 or left < 0 or top + side > height or left + side > width:
        raise UserError(
            f"center {params.center} not supported: a {params.size:g} px defect there leaves the "
            f"{height}x{width} image (expected at least {params.size / 2 + _PAD:g} px from each border)"
        )
    window = (slice(top, top + side), slice(left, left + side))
    crop = pixels[window].astype(np.float64)
    if params.kind == "color" and crop.shape[2] == 3:
        changed = _color_change(crop, alpha, params.contrast, rng)
    else:
        foreign = pixels if source is None else _as_channels(source, pixels.shape[2])
        target = _target(params.kind, crop, alpha, params.contrast, params.size, rng, foreign)
        changed = np.clip(crop + alpha[:, :, None] * (target - crop), 0.0, 1.0)
    changed = changed.astype(pixels.dtype)
    change = np.abs(changed.astype(np.float64) - crop).max(axis=2)
    defective = pixels.copy()
    defective[window] = changed
    mask = np.zeros((height, width), dtype=bool)
    mask[window] = (change > mask_tolerance(params.contrast)) | (alpha >= 0.5)
    return defective.reshape(image.shape), mask


def draw_defect(
    image: np.ndarray,
    kind: str,
    rng: np.random.Generator,
    size: float | None = None,
    contrast: float | None = None,
    *,
    scale: float | None = None,
    soft: bool | None = None,
    center: tuple[float, float] | None = None,
    shape: str | None = None,
    source: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one defect of `kind` into a copy of `image`.

    image: float (H, W), (H, W, 1) or (H, W, 3) in [0, 1], both sides >= 32 px.
    kind: one of DEFECT_KINDS. size: extent in pixels (or `scale`: a fraction of the shorter
    side). contrast: signed change, see the module docstring. soft: soft edges. center: (row, col)
    of the defect. shape: one of SHAPES instead of the kind's own outline. source: an image to
    take added_material's texture from (float in [0, 1], gray or RGB, >= 32 px; default: `image`
    itself). Arguments left None are drawn
    from `rng` (sizes and contrasts from DEFAULT_SCALE_RANGES and DEFAULT_CONTRAST_RANGES).

    Returns (defective image, same shape and dtype as `image`; mask bool (H, W)), the mask as
    described in the module docstring.
    """
    pixels = _check_image(image)
    params = _resolve_params(pixels.shape, kind, rng, size, contrast, scale, soft, center, shape)
    return _draw(image, pixels, params, rng, source)


def random_defect(
    image: np.ndarray,
    rng: np.random.Generator,
    kinds: Sequence[str] = DEFECT_KINDS,
    size_range: tuple[float, float] | None = None,
    *,
    scale_range: tuple[float, float] | None = None,
    contrast_range: tuple[float, float] | None = None,
    soft: bool | None = None,
    shape: str | None = None,
    source: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, DefectParams]:
    """Draw one random defect into a copy of `image`: a kind from `kinds`, a size drawn
    log-uniformly from `size_range` (pixels) or `scale_range` (fractions of the shorter side;
    default: the kind's DEFAULT_SCALE_RANGES), a contrast magnitude uniformly from
    `contrast_range` (default: the kind's DEFAULT_CONTRAST_RANGES; cracks are darker, the others
    darker or brighter at random), random edges unless `soft` is given, the kind's outline
    unless `shape` is given, a random place.

    Returns (defective image, mask bool (H, W), the DefectParams drawn).
    """
    pixels = _check_image(image)
    if isinstance(kinds, str) or not kinds:
        raise UserError(f"kinds {kinds!r} not supported: expected a non-empty sequence of {', '.join(DEFECT_KINDS)}")
    for kind in kinds:
        _check_kind(kind, name="kinds entry")
    if size_range is not None and scale_range is not None:
        raise UserError(f"size_range {size_range!r} and scale_range {scale_range!r} both given: expected at most one")
    side, largest = min(pixels.shape[:2]), max_defect_size(pixels.shape)
    if size_range is not None:
        size_range = _check_range(size_range, "size_range", MIN_SIZE, largest)
    if scale_range is not None:
        low, high = _check_range(scale_range, "scale_range", 0.0, 1.0)
        if low <= 0 or not MIN_SIZE <= low * side <= high * side <= largest:
            raise UserError(
                f"scale_range {scale_range!r} not supported: expected fractions giving {MIN_SIZE:g} to "
                f"{largest:g} px in a {pixels.shape[1]}x{pixels.shape[0]} image"
            )
        size_range = (low * side, high * side)
    if contrast_range is not None:
        contrast_range = _check_range(contrast_range, "contrast_range", 0.0, 1.0)
    kind = kinds[int(rng.integers(len(kinds)))]
    if size_range is None:
        low, high = DEFAULT_SCALE_RANGES[kind]
        size = min(max(_log_uniform(rng, low * side, high * side), MIN_SIZE), largest)
    else:
        size = _log_uniform(rng, *size_range)
    magnitude = float(rng.uniform(*(contrast_range or DEFAULT_CONTRAST_RANGES[kind])))
    lowest = 0.0 if kind == "added_material" else MIN_CONTRAST
    contrast = _polarity(kind, rng) * max(magnitude, lowest)
    params = _resolve_params(pixels.shape, kind, rng, size, contrast, None, soft, None, shape)
    defective, mask = _draw(image, pixels, params, rng, source)
    return defective, mask, params
