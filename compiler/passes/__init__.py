"""Graph passes. The ordered pipeline lives in pipeline.py; one pass per file."""

from .extract_weights import ExtractWeights
from .pipeline import graph_passes

__all__ = ["ExtractWeights", "graph_passes"]
