"""A rough estimate of each kernel's share of the model's runtime, before anything is measured.

`mlc tune` spends its budget by these shares and skips kernels below `MIN_SHARE`; `mlc compile
--db` reports which share of the estimated runtime the tuning records cover. Both use the same
numbers, so a kernel the tuner skips as cheap is never one that `--db-strict` demands.

The estimate is a roofline: floating-point work at a nominal rate plus the bytes of every
argument at a nominal bandwidth. Only the ratios between kernels matter here; the tuner scales
the estimate by what it measures before it shows an end-to-end figure.
"""

from __future__ import annotations

from dataclasses import dataclass

MIN_SHARE = 0.01  # kernels below 1% of the estimated runtime are not worth tuning
_FLOPS_PER_S = 20e9
_BYTES_PER_S = 10e9
_UNKNOWN_DIM = 1  # a symbolic dim counts as this many elements
# Below this much work (flops + bytes of the arguments: about 3 us on one core), a kernel's loops
# run on the calling thread: a parallel launch costs 1.5-2 us on 2 threads (measured on an AMD
# EPYC with time_evaluator: a 1 KB transpose 0.14 us on one thread, 1.94 us on two), and waking
# the pool for a kernel this small loses more than the second core wins.
SERIAL_WORK = 200_000
SERIAL_ATTR = "mlc.serial"  # a PrimFunc attribute: run every loop on the calling thread


@dataclass(frozen=True)
class KernelCost:
    name: str
    calls: int
    seconds: float  # estimated time of one call

    @property
    def total(self) -> float:
        return self.calls * self.seconds


def kernel_seconds(func) -> float:
    """Estimated time of one call of TIR PrimFunc `func`."""
    flops, nbytes, _static = _work(func)
    return (flops or 0.0) / _FLOPS_PER_S + nbytes / _BYTES_PER_S


def too_small_for_threads(func) -> bool:
    """True where TIR PrimFunc `func` (scheduled or not) does less work than one parallel
    launch costs (SERIAL_WORK), or passes/serial_tiny_model.py marked it: its loops then run on
    the calling thread. A kernel with a symbolic dim or an uncountable loop nest is never too
    small on its own: its size is not known."""
    if func.attrs is not None and func.attrs.get(SERIAL_ATTR):
        return True
    amount = work(func)
    return amount is not None and amount < SERIAL_WORK


def work(func) -> float | None:
    """Floating-point operations plus argument bytes of one call of TIR PrimFunc `func`; None
    where a dim is symbolic or TVM cannot count the loop nest."""
    flops, nbytes, static = _work(func)
    return flops + nbytes if static and flops is not None else None


def _work(func) -> tuple[float | None, int, bool]:
    """(floating-point operations or None where TVM cannot count them, bytes of the buffer
    arguments with a symbolic dim as _UNKNOWN_DIM elements, whether every dim is static)."""
    import tvm
    from tvm.s_tir.analysis import estimate_tir_flops

    try:
        flops = float(estimate_tir_flops(tvm.IRModule({"main": func})))
    except Exception:  # TVM cannot count some loop nests (e.g. data-dependent extents)
        flops = None
    nbytes, static = 0, True
    for param in func.params:
        if getattr(param, "shape", None) is None:
            continue  # buffer-typed params only
        size, known = _bytes(param)
        nbytes, static = nbytes + size, static and known
    return flops, nbytes, static


def buffer_bytes(buffer) -> int | None:
    """Bytes of a TIR buffer (or buffer-typed parameter); None where a dim is symbolic."""
    size, known = _bytes(buffer)
    return size if known else None


def _bytes(buffer) -> tuple[int, bool]:
    """(bytes of `buffer` with a symbolic dim as _UNKNOWN_DIM elements, whether all dims are
    static)."""
    elements, static = 1, True
    for dim in buffer.shape:
        known = hasattr(dim, "value") or isinstance(dim, int)
        static = static and known
        elements *= int(dim) if known else _UNKNOWN_DIM
    return elements * max(1, _dtype_bytes(buffer.dtype)), static


def _dtype_bytes(dtype) -> int:
    import tvm

    d = tvm.DataType(str(dtype))
    return (d.bits * d.lanes + 7) // 8


def call_counts(mod) -> dict[str, int]:
    """How often the Relax functions of `mod` call each TIR function (by name)."""
    import tvm
    from tvm import relax

    call_tir = tvm.ir.Op.get("relax.call_tir")
    counts: dict[str, int] = {}

    def visit(expr):
        if isinstance(expr, relax.Call) and expr.op.same_as(call_tir):
            name = expr.args[0].name_hint
            counts[name] = counts.get(name, 0) + 1

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return counts


