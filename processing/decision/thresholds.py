"""Fast (min_area, threshold) search used by finetuning, and the continuous image score.

Everything follows the decision rule of :mod:`processing.decision.segmentation`: pixels with
``resmap > threshold`` (strictly greater), 8-connected components, border components
dropped (unless ``clear_border=False``), image defective when a remaining component
has area ``>= min_area``. With ``clear_border=False`` the algorithm below runs
unchanged with no pixel counted as a border pixel.

The search needs, for every map and every threshold ``t`` of a grid, the largest area
of a non-border component of ``{resmap > t}`` (the map's *area curve*). Relabelling
each map at every threshold (:func:`largest_area_curves_naive`) costs one labelling per
(map, threshold). :func:`largest_area_curves` instead walks the component tree of the
upper level sets once per map:

1. Quantise the map on the grid: ``level = searchsorted(thresholds, resmap, "left")`` is
   the number of thresholds strictly below the pixel value, so
   ``resmap > thresholds[j]  <=>  level > j``. Only the integer levels matter from here.
2. Split the pixels into *regions* by steepest ascent: every pixel points to the
   neighbour (or itself) with the largest ``(level, index)`` key among its 8 neighbours
   and pointer jumping finds the root. Each pixel's path to its root never goes down,
   so the part of a region above any level is connected and contains the root.
3. Two regions touch at level ``j`` when an adjacent pixel pair across their boundary
   has both levels ``> j``; the highest such ``min(level_p, level_q)`` over the
   boundary is the edge weight. Kruskal on these edges (decreasing weight) gives the
   merge tree of regions: each node is a set of regions that forms one component of
   ``{level > j}`` for ``j`` in ``[level of its parent, its own level)``.
4. Each pixel is attached, by binary lifting, to the node that is a component just
   below the pixel's level (pixels that only ever lie in border components are
   dropped first). A node's area is then a step function of ``j`` on its interval;
   it touches the border while ``j`` is below the highest border pixel of its
   regions. This yields *pieces* ``(lo, hi, area)``: for grid index ``j`` in
   ``[lo, hi)`` there is a non-border component of that area.
5. The curve is the maximum of the pieces covering each grid index (a range-chmax
   on a segment tree, vectorised over all pieces).

Everything except Kruskal's loop over region boundaries (a few hundred to a few
thousand edges per map) is vectorised numpy/scipy work on the pixels.
"""

import logging
import math
import numbers
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from autoencoder.errors import UserError
from autoencoder.progress import on_terminal
from processing.decision.operating_point import DEFAULT_RESAMPLES, Expected, OperatingPoint, settle
from processing.decision.segmentation import (
    largest_component_areas,
    validate_clear_border,
    validate_min_area,
    validate_resmaps,
)

logger = logging.getLogger(__name__)

#: Default number of values of the uniform threshold grid of float maps.
DEFAULT_FLOAT_STEPS = 2000
#: min_area candidates of the original rule (5 to 1000 px whatever the map size).
DEFAULT_MIN_AREAS = tuple(range(5, 1001, 5))
#: The smoothed rule's min_area candidates: this many, from 1 px to this share of the map.
DEFAULT_AREA_COUNT = 40
MIN_AREA_TOP_FRACTION = 0.05
#: The rules of the finetuning search: the smoothed rule (default) and the original toolkit's.
RULES = ("smoothed", "original")
DEFAULT_RULE = "smoothed"
#: Score of a map that is defective at no threshold: the most negative finite float64,
#: below every real score and still accepted by ROC code that rejects infinities.
NO_COMPONENT_SCORE = float(np.finfo(np.float64).min)


# ----------------------------------------------------------------------------- validation


def _validate_thresholds(thresholds, name="thresholds"):
    """Return ``thresholds`` as a non-empty, non-decreasing 1-D float64 array without NaN."""
    grid = np.asarray(thresholds)
    if grid.ndim != 1 or grid.size == 0 or grid.dtype.kind not in "buif":
        raise ValueError(f"{name}: expected a non-empty 1-D array of numbers, got shape {grid.shape} dtype {grid.dtype}")
    grid = grid.astype(np.float64)
    if np.isnan(grid).any():
        raise ValueError(f"{name}: contains NaN")
    if np.any(np.diff(grid) < 0):
        raise ValueError(f"{name}: expected values sorted in increasing order")
    return grid


def _validate_min_areas(min_areas, name="min_areas"):
    """Return ``min_areas`` as a non-empty 1-D int64 array of integers >= 1."""
    values = np.asarray(list(min_areas) if not isinstance(min_areas, np.ndarray) else min_areas)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"{name}: expected a non-empty 1-D sequence of integers >= 1, got shape {values.shape}")
    if values.dtype.kind not in "iuf" or np.any(values < 1) or np.any(values != np.round(values)):
        raise ValueError(f"{name}: expected integers >= 1, got {values.tolist()[:10]}...")
    return values.astype(np.int64)


def _validate_curves(curves, n_thresholds, name):
    """Return ``curves`` as an (N, T) array with T == ``n_thresholds``."""
    curves = np.asarray(curves)
    if curves.ndim != 2 or curves.shape[1] != n_thresholds:
        raise ValueError(f"{name}: expected shape (N, {n_thresholds}) matching the thresholds, got {curves.shape}")
    return curves


# ----------------------------------------------------------------------------- component tree


