"""Graph passes: each of ours with a Before/Expected IR test."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R

from compiler.passes import ExtractWeights

BIG = np.arange(16 * 32, dtype=np.float32).reshape(16, 32)  # 2 KiB: becomes a weight
SMALL = np.ones((4,), np.float32)  # 16 bytes: stays inline


def _before() -> tvm.IRModule:
    bb = relax.BlockBuilder()
    x = relax.Var("x", R.Tensor((1, 16), "float32"))
    with bb.function("main", [x], attrs={"num_input": 1}):
        with bb.dataflow():
            big = relax.const(BIG)
            mm = bb.emit(relax.op.matmul(x, big))
            again = bb.emit(relax.op.matmul(x, big))  # the same constant used twice
            total = bb.emit(relax.op.add(mm, again))
            out = bb.emit_output(
                relax.op.add(relax.op.strided_slice(total, [1], [0], [4]), relax.const(SMALL))
            )
        bb.emit_func_output(out)
    return bb.get()


@I.ir_module
class Expected:
    @R.function
    def main(
        x: R.Tensor((1, 16), dtype="float32"), weight0: R.Tensor((16, 32), dtype="float32")
    ) -> R.Tensor((1, 4), dtype="float32"):
        R.func_attr({"num_input": 1})
        with R.dataflow():
            lv: R.Tensor((1, 32), dtype="float32") = R.matmul(x, weight0)
            lv1: R.Tensor((1, 32), dtype="float32") = R.matmul(x, weight0)
            lv2: R.Tensor((1, 32), dtype="float32") = R.add(lv, lv1)
            gv: R.Tensor((1, 4), dtype="float32") = R.add(
                R.strided_slice(lv2, axes=[1], begin=[0], end=[4]),
                R.const(np.ones((4,), "float32")),
            )
            R.output(gv)
        return gv


def test_extract_weights_lifts_large_constants_once():
    after = ExtractWeights(min_bytes=1024)(_before())
    params = after["main"].attrs["params"]
    assert len(params) == 1
    np.testing.assert_array_equal(params[0].numpy(), BIG)
    tvm.ir.assert_structural_equal(after["main"].without_attr("params"), Expected["main"])


def test_extract_weights_threshold_keeps_everything_inline():
    before = _before()
    after = ExtractWeights(min_bytes=1 << 20)(before)
    tvm.ir.assert_structural_equal(after, before)
