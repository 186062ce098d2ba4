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
    from onnx import numpy_helper

    graph = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    nodes, changed = [], False
    for index, node in enumerate(graph.node):
        if node.op_type != "Loop" or node.domain not in ("", "ai.onnx"):
            nodes.append(node)
            continue
        trips = _trip_count(node, consts)
        new_nodes, inits = _Unroller(node, f"{index}", opset).unroll(trips)
        nodes.extend(new_nodes)
        graph.initializer.extend(inits)
        changed = True
    if changed:
        del graph.node[:]
        graph.node.extend(nodes)
    return changed


def _trip_count(node, consts) -> int:
    name = node.name or "<unnamed>"
    m = node.input[0] if node.input else ""
    cond = node.input[1] if len(node.input) > 1 else ""
    if not m or m not in consts:
        raise ModelError(
            f"Loop {name!r} without a constant trip count is not supported: mlc unrolls loops",
            hint="make the trip count a constant, or freeze that input with --bind NAME=FILE.npy",
        )
    if cond and (cond not in consts or not bool(consts[cond].reshape(-1)[0])):
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
            raise ModelError(
                f"Loop {name!r} computes its condition in the body (an early exit): this is not "
                "supported, mlc unrolls loops with a fixed trip count"
            )
    trips = int(consts[m].reshape(-1)[0])
    if not 0 < trips <= MAX_TRIPS:
        raise ModelError(
            f"Loop {name!r} runs {trips} times: mlc unrolls loops of 1 to {MAX_TRIPS} iterations"
        )
    return trips


class _Unroller:
    def __init__(self, node, tag: str, opset: int):
        self.node = node
        self.tag = tag
        self.opset = opset
        self.body = next(a.g for a in node.attribute if a.name == "body")

    def unroll(self, trips: int):
        from onnx import helper, numpy_helper

        body, node = self.body, self.node
        carried = list(node.input[2:])
        n_carried = len(carried)
        scans: list[list[str]] = [[] for _ in body.output[1 + n_carried :]]
        nodes, inits = [], []
        for it in range(trips):
            suffix = f"__loop{self.tag}_it{it}"
            rename = {v.name: v.name + suffix for v in body.input}
            rename.update({o: o + suffix for n in body.node for o in n.output if o})
            rename.update({t.name: t.name + suffix for t in body.initializer})
            iter_name, cond_name = body.input[0].name, body.input[1].name
            inits.append(numpy_helper.from_array(np.array(it, np.int64), rename[iter_name]))
            inits.append(numpy_helper.from_array(np.array(True), rename[cond_name]))
            for value, init in zip(body.input[2:], carried):
                nodes.append(helper.make_node("Identity", [init], [rename[value.name]]))
            for t in body.initializer:
                copy = type(t)()
                copy.CopyFrom(t)
                copy.name = rename[t.name]
                inits.append(copy)
            nodes.extend(_renamed(n, rename) for n in body.node)
            outs = [rename.get(o.name, o.name) for o in body.output]
            carried = outs[1 : 1 + n_carried]
            for k, name in enumerate(outs[1 + n_carried :]):
                scans[k].append(name)
        for out, final in zip(node.output[:n_carried], carried):
            if out:
                nodes.append(helper.make_node("Identity", [final], [out]))
        for out, parts in zip(node.output[n_carried:], scans):
            if out:
                nodes.extend(self._stack(parts, out))
        return nodes, inits

    def _stack(self, parts: list[str], out: str):
        from onnx import helper, numpy_helper

        nodes, expanded = [], []
        axes_name = f"{out}__axes"
        for part in parts:
            name = f"{part}__unsq"
            if self.opset >= 13:
                nodes.append(helper.make_node("Unsqueeze", [part, axes_name], [name]))
            else:
                nodes.append(helper.make_node("Unsqueeze", [part], [name], axes=[0]))
            expanded.append(name)
        if self.opset >= 13:
            axes = numpy_helper.from_array(np.array([0], np.int64), axes_name)
            nodes.insert(0, helper.make_node("Constant", [], [axes_name], value=axes))
        nodes.append(helper.make_node("Concat", expanded, [out], axis=0))
        return nodes


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