def _grid_levels(resmap, thresholds):
    """Number of thresholds strictly below each pixel value.

    ``resmap > thresholds[j]`` exactly when ``level > j``.

    Parameters
    ----------
    resmap : (H, W) array (bool, integer or float)
    thresholds : (T,) non-decreasing float64 array

    Returns
    -------
    (H, W) int64 array with values in ``[0, T]``.
    """
    n_thresholds = len(thresholds)
    if resmap.dtype.kind in "bu" and resmap.dtype.itemsize <= 2:
        # A lookup table over every representable value is exact and avoids a
        # binary search per pixel.
        n_values = 2 if resmap.dtype.kind == "b" else 1 << (8 * resmap.dtype.itemsize)
        table = np.searchsorted(thresholds, np.arange(n_values), side="left")
        return table[resmap.astype(np.intp)]
    values = resmap.astype(np.float64, copy=False)
    lowest, highest = thresholds[0], thresholds[-1]
    if n_thresholds < 2 or not (np.isfinite(lowest) and np.isfinite(highest) and highest > lowest):
        return np.searchsorted(thresholds, values, side="left").astype(np.int64)
    # Guess by linear interpolation (exact up to rounding on uniform grids), then
    # verify against the grid and binary-search only the wrong guesses.
    step = (highest - lowest) / (n_thresholds - 1)
    guess = np.ceil((values - lowest) / step)
    np.clip(guess, 0, n_thresholds, out=guess)
    level = guess.astype(np.int64)
    below = thresholds[np.maximum(level - 1, 0)]
    above = thresholds[np.minimum(level, n_thresholds - 1)]
    wrong = ((level > 0) & (below >= values)) | ((level < n_thresholds) & (above < values))
    if wrong.any():
        level[wrong] = np.searchsorted(thresholds, values[wrong], side="left")
    return level


def _steepest_ascent_regions(levels):
    """Partition pixels into regions whose upper parts are connected at every level.

    Every pixel points to the pixel with the largest ``(level, flat index)`` in its
    3x3 neighbourhood; following pointers never decreases the level, so for every
    ``j`` the pixels of a region with level ``> j`` are 8-connected through their
    pointer paths to the region's root.

    Parameters
    ----------
    levels : (H, W) int64 array, values >= 0

    Returns
    -------
    region : (H*W,) int64 array, region id of each pixel (0..R-1)
    roots : (R,) int64 array, flat index of each region's root (its highest pixel)
    """
    n_pixels = levels.size
    index_bits = max(1, (n_pixels - 1).bit_length())
    key = (levels.astype(np.int64) << index_bits) | np.arange(n_pixels, dtype=np.int64).reshape(levels.shape)
    from scipy import ndimage as ndi  # here, not at import: the scripts check their flags without scipy

    best = ndi.maximum_filter(key, size=3, mode="constant", cval=-1).ravel()
    pointer = (best & ((1 << index_bits) - 1)).astype(np.intp)
    while True:  # pointer jumping: O(log(path length)) whole-array gathers
        jumped = np.take(pointer, pointer)
        if np.array_equal(jumped, pointer):
            break
        pointer = jumped
    is_root = pointer == np.arange(n_pixels)
    region_of_root = np.cumsum(is_root) - 1
    return region_of_root[pointer], np.flatnonzero(is_root)


def _region_edges(region, levels):
    """Highest level at which each pair of adjacent regions is connected.

    Parameters
    ----------
    region : (H, W) int64 array of region ids
    levels : (H, W) int64 array

    Returns
    -------
    first, second, weight : (E,) int64 arrays; ``first < second`` are region ids and
        ``weight`` the maximum over 8-adjacent pixel pairs across their boundary of
        ``min(level_p, level_q)``: the regions are joined in ``{level > j}`` for
        ``j < weight``. Sorted by decreasing weight.
    """
    n_regions = int(region.max()) + 1
    pairs = (
        (np.s_[:, :-1], np.s_[:, 1:]),  # right
        (np.s_[:-1, :], np.s_[1:, :]),  # down
        (np.s_[:-1, :-1], np.s_[1:, 1:]),  # down-right
        (np.s_[:-1, 1:], np.s_[1:, :-1]),  # down-left
    )
    keys = []
    n_levels = int(levels.max()) + 1
    for here, there in pairs:
        region_a, region_b = region[here], region[there]
        crossing = np.flatnonzero(region_a != region_b)
        if not crossing.size:
            continue
        region_a, region_b = region_a.ravel()[crossing], region_b.ravel()[crossing]
        weight = np.minimum(levels[here].ravel()[crossing], levels[there].ravel()[crossing])
        pair = np.minimum(region_a, region_b) * n_regions + np.maximum(region_a, region_b)
        keys.append(pair * n_levels + weight)
    if not keys:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    keys = np.sort(np.concatenate(keys))
    pair = keys // n_levels
    last_of_pair = np.r_[pair[1:] != pair[:-1], True]
    pair, weight = pair[last_of_pair], keys[last_of_pair] % n_levels
    order = np.argsort(-weight, kind="stable")
    pair, weight = pair[order], weight[order]
    return pair // n_regions, pair % n_regions, weight


