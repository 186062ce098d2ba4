"""ConvertLayout: conv layouts chosen by the target's default schedules."""

from __future__ import annotations

import tvm
from tvm import relax

# CPU schedules vectorise over output channels: activations NHWC, weights HWIO, so that one
# vector load of weights feeds several output pixels and the channel axis is contiguous.
# Transposed convs that DecomposeConvTranspose leaves (dilated ones) stay in NCHW: TVM lowers
# them in that layout only, and would otherwise follow their NHWC neighbours and fail to build.
_CPU_LAYOUTS = {
    "relax.nn.conv2d": ["NHWC", "HWIO"],
    "relax.nn.conv2d_transpose": ["NCHW", "IOHW"],
}


@tvm.transform.module_pass(opt_level=0, name="ConvertLayout")
class ConvertLayout:
    """Convert convs (and the ops around them) to the layouts `target` is fastest on; the
    weights' transposes fold away at compile time. GPU targets keep the model's layout."""

    def __init__(self, target: tvm.target.Target):
        self.layouts = _CPU_LAYOUTS if target.kind.name == "llvm" else {}

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        if not self.layouts or not _calls_any(mod, self.layouts):
            return mod
        try:
            converted = relax.transform.ConvertLayout(self.layouts)(mod)
        except Exception:  # TVM raises IndexError, InternalError, ...
            # TVM's layout inference lacks rules for some operators (relax.op.stack fails
            # with an IndexError): the layout is an optimisation, so such a model keeps the
            # layout it came with.
            return mod
        return relax.transform.FoldConstant()(converted)


def _calls_any(mod: tvm.IRModule, op_names) -> bool:
    """Does any function of `mod` call one of the operators `op_names`?"""
    found = []

    def visit(node):
        if isinstance(node, relax.Call) and isinstance(node.op, tvm.ir.Op):
            if node.op.name in op_names:
                found.append(node)

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return bool(found)
