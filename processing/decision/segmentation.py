"""Segmentation of residual maps into defect components.

The decision rule used everywhere in the toolkit (segmentation, finetuning search, test):

1. a pixel is a defect candidate when ``resmap > threshold`` (strictly greater);
2. candidate pixels are grouped into 8-connected components
   (``skimage.measure.label(..., connectivity=2)``);
3. components that touch the image border are discarded (what
   ``skimage.segmentation.clear_border`` does), unless ``clear_border=False``
   is passed, in which case every component is kept;
4. an image is defective when one of the remaining components has an area
   (pixel count) ``>= min_area``.

Each map is labelled once; border components are found from the labels on the
four image edges, which gives the same components as ``clear_border`` followed by
a second labelling, at half the cost.
"""

import logging
import numbers

import numpy as np

logger = logging.getLogger(__name__)

#: 3x3 structuring element of 8-connectivity (skimage's ``connectivity=2`` in 2-D).
EIGHT_CONNECTIVITY = np.ones((3, 3), dtype=bool)


def validate_resmaps(resmaps, name="resmaps"):
    """Return ``resmaps`` as an array of shape (N, H, W) of a real dtype, or, for maps of different
    sizes (tiled images at their own size), as a list of (H_i, W_i) arrays.

    Accepts bool, integer and float arrays; rejects other shapes, other dtypes and non-finite
    values with a one-line ``ValueError`` naming ``name``.
    """
    if isinstance(resmaps, (list, tuple)) and (len(resmaps) == 0 or np.ndim(resmaps[0]) == 2):
        shapes = {np.shape(m) for m in resmaps}
        if len(shapes) > 1 or not resmaps:
            return [_validate_map(np.asarray(m), name) for m in resmaps]
    arr = np.asarray(resmaps)
    if arr.ndim != 3:
        raise ValueError(f"{name}: expected an array of shape (N, H, W), got shape {arr.shape}")
    _validate_map(arr, name)
    return arr


def _validate_map(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.ndim not in (2, 3):
        raise ValueError(f"{name}: expected maps of shape (H, W), got shape {arr.shape}")
    if arr.dtype.kind not in "buif":
        raise ValueError(f"{name}: expected a bool, integer or float array, got dtype {arr.dtype}")
    if 0 in arr.shape[-2:]:
        raise ValueError(f"{name}: expected maps of at least 1x1 pixels, got shape {arr.shape}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError(f"{name}: contains {np.count_nonzero(~np.isfinite(arr))} NaN or infinite values")
    return arr


def validate_threshold(threshold, name="threshold"):
    """Return ``threshold`` as a numpy float64 scalar; it must be a real, non-NaN number.

    A float64 *scalar* (not a Python float) makes ``resmap > threshold`` compare in
    float64 even for float32 maps, as the threshold search does; a Python float would
    be rounded to float32 first.
    """
    if isinstance(threshold, (bool, np.bool_)) or not isinstance(threshold, (numbers.Real, np.number)):
        raise ValueError(f"{name}: expected a real number, got {threshold!r}")
    value = np.float64(threshold)
    if np.isnan(value):
        raise ValueError(f"{name}: expected a real number, got NaN")
    return value


def validate_min_area(min_area, name="min_area"):
    """Return ``min_area`` as an int; it must be an integer >= 1 (a pixel count)."""
    if isinstance(min_area, (bool, np.bool_)) or not isinstance(min_area, (numbers.Real, np.number)):
        raise ValueError(f"{name}: expected an integer >= 1, got {min_area!r}")
    if not float(min_area).is_integer() or min_area < 1:
        raise ValueError(f"{name}: expected an integer >= 1, got {min_area!r}")
    return int(min_area)


def validate_clear_border(clear_border, name="clear_border"):
    """Return ``clear_border`` as a bool; it must be a bool (a truthy string is refused)."""
    if not isinstance(clear_border, (bool, np.bool_)):
        raise ValueError(f"{name}: expected True or False, got {clear_border!r}")
    return bool(clear_border)


def non_border_components(mask, clear_border=True):
    """Label the 8-connected components of a binary image and measure them.

    Parameters
    ----------
    mask : (H, W) bool array
    clear_border : bool
        Give the components that touch the image border an area of 0 (the
        default); when False every component keeps its pixel count.

    Returns
    -------
    labels : (H, W) int32 array
        0 for background, 1..n for the components (border components included).
    areas : (n + 1,) int64 array
        ``areas[k]`` is the pixel count of component ``k``, or 0 when ``k`` is the
        background or (with ``clear_border``) a component that touches the image border.
    """
    from scipy import ndimage as ndi  # here, not at import: the scripts check their flags without scipy

    labels, n_components = ndi.label(mask, structure=EIGHT_CONNECTIVITY)
    areas = np.bincount(labels.ravel(), minlength=n_components + 1).astype(np.int64)
    areas[0] = 0
    if not clear_border:
        return labels, areas
    border_labels = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    areas[border_labels] = 0
    return labels, areas


def segment(resmaps, threshold, min_area, clear_border=True):
    """Predicted defect masks: pixels of the non-border components with area >= ``min_area``.

    Parameters
    ----------
    resmaps : (N, H, W) array (bool, integer or float)
    threshold : float
        A pixel is a defect candidate when ``resmap > threshold``.
    min_area : int >= 1
    clear_border : bool
        Drop the components that touch the image border (default); False keeps them.

    Returns
    -------
    (N, H, W) bool array (a list of (H_i, W_i) masks for a list of maps)
    """
    resmaps = validate_resmaps(resmaps)
    threshold = validate_threshold(threshold)
    min_area = validate_min_area(min_area)
    clear_border = validate_clear_border(clear_border)
    masks = [np.zeros(resmap.shape, dtype=bool) for resmap in resmaps] if isinstance(resmaps, list) else np.zeros(resmaps.shape, dtype=bool)
    for index, resmap in enumerate(resmaps):
        labels, areas = non_border_components(resmap > threshold, clear_border)
        masks[index] = (areas >= min_area)[labels]
    return masks


def largest_component_areas(resmaps, threshold, clear_border=True):
    """Largest area of a non-border component of ``resmap > threshold``, per map.

    Parameters
    ----------
    resmaps : (N, H, W) array (bool, integer or float)
    threshold : float
    clear_border : bool
        Drop the components that touch the image border (default); False keeps them.

    Returns
    -------
    (N,) int64 array; 0 for a map without any (non-border) component.
    """
    resmaps = validate_resmaps(resmaps)
    threshold = validate_threshold(threshold)
    clear_border = validate_clear_border(clear_border)
    largest = np.zeros(len(resmaps), dtype=np.int64)
    for index, resmap in enumerate(resmaps):
        _, areas = non_border_components(resmap > threshold, clear_border)
        largest[index] = areas.max()
    return largest


def is_defective(resmaps, threshold, min_area, clear_border=True):
    """Image decision: a non-border component of ``resmap > threshold`` has area >= ``min_area``.

    Parameters
    ----------
    resmaps : (N, H, W) array (bool, integer or float)
    threshold : float
    min_area : int >= 1
    clear_border : bool
        Drop the components that touch the image border (default); False keeps them.

    Returns
    -------
    (N,) bool array
    """
    min_area = validate_min_area(min_area)
    return largest_component_areas(resmaps, threshold, clear_border) >= min_area
