"""PrepackWeights: weights stored in the layout the CPU kernels read, repacked at compile time.

A matmul or conv kernel reads its weight one vector tile of output channels at a time. Read in
the model's layout ([K, N]: rows N floats apart), each tile's panel would have to be gathered at
every call. Instead the kernel's schedule (schedules/cpu.py, or a tuning record, through
MetaSchedule's RewriteLayout) copies the weight into a packed layout in a block marked as a
layout rewrite, and this pass takes that copy out of the model:

- `mark_weights` (fusion phase) marks which kernel parameters are weights (TVM's
  AttachAttrLayoutFreeBuffers): only those may change layout.
- `PrepackWeights` (after the schedules) moves each marked copy into a function of its own (TVM's
  SplitLayoutRewritePreproc) and lifts the copies of weights out of `main` into
  `main_transform_params` (LiftTransformParams); copies of small inline constants are folded.
  The lifted function is handed to the build, which runs it once on the weights (`repack`):
  the bundle stores the packed weights and `main` takes them as they are. Nothing changes at
  run time but the layout, so the loader needs nothing new.

Both halves are named PrepackWeights: `--disable-pass PrepackWeights` skips both, and the
kernels then pack their weight panels as they run.
"""

from __future__ import annotations

import tvm
from tvm import relax

NAME = "PrepackWeights"
TRANSFORM = "main_transform_params"
_PREPROC = "meta_schedule.layout_rewrite_preproc"  # the block that packs a weight
_PREPACKED = "_prepacked"  # SplitLayoutRewritePreproc's suffix for a kernel it split


def fused_name(kernel: str) -> str:
    """The kernel's name in the fused module (what tuning saw) from its name in the build."""
    return kernel.removesuffix(_PREPACKED)


def mark_weights() -> tvm.transform.Pass:
    """The first half of PrepackWeights (fusion phase): mark which kernel parameters are
    weights (TVM's AttachAttrLayoutFreeBuffers); only those may change layout."""

    @tvm.transform.module_pass(opt_level=0, name=NAME)
    def mark(mod, _ctx):
        if "main" not in mod or "num_input" not in (mod["main"].attrs or {}):
            return mod  # no weight parameters to mark
        return relax.transform.AttachAttrLayoutFreeBuffers()(mod)

    return mark


class Lifted:
    """What PrepackWeights took out of the module: the weight transform, a module of its own."""

    def __init__(self):
        self.module: tvm.IRModule | None = None


@tvm.transform.module_pass(opt_level=0, name=NAME)
class PrepackWeights:
    """The second half (after the schedules): each weight layout copy split out of its kernel,
    those of weights lifted into `main_transform_params` (handed to `lifted`, for `repack`),
    those of inline constants folded. `main` then takes the packed weights."""

    def __init__(self, lifted: Lifted):
        self.lifted = lifted

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        mod = _split_preproc(mod)
        if "num_input" in (mod["main"].attrs or {}):
            mod = relax.transform.LiftTransformParams()(mod)
        mod = relax.transform.FoldConstant()(mod)  # copies of inline constants
        if TRANSFORM not in mod:
            return mod
        transform = mod[TRANSFORM]
        if transform.body.body.same_as(transform.params[0]):  # nothing to repack
            return _without(mod, TRANSFORM)
        self.lifted.module = _reachable(mod, TRANSFORM)
        return relax.transform.DeadCodeElimination(["main"])(_without(mod, TRANSFORM))


def _split_preproc(mod: tvm.IRModule) -> tvm.IRModule:
    """SplitLayoutRewritePreproc on the kernels that have a layout rewrite block (it fails on
    some that have none, such as a sort's extern call under the root)."""
    from tvm import tirx

    others = {
        gv: f
        for gv, f in mod.functions.items()
        if isinstance(f, tirx.PrimFunc) and not _has_preproc(f)
    }
    if len(others) == sum(isinstance(f, tirx.PrimFunc) for f in mod.functions.values()):
        return mod
    kept = {gv: f for gv, f in mod.functions.items() if gv not in others}
    split = relax.transform.SplitLayoutRewritePreproc()(tvm.IRModule(kept, attrs=mod.attrs))
    functions = dict(split.functions)
    functions.update(others)
    return tvm.IRModule(functions, attrs=split.attrs)


