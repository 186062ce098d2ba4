"""Constant folding on the ONNX graph, before the Relax import.

Shapes of static-shaped tensors (`Shape`, `Size`) and every node whose inputs are all
constants become initializers, computed by onnx's reference implementation. That turns shape
arithmetic (Shape → Gather → Concat → Reshape) and axes computed from constants into the
constant inputs TVM's converters need ("cannot handle ShapeExpr inputs", "Only constant axes").
Only the top-level graph is folded; results are capped in size so weights are not duplicated.
"""

from __future__ import annotations

import warnings

import numpy as np

MAX_FOLDED_ELEMENTS = 1 << 16
MAX_ROUNDS = 8
_NEVER_FOLD = {
    "RandomNormal",
    "RandomNormalLike",
    "RandomUniform",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
    "If",
    "Loop",
    "Scan",
    "SequenceConstruct",
    "SequenceEmpty",
    "SequenceInsert",
    "SequenceErase",
    "SplitToSequence",
    "Optional",
}


def fold_constants(model):
    """Fold in rounds (shape inference between them) until nothing changes; in place. When
    inference leaves `Shape` nodes that the pinned input shapes fix, they are measured once
    (onnx_shapes.py) and folding goes on."""
    measured: dict[str, np.ndarray] | None = None
    for _ in range(MAX_ROUNDS):
        changed = _fold_round(model, static_shapes(model), measured or {})
        if measured is None:  # after the first round: measure what inference left
            measured = _measure_shapes(model, static_shapes(model))
            changed = changed or bool(measured)
        if not changed:
            break
    _remove_dead_nodes(model.graph)
    return model


