"""Convolutional autoencoders for image anomaly detection: models (a registry of architectures),
losses, the training input pipeline and loop, callbacks, model folders (bundle) and the
adversarial autoencoder. It imports nothing from processing/."""
