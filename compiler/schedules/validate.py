"""The in-model check of tuning records: a record that won when its kernel was timed alone must
also win inside the model, or the compile keeps the default schedule for that kernel.

MetaSchedule times a kernel alone, its inputs and weights flushed from the caches. Inside the
model the input is warm (the previous kernel just wrote it), neighbouring kernels compete for
the caches, and the thread pool is already awake; measured on ResNet-18, a third of the records
that beat the default schedule alone were 6-37% slower in the model, and the 5-minute tuned
bundle was no faster than the untuned one. So after tuning, `mlc tune` builds the model twice
(every kernel with its fastest record; every kernel with the default rules), times each kernel
in both with the Relax VM's per-call instrument, interleaved, and appends a "verdict" per
record to the database: `use` "record" or "default". The records that won are then judged
together: a build with them (the first one, where they are all its records) is timed against the
default build, whole model against whole model (no instrument), and unless it is at least
`MARGIN` faster, further verdicts overrule them (MobileNetV2: 5 records that each won inside the
model made the model 8% slower together).
`LogContents.chosen` applies the latest verdict; a verdict judges one schedule (by trace), so a
better record found later is judged again.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, replace

import numpy as np

from ..kernel_times import KernelTimes
from ..tuning_db import LogContents, TuningLog, schedule_id

MARGIN = 0.02  # a record is kept when it is at least this much faster in the model
_BUDGET_S = 20.0  # timing both builds, at most (at least _MIN_ROUNDS rounds)
_MIN_ROUNDS = 5


@dataclass(frozen=True)
class Validation:
    checked: int  # records judged by this run
    kept: int  # of them, used by compiles
    default_ms: float  # in-model time of the judged kernels: default rules
    record_ms: float  # ... with their fastest records
    chosen_ms: float  # ... with what the verdicts choose
    # Whole model (ms per call) with the records each kernel's check kept, and with the default
    # rules; None where no record won its kernel's check.
    model_ms: tuple[float, float] | None = None

    def to_json(self) -> dict:
        return {
            "checked": self.checked,
            "kept": self.kept,
            "default_ms": round(self.default_ms, 4),
            "record_ms": round(self.record_ms, 4),
            "chosen_ms": round(self.chosen_ms, 4),
            "model_ms": None if self.model_ms is None else [round(t, 4) for t in self.model_ms],
        }


def unjudged(contents: LogContents, workloads) -> dict[str, dict]:
    """Of `workloads`, those whose fastest record is not the baseline and has no verdict (->
    that record)."""
    out = {}
    for digest in set(workloads) & set(contents.workloads):
        fastest = contents.fastest(digest)
        if fastest is None or fastest.get("baseline"):
            continue
        verdict = contents.verdicts.get(digest)
        if verdict is None or verdict["schedule"] != schedule_id(fastest):
            out[digest] = fastest
    return out


def validate(
    imported, target, options, log: TuningLog, kernels: dict[str, str], threads: int, note
) -> Validation | None:
    """Judge the unjudged records of `log` for the model `imported`, whose kernels (name ->
    workload hash) are `kernels`; None if there were none."""
    from ..build import build

    pending = unjudged(log.read(), kernels.values())
    if not pending:
        return None
    if options.precision == "bf16":
        note("in-model check skipped: bfloat16 weights")  # numpy cannot hold them
        return None
    note(f"checking {len(pending)} tuned kernels inside the model (two builds, then timing)")
    with_records = build(
        imported, target, replace(options, db=str(log.path.parent)), log=log, judged=False
    )
    default = build(imported, target, replace(options, db=None))
    times = _interleaved_profiles([with_records, default], _inputs(imported, options), threads)
    verdicts, totals = [], [0.0, 0.0, 0.0]
    for digest, record in pending.items():
        names = [n for n, d in kernels.items() if d == digest]
        rec, dft = (sum(t.get(n, 0.0) for n in names) for t in times)
        if rec == 0.0 or dft == 0.0:
            continue  # not called (a kernel the VM never reached)
        use = "record" if rec < dft * (1 - MARGIN) else "default"
        totals = [totals[0] + dft, totals[1] + rec, totals[2] + (rec if use == "record" else dft)]
        verdicts.append(
            {
                "kind": "verdict",
                "workload": digest,
                "schedule": schedule_id(record),
                "use": use,
                "name": names[0],
                "in_model_us": {"record": round(rec * 1e6, 2), "default": round(dft * 1e6, 2)},
            }
        )
    log.append(verdicts)
    kept = [v for v in verdicts if v["use"] == "record"]
    model_ms, overruled = None, []
    if kept:
        # The kept records together, against the default rules, timing the whole model: the
        # per-call instrument and the kernels' interplay can make a sum of wins a loss.
        contents = log.read()
        if all(contents.chosen(d) == contents.fastest(d) for d in set(kernels.values())):
            chosen = with_records  # every kernel uses its fastest record: the same build
        else:
            chosen = build(imported, target, replace(options, db=str(log.path.parent)), log=log)
        seconds = _interleaved_models([chosen, default], _inputs(imported, options), threads)
        model_ms = tuple(s * 1e3 for s in seconds)
        overruled = _whole_model_verdicts(kept, *model_ms)
        if overruled:
            log.append(overruled)
            totals[2], kept = totals[0], []
    result = Validation(len(verdicts), len(kept), *(t * 1e3 for t in totals), model_ms)
    note(
        f"in-model check: {len(kept)} of {len(verdicts)} records kept; those kernels take "
        f"{result.chosen_ms:.4g} ms (default schedules {result.default_ms:.4g} ms, "
        f"fastest records alone {result.record_ms:.4g} ms)"
    )
    if model_ms is not None:
        won = len(overruled) if not kept else len(kept)
        verdict = "kept" if kept else f"not {MARGIN:.0%} faster, so none kept"
        note(
            f"  {won} won their kernels' check; the whole model with them: {model_ms[0]:.4g} ms, "
            f"with the default schedules {model_ms[1]:.4g} ms: {verdict}"
        )
    return result


def _whole_model_verdicts(kept: list[dict], record_ms: float, default_ms: float) -> list[dict]:
    """Verdicts that overrule `kept` (records each faster in the model) when the whole model
    with all of them (`record_ms`) is not `MARGIN` faster than with the default schedules;
    none where it is."""
    if record_ms < default_ms * (1 - MARGIN):
        return []
    whole = {"record": round(record_ms, 4), "default": round(default_ms, 4)}
    return [{**v, "use": "default", "whole_model_ms": whole} for v in kept]


def _inputs(imported, options) -> list[np.ndarray]:
    """Random inputs at the largest declared size of each symbolic dim (else 1)."""
    rng = np.random.default_rng(0)
    out = []
    for info in imported.inputs:
        shape = [
            d if isinstance(d, int) else options.dim_ranges.get(d, (1, 1))[1] for d in info.shape
        ]
        if np.dtype(info.dtype).kind == "f":
            out.append(rng.standard_normal(shape).astype(info.dtype))
        else:
            out.append(np.zeros(shape, info.dtype))  # valid indices and ids
    return out


def _loaded(builds, inputs, threads: int) -> list[tuple]:
    """(VM, its arguments) per build, on `threads` threads."""
    import tvm
    from tvm import relax

    tvm.get_global_func("runtime.config_threadpool")(0, threads)
    dev = tvm.cpu()
    runs = []
    for built in builds:
        vm = relax.VirtualMachine(built.executable, dev)
        args = [tvm.runtime.tensor(x, dev) for x in inputs]
        args += [tvm.runtime.tensor(w.array, dev) for w in built.weights]
        runs.append((vm, args))
    return runs


def _interleaved_models(builds, inputs, threads: int) -> list[float]:
    """Per build, median seconds per model call, the builds called in turn for about
    `_BUDGET_S` / 2 (at least `_MIN_ROUNDS` rounds)."""
    runs = _loaded(builds, inputs, threads)
    for vm, args in runs:  # warm-up
        vm["main"](*args)
    samples: list[list[float]] = [[] for _ in runs]
    start = time.perf_counter()
    while len(samples[0]) < _MIN_ROUNDS or time.perf_counter() - start < _BUDGET_S / 2:
        for b, (vm, args) in enumerate(runs):
            t0 = time.perf_counter()
            vm["main"](*args)
            samples[b].append(time.perf_counter() - t0)
    return [statistics.median(s) for s in samples]


def _interleaved_profiles(builds, inputs, threads: int) -> list[dict[str, float]]:
    """Per build, kernel name (as fused, before prepacking renamed it) -> median seconds per
    model call, the builds timed in turn."""
    from ..passes.prepack_weights import fused_name

    runs = [
        (vm, args, KernelTimes(vm.set_instrument)) for vm, args in _loaded(builds, inputs, threads)
    ]
    for vm, args, _ in runs:  # warm-up; the slower model decides the rounds
        vm["main"](*args)
    start = time.perf_counter()
    for vm, args, _ in runs:
        vm["main"](*args)
    per_round = time.perf_counter() - start
    rounds = max(_MIN_ROUNDS, min(50, int(_BUDGET_S / max(per_round, 1e-6))))
    samples: list[dict[str, list[float]]] = [defaultdict(list) for _ in builds]
    for i in range(rounds):
        order = list(range(len(runs)))[:: 1 if i % 2 == 0 else -1]
        for b in order:
            vm, args, timer = runs[b]
            timer.reset()
            vm["main"](*args)
            for name, seconds in timer.totals.items():
                samples[b][fused_name(name)].append(seconds)
    return [{n: statistics.median(v) for n, v in s.items()} for s in samples]