def _merge_tree(region_levels, region_border, first, second, weight):
    """Kruskal merge tree of the regions (single linkage on decreasing edge weight).

    Leaves ``0..R-1`` are the regions; internal nodes ``R..2R-2`` are created in merge
    order, so a node's id is larger than its children's.

    Parameters
    ----------
    region_levels : (R,) int64, highest level of each region
    region_border : (R,) int64, highest level of a border pixel of each region (0 if none)
    first, second, weight : (E,) int64 region edges sorted by decreasing weight

    Returns
    -------
    parent : (2R-1,) int64, parent node (the root is its own parent)
    node_level : (2R-1,) int64, level below which the node's regions are connected
    children : (R-1, 2) int64, children of internal node ``R + k``
    node_border : (2R-1,) int64, highest border level over the node's regions
    """
    n_regions = len(region_levels)
    n_nodes = 2 * n_regions - 1
    union = list(range(n_regions))
    node_of_set = list(range(n_regions))
    node_level = region_levels.tolist()
    node_border = region_border.tolist()
    parent = list(range(n_nodes))
    children = []
    next_node = n_regions
    for a, b, w in zip(first.tolist(), second.tolist(), weight.tolist()):
        while union[a] != a:  # find with path halving
            union[a] = union[union[a]]
            a = union[a]
        while union[b] != b:
            union[b] = union[union[b]]
            b = union[b]
        if a == b:
            continue
        node_a, node_b = node_of_set[a], node_of_set[b]
        parent[node_a] = parent[node_b] = next_node
        node_level.append(w)
        node_border.append(max(node_border[node_a], node_border[node_b]))
        children.append((node_a, node_b))
        union[b] = a
        node_of_set[a] = next_node
        next_node += 1
        if next_node == n_nodes:
            break
    if next_node != n_nodes:
        raise RuntimeError(f"region graph is not connected ({n_nodes - next_node} merges missing)")
    return (
        np.array(parent, dtype=np.int64),
        np.array(node_level, dtype=np.int64),
        np.array(children, dtype=np.int64).reshape(-1, 2),
        np.array(node_border, dtype=np.int64),
    )


def _ancestor_jumps(parent):
    """Binary-lifting tables: ``jumps[k][node]`` is the ``2**k``-th ancestor (the root maps to itself)."""
    jumps = [parent]
    while True:
        jumped = jumps[-1][jumps[-1]]
        if np.array_equal(jumped, jumps[-1]):
            return jumps
        jumps.append(jumped)


def _max_over_ancestors(values, jumps):
    """``result[node] = max(values[a] for a in node and its ancestors)``, by doubling."""
    result = values.copy()
    for jump in jumps:
        # After this step, result covers the ancestors at distance < 2 ** (k + 1).
        result = np.maximum(result, result[jump])
    return result


def _highest_ancestor_at_level(jumps, node_level, start, level):
    """For each query, the highest ancestor of ``start`` whose node level is >= ``level``.

    Node levels never increase towards the root, so binary lifting applies.
    ``node_level[start] >= level`` must hold for every query.
    """
    current = start
    for jump in reversed(jumps):
        candidate = jump[current]
        current = np.where(node_level[candidate] >= level, candidate, current)
    return current


def _subtree_sums(values, children, n_leaves):
    """Sum of ``values`` over each node's subtree (children ids < parent ids)."""
    totals = values.tolist()
    for offset, (left, right) in enumerate(children.tolist()):
        totals[n_leaves + offset] += totals[left] + totals[right]
    return np.array(totals, dtype=np.int64)


def _non_border_pieces(levels, clear_border=True):
    """Non-border components of every upper level set ``{levels > j}``, as pieces.

    Parameters
    ----------
    levels : (H, W) int64 array, values >= 0
    clear_border : bool
        When False no pixel counts as a border pixel, so every component is kept.

    Returns
    -------
    lo, hi, area : (P,) int64 arrays with ``lo < hi`` and ``area > 0``: for every
        ``j`` in ``[lo, hi)`` one connected component of ``{levels > j}`` that does
        not touch the border has ``area`` pixels. Every such (j, component) pair is
        covered by exactly one piece.
    """
    height, width = levels.shape
    region, roots = _steepest_ascent_regions(levels)
    flat_levels = levels.ravel()
    n_regions = len(roots)

    # region_border: highest level of a region's border pixels; all 0 (no border pixel)
    # when border components are kept.
    region_border = np.zeros(n_regions, dtype=np.int64)
    if clear_border:
        border = np.zeros((height, width), dtype=bool)
        border[[0, -1], :] = True
        border[:, [0, -1]] = True
        border = np.flatnonzero(border)
        np.maximum.at(region_border, region[border], flat_levels[border])

    first, second, weight = _region_edges(region.reshape(height, width), levels)
    parent, node_level, children, node_border = _merge_tree(
        flat_levels[roots], region_border, first, second, weight
    )
    n_nodes = len(parent)
    parent_level = node_level[parent]
    parent_level[n_nodes - 1] = 0  # the root is a component for every j below its level
    jumps = _ancestor_jumps(parent)

    # A node touches the border for j < node_border; its ancestors are larger and
    # touch it at least as long, so the component holding a region touches the border
    # exactly for j < (max over the region's ancestors of min(level, node_border)).
    # Pixels at or below that level only ever lie in border components.
    border_until = _max_over_ancestors(np.minimum(node_level, node_border), jumps)
    useful = np.flatnonzero(flat_levels > border_until[region])
    useful_levels = flat_levels[useful]
    # A pixel of level v counts in a component for j < v; it enters the tree at the
    # node that is a component at j = v - 1: the highest ancestor with level >= v.
    useful_nodes = _highest_ancestor_at_level(jumps, node_level, region[useful], useful_levels)
    own = np.bincount(useful_nodes, minlength=n_nodes).astype(np.int64)
    base = _subtree_sums(own, children, n_regions) - own  # pixels above the node's level

    # Step function of each node: group its own pixels by level, decreasingly; below
    # level v_k the area is base + (pixels of levels v_1..v_k).
    n_levels = int(flat_levels.max()) + 1
    node_level_key, counts = np.unique(useful_nodes * n_levels + (n_levels - 1 - useful_levels), return_counts=True)
    pair_node = node_level_key // n_levels
    pair_level = n_levels - 1 - node_level_key % n_levels
    cumulative = np.cumsum(counts)
    group_start = np.ones(len(pair_node), dtype=bool)
    group_start[1:] = pair_node[1:] != pair_node[:-1]
    group_end = np.ones(len(pair_node), dtype=bool)
    group_end[:-1] = group_start[1:]
    start_offset = (cumulative - counts)[group_start][np.cumsum(group_start) - 1]
    next_level = np.zeros(len(pair_level), dtype=np.int64)
    next_level[:-1] = pair_level[1:]
    step_lo = np.where(group_end, parent_level[pair_node], next_level)
    step_area = base[pair_node] + cumulative - start_offset

    # Top piece of every node: from its highest own level (or its parent's level when
    # it owns no pixel) up to its own level, area = pixels of its descendants.
    top_lo = parent_level.copy()
    top_lo[pair_node[group_start]] = pair_level[group_start]
    lo = np.concatenate([step_lo, top_lo])
    hi = np.concatenate([pair_level, node_level])
    area = np.concatenate([step_area, base])
    node = np.concatenate([pair_node, np.arange(n_nodes)])
    lo = np.maximum(lo, node_border[node])  # touches the border while j < node_border
    keep = (lo < hi) & (area > 0)
    return lo[keep], hi[keep], area[keep]


