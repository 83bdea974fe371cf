"""Datasets: the MVTec layout (images.py), the splits every script agrees on (splits.py), and generated
datasets (demo.py, digits.py, split_dataset.py, synthetic_datasets.py on the procedural textures of
textures.py with the defects of synthetic_defects.py)."""
