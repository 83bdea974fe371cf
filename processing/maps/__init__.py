"""Residual maps (resmaps.py), their post-processing (postprocess.py) and batched inference over image files (inference.py)."""
