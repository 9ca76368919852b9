"""Artifact parsers: one module per format, found through ``parsers.registry``."""
