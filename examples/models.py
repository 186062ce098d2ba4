"""Small ONNX models built with onnx.helper, for the example, the tests and the benchmarks.

Run as a script to (re)write the bundled example: `python examples/models.py examples/convnet.onnx`.
"""

from __future__ import annotations

import itertools
import sys

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper
from onnx import helper as h

OPSET = 17


def _model(graph: onnx.GraphProto, opset: int = OPSET) -> onnx.ModelProto:
    model = h.make_model(
        graph, opset_imports=[h.make_opsetid("", opset)], producer_name="mlc-tests"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


class _Weights:
    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.items: list[onnx.TensorProto] = []

    def add(self, name: str, shape, scale: float = 0.1, offset: float = 0.0) -> str:
        data = (self.rng.standard_normal(shape) * scale + offset).astype(np.float32)
        self.items.append(numpy_helper.from_array(data, name))
        return name

    def const(self, name: str, array: np.ndarray) -> str:
        self.items.append(numpy_helper.from_array(array, name))
        return name


def convnet(batch: int | str = "N", size: int = 16) -> onnx.ModelProto:
    """Conv → BatchNorm → Relu → MaxPool → Conv → BatchNorm → Relu → GAP → Gemm."""
    w = _Weights(0)
    nodes = []
    x, c_in = "x", 3
    for i, c_out in enumerate((8, 16)):
        nodes += [
            h.make_node(
                "Conv",
                [x, w.add(f"conv{i}.w", (c_out, c_in, 3, 3))],
                [f"c{i}"],
                pads=[1, 1, 1, 1],
                name=f"conv{i}",
            ),
            h.make_node(
                "BatchNormalization",
                [
                    f"c{i}",
                    w.add(f"bn{i}.g", (c_out,), 0.1, 1.0),
                    w.add(f"bn{i}.b", (c_out,)),
                    w.add(f"bn{i}.m", (c_out,)),
                    w.add(f"bn{i}.v", (c_out,), 0.05, 1.0),
                ],
                [f"b{i}"],
                name=f"bn{i}",
            ),
            h.make_node("Relu", [f"b{i}"], [f"r{i}"], name=f"relu{i}"),
        ]
        x, c_in = f"r{i}", c_out
        if i == 0:
            nodes.append(h.make_node("MaxPool", [x], ["p0"], kernel_shape=[2, 2], strides=[2, 2]))
            x = "p0"
    nodes += [
        h.make_node("GlobalAveragePool", [x], ["gap"]),
        h.make_node("Flatten", ["gap"], ["flat"]),
        h.make_node(
            "Gemm",
            ["flat", w.add("fc.w", (10, c_in)), w.add("fc.b", (10,))],
            ["logits"],
            transB=1,
            name="fc",
        ),
    ]
    graph = h.make_graph(
        nodes,
        "convnet",
        [h.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, size, size])],
        [h.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 10])],
        w.items,
    )
    return _model(graph)


def mlp(batch: int | str = 1, sizes=(64, 128, 128, 10)) -> onnx.ModelProto:
    """MatMul + Add + Relu layers."""
    w = _Weights(1)
    nodes, x = [], "x"
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        nodes.append(h.make_node("MatMul", [x, w.add(f"w{i}", (a, b))], [f"m{i}"]))
        nodes.append(h.make_node("Add", [f"m{i}", w.add(f"b{i}", (b,))], [f"a{i}"]))
        x = f"a{i}"
        if i < len(sizes) - 2:
            nodes.append(h.make_node("Relu", [x], [f"r{i}"]))
            x = f"r{i}"
    nodes.append(h.make_node("Identity", [x], ["y"]))
    graph = h.make_graph(
        nodes,
        "mlp",
        [h.make_tensor_value_info("x", TensorProto.FLOAT, [batch, sizes[0]])],
        [h.make_tensor_value_info("y", TensorProto.FLOAT, [batch, sizes[-1]])],
        w.items,
    )
    return _model(graph)


