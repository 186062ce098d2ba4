"""The values that make sense for a model's integer inputs, read from the graph.

Random token ids drawn from [0, 4) test an embedding on four rows; drawn from a wide range
they index past the table, where onnxruntime refuses the input and mlc's SafeIndexing clamps.
A token id reaches its table through a few shape-only ops (Cast, Unsqueeze, Reshape, ...), so
following each integer input forward to the `Gather` it indexes gives the table's size. An
input named like an attention mask is sampled as ones. `mlc run` and `mlc bench` draw random
inputs from these ranges (the manifest's `sample_range`, half-open); `--input-range` overrides.
"""

from __future__ import annotations

import re

# Ops that pass their first input's values on unchanged (in some order or shape).
_PASS_VALUES = {
    "Cast",
    "Identity",
    "Unsqueeze",
    "Squeeze",
    "Reshape",
    "Flatten",
    "Expand",
    "Slice",
    "Transpose",
    "Tile",
    "CastLike",
}
_MASK = re.compile(r"mask", re.IGNORECASE)


def sample_ranges(model) -> dict[str, tuple[int, int]]:
    """{input name: (low, high)} for integer and bool inputs whose valid values the graph
    shows: an index into a table of known size, or a mask (ones)."""
    import onnx

    graph = model.graph
    consts = {t.name: t for t in graph.initializer}
    shapes = _known_shapes(model, consts)
    readers: dict[str, list] = {}
    for node in graph.node:
        for i, name in enumerate(node.input):
            readers.setdefault(name, []).append((node, i))
    ranges = {}
    for value in graph.input:
        if value.name in consts:
            continue
        elem = value.type.tensor_type.elem_type
        np_kind = onnx.helper.tensor_dtype_to_np_dtype(elem).kind if elem else "?"
        if np_kind not in "iub":
            continue
        if _MASK.search(value.name):
            ranges[value.name] = (1, 2)
            continue
        bound = _table_size(value.name, readers, shapes)
        if bound:
            ranges[value.name] = (0, bound)
    return ranges


def _table_size(name: str, readers: dict, shapes: dict) -> int | None:
    """The smallest table that values of `name` index (following value-preserving ops)."""
    sizes, seen, todo = [], set(), [name]
    while todo:
        tensor = todo.pop()
        if tensor in seen:
            continue
        seen.add(tensor)
        for node, position in readers.get(tensor, []):
            if node.op_type in _PASS_VALUES and position == 0:
                todo.extend(o for o in node.output if o)
            elif node.op_type == "Gather" and position == 1:
                shape = shapes.get(node.input[0])
                axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
                if shape and -len(shape) <= axis < len(shape) and shape[axis] > 0:
                    sizes.append(shape[axis])
            elif node.op_type == "OneHot" and position == 0:
                depth = shapes.get(("value", node.input[1]))
                if depth:
                    sizes.append(depth)
    return min(sizes) if sizes else None


def _known_shapes(model, consts) -> dict:
    """Static shapes of initializers, graph inputs and inferred intermediates, plus the scalar
    values of small integer constants (OneHot's depth) under ("value", name)."""
    from onnx import numpy_helper

    from .onnx_fold import static_shapes

    shapes: dict = {name: tuple(t.dims) for name, t in consts.items()}
    shapes.update(static_shapes(model))
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            shapes[node.output[0]] = tuple(node.attribute[0].t.dims)
    for name, tensor in consts.items():
        if len(tensor.dims) <= 1 and _elements(tensor) == 1 and tensor.data_type in (6, 7):
            shapes[("value", name)] = int(numpy_helper.to_array(tensor).reshape(-1)[0])
    return shapes


def _elements(tensor) -> int:
    count = 1
    for d in tensor.dims:
        count *= d
    return count
