"""FuseDepthwiseProject: a depthwise conv and the 1x1 conv that reads its output, one kernel.

MobileNet-style blocks run expand (1x1) -> depthwise (3x3) -> project (1x1). FuseOps gives each
conv a kernel of its own, so the depthwise conv writes its whole output (up to 56x56x144 floats,
1.8 MB) to memory and the 1x1 conv reads it back from L3. Fused into one kernel, the schedule
(schedules/cpu_depthwise.py, `DepthwiseProject`) computes the depthwise rows each parallel task
of the 1x1 conv needs right before it reads them, while they are in L1: no recomputation (a 1x1
conv needs only the pixel it writes) and no round trip through memory.

Runs between FuseOps and FuseTIR (CPU, --opt-level 3): it merges the two fused Relax functions
into one, which FuseTIR then lowers to one PrimFunc.
"""

from __future__ import annotations

import tvm
from tvm import relax


@tvm.transform.module_pass(opt_level=0, name="FuseDepthwiseProject")
class FuseDepthwiseProject:
    """Merge each depthwise-conv kernel with the 1x1-conv kernel that is its only consumer."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        builder = relax.BlockBuilder(mod)  # gives the merged functions typed GlobalVars
        merged: dict[str, relax.GlobalVar] = {}
        rewritten = {
            gv: _rewrite(mod, func, merged, builder)
            for gv, func in mod.functions.items()
            if isinstance(func, relax.Function) and not _primitive(func)
        }
        if not merged:
            return mod
        out = builder.get()
        for gv, func in rewritten.items():
            out[gv] = func
        return relax.transform.DeadCodeElimination()(relax.transform.Normalize()(out))


def _primitive(func: relax.Function) -> bool:
    return bool(func.attrs and int(func.attrs.get("Primitive", 0)))


def _conv(mod: tvm.IRModule, func: relax.Function):
    """(data shape, weight shape, data param index) of the conv that `func` (a fused kernel)
    starts with, or None: its first binding calls a `conv2d` PrimFunc on two of its params."""
    blocks = func.body.blocks
    if not blocks or not blocks[0].bindings:
        return None
    call = blocks[0].bindings[0].value
    if not (isinstance(call, relax.Call) and call.op.same_as(tvm.ir.Op.get("relax.call_tir"))):
        return None
    callee = call.args[0]
    if not callee.name_hint.startswith("conv2d") or not isinstance(mod[callee], tvm.tirx.PrimFunc):
        return None
    args = list(call.args[1].fields)
    if len(args) != 2 or not all(isinstance(a, relax.Var) for a in args):
        return None
    shapes = [_static_shape(a) for a in args]
    params = list(func.params)
    if None in shapes or not any(args[0].same_as(p) for p in params):
        return None
    return shapes[0], shapes[1], next(i for i, p in enumerate(params) if p.same_as(args[0]))


def _static_shape(expr) -> tuple[int, ...] | None:
    sinfo = expr.ty
    if not isinstance(sinfo, relax.TensorType) or sinfo.shape is None:
        return None
    dims = sinfo.shape.values if hasattr(sinfo.shape, "values") else None
    if dims is None or not all(isinstance(d, tvm.tirx.IntImm) for d in dims):
        return None
    return tuple(int(d) for d in dims)


def _is_depthwise(conv) -> bool:
    """NHWC data, HWIO weight with one input channel per group: [KH, KW, 1, C]."""
    data, weight, _ = conv
    return len(data) == 4 and len(weight) == 4 and weight[2] == 1 and weight[3] == data[3] > 1


def _is_pointwise(conv, channels: int) -> bool:
    """NHWC data, HWIO weight [1, 1, C, K]: a 1x1 conv over `channels` channels."""
    data, weight, _ = conv
    return len(weight) == 4 and weight[:3] == (1, 1, channels) and data[3] == channels


def _rewrite(mod, func: relax.Function, merged: dict, builder) -> relax.Function:
    body = func.body
    uses = _use_counts(func)
    new_blocks = []
    changed = False
    for block in body.blocks:
        producers: dict = {}  # var -> (binding, fused function gv), within this block only
        bindings = []
        for binding in block.bindings:
            value = binding.value
            callee = value.op if isinstance(value, relax.Call) else None
            if isinstance(callee, relax.GlobalVar) and isinstance(mod[callee], relax.Function):
                pair = _pair(mod, producers, value, uses)
                if pair is not None:
                    dw_binding, dw_gv, index = pair
                    new_gv = _merge(mod, dw_gv, callee, index, merged, builder)
                    args = list(dw_binding.value.args) + [
                        a for i, a in enumerate(value.args) if i != index
                    ]
                    bindings.remove(dw_binding)
                    binding = relax.VarBinding(binding.var, relax.Call(new_gv, args))
                    changed = True
                producers[binding.var] = (binding, callee)
            bindings.append(binding)
        cls = relax.DataflowBlock if isinstance(block, relax.DataflowBlock) else relax.BindingBlock
        new_blocks.append(cls(bindings))
    if not changed:
        return func
    return relax.Function(
        func.params,
        relax.SeqExpr(new_blocks, body.body),
        func.ret_ty,
        func.is_pure,
        func.attrs,
    )


def _pair(mod, producers, call: relax.Call, uses):
    """(depthwise binding, its gv, index of its result among `call`'s args) if `call` is a 1x1
    conv kernel reading the result of a depthwise conv kernel that nothing else reads."""
    if not _primitive(mod[call.op]):
        return None
    project = _conv(mod, mod[call.op])
    if project is None:
        return None
    index = project[2]
    source = call.args[index]
    if source not in producers or uses.get(source, 0) != 1:
        return None
    dw_binding, dw_gv = producers[source]
    if not isinstance(dw_gv, relax.GlobalVar) or not _primitive(mod[dw_gv]):
        return None
    depthwise = _conv(mod, mod[dw_gv])
    if depthwise is None or not _is_depthwise(depthwise):
        return None
    if not _is_pointwise(project, depthwise[1][3]):
        return None
    return dw_binding, dw_gv, index


def _merge(mod, dw_gv, project_gv, index: int, merged: dict, builder) -> relax.GlobalVar:
    """The fused function running `dw_gv`'s kernel, then `project_gv`'s on its result (its
    param `index`): params are the depthwise kernel's, then the 1x1 kernel's other params."""
    name = f"{dw_gv.name_hint}_{project_gv.name_hint.removeprefix('fused_')}"
    if name in merged:
        return merged[name]
    dw, project = mod[dw_gv], mod[project_gv]
    dw_params = [relax.Var(p.name, p.ty) for p in dw.params]
    dw_body = dw.bind_params(dict(zip(dw.params, dw_params))).body
    rest = [p for i, p in enumerate(project.params) if i != index]
    rest_params = [relax.Var(p.name, p.ty) for p in rest]
    binds = {project.params[index]: dw_body.body, **dict(zip(rest, rest_params))}
    project_body = project.bind_params(binds).body
    bindings = [b for blk in (*dw_body.blocks, *project_body.blocks) for b in blk.bindings]
    func = relax.Function(
        dw_params + rest_params,
        relax.SeqExpr([relax.DataflowBlock(bindings)], project_body.body),
        project.ret_ty,
        True,
        project.attrs,
    )
    merged[name] = builder.add_func(func, name)
    return merged[name]


def _use_counts(func: relax.Function) -> dict:
    """Var -> how many times it is read (post_order_visit does not visit definitions)."""
    counts: dict = {}

    def visit(node):
        if isinstance(node, relax.Var):
            counts[node] = counts.get(node, 0) + 1

    relax.analysis.post_order_visit(func.body, visit)
    return counts
