"""Evaluation during and after pretraining: probes, collapse monitors, reconstruction figures."""
