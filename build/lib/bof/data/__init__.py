"""Datasets (Pascal VOC and its built-in synthetic stand-in), transforms and keyed data loading."""
