"""fp16 models computed in fp32 on CPUs without fp16 arithmetic.

An ONNX model exported in float16 (for a GPU, or to halve its size) runs on an x86 CPU
without AVX512-FP16 by converting every element before and after every operation: LLVM has
no fp16 vector arithmetic there, and mlc's register tiles are sized for fp32. onnxruntime's CPU
kernels do the same thing once per operator (it inserts Casts to fp32). Here the whole graph
is retyped instead: fp16 weights become fp32 at compile time, Casts to fp16 cast to fp32, and
only the model's fp16 inputs and outputs are converted, at the edges. The bundle keeps the
model's signature (fp16 in, fp16 out); its results are at least as accurate as fp16's.
"""

from __future__ import annotations

import numpy as np

F16, F32 = 10, 1  # onnx.TensorProto.FLOAT16, FLOAT
_DTYPE_ATTRS = {
    "Cast": "to",
    "EyeLike": "dtype",
    "RandomNormal": "dtype",
    "RandomUniform": "dtype",
    "RandomNormalLike": "dtype",
    "RandomUniformLike": "dtype",
    "Multinomial": "dtype",
    "Bernoulli": "dtype",
}


def computes_in_fp16(model) -> bool:
    """Does the model hold fp16 weights or take or give fp16 tensors?"""
    graph = model.graph
    values = [*graph.input, *graph.output]
    return any(t.data_type == F16 for t in graph.initializer) or any(
        v.type.tensor_type.elem_type == F16 for v in values
    )


def upcast_fp16(model) -> None:
    """Retype the model's fp16 computation to fp32, in place (see the module docstring)."""
    from onnx import helper

    graph = model.graph
    renamed = {}
    edges = []
    consts = {t.name for t in graph.initializer}
    for value in graph.input:
        if value.name not in consts and value.type.tensor_type.elem_type == F16:
            renamed[value.name] = f"{value.name}__fp32"
            edges.append(helper.make_node("Cast", [value.name], [renamed[value.name]], to=F32))
    _retype_graph(graph, renamed)
    for value in graph.output:
        if value.type.tensor_type.elem_type == F16:
            inner = f"{value.name}__fp32"
            _rename_outputs(graph, value.name, inner)
            graph.node.append(helper.make_node("Cast", [inner], [value.name], to=F16))
    for node in reversed(edges):
        graph.node.insert(0, node)


def _retype_graph(graph, renamed: dict[str, str]) -> None:
    from onnx import numpy_helper

    for index, tensor in enumerate(graph.initializer):
        if tensor.data_type == F16:
            array = numpy_helper.to_array(tensor).astype(np.float32)
            graph.initializer[index].CopyFrom(numpy_helper.from_array(array, tensor.name))
    for node in graph.node:
        node.input[:] = [renamed.get(i, i) for i in node.input]
        for attr in node.attribute:
            if attr.name == _DTYPE_ATTRS.get(node.op_type) and attr.i == F16:
                attr.i = F32
            if attr.HasField("t") and attr.t.data_type == F16:
                array = numpy_helper.to_array(attr.t).astype(np.float32)
                attr.t.CopyFrom(numpy_helper.from_array(array, attr.t.name))
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                _retype_graph(sub, renamed)
                for value in [*sub.input, *sub.output]:
                    if value.type.tensor_type.elem_type == F16:
                        value.type.tensor_type.elem_type = F32
    for value in graph.value_info:
        if value.type.tensor_type.elem_type == F16:
            value.type.tensor_type.elem_type = F32


def _rename_outputs(graph, old: str, new: str) -> None:
    for node in graph.node:
        node.output[:] = [new if o == old else o for o in node.output]
        node.input[:] = [new if i == old else i for i in node.input]