def _measure_shapes(model, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Values of the Shape/Size nodes that inference left, measured where the pinned input
    shapes fix them."""
    from .onnx_shapes import measure_shape_nodes, value_dependent_shapes

    graph = model.graph
    consts = {t.name for t in graph.initializer}
    left = [
        n
        for n in graph.node
        if n.op_type in ("Shape", "Size")
        and n.domain in ("", "ai.onnx")
        and n.input[0] not in consts
        and n.input[0] not in shapes
    ]
    if not left:
        return {}
    dependent = value_dependent_shapes(graph)
    left = [n for n in left if n.input[0] not in dependent]
    return measure_shape_nodes(model, left) if left else {}


def _fold_round(model, shapes: dict[str, tuple[int, ...]], measured: dict) -> bool:
    from onnx import numpy_helper

    graph = model.graph
    consts = {t.name: t for t in graph.initializer}
    inputs = {v.name for v in graph.input} - set(consts)
    opsets = {o.domain: o.version for o in model.opset_import}
    kept, changed = [], False
    for node in graph.node:
        branch = _inline_if(graph, node, consts) if node.op_type == "If" else None
        if branch is not None:
            kept.extend(branch)
            changed = True
            continue
        values = _fold_node(node, consts, inputs, shapes, opsets, measured)
        if values is None:
            kept.append(node)
            continue
        for name, array in zip(node.output, values):
            if name:
                tensor = numpy_helper.from_array(np.asarray(array), name)
                graph.initializer.append(tensor)
                consts[name] = tensor
        changed = True
    if changed:
        del graph.node[:]
        graph.node.extend(kept)
    return changed


def _inline_if(graph, node, consts) -> list | None:
    """The nodes of the branch an If with a constant condition takes (its initializers as
    Constants, Identity nodes onto the If's outputs); None if the condition is not constant
    or a name the branch defines is already taken in the graph."""
    from onnx import helper, numpy_helper

    if node.input[0] not in consts:
        return None
    taken = {v.name for v in graph.input} | set(consts) | {o for n in graph.node for o in n.output}
    chosen = bool(numpy_helper.to_array(consts[node.input[0]]).reshape(-1)[0])
    wanted = "then_branch" if chosen else "else_branch"
    branch = next(a.g for a in node.attribute if a.name == wanted)
    defined = {o for n in branch.node for o in n.output} | {t.name for t in branch.initializer}
    if defined & taken:
        return None
    nodes = [helper.make_node("Constant", [], [t.name], value=t) for t in branch.initializer]
    nodes += list(branch.node)
    outputs = zip(branch.output, node.output)
    return nodes + [helper.make_node("Identity", [b.name], [o]) for b, o in outputs if o]


def _fold_node(node, consts, inputs, shapes, opsets, measured) -> list | None:
    if node.domain not in ("", "ai.onnx") or node.op_type in _NEVER_FOLD:
        return None
    if any(a.HasField("g") or a.graphs for a in node.attribute):
        return None
    if node.op_type in ("Shape", "Size") and node.input[0] not in consts:
        shape = shapes.get(node.input[0])
        if shape is None:
            value = measured.get(node.output[0])
            return None if value is None else [value]
        return [_shape_value(node, shape)]
    present = [i for i in node.input if i]
    if not all(i in consts for i in present) or any(i in inputs for i in present):
        return None
    if node.op_type == "Constant":
        return _constant_value(node)
    if sum(_size(consts[i]) for i in present) > 4 * MAX_FOLDED_ELEMENTS:
        return None
    return _evaluate(node, consts, opsets)


def _constant_value(node) -> list | None:
    """A numeric Constant's value (the normalised `value` attribute), to become an initializer."""
    from onnx import numpy_helper

    attr = node.attribute[0] if len(node.attribute) == 1 else None
    if attr is None or attr.name != "value":
        return None
    array = numpy_helper.to_array(attr.t)
    return None if array.dtype.kind in "OSU" else [array]


def _shape_value(node, shape: tuple[int, ...]) -> np.ndarray:
    if node.op_type == "Size":
        return np.array(int(np.prod(shape, dtype=np.int64)), dtype=np.int64)
    attrs = {a.name: a.i for a in node.attribute}
    start, end = attrs.get("start", 0), attrs.get("end", len(shape))
    return np.array(shape[slice(start, end)], dtype=np.int64)


def _evaluate(node, consts, opsets) -> list | None:
    """Run one node with onnx's reference implementation; None if it cannot or the result
    is too large to be worth a constant."""
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    feeds = {i: numpy_helper.to_array(consts[i]) for i in node.input if i}
    graph = helper.make_graph(
        [node],
        "fold",
        [helper.make_tensor_value_info(i, consts[i].data_type, None) for i in feeds],
        [helper.make_tensor_value_info(o, 0, None) for o in node.output if o],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()]
    )
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            results = ReferenceEvaluator(model).run(None, feeds)
    except Exception:  # the reference implementation lacks or rejects this node: keep it
        return None
    if any(not isinstance(r, np.ndarray) or r.size > MAX_FOLDED_ELEMENTS for r in results):
        return None
    if any(r.dtype == object for r in results):
        return None
    return results


def static_shapes(model) -> dict[str, tuple[int, ...]]:
    """Fully static shapes of graph inputs and inferred intermediates."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(_without_weights(model), strict_mode=False)
    except Exception:  # inference fails on some valid models: fold what needs no shapes
        inferred = model
    shapes = {}
    graph = inferred.graph
    for value in [*graph.input, *graph.value_info, *graph.output]:
        ttype = value.type.tensor_type
        if not ttype.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in ttype.shape.dim]
        if all(d is not None for d in dims):
            shapes[value.name] = tuple(dims)
    return shapes


def _without_weights(model):
    """A view of `model` for shape inference, its large initializers declared as graph inputs
    of the same type: infer_shapes serialises the model it is given (every folding round), and
    no shape depends on the values of a tensor that large."""
    from onnx import helper

    graph = model.graph
    big = [t for t in graph.initializer if _size(t) > MAX_FOLDED_ELEMENTS]
    if not big:
        return model
    names = {t.name for t in big}
    declared = {v.name for v in graph.input}
    inputs = [*graph.input]
    inputs += [
        helper.make_tensor_value_info(t.name, t.data_type, t.dims)
        for t in big
        if t.name not in declared
    ]
    light = helper.make_graph(
        graph.node,
        graph.name,
        inputs,
        graph.output,
        [t for t in graph.initializer if t.name not in names],
        value_info=graph.value_info,
    )
    result = helper.make_model(light, opset_imports=model.opset_import, ir_version=model.ir_version)
    result.functions.extend(model.functions)
    return result


def onnx_opset(model, default: int | None = None) -> int | None:
    """The model's ai.onnx opset version (`default` if it imports none)."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default)


def _remove_dead_nodes(graph) -> None:
    """Drop nodes none of whose outputs are used (folding leaves `Shape`'s producers so)."""
    while True:
        used = {o.name for o in graph.output}
        for node in graph.node:
            used |= node_reads(node)
        keep = [n for n in graph.node if any(o in used for o in n.output if o)]
        if len(keep) == len(graph.node):
            return
        del graph.node[:]
        graph.node.extend(keep)


def node_reads(node) -> set[str]:
    """Every name a node reads: its inputs, and whatever its subgraphs (If branches, Loop
    bodies) read, since they may read outer-scope values implicitly."""
    names = set(node.input)
    for attr in node.attribute:
        for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
            names.update(o.name for o in sub.output)
            for inner in sub.node:
                names |= node_reads(inner)
    return names


def _size(tensor) -> int:
    return int(np.prod(tensor.dims, dtype=np.int64)) if tensor.dims else 1
