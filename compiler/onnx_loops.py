"""ONNX Loop, unrolled on the ONNX graph: Relax has no loop construct the importer can target.

A Loop unrolls when its trip count is a constant (an initializer, after folding and --bind)
and it never stops early: no condition input, or a constant true one whose body passes the
condition through unchanged. Anything else is a clear "not supported" error.
"""

from __future__ import annotations

import numpy as np

from .errors import ModelError

MAX_TRIPS = 1024


def unroll_loops(model) -> bool:
    """Replace every top-level Loop node by copies of its body; True if any was unrolled."""
    from .onnx_fold import onnx_opset

    consts = {t.name: t for t in model.graph.initializer}  # read only for trip counts
    axes_as_input = onnx_opset(model, 13) >= 13

    def unroll(node, tag: str):
        return _Unroller(node, tag, axes_as_input).unroll(_trip_count(node, consts))

    return replace_nodes(model.graph, "Loop", unroll)


def replace_nodes(graph, op_type: str, expand) -> bool:
    """Replace each top-level `op_type` node by the nodes and initializers that
    `expand(node, tag)` returns (`tag` tells the node's copies apart); True if any was."""
    nodes, inits, changed = [], [], False
    for index, node in enumerate(graph.node):
        if node.op_type != op_type or node.domain not in ("", "ai.onnx"):
            nodes.append(node)
            continue
        new_nodes, new_inits = expand(node, f"{index}")
        nodes.extend(new_nodes)
        inits.extend(new_inits)
        changed = True
    if changed:
        del graph.node[:]
        graph.node.extend(nodes)
        graph.initializer.extend(inits)
    return changed


def _trip_count(node, consts) -> int:
    from onnx import numpy_helper

    def scalar(value: str):
        return numpy_helper.to_array(consts[value]).reshape(-1)[0]

    name = node.name or "<unnamed>"
    m = node.input[0] if node.input else ""
    cond = node.input[1] if len(node.input) > 1 else ""
    if not m or m not in consts:
        raise ModelError(
            f"Loop {name!r} without a constant trip count is not supported: mlc unrolls loops",
            hint="make the trip count a constant, or freeze that input with --bind NAME=FILE.npy",
        )
    if cond and (cond not in consts or not bool(scalar(cond))):
        raise ModelError(
            f"Loop {name!r} with a run-time start condition is not supported: mlc unrolls loops",
            hint="freeze the condition input with --bind NAME=FILE.npy",
        )
    body = next(a.g for a in node.attribute if a.name == "body")
    if cond and body.output[0].name != body.input[1].name:
        passthrough = any(
            n.op_type == "Identity"
            and n.input[0] == body.input[1].name
            and n.output[0] == body.output[0].name
            for n in body.node
        )
        if not passthrough:
            limit = int(scalar(m))
            trips = counted_trips(node, body, consts, min(limit, MAX_TRIPS + 1))
            if trips is None:
                raise ModelError(
                    f"Loop {name!r} computes its condition in the body from values known only "
                    "at run time (an early exit): this is not supported, mlc unrolls loops "
                    "whose trip count is known at compile time"
                )
            if trips > MAX_TRIPS:
                raise ModelError(
                    f"Loop {name!r} runs more than {MAX_TRIPS} times: mlc unrolls loops of 1 "
                    f"to {MAX_TRIPS} iterations"
                )
            return trips
    trips = int(scalar(m))
    if not 0 < trips <= MAX_TRIPS:
        raise ModelError(
            f"Loop {name!r} runs {trips} times: mlc unrolls loops of 1 to {MAX_TRIPS} iterations"
        )
    return trips


def counted_trips(node, body, consts, limit: int) -> int | None:
    """How many times a Loop whose body computes its condition runs, when that condition is
    a function of the iteration number, constants and loop-carried counters that start from
    constants (tf2onnx's while loops: `i < timesteps and n < max`): the condition's part of
    the body is run on its own, iteration by iteration. None when it reads anything else."""
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    produced = {o: n for n in body.node for o in n.output if o}
    inputs = [v.name for v in body.input]
    local = {t.name: t for t in body.initializer}
    carried_at = {name: k for k, name in enumerate(inputs) if k >= 2}
    wanted, cone, used_carried, outer = [body.output[0].name], {}, set(), set()
    while wanted:
        name = wanted.pop()
        if name in cone or name in local or name in inputs[:2] or name in outer:
            continue
        if name in carried_at:
            k = carried_at[name]
            if k in used_carried:
                continue
            used_carried.add(k)
            if node.input[k] not in consts:
                return None  # a carried value that starts from a run-time value
            wanted.append(body.output[k - 1].name)
            continue
        producer = produced.get(name)
        if producer is None:
            if name not in consts:
                return None  # an outer-scope value known only at run time
            outer.add(name)
            continue
        if producer.domain not in ("", "ai.onnx") or any(
            a.HasField("g") or a.graphs for a in producer.attribute
        ):
            return None
        cone[name] = producer
        wanted.extend(i for i in producer.input if i)
    order = [n for n in body.node if any(o in cone for o in n.output)]
    carried = sorted(used_carried)
    feeds_in = [inputs[0], inputs[1], *(inputs[k] for k in carried)]
    outs = [body.output[0].name, *(body.output[k - 1].name for k in carried)]
    graph = helper.make_graph(
        order,
        "loop_condition",
        [helper.make_tensor_value_info(n, 0, None) for n in feeds_in],
        [helper.make_tensor_value_info(n, 0, None) for n in outs],
        [*local.values(), *(consts[n] for n in outer)],
    )
    try:
        evaluator = ReferenceEvaluator(helper.make_model(graph))
        state = [numpy_helper.to_array(consts[node.input[k]]) for k in carried]
        for it in range(limit):
            feed = dict(zip(feeds_in, [np.array(it, np.int64), np.array(True), *state]))
            cond, *state = evaluator.run(None, feed)
            if not bool(np.asarray(cond).reshape(-1)[0]):
                return it + 1
    except Exception:  # the reference implementation rejects the condition's nodes
        return None
    return limit


