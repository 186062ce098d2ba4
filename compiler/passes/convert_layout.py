"""Layout conversion for conv-heavy models, chosen by the target's default schedules."""

from __future__ import annotations

import tvm
from tvm import relax

from .fast_math import FastMath

# CPU schedules vectorise over output channels: activations NHWC, weights HWIO, so that one
# vector load of weights feeds several output pixels and the channel axis is contiguous.
_CPU_LAYOUTS = {"relax.nn.conv2d": ["NHWC", "HWIO"]}


def layout_passes(target: tvm.target.Target) -> list[tvm.transform.Pass]:
    """Passes that put the graph in the form `target`'s default schedules are fastest on:
    conv layouts (the weights' transposes fold at compile time) and, on CPUs, vectorisable
    approximations of exp/erf/tanh/softmax."""
    if target.kind.name != "llvm":
        return []
    return [
        relax.transform.ConvertLayout(_CPU_LAYOUTS),
        relax.transform.FoldConstant(),
        FastMath(),
    ]