def _interval_maximum(lo, hi, values, size):
    """Pointwise maximum of values over half-open index intervals.

    ``result[j] = max(values[i] for i with lo[i] <= j < hi[i])``, 0 where none.

    Parameters
    ----------
    lo, hi : (P,) int64 arrays, ``0 <= lo < hi <= size``
    values : (P,) int64 array, >= 0
    size : int

    Returns
    -------
    (size,) int64 array
    """
    leaves = 1 << max(0, int(size - 1).bit_length())
    tree = np.zeros(2 * leaves, dtype=np.int64)
    left, right = lo + leaves, hi + leaves
    while left.size:
        # Standard bottom-up segment-tree range update, one tree level per iteration.
        active = left < right
        left, right, values = left[active], right[active], values[active]
        odd = (left & 1) == 1
        np.maximum.at(tree, left[odd], values[odd])
        left = left + odd
        odd = (right & 1) == 1
        right = right - odd
        np.maximum.at(tree, right[odd], values[odd])
        left >>= 1
        right >>= 1
    start = 1
    while start < leaves:
        block = tree[2 * start : 4 * start]
        np.maximum(block, np.repeat(tree[start : 2 * start], 2), out=block)
        start *= 2
    return tree[leaves : leaves + size].copy()


# ----------------------------------------------------------------------------- curves and scores


def largest_area_curves(resmaps, thresholds, progress=False, clear_border=True):
    """Largest non-border component area of ``{resmap > t}`` for every map and threshold.

    One pass per map over its component tree (see the module docstring); equal to
    :func:`largest_area_curves_naive`.

    Parameters
    ----------
    resmaps : (N, H, W) array (bool, integer or float)
    thresholds : (T,) array, sorted in increasing order (duplicates allowed)
    progress : bool
        Show a tqdm progress bar over the maps.
    clear_border : bool
        Drop the components that touch the image border (default); False keeps them.

    Returns
    -------
    (N, T) int64 array
    """
    resmaps = validate_resmaps(resmaps)
    grid = _validate_thresholds(thresholds)
    clear_border = validate_clear_border(clear_border)
    curves = np.zeros((len(resmaps), len(grid)), dtype=np.int64)
    for index in tqdm(range(len(resmaps)), desc="area curves", unit="map", disable=not progress or not on_terminal(), leave=False):
        lo, hi, area = _non_border_pieces(_grid_levels(resmaps[index], grid), clear_border)
        curves[index] = _interval_maximum(lo, hi, area, len(grid))
    return curves


def largest_area_curves_naive(resmaps, thresholds, progress=False, clear_border=True):
    """Reference for :func:`largest_area_curves`: relabel every map at every threshold.

    ``curves[:, j] = segmentation.largest_component_areas(resmaps, thresholds[j], clear_border)``.

    Parameters
    ----------
    resmaps : (N, H, W) array (bool, integer or float)
    thresholds : (T,) array, sorted in increasing order
    progress : bool
        Show a tqdm progress bar over the thresholds.
    clear_border : bool
        Drop the components that touch the image border (default); False keeps them.

    Returns
    -------
    (N, T) int64 array
    """
    resmaps = validate_resmaps(resmaps)
    grid = _validate_thresholds(thresholds)
    curves = np.zeros((len(resmaps), len(grid)), dtype=np.int64)
    for index in tqdm(range(len(grid)), desc="area curves (naive)", unit="thr", disable=not progress or not on_terminal(), leave=False):
        curves[:, index] = largest_component_areas(resmaps, grid[index], clear_border)
    return curves


