"""MetaSchedule plumbing for tuning.py (imported only from there, only when tuning or applying
records): a builder whose workers live across batches, the measure callback that writes each
batch to the database, and the database loaded into MetaSchedule's in-memory one."""

from __future__ import annotations

from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
from tvm.s_tir.meta_schedule.builder.local_builder import _worker_func
from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback
from tvm.support.popen_pool import PopenPoolExecutor, StatusKind

from ..tuning_db import LogContents

_POOL_BATCHES = 20  # restart the workers now and then: MetaSchedule's note a leak in them


def import_intrinsics(target_kind: str) -> None:
    """Register the tensor intrinsics this host's CPU target can use, before MetaSchedule
    imports them all: `tvm.s_tir.tensor_intrin` imports every backend's (CUDA's alone take
    30 s here); the x86 ones take under a second. The package itself is registered without
    running its __init__, so a later import of it, or of another backend's, still works."""
    import importlib
    import importlib.util
    import platform
    import sys

    import tvm.s_tir

    name = "tvm.s_tir.tensor_intrin"
    if target_kind != "llvm" or name in sys.modules:
        return  # a GPU target needs them all: MetaSchedule imports the package as usual
    spec = importlib.util.find_spec(name)
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    tvm.s_tir.tensor_intrin = package
    machine = platform.machine()
    importlib.import_module(f"{name}.{'arm_cpu' if machine in ('aarch64', 'arm64') else 'x86'}")


def workload_hash(func) -> str:
    """MetaSchedule's workload hash of a kernel (a PrimFunc, or a module holding one), as the
    tuning records and `MetaScheduleApplyDatabase` key it."""
    from tvm.s_tir.meta_schedule.tune_context import _normalize_mod

    return str(ms.database.Workload(_normalize_mod(func)).as_json()[0])


def kernel_workloads(fused) -> dict[str, str]:
    """Kernel name -> workload hash, for every TIR function of the fused module."""
    from tvm import tirx

    return {
        gv.name_hint: workload_hash(func)
        for gv, func in fused.functions.items()
        if isinstance(func, tirx.PrimFunc)
    }


def build_candidate(mod, target, _params):
    """MetaSchedule's default build, minus `import tvm.s_tir.tensor_intrin`: that takes 30 s
    in every fresh worker, and the candidates arrive with their intrinsics already inlined."""
    from tvm.driver import build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return build(mod, target=target)


@derived_object
class PersistentBuilder(PyBuilder):
    """MetaSchedule's LocalBuilder starts new worker processes for every batch; this one keeps
    them for `_POOL_BATCHES` batches (a worker start costs about a second here)."""

    def __init__(self, max_workers: int, timeout_sec: float):
        super().__init__()
        self.max_workers, self.timeout_sec = max_workers, timeout_sec
        self.pool, self.batches = None, 0

    def build(self, build_inputs):
        if self.pool is None or self.batches >= _POOL_BATCHES:
            if self.pool is not None:
                self.pool.shutdown()
            self.pool = PopenPoolExecutor(max_workers=self.max_workers, timeout=self.timeout_sec)
            self.batches = 0
        self.batches += 1
        args = [(build_candidate, None, b.mod, b.target, None) for b in build_inputs]
        results = []
        for res in self.pool.map_with_error_catching(lambda a: _worker_func(*a), args):
            if res.status == StatusKind.COMPLETE:
                results.append(BuilderResult(res.value, None))
            elif res.status == StatusKind.TIMEOUT:
                results.append(BuilderResult(None, f"build timed out after {self.timeout_sec} s"))
            else:
                results.append(BuilderResult(None, f"build failed: {res.value}"))
        return results


@derived_object
class Recorder(PyMeasureCallback):
    """Calls `on_batch(scheduler, task_id, candidates, builds, runs, state)` after each batch."""

    def __init__(self, on_batch):
        super().__init__()
        self.on_batch, self.state = on_batch, {}

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
        self.on_batch(
            task_scheduler, task_id, measure_candidates, builder_results, runner_results, self.state
        )


