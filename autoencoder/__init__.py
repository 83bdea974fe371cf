"""Convolutional autoencoders for image anomaly detection: models, losses, training."""
