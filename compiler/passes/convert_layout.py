"""ConvertLayout: conv layouts chosen by the target's default schedules."""

from __future__ import annotations

import tvm
from tvm import relax

# CPU schedules vectorise over output channels: activations NHWC, weights HWIO, so that one
# vector load of weights feeds several output pixels and the channel axis is contiguous.
_CPU_LAYOUTS = {"relax.nn.conv2d": ["NHWC", "HWIO"]}


@tvm.transform.module_pass(opt_level=0, name="ConvertLayout")
class ConvertLayout:
    """Convert convs (and the ops around them) to the layouts `target` is fastest on; the
    weights' transposes fold away at compile time. GPU targets keep the model's layout."""

    def __init__(self, target: tvm.target.Target):
        self.layouts = _CPU_LAYOUTS if target.kind.name == "llvm" else {}

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        if not self.layouts:
            return mod
        mod = relax.transform.ConvertLayout(self.layouts)(mod)
        return relax.transform.FoldConstant()(mod)
