"""Decision rules: segmentation of maps (segmentation.py), the (min_area, threshold) search
(thresholds.py), the latent kernel density (density.py)."""
