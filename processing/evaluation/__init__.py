"""Metrics (metrics.py) and plots (plots.py)."""
