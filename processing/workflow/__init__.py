"""What the root scripts run: training.py (train.py), finetuning.py (finetune.py), testing.py
(test.py), benchmarking.py (benchmark.py), predict/ (predict.py), export.py (export.py); results.py
is the results tree they share, options.py the settings of train.py and test.py."""