def transformer_block(seq: int = 16, dim: int = 32, heads: int = 4) -> onnx.ModelProto:
    """Self-attention + MLP encoder block with LayerNorm, Softmax and Gelu (erf form)."""
    w = _Weights(2)
    hd = dim // heads
    n = []

    def linear(x, name, a, b):
        n.append(h.make_node("MatMul", [x, w.add(f"{name}.w", (a, b))], [f"{name}.mm"]))
        n.append(h.make_node("Add", [f"{name}.mm", w.add(f"{name}.b", (b,))], [name]))
        return name

    def layernorm(x, name):
        n.append(
            h.make_node(
                "LayerNormalization",
                [x, w.add(f"{name}.g", (dim,), 0.1, 1.0), w.add(f"{name}.b", (dim,))],
                [name],
                axis=-1,
                epsilon=1e-5,
            )
        )
        return name

    heads_shape = w.const("heads_shape", np.array([1, seq, heads, hd], np.int64))
    merge_shape = w.const("merge_shape", np.array([1, seq, dim], np.int64))
    ln1 = layernorm("x", "ln1")
    for p in ("q", "k", "v"):
        linear(ln1, p, dim, dim)
        n.append(h.make_node("Reshape", [p, heads_shape], [f"{p}.h"]))
        perm = [0, 2, 3, 1] if p == "k" else [0, 2, 1, 3]
        n.append(h.make_node("Transpose", [f"{p}.h"], [f"{p}.t"], perm=perm))
    scale = w.const("scale", np.array(1.0 / np.sqrt(hd), np.float32))
    n += [
        h.make_node("MatMul", ["q.t", "k.t"], ["scores"]),
        h.make_node("Mul", ["scores", scale], ["scaled"]),
        h.make_node("Softmax", ["scaled"], ["attn"], axis=-1),
        h.make_node("MatMul", ["attn", "v.t"], ["ctx"]),
        h.make_node("Transpose", ["ctx"], ["ctx.t"], perm=[0, 2, 1, 3]),
        h.make_node("Reshape", ["ctx.t", merge_shape], ["ctx.m"]),
    ]
    linear("ctx.m", "proj", dim, dim)
    n.append(h.make_node("Add", ["x", "proj"], ["res1"]))
    ln2 = layernorm("res1", "ln2")
    linear(ln2, "fc1", dim, 4 * dim)
    sqrt2 = w.const("sqrt2", np.array(np.sqrt(2.0), np.float32))
    one = w.const("one", np.array(1.0, np.float32))
    half = w.const("half", np.array(0.5, np.float32))
    n += [
        h.make_node("Div", ["fc1", sqrt2], ["g.d"]),
        h.make_node("Erf", ["g.d"], ["g.e"]),
        h.make_node("Add", ["g.e", one], ["g.a"]),
        h.make_node("Mul", ["fc1", "g.a"], ["g.m"]),
        h.make_node("Mul", ["g.m", half], ["gelu"]),
    ]
    linear("gelu", "fc2", 4 * dim, dim)
    n.append(h.make_node("Add", ["res1", "fc2"], ["y"]))
    graph = h.make_graph(
        n,
        "encoder",
        [h.make_tensor_value_info("x", TensorProto.FLOAT, [1, seq, dim])],
        [h.make_tensor_value_info("y", TensorProto.FLOAT, [1, seq, dim])],
        w.items,
    )
    return _model(graph)


def multi_io() -> onnx.ModelProto:
    """Inputs float32 + int64 + bool; outputs float32, int64 and bool."""
    w = _Weights(3)
    nodes = [
        h.make_node("Gather", [w.add("table", (10, 4)), "ids"], ["emb"], axis=0),
        h.make_node("Add", ["emb", "x"], ["sum"]),
        h.make_node("Where", ["mask", "sum", "x"], ["mixed"]),
        h.make_node("ArgMax", ["mixed"], ["best"], axis=-1, keepdims=0),
        h.make_node("Greater", ["mixed", w.const("zero", np.array(0.0, np.float32))], ["positive"]),
        h.make_node("Cast", ["ids"], ["ids32"], to=TensorProto.INT32),
        h.make_node("ReduceSum", ["ids32"], ["id_sum"], keepdims=0),
    ]
    graph = h.make_graph(
        nodes,
        "multi_io",
        [
            h.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4]),
            h.make_tensor_value_info("ids", TensorProto.INT64, [2, 3]),
            h.make_tensor_value_info("mask", TensorProto.BOOL, [2, 3, 4]),
        ],
        [
            h.make_tensor_value_info("mixed", TensorProto.FLOAT, [2, 3, 4]),
            h.make_tensor_value_info("best", TensorProto.INT64, [2, 3]),
            h.make_tensor_value_info("positive", TensorProto.BOOL, [2, 3, 4]),
            h.make_tensor_value_info("id_sum", TensorProto.INT32, []),
        ],
        w.items,
    )
    return _model(graph)


def add_one(shape=(1, 4)) -> onnx.ModelProto:
    """One Add: the model that measures the loader's per-call overhead."""
    graph = h.make_graph(
        [h.make_node("Add", ["x", "y"], ["z"])],
        "add",
        [
            h.make_tensor_value_info("x", TensorProto.FLOAT, list(shape)),
            h.make_tensor_value_info("y", TensorProto.FLOAT, list(shape)),
        ],
        [h.make_tensor_value_info("z", TensorProto.FLOAT, list(shape))],
    )
    return _model(graph)


def big_mlp(megabytes: int = 100) -> onnx.ModelProto:
    """Two square MatMuls holding about `megabytes` of float32 weights."""
    width = int((megabytes * 2**20 / 8) ** 0.5)
    return mlp(1, (width, width, width))


def topk_rows() -> onnx.ModelProto:
    """TopK whose k is the symbolic batch dim read from Shape: not compilable symbolically."""
    w = _Weights(4)
    nodes = [
        h.make_node("Shape", ["x"], ["s"]),
        h.make_node(
            "Slice",
            ["s", w.const("st", np.array([0], np.int64)), w.const("en", np.array([1], np.int64))],
            ["k"],
        ),
        h.make_node("TopK", ["x", "k"], ["values", "indices"], axis=0, name="topk"),
    ]
    graph = h.make_graph(
        nodes,
        "topk",
        [h.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [
            h.make_tensor_value_info("values", TensorProto.FLOAT, ["N", 4]),
            h.make_tensor_value_info("indices", TensorProto.INT64, ["N", 4]),
        ],
        w.items,
    )
    return _model(graph)


MODELS = {
    "convnet": convnet,
    "mlp": mlp,
    "transformer": transformer_block,
    "multi_io": multi_io,
    "add": add_one,
    "topk": topk_rows,
}

if __name__ == "__main__":
    name = sys.argv[2] if len(sys.argv) > 2 else "convnet"
    onnx.save(MODELS[name](), sys.argv[1])
