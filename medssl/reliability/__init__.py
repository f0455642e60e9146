"""Surviving kills, preemption and divergence: atomic checkpoints, exact resume, signals, NaN policy."""