def max_component_level(resmaps, min_area, empty_score=NO_COMPONENT_SCORE, clear_border=True):
    """Continuous image score consistent with :func:`segmentation.is_defective`.

    The score of a map is ``sup {t : is_defective(map, t, min_area)}``: the highest
    threshold at which a non-border component of area >= ``min_area`` still exists.
    It is one of the map's values; ``is_defective`` is False for every ``t >= score``
    and True for ``t`` in ``[u, score)`` where ``u`` is the map's next lower value.
    Below ``u`` the decision may flip back to False: at low thresholds the components
    grow until they touch the border and are dropped, so the decision is not monotone
    in ``t``. With ``clear_border=False`` the decision is monotone and the score is
    the highest value ``t`` below which a component of area >= ``min_area`` exists.

    Parameters
    ----------
    resmaps : (N, H, W) array (bool, integer or float)
    min_area : int >= 1
    empty_score : float
        Score of a map that is defective at no threshold (e.g. when every component
        touches the border). The default, :data:`NO_COMPONENT_SCORE`, is the most
        negative finite float64; pass ``-np.inf`` for the supremum of the empty set.
    clear_border : bool
        Drop the components that touch the image border (default); False keeps them.

    Returns
    -------
    (N,) float64 array
    """
    resmaps = validate_resmaps(resmaps)
    min_area = validate_min_area(min_area)
    clear_border = validate_clear_border(clear_border)
    scores = np.full(len(resmaps), float(empty_score))
    for index, resmap in enumerate(resmaps):
        # The map's distinct values are the thresholds: level = rank of the value.
        values, ranks = np.unique(resmap, return_inverse=True)
        lo, hi, area = _non_border_pieces(ranks.reshape(resmap.shape).astype(np.int64), clear_border)
        large = area >= min_area
        if large.any():
            # Defective for t in [values[lo], values[hi]); the supremum is values[hi].
            scores[index] = float(values[hi[large].max()])
    return scores


# ----------------------------------------------------------------------------- finetuning search


def threshold_grid(resmaps, dtype, n_steps=DEFAULT_FLOAT_STEPS):
    """Threshold grid of the finetuning search, from the minimum to the maximum of the maps.

    * integer ``dtype`` (e.g. ``"uint8"``): every integer from ``floor(min)`` to
      ``ceil(max)``;
    * float ``dtype``: ``n_steps`` uniformly spaced values from ``min`` to ``max``
      (2000 by default: a step of 1e-3 on SSIM maps in [0, 2], finer than the
      original toolkit's 2e-3).

    The top of the grid is the maximum of the maps, where ``{resmap > t}`` is empty.

    Parameters
    ----------
    resmaps : (N, H, W) array or a sequence of such arrays (e.g. validation and
        finetuning maps)
    dtype : str or numpy dtype
        Encoding of the residual maps: an integer or a float dtype.
    n_steps : int >= 2
        Number of grid values for float maps.

    Returns
    -------
    (T,) float64 array, increasing.
    """
    arrays = [resmaps] if isinstance(resmaps, np.ndarray) else list(resmaps)
    arrays = [np.asarray(array) for array in arrays if np.asarray(array).size]
    if not arrays:
        raise ValueError("resmaps: expected at least one non-empty residual map")
    for array in arrays:
        if array.dtype.kind not in "buif":
            raise ValueError(f"resmaps: expected numeric arrays, got dtype {array.dtype}")
    try:
        kind = np.dtype(dtype).kind
    except TypeError as error:
        raise ValueError(f"dtype: expected a numpy dtype such as 'uint8' or 'float64', got {dtype!r}") from error
    lowest = min(float(np.min(array)) for array in arrays)
    highest = max(float(np.max(array)) for array in arrays)
    if not (np.isfinite(lowest) and np.isfinite(highest)):
        raise ValueError("resmaps: contain NaN or infinite values")
    if kind in "biu":
        return np.arange(np.floor(lowest), np.ceil(highest) + 1, dtype=np.float64)
    if kind == "f":
        if not isinstance(n_steps, (numbers.Integral, np.integer)) or n_steps < 2:
            raise ValueError(f"n_steps: expected an integer >= 2, got {n_steps!r}")
        if lowest == highest:
            return np.array([lowest])
        return np.linspace(lowest, highest, int(n_steps))
    raise ValueError(f"dtype: expected an integer or float dtype such as 'uint8' or 'float64', got {dtype!r}")


def allowed_false_alarms(rate: float, n_validation: int) -> int:
    """How many of `n_validation` defect-free images a decision may flag at a false-alarm `rate`."""
    return int(np.floor(rate * n_validation + 1e-9))


