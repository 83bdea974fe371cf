"""Everything around a trained autoencoder, one subpackage per stage of the data flow.

Bottom to top (a layer imports only the layers below it and ``autoencoder/``; tests/test_layering.py
checks this):

- ``data``: datasets in the MVTec layout (listing, decoding, masks, splits) and dataset generators;
- ``maps``: residual maps, their post-processing (smoothing, per-pixel standardisation), batched inference;
- ``decision``: segmentation, the one-pass (min_area, threshold) search, the latent-density math;
- ``evaluation``: metrics (AUROC, AUPRO, IoU), plots and predict.py's report page;
- ``detectors``: the detector interface and its registry (segmentation, kde);
- ``workflow``: what the scripts run (training, finetuning, testing, benchmarking, prediction, export).
"""
