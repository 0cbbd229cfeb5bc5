"""Helpers every layer may use: boxes, atomic writes, checkpoints, fingerprints, process groups, drawing."""