def min_thresholds_for_areas(val_curves, thresholds, min_areas, allowed: int = 0):
    """Lowest grid threshold above which the defect-free validation maps stay clean, all but at
    most `allowed` of them.

    For each ``min_area`` the result is ``thresholds[j]`` for the smallest ``j`` such that at most
    `allowed` maps have ``val_curves[n, k] >= min_area`` for some ``k >= j`` (with ``allowed`` 0:
    ``val_curves[:, k].max() < min_area`` for every ``k >= j``). Cleanliness is required at every
    higher threshold, not just at the first crossing from the bottom: with border clearing, very
    low thresholds merge a map into one border component, so the curves are small there too. When
    even the top threshold fails, the top is returned (impossible when the top is >= the maximum
    of the maps).

    Parameters
    ----------
    val_curves : (N_val, T) int array from :func:`largest_area_curves` (N_val >= 1)
    thresholds : (T,) increasing array
    min_areas : (A,) integers >= 1
    allowed : int >= 0, the validation maps that may be flagged (``--max-false-alarms``)

    Returns
    -------
    (A,) float64 array of grid values.
    """
    grid = _validate_thresholds(thresholds)
    val_curves = _validate_curves(val_curves, len(grid), "val_curves")
    if len(val_curves) == 0:
        raise ValueError("val_curves: expected at least one validation map")
    min_areas = _validate_min_areas(min_areas)
    if isinstance(allowed, bool) or not isinstance(allowed, (int, np.integer)) or allowed < 0:
        raise ValueError(f"allowed: expected an integer >= 0, got {allowed!r}")
    if allowed >= len(val_curves):
        return np.full(len(min_areas), grid[0])  # every validation map may be flagged
    suffix = np.maximum.accumulate(val_curves[:, ::-1], axis=1)[:, ::-1]  # each map's worst from j on
    # The (allowed + 1)-th worst map from j on must be clean: with allowed 0, the worst one.
    worst = -np.partition(-suffix, allowed, axis=0)[allowed] if allowed else suffix.max(axis=0)
    suffix_worst = np.maximum.accumulate(worst[::-1])[::-1]  # non-increasing
    # Clean from j on exactly when suffix_worst[j] < min_area: count the failing j.
    first_clean = np.searchsorted(-suffix_worst, -min_areas, side="right")
    return grid[np.minimum(first_clean, len(grid) - 1)]


