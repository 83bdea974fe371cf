"""What the root scripts run: training.py (train.py), finetuning.py (finetune.py), testing.py (test.py), benchmarking.py (benchmark.py), prediction.py (predict.py), export.py (export.py)."""