def _has_preproc(func) -> bool:
    """Whether a kernel packs a weight: only kernels with weight parameters can, and those are
    few enough to search as text (TVM 0.27 has no TIR visitor in Python)."""
    if not (func.attrs and func.attrs.get("layout_free_buffers")):
        return False
    return _PREPROC in func.script()


def _reachable(mod: tvm.IRModule, name: str) -> tvm.IRModule:
    """`name` and the kernels it calls. (DeadCodeElimination keeps every kernel: a PrimFunc's
    global symbol makes it an entry point. Compiling the model's kernels into the weight
    transform too cost ResNet-18 4 s of LLVM.)"""
    called = set()

    def visit(node):
        if isinstance(node, tvm.ir.GlobalVar):
            called.add(node.name_hint)

    relax.analysis.post_order_visit(mod[name], visit)
    functions = {
        gv: f for gv, f in mod.functions.items() if gv.name_hint == name or gv.name_hint in called
    }
    return tvm.IRModule(functions, attrs=mod.attrs)


def _without(mod: tvm.IRModule, name: str) -> tvm.IRModule:
    functions = {gv: f for gv, f in mod.functions.items() if gv.name_hint != name}
    return tvm.IRModule(functions, attrs=mod.attrs)


def repack(lifted: Lifted, weights: tuple) -> tuple:
    """Run the lifted transform (built for this host) on `weights` (build.Weight): the weights
    `main` now takes, in its parameter order. A weight passed through is the same Weight; a
    packed one is named after its source."""
    from tvm.relax import VirtualMachine

    from ..build import Weight

    mod = lifted.module
    outputs = _outputs(mod[TRANSFORM])
    host = tvm.target.Target({"kind": "llvm"})
    with host:
        executable = tvm.compile(mod, target=host)
    vm = VirtualMachine(executable, tvm.cpu())
    results = vm[TRANSFORM]([_tensor(w) for w in weights])
    if len(outputs) != len(results):
        raise RuntimeError(f"weight transform: {len(results)} outputs, {len(outputs)} expected")
    packed, names = [], {w.name for w in weights}
    for (source, computed), out in zip(outputs, results):
        if not computed:
            packed.append(weights[source])
            continue
        name = _unique(f"{weights[source].name}.packed" if source is not None else "packed", names)
        dtype = str(out.dtype)
        array = (_view(out, "uint16") if dtype == "bfloat16" else out).numpy()
        packed.append(Weight(name, array, dtype if dtype == "bfloat16" else ""))
    return tuple(packed)


def _tensor(weight):
    tensor = tvm.runtime.tensor(weight.array, tvm.cpu())
    return _view(tensor, weight.dtype) if weight.dtype else tensor


def _view(tensor, dtype: str):
    import tvm_ffi

    view = tvm_ffi.get_global_func("runtime.TVMTensorCreateView")
    return view(tensor, tuple(tensor.shape), tvm_ffi.dtype(dtype), 0)


def _outputs(transform: relax.Function) -> list[tuple[int | None, bool]]:
    """Per output of the transform: (index of the weight it comes from, whether it is computed
    from it rather than that weight passed through)."""
    (params,) = transform.params
    sources: dict[relax.Var, tuple[int | None, bool]] = {}
    tuples: dict[relax.Var, relax.Tuple] = {}
    for block in transform.body.blocks:
        for binding in block.bindings:
            var, value = binding.var, binding.value
            if isinstance(value, relax.TupleGetItem) and value.tuple_value.same_as(params):
                sources[var] = (value.index, False)
            elif isinstance(value, relax.TupleGetItem | relax.Var):
                inner = value.tuple_value if isinstance(value, relax.TupleGetItem) else value
                if inner in sources:
                    sources[var] = sources[inner]
            if isinstance(value, relax.Tuple):
                tuples[var] = value
            elif isinstance(value, relax.Call):
                used = [sources[a][0] for a in _args(value) if a in sources]
                sources[var] = (used[0] if used else None, True)
    result = transform.body.body
    return [sources.get(f, (None, True)) for f in tuples.get(result, result).fields]


def _args(call: relax.Call) -> list:
    args = []
    for a in call.args:
        args.extend(a.fields if isinstance(a, relax.Tuple) else [a])
    return args


def _unique(name: str, taken: set) -> str:
    """`name`, or `name` with a number, not yet in `taken` (which it joins)."""
    unique, n = name, 0
    while unique in taken:
        n += 1
        unique = f"{name}{n}"
    taken.add(unique)
    return unique
