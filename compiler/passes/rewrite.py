"""The loop every mutator pass of ours shares: rewrite each Relax function of a module."""

from __future__ import annotations

import tvm
from tvm import relax


def rewrite_functions(mod: tvm.IRModule, rewriter) -> tvm.IRModule:
    """`mod` with every Relax function replaced by `rewriter.visit_expr(function)`;
    `rewriter` is a PyExprMutator made for `mod` (its builder collects the result)."""
    for gvar, func in mod.functions_items():
        if isinstance(func, relax.Function):
            rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
    return rewriter.builder_.get()
