"""Graph passes. The ordered pipeline lives in pipeline.py; one pass per file."""

from .extract_weights import ExtractWeights
from .pipeline import graph_passes
from .safe_indexing import SafeIndexing

__all__ = ["ExtractWeights", "SafeIndexing", "graph_passes"]