class _Unroller:
    def __init__(self, node, tag: str, axes_as_input: bool):
        self.node = node
        self.tag = tag
        self.axes_as_input = axes_as_input
        self.body = next(a.g for a in node.attribute if a.name == "body")

    def unroll(self, trips: int):
        from onnx import helper, numpy_helper

        body, node = self.body, self.node
        carried = list(node.input[2:])
        n_carried = len(carried)
        scans: list[list[str]] = [[] for _ in body.output[1 + n_carried :]]
        nodes, inits = [], []
        for it in range(trips):
            rename, body_nodes, body_inits, outs = copy_body(body, f"__loop{self.tag}_it{it}")
            iter_name, cond_name = body.input[0].name, body.input[1].name
            inits.append(numpy_helper.from_array(np.array(it, np.int64), rename[iter_name]))
            inits.append(numpy_helper.from_array(np.array(True), rename[cond_name]))
            for value, init in zip(body.input[2:], carried):
                nodes.append(helper.make_node("Identity", [init], [rename[value.name]]))
            inits.extend(body_inits)
            nodes.extend(body_nodes)
            carried = outs[1 : 1 + n_carried]
            for k, name in enumerate(outs[1 + n_carried :]):
                scans[k].append(name)
        for out, final in zip(node.output[:n_carried], carried):
            if out:
                nodes.append(helper.make_node("Identity", [final], [out]))
        for out, parts in zip(node.output[n_carried:], scans):
            if out:
                stack_nodes, stack_inits = stack(parts, out, 0, self.axes_as_input)
                nodes.extend(stack_nodes)
                inits.extend(stack_inits)
        return nodes, inits


def copy_body(body, suffix: str):
    """A copy of a Loop/Scan body with every name it defines suffixed: (the renaming, its
    nodes, its initializers, its output names). The caller defines the renamed inputs."""
    rename = {v.name: v.name + suffix for v in body.input}
    rename.update({o: o + suffix for n in body.node for o in n.output if o})
    rename.update({t.name: t.name + suffix for t in body.initializer})
    inits = []
    for t in body.initializer:
        copy = type(t)()
        copy.CopyFrom(t)
        copy.name = rename[t.name]
        inits.append(copy)
    nodes = [_renamed(n, rename) for n in body.node]
    return rename, nodes, inits, [rename.get(o.name, o.name) for o in body.output]


def stack(parts: list[str], out: str, axis: int, axes_as_input: bool):
    """(nodes, initializers) that Unsqueeze each part at `axis` (of the stacked rank) and
    concatenate them there into `out`; Unsqueeze takes its axes as an input from opset 13."""
    from onnx import helper, numpy_helper

    nodes, inits, expanded = [], [], []
    axes_name = f"{out}__axes"
    if axes_as_input:
        inits.append(numpy_helper.from_array(np.array([axis], np.int64), axes_name))
    for part in parts:
        name = f"{part}__unsq"
        if axes_as_input:
            nodes.append(helper.make_node("Unsqueeze", [part, axes_name], [name]))
        else:
            nodes.append(helper.make_node("Unsqueeze", [part], [name], axes=[axis]))
        expanded.append(name)
    nodes.append(helper.make_node("Concat", expanded, [out], axis=axis))
    return nodes, inits


def _renamed(node, rename: dict[str, str]):
    copy = type(node)()
    copy.CopyFrom(node)
    copy.input[:] = [rename.get(i, i) if i else i for i in node.input]
    copy.output[:] = [rename.get(o, o) if o else o for o in node.output]
    for attr in copy.attribute:
        for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
            _rename_outer_refs(sub, rename)
    return copy


def _rename_outer_refs(graph, rename: dict[str, str]) -> None:
    """Names a nested subgraph reads from the loop body (implicit outer-scope inputs)."""
    local = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    local |= {o for n in graph.node for o in n.output}
    outer = {k: v for k, v in rename.items() if k not in local}
    for n in graph.node:
        n.input[:] = [outer.get(i, i) for i in n.input]
        for attr in n.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                _rename_outer_refs(sub, outer)
    for o in graph.output:
        o.name = outer.get(o.name, o.name)
