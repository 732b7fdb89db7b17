"""Velocity state and the feature matrix: one set of kernels for serving and training."""
