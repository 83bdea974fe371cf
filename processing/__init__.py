"""Data, residual maps, segmentation, thresholds, metrics and plots."""