def kernel_costs(mod) -> dict[str, KernelCost]:
    """Every TIR function of `mod` (after fusion) with its calls and estimated time."""
    from tvm import tirx

    counts = call_counts(mod)
    return {
        gv.name_hint: KernelCost(gv.name_hint, counts.get(gv.name_hint, 1), kernel_seconds(f))
        for gv, f in mod.functions.items()
        if isinstance(f, tirx.PrimFunc)
    }


def rule_only(func) -> bool:
    """Whether the PrimFunc `func` is one that tuning leaves to its default rule: a Winograd
    transform (passes/winograd.py). Each is 1-2% of a model, and MetaSchedule is slow on them:
    on ResNet-18's fused output + input transform its first 16 candidates took over 400 s,
    which made a `mlc tune --time 180s` run for 411 s. (TVM 0.27 has no TIR visitor in Python:
    the block names are read from the script.)"""
    from ..passes.winograd import INPUT, OUTPUT

    text = func.script()
    return any(f'T.sblock("{name}")' in text for name in (INPUT, OUTPUT))


def worth_tuning(costs: dict[str, KernelCost]) -> set[str]:
    """The kernels whose share of the estimated runtime is at least MIN_SHARE."""
    total = sum(c.total for c in costs.values()) or 1.0
    return {name for name, c in costs.items() if c.total / total >= MIN_SHARE}


class TuningCoverage:
    """Which kernels the tuning records scheduled, and their share of the estimated runtime.

    `passes(apply)` wraps the database's pass: the first pass notes the kernels and their
    estimated costs, the last which of them the records scheduled. With `strict`, `check()`
    fails if a kernel worth tuning (see `worth_tuning`) has no record, leaving out those that
    tuning leaves to their rule (`rule_only`)."""

    def __init__(self, info: dict, strict: bool, target_name: str):
        self.info, self.strict, self.target_name = info, strict, target_name
        self.costs: dict[str, KernelCost] | None = None
        self.tuned: set[str] = set()
        self.rule_only: set[str] = set()  # never tuned, so never demanded (see rule_only)

    def passes(self, apply) -> list:
        import tvm

        @tvm.transform.module_pass(opt_level=0, name="mlc.TuningCoverageBefore")
        def before(mod, _ctx):
            self.costs = {n: c for n, c in kernel_costs(mod).items() if not is_scheduled(mod[n])}
            self.rule_only = {n for n in self.costs if rule_only(mod[n])}
            return mod

        @tvm.transform.module_pass(opt_level=0, name="mlc.TuningCoverageAfter")
        def after(mod, _ctx):
            self.tuned = {n for n in self.costs or {} if n in mod and is_scheduled(mod[n])}
            return mod

        return [before, apply, after]

    def untuned(self) -> list[str]:
        costs = self.costs or {}
        missing = worth_tuning(costs) - self.tuned - self.rule_only
        return sorted(missing, key=lambda n: -costs[n].total)

    def check(self) -> None:
        """With `strict`: raise UntunedError naming the kernels worth tuning without a record.
        (Called after the build: an error raised inside a pass reaches Python as TVM's.)"""
        from ..errors import UntunedError

        missing = self.untuned()
        if self.strict and missing:
            db = self.info["db"]
            raise UntunedError(
                f"--db-strict: {len(missing)} kernel{'s' if len(missing) > 1 else ''} worth "
                f"tuning {'have' if len(missing) > 1 else 'has'} no record in {db!r} for "
                f"{self.target_name!r}: {', '.join(missing)}",
                hint=f"tune them: `mlc tune MODEL --target {self.target_name} --db {db}` "
                "(or compile with --tune N)",
            )

    def summary(self) -> dict | None:
        if self.costs is None:
            return None
        total = sum(c.total for c in self.costs.values())
        covered = sum(self.costs[n].total for n in self.tuned)
        return {
            "kernels": len(self.costs),
            "tuned_kernels": len(self.tuned),
            "coverage": round(covered / total, 4) if total else 1.0,
            "untuned": self.untuned(),
            **self.info,
        }


def is_scheduled(func) -> bool:
    """Whether the PrimFunc `func` carries its schedule: a kernel written whole (the AMX
    kernels), which tuning skips and `--db-strict` never demands, or, after the database's
    pass, one a tuning record scheduled."""
    attrs = func.attrs
    return bool(attrs and attrs.get("tirx.is_scheduled"))
