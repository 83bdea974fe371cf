"""Anomaly maps: the registry of map kinds (kinds.py), the kinds themselves (pixel_maps.py: ssim, l2;
feature_maps.py: feature, padim, knn, on the densities of padim.py and knn.py), their post-processing
(postprocess.py) and batched inference over image files (inference.py).

Importing this package registers the built-in map kinds and sources, in this order.
"""

from processing.maps import inference, pixel_maps, feature_maps  # noqa: F401, I001  (registration order: ssim, l2, feature, padim, knn)
