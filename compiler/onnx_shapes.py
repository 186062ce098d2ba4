"""Shapes that onnx's shape inference cannot give but that are fixed once the inputs are.

Exporters compute pads, reshape targets and reduction axes from `Shape` of intermediate
tensors (Swin's window partition, CLIP's causal mask, SSD's anchors). onnx's inference loses
the sizes after the first Reshape to a computed shape, so those `Shape` nodes stay and TVM's
importer meets run-time values where it needs constants ("Dynamic pads are not supported",
"cannot handle ShapeExpr inputs").

When every input has a fixed shape, a tensor's shape is a compile-time constant unless it
depends on input *values*: NonZero, Unique and NonMaxSuppression outputs, a Reshape or Expand
to a shape computed from an input, a Loop. `value_dependent_shapes` finds those by a taint
walk; every other `Shape`/`Size` output is measured by running the model once in onnxruntime
on inputs of the pinned shapes and becomes a constant.
"""

from __future__ import annotations

import numpy as np

# Ops whose output shape is read from the values of these inputs (an index of -1: all inputs).
_SHAPE_FROM_VALUES = {
    "Reshape": (1,),
    "Expand": (1,),
    "Tile": (1,),
    "Slice": (1, 2, 3, 4),
    "Pad": (1, 3),
    "ConstantOfShape": (0,),
    "Range": (-1,),
    "Resize": (1, 2, 3),
    "Upsample": (1,),
    "OneHot": (1,),
    "TopK": (1,),
    "Squeeze": (1,),
    "Unsqueeze": (1,),
    "Split": (1,),
    "CenterCropPad": (1,),
    "Col2Im": (1, 2),
    "MaxUnpool": (2,),
    "DFT": (1,),
    "STFT": (2, 3),
    "ReduceSum": (1,),
    "ReduceMean": (1,),
    "ReduceMax": (1,),
    "ReduceMin": (1,),
    "ReduceProd": (1,),
    "ReduceL1": (1,),
    "ReduceL2": (1,),
    "ReduceLogSum": (1,),
    "ReduceLogSumExp": (1,),
    "ReduceSumSquare": (1,),
}
# Ops whose output shape depends on input values whatever the inputs are.
_DATA_DEPENDENT = {
    "NonZero",
    "Unique",
    "NonMaxSuppression",
    "Compress",
    "Loop",
    "Scan",
    "If",
    "StringSplit",
    "RegexFullMatch",
    "HannWindow",
    "HammingWindow",
    "BlackmanWindow",
    "MelWeightMatrix",
}
_SEQUENCE_PREFIXES = ("Sequence", "SplitToSequence", "ConcatFromSequence", "Optional")
MAX_MEASURED_BYTES = 1 << 31  # onnxruntime takes a model as one protobuf: 2 GB at most


def value_dependent_shapes(graph) -> set[str]:
    """Names of the tensors whose shapes may depend on the values of the graph inputs
    (not just on their shapes), in the top-level graph."""
    return set(_taint(graph)[1])


def measure_shape_nodes(model, wanted: list) -> dict[str, np.ndarray]:
    """The values of the `wanted` Shape/Size nodes' outputs, from one onnxruntime run of
    `model` on inputs of its (fully static) input shapes; {} where that cannot be done."""
    import onnx

    graph = model.graph
    consts = {t.name for t in graph.initializer}
    feeds = {}
    for value in graph.input:
        if value.name in consts:
            continue
        ttype = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in ttype.shape.dim]
        if not ttype.HasField("shape") or any(d <= 0 for d in dims):
            return {}  # a symbolic dim: shapes are not fixed
        try:
            dtype = onnx.helper.tensor_dtype_to_np_dtype(ttype.elem_type)
        except (KeyError, TypeError, ValueError):
            return {}
        if dtype.kind not in "biuf":
            return {}
        feeds[value.name] = np.ones(dims, dtype) if dtype.kind == "f" else np.zeros(dims, dtype)
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    names = [n.output[0] for n in wanted]
    probe.graph.output.extend(
        onnx.helper.make_tensor_value_info(name, onnx.TensorProto.INT64, None) for name in names
    )
    if probe.ByteSize() >= MAX_MEASURED_BYTES:
        return {}
    try:
        results = _run(probe, feeds, names)
    except Exception:  # onnxruntime refuses the model: fold what can be folded without
        return {}
    return {name: np.asarray(r, dtype=np.int64) for name, r in zip(names, results)}


def _run(model, feeds: dict, names: list[str]) -> list:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(
        model.SerializeToString(), opts, providers=["CPUExecutionProvider"]
    )
    return session.run(names, feeds)


def compile_time_values(graph) -> list[tuple]:
    """The nodes whose inputs carry values known only at run time: (node, the positions it
    needs as constants, {position: sources}) in graph order, where a source is
    ("input", name) for a graph input's value or ("node", op type, name) for a size that a
    data-dependent op (NonZero, NonMaxSuppression, ...) decides. The positions it needs are a
    shape read from values (Reshape's shape, Pad's pads), an If's condition, a Loop's trip
    count."""
    return _taint(graph)[2]


def _taint(graph) -> tuple[dict, dict, list]:
    """One walk of the top-level graph: for each tensor, where its values come from at run
    time (graph inputs, or sizes that data-dependent ops decided), where its shape does, and
    the nodes that read such values (compile_time_values). Shape/Size outputs depend on
    shapes only, which pinning fixes, unless a data-dependent op decided them."""
    consts = {t.name for t in graph.initializer}
    values: dict[str, frozenset] = {
        v.name: frozenset([("input", v.name)]) for v in graph.input if v.name not in consts
    }
    shapes: dict[str, frozenset] = {}
    found = []
    for node in graph.node:
        ins = [i for i in node.input if i]
        per_input = {
            pos: values.get(name, frozenset()) for pos, name in enumerate(node.input) if name
        }
        if any(per_input.values()):
            found.append((node, _value_reads(node), per_input))
        if node.op_type in ("Shape", "Size"):
            out_values = shapes.get(node.input[0], frozenset())
        else:
            out_values = frozenset().union(*(values.get(i, ()) for i in ins))
        out_shapes = frozenset().union(*(shapes.get(i, ()) for i in ins))
        if node.op_type in _DATA_DEPENDENT or node.op_type.startswith(_SEQUENCE_PREFIXES):
            out_shapes |= {("node", node.op_type, node.name or node.output[0])}
        out_shapes |= frozenset().union(
            *(values.get(node.input[i], ()) for i in _value_reads(node))
        )
        for out in node.output:
            if out and out_values:
                values[out] = out_values
            if out and out_shapes:
                shapes[out] = out_shapes
    return values, shapes, found


def _value_reads(node) -> tuple[int, ...]:
    n = len(node.input)
    if node.op_type == "If":
        return (0,)
    if node.op_type == "Loop":
        return tuple(i for i in (0, 1) if i < n and node.input[i])
    where = _SHAPE_FROM_VALUES.get(node.op_type, ())
    if where == (-1,):
        return tuple(range(n))
    return tuple(i for i in where if i < n and node.input[i])
