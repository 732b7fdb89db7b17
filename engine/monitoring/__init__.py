"""Operational anomaly detection, alerts and metrics."""