def score_pairs(curves, labels, thresholds, min_areas, pair_thresholds):
    """TPR, TNR and balanced accuracy of each (min_area, threshold) pair.

    An image is predicted defective for pair ``i`` when
    ``curves[n, j_i] >= min_areas[i]`` with ``thresholds[j_i] == pair_thresholds[i]``.

    Parameters
    ----------
    curves : (N, T) int array from :func:`largest_area_curves`
    labels : (N,) bool array, True for defective images
    thresholds : (T,) increasing array
    min_areas : (A,) integers >= 1
    pair_thresholds : (A,) values of ``thresholds``

    Returns
    -------
    dict with (A,) float64 arrays ``tpr``, ``tnr`` and ``score = (tpr + tnr) / 2``.
        When a class is absent its rate is NaN and ``score`` is the other rate
        (NaN when both are).
    """
    grid = _validate_thresholds(thresholds)
    curves = _validate_curves(curves, len(grid), "curves")
    labels = _validate_labels(labels, len(curves))
    min_areas = _validate_min_areas(min_areas)
    pair_thresholds = np.asarray(pair_thresholds, dtype=np.float64)
    if pair_thresholds.shape != min_areas.shape:
        raise ValueError(f"pair_thresholds: expected shape {min_areas.shape} like min_areas, got {pair_thresholds.shape}")
    columns = np.searchsorted(grid, pair_thresholds, side="left")
    on_grid = (columns < len(grid)) & (grid[np.minimum(columns, len(grid) - 1)] == pair_thresholds)
    if not on_grid.all():
        raise ValueError(f"pair_thresholds: {pair_thresholds[~on_grid][:5].tolist()} are not values of thresholds")
    predicted = curves[:, columns] >= min_areas  # (N, A)
    n_defective, n_good = np.count_nonzero(labels), np.count_nonzero(~labels)
    true_positives = np.count_nonzero(predicted & labels[:, None], axis=0)
    true_negatives = np.count_nonzero(~predicted & ~labels[:, None], axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = true_positives / n_defective if n_defective else np.full(len(min_areas), np.nan)
        tnr = true_negatives / n_good if n_good else np.full(len(min_areas), np.nan)
    rates = np.stack([tpr, tnr])
    both_missing = np.isnan(rates).all(axis=0)
    score = np.where(both_missing, np.nan, np.nanmean(np.where(both_missing, 0.0, rates), axis=0))
    return {"tpr": np.asarray(tpr, dtype=np.float64), "tnr": np.asarray(tnr, dtype=np.float64), "score": score}


def _validate_labels(labels, n_images, name="labels"):
    """Return ``labels`` as an (N,) bool array (bools or 0/1 integers)."""
    labels = np.asarray(labels)
    if labels.shape != (n_images,):
        raise ValueError(f"{name}: expected shape ({n_images},) matching the maps, got {labels.shape}")
    if labels.dtype.kind != "b":
        if labels.dtype.kind not in "iu" or not np.isin(labels, (0, 1)).all():
            raise ValueError(f"{name}: expected booleans or 0/1 integers (True = defective), got dtype {labels.dtype}")
        labels = labels.astype(bool)
    return labels


def choose_best_pair(min_areas, pair_thresholds, scores):
    """Pair with the highest score.

    Ties are broken by the larger ``min_area`` (a larger minimum defect size is less
    sensitive to noise, hence fewer false positives on unseen good images), then by
    the lower threshold. NaN scores are ignored.

    Parameters
    ----------
    min_areas, pair_thresholds, scores : (A,) arrays

    Returns
    -------
    (best_min_area: int, best_threshold: float, best_score: float)
    """
    min_areas = _validate_min_areas(min_areas)
    pair_thresholds = np.asarray(pair_thresholds, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if pair_thresholds.shape != min_areas.shape or scores.shape != min_areas.shape:
        raise ValueError(
            f"min_areas, pair_thresholds, scores: expected equal shapes, got "
            f"{min_areas.shape}, {pair_thresholds.shape}, {scores.shape}"
        )
    if np.isnan(scores).all():
        raise ValueError("scores: every score is NaN (no labelled finetuning image?)")
    best_score = np.nanmax(scores)
    candidates = np.flatnonzero(scores == best_score)
    # lexsort: last key is primary -> larger min_area first, then lower threshold.
    order = np.lexsort((pair_thresholds[candidates], -min_areas[candidates]))
    best = candidates[order[0]]
    return int(min_areas[best]), float(pair_thresholds[best]), float(best_score)


def min_area_candidates(map_pixels: int, count: int = DEFAULT_AREA_COUNT, top_fraction: float = MIN_AREA_TOP_FRACTION) -> np.ndarray:
    """min_area candidates of the smoothed rule: `count` values spaced geometrically from 1 pixel
    to `top_fraction` of the map (5 %: 3277 px of a 256 x 256 map, 205 px of a 64 x 64 one), so
    the range scales with the map instead of stopping at a fixed 1000 px."""
    if isinstance(map_pixels, bool) or not isinstance(map_pixels, (int, np.integer)) or map_pixels < 1:
        raise ValueError(f"map_pixels: expected an integer >= 1, got {map_pixels!r}")
    top = max(1, int(top_fraction * map_pixels))
    return np.unique(np.round(np.geomspace(1, top, count)).astype(np.int64))


@dataclass
class SearchResult:
    """Outcome of :func:`search_min_area_threshold`.

    thresholds : (T,) grid; min_areas, pair_thresholds, tpr, tnr, scores : (A,) arrays, one entry
    per min_area (its threshold, its rates on the finetuning data, its objective); val_curves :
    (N_val, T) and finetune_curves : (N_ft, T) int64 area curves. ``rule`` names the rule that
    chose; for the smoothed rule ``expected`` holds the rates expected on new images (with their
    interval) and ``warnings`` the one-line warnings about the choice.
    """

    thresholds: np.ndarray
    min_areas: np.ndarray
    pair_thresholds: np.ndarray
    tpr: np.ndarray
    tnr: np.ndarray
    scores: np.ndarray
    best_min_area: int
    best_threshold: float
    best_score: float
    val_curves: np.ndarray
    finetune_curves: np.ndarray
    rule: str = "original"
    operating_point: OperatingPoint = field(default_factory=OperatingPoint)
    best_tpr: float = math.nan
    best_tnr: float = math.nan
    expected: Expected | None = None
    warnings: list[str] = field(default_factory=list)


def search_min_area_threshold(
    val_resmaps,
    finetune_resmaps,
    finetune_labels,
    dtype,
    min_areas=None,
    n_steps=DEFAULT_FLOAT_STEPS,
    naive=False,
    progress=True,
    clear_border=True,
    allowed_false_alarms=0,
    rule=DEFAULT_RULE,
    operating_point: OperatingPoint | None = None,
    pooled_goods=None,
    n_resamples=DEFAULT_RESAMPLES,
    seed=0,
):
    """Finetuning search of the (min_area, threshold) pair, by one of :data:`RULES`.

    ``smoothed`` (the default, :mod:`processing.decision.operating_point`): every defect-free map
    (the validation maps and the good finetuning maps) estimates the false-alarm side, the
    defective finetuning maps the detection side, both as kernel-smoothed rate curves; the
    operating point picks the threshold of each min_area (:func:`min_area_candidates` when
    `min_areas` is None) and the best min_area. Bootstrap resamples give the expected rates and
    their interval, and the warnings.

    ``original`` (the original toolkit's): for each ``min_area`` (:data:`DEFAULT_MIN_AREAS` when
    None) the threshold is the lowest one that keeps every defect-free validation map clean, all
    but `allowed_false_alarms` of them (:func:`min_thresholds_for_areas`); each pair is scored by
    balanced accuracy on the labelled finetuning maps (:func:`score_pairs`) and the best pair is
    chosen by :func:`choose_best_pair`.

    Each map is processed once (:func:`largest_area_curves`); every pair is then a lookup in the curves.

    Parameters
    ----------
    val_resmaps : (N_val, H, W) residual maps of defect-free validation images
    finetune_resmaps : (N_ft, H, W) residual maps of the finetuning images
    finetune_labels : (N_ft,) bool, True for defective images
    dtype : str or numpy dtype of the residual maps' encoding, see :func:`threshold_grid`
    min_areas : integers >= 1, or None for the rule's own candidates
    n_steps : int, grid size for float maps
    naive : bool
        Use :func:`largest_area_curves_naive` (the reference, for benchmarks).
    progress : bool
        Show tqdm progress bars.
    clear_border : bool
        Drop the components that touch the image border (default); False keeps them.
    allowed_false_alarms : int, original rule: the validation maps that may be flagged
    rule : one of :data:`RULES`
    operating_point : OperatingPoint, smoothed rule: balanced accuracy, or a target rate
    pooled_goods : (N_ft,) bool or None, smoothed rule: which good finetuning maps join the
        validation maps on the false-alarm side (None: every good one; False for a map that is a
        validation map already)
    n_resamples, seed : smoothed rule: bootstrap resamples behind the expected rates

    Returns
    -------
    SearchResult
    """
    if rule not in RULES:
        raise ValueError(f"rule {rule!r}: expected one of {', '.join(RULES)}")
    operating_point = operating_point or OperatingPoint()
    val_resmaps = validate_resmaps(val_resmaps, "val_resmaps")
    finetune_resmaps = validate_resmaps(finetune_resmaps, "finetune_resmaps")
    if len(val_resmaps) == 0:
        raise ValueError("val_resmaps: expected at least one validation map")
    labels = _validate_labels(finetune_labels, len(finetune_resmaps), "finetune_labels")
    fallback = []
    if rule == "smoothed" and not labels.any():  # nothing to measure detection on: the original rule, said
        if operating_point.kind == "detection":
            raise UserError("--min-detection: the finetuning subset holds no defective image to measure a detection rate on")
        rule = "original"
        fallback = ["the finetuning subset holds no defective image: the original rule chose (every validation image clean); "
                    "raise --finetune-split, label defects or pass --synthetic-defects"]
    if min_areas is None:
        smallest_map = min(int(np.prod(np.shape(m)[-2:])) for m in [*val_resmaps, *finetune_resmaps])
        min_areas = DEFAULT_MIN_AREAS if rule == "original" else min_area_candidates(smallest_map)
    min_areas = _validate_min_areas(min_areas)
    clear_border = validate_clear_border(clear_border)
    if rule == "original" and operating_point.kind == "detection":
        raise ValueError("a detection rate to reach (--min-detection) needs --rule smoothed; the original rule keeps every "
                         "validation image clean")
    grid = threshold_grid([*val_resmaps, *finetune_resmaps] if isinstance(val_resmaps, list) or isinstance(finetune_resmaps, list)
                          else [val_resmaps, finetune_resmaps], dtype, n_steps)
    curves_of = largest_area_curves_naive if naive else largest_area_curves
    logger.info(
        "area curves of %d validation and %d finetuning maps on %d thresholds%s%s",
        len(val_resmaps), len(finetune_resmaps), len(grid), " (naive)" if naive else "",
        "" if clear_border else ", border components kept",
    )
    val_curves = curves_of(val_resmaps, grid, progress=progress, clear_border=clear_border)
    finetune_curves = curves_of(finetune_resmaps, grid, progress=progress, clear_border=clear_border)
    if rule == "smoothed":
        return _smoothed_search(val_curves, finetune_curves, labels, grid, min_areas, operating_point, pooled_goods, n_resamples, seed)
    pair_thresholds = min_thresholds_for_areas(val_curves, grid, min_areas, allowed_false_alarms)
    rates = score_pairs(finetune_curves, labels, grid, min_areas, pair_thresholds)
    best_min_area, best_threshold, best_score = choose_best_pair(min_areas, pair_thresholds, rates["score"])
    best = int(np.flatnonzero(min_areas == best_min_area)[0])
    logger.debug("best pair min_area=%d threshold=%.6g score=%.4f", best_min_area, best_threshold, best_score)
    warnings = fallback
    if best_min_area == min_areas[-1] and len(min_areas) > 1:
        warnings.append(f"min_area {best_min_area} px is the largest candidate of the original rule: its choice sits at the edge of "
                        "the range (--rule smoothed scales the candidates with the map)")
    return SearchResult(
        thresholds=grid,
        min_areas=min_areas,
        pair_thresholds=pair_thresholds,
        tpr=rates["tpr"],
        tnr=rates["tnr"],
        scores=rates["score"],
        best_min_area=best_min_area,
        best_threshold=best_threshold,
        best_score=best_score,
        val_curves=val_curves,
        finetune_curves=finetune_curves,
        rule="original",
        operating_point=operating_point,
        best_tpr=float(rates["tpr"][best]),
        best_tnr=float(rates["tnr"][best]),
        warnings=warnings,
    )


def _smoothed_search(val_curves, finetune_curves, labels, grid, min_areas, point, pooled_goods, n_resamples, seed) -> SearchResult:
    """The smoothed rule on the area curves (see :func:`search_min_area_threshold`); one family per min_area."""
    pooled = ~labels if pooled_goods is None else (~labels & np.asarray(pooled_goods, dtype=bool))
    good_curves = np.concatenate([val_curves, finetune_curves[pooled]])
    defect_curves = finetune_curves[labels]

    def flags_of(family):
        return good_curves >= min_areas[family], defect_curves >= min_areas[family]

    edge = (f"min_area {min_areas[-1]} px is the largest candidate ({MIN_AREA_TOP_FRACTION:.0%} of the map): the defects that "
            "decide may be larger still; check the maps, or a coarser map")
    settled = settle(flags_of, len(min_areas), point, n_resamples, seed, at_top_edge=edge)
    choice = settled.choice
    columns = choice.family_index  # every min_area's own threshold: its rates, for the record and the plots
    tnr = 1.0 - (good_curves[:, columns] >= min_areas).mean(axis=0)
    tpr = (defect_curves[:, columns] >= min_areas).mean(axis=0)
    best_min_area, best_threshold = int(min_areas[choice.family]), float(grid[choice.index])
    logger.debug("smoothed rule: min_area=%d threshold=%.6g objective=%.4f", best_min_area, best_threshold,
                 choice.family_objective[choice.family])
    return SearchResult(
        thresholds=grid,
        min_areas=min_areas,
        pair_thresholds=grid[columns],
        tpr=tpr,
        tnr=tnr,
        scores=choice.family_objective,
        best_min_area=best_min_area,
        best_threshold=best_threshold,
        best_score=(settled.tpr + settled.tnr) / 2,
        val_curves=val_curves,
        finetune_curves=finetune_curves,
        rule="smoothed",
        operating_point=point,
        best_tpr=settled.tpr,
        best_tnr=settled.tnr,
        expected=settled.expected,
        warnings=settled.warnings,
    )
