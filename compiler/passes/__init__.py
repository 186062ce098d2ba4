"""Graph passes. The ordered pipeline lives in pipeline.py; one pass per file."""

from .extract_weights import ExtractWeights
from .fold_batch_norm import FoldBatchNorm
from .keep_fp32 import KeepFP32
from .pipeline import graph_passes
from .safe_indexing import SafeIndexing
from .to_bfloat16 import ToBFloat16

__all__ = [
    "ExtractWeights",
    "FoldBatchNorm",
    "KeepFP32",
    "SafeIndexing",
    "ToBFloat16",
    "graph_passes",
]
