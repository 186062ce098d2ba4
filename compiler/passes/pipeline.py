"""The graph-pass pipeline: every pass mlc runs on the Relax graph, in order, by phase."""

from __future__ import annotations

import tvm
from tvm import relax

from ..options import CompileOptions
from .extract_weights import ExtractWeights
from .safe_indexing import SafeIndexing


def phases(options: CompileOptions) -> list[tuple[str, list[tvm.transform.Pass]]]:
    """The named phases, in the order they run."""
    return [
        (
            "simplify",
            [
                relax.transform.DecomposeOpsForInference(),
                relax.transform.CanonicalizeBindings(),
                # Folds weight-only arithmetic (batch-norm scales, transposes) at compile time.
                relax.transform.FoldConstant(),
                relax.transform.DeadCodeElimination(),
            ],
        ),
        ("safety", [SafeIndexing()]),
        ("precision", _precision_passes(options.precision)),
        ("weights", [ExtractWeights(options.weight_threshold_bytes)]),
    ]


def _precision_passes(precision: str) -> list[tvm.transform.Pass]:
    if precision == "fp32":
        return []
    # fp16 compute with fp32 accumulation; FoldConstant stores the weights in fp16.
    return [relax.transform.ToMixedPrecision(out_dtype="float32"), relax.transform.FoldConstant()]


def graph_passes(options: CompileOptions) -> tvm.transform.Pass:
    """All graph passes as one Sequential."""
    return tvm.transform.Sequential(
        [p for _, passes in phases(options) for p in passes], name="mlc.graph_passes"
    )