def record_json(record) -> list:
    """A tuning record as plain JSON. MetaSchedule's own `as_json` stops at the index map of a
    transform_layout step (the weight packing of the default rules and of RewriteLayout); this
    writes it as TVM's JSON text, the form `TuningRecord.from_json` reads back."""
    import tvm
    from tvm.s_tir.meta_schedule import _ffi_api
    from tvm_ffi import Array, Map

    def plain(obj):
        if obj is None or isinstance(obj, bool | int | float | str):
            return obj
        if isinstance(obj, tvm.tirx.IntImm | tvm.tirx.FloatImm):
            return obj.value
        if isinstance(obj, Array):
            return [plain(i) for i in obj]
        if isinstance(obj, Map):
            return {str(k): plain(v) for k, v in obj.items()}
        if isinstance(obj, tvm.tirx.IndexMap):
            return tvm.ir.save_json(obj).strip()
        raise TypeError(f"a tuning record holds a {type(obj).__name__}, which has no JSON form")

    return plain(_ffi_api.TuningRecordAsJSON(record))


def batch_entries(task, target, candidates, builds, runs, with_workload: bool):
    """Log lines for one measured batch (the workload first, once per task and run), and the
    mean times of the candidates that ran."""
    workload = ms.database.Workload(task.extracted.dispatched[0])
    entries, times = [], []
    if with_workload:
        digest, mod = workload.as_json()
        entries.append({"kind": "workload", "hash": str(digest), "name": task.name, "mod": mod})
    for cand, built, ran in zip(candidates, builds, runs):
        error = built.error_msg or ran.error_msg
        secs = None if error else [float(s) for s in ran.run_secs]
        record = ms.database.TuningRecord(
            cand.sch.trace, workload, None if error else ran.run_secs, target, cand.args_info
        )
        entry = {"kind": "record", "workload": task.workload, "record": record_json(record)}
        entry["mean_s"] = sum(secs) / len(secs) if secs else None
        if error:
            entry["error"] = str(error).strip().splitlines()[-1][:300]
        else:
            times.append(entry["mean_s"])
        entries.append(entry)
    return entries, times


def baseline_entries(task, target, builder, runner, with_workload: bool):
    """Log lines for the kernel under mlc's default schedule, measured like a candidate.
    Recorded first, it is what the tuned records must beat: a compile picks the fastest record,
    so tuning never makes a kernel slower than the untuned bundle had it."""
    from .default import default_schedule

    mod = task.extracted.dispatched[0]
    sch = default_schedule(mod["main"], target)
    if sch is None:
        return []
    # The builder drops a weight-packing block and takes the weight packed, as it does for
    # a candidate with RewriteLayout: the arguments are those of the packed kernel.
    args_info = ms.arg_info.ArgInfo.from_entry_func(sch.mod, remove_preproc=True)
    built = builder.build([ms.builder.BuilderInput(sch.mod, target)])[0]
    if built.error_msg:
        ran = ms.runner.RunnerResult(None, built.error_msg)
    else:
        device = "cpu" if target.kind.name == "llvm" else target.kind.name
        runner_input = ms.runner.RunnerInput(built.artifact_path, device, args_info)
        ran = runner.run([runner_input])[0].result()
    candidate = ms.MeasureCandidate(sch, args_info)
    entries, _ = batch_entries(task, target, [candidate], [built], [ran], with_workload)
    for entry in entries:
        if entry["kind"] == "record":
            entry["baseline"] = True
    return entries


def memory_database(contents: LogContents, top_k: int):
    """MetaSchedule's in-memory database holding the `top_k` fastest tuned records per
    workload (the tuner's warm start). Not the baselines: a default schedule has no sampling
    decisions for the search to mutate, and one that packs a weight cannot take MetaSchedule's
    own RewriteLayout on top."""
    return _database(contents, lambda digest: _fastest(contents, digest, top_k, tuned_only=True))


def compile_database(contents: LogContents, judged: bool = True):
    """The database a compile applies: per workload the record `contents.chosen` picks (with
    `judged`), else the fastest as measured alone."""
    pick = contents.chosen if judged else contents.fastest
    return _database(contents, lambda digest: [r for r in [pick(digest)] if r is not None])


def _fastest(contents: LogContents, digest: str, top_k: int, tuned_only=False) -> list[dict]:
    valid = [
        r
        for r in contents.records_of(digest)
        if r.get("mean_s") is not None and not (tuned_only and r.get("baseline"))
    ]
    return sorted(valid, key=lambda r: r["mean_s"])[:top_k]


def _database(contents: LogContents, records_for):
    database = ms.database.MemoryDatabase()
    for digest, entry in contents.workloads.items():
        records = records_for(digest)
        if not records:
            continue
        workload = database.commit_workload(
            ms.database.Workload.from_json([digest, entry["mod"]]).mod
        )
        for r in records:
            database.commit_tuning_record(ms.database.TuningRecord.from_json(r["record"], workload))
    return database
