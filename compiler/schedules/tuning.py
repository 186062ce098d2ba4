"""Autotuning with MetaSchedule and its XGBoost cost model. MetaSchedule is imported lazily,
here and in _ms_support.py (its plumbing, which records.py also uses to apply records).

`tune` tunes the fused kernels that `mlc compile` produces, one task at a time, largest
estimated share of the runtime first (cost.py). The budget, in trials and/or seconds, is split
by those shares; kernels below 1% are left to the default schedules. Every measured batch is
appended to the database (compiler/tuning_db.py) as soon as it is measured: a task that already
has its trials there is not tuned again, and an interrupted run continues where it stopped.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import threading
import time

from ..errors import BuildError, UsageError
from ..targets import ResolvedTarget
from ..tuning_db import LogContents, TuningLog, open_log
from .cost import MIN_SHARE, is_scheduled, kernel_seconds, rule_only
from .records import database_key, measuring_threads
from .tuning_plan import (
    Progress,
    TaskState,
    TuneEvent,
    TuneResult,
    TuneSettings,
    allocate,
    estimate_model_ms,
    plan_message,
)

TIME_ONLY_TRIALS = 20_000  # the trial budget when only a time limit is given
_TRIALS_PER_BATCH = 16  # a batch is appended at once: a kill loses at most this many
_BUILD_TIMEOUT_S = 60.0
_TOP_K = 32  # records per workload loaded to warm-start the search


def tune(mod, target: ResolvedTarget, options, settings: TuneSettings, progress: Progress | None):
    """Tune the fused kernels of `mod` (after mlc's graph passes) for `target`."""
    import tvm

    from ..build import fusion_passes
    from ._ms_support import kernel_workloads

    _check_tunable(target)
    if settings.trials is not None and settings.trials < 1:
        raise UsageError(f"--trials must be at least 1, got {settings.trials}")
    if settings.seconds is not None and settings.seconds <= 0:
        raise UsageError(f"--time must be positive, got {settings.seconds:g} s")
    deadline = time.monotonic() + settings.seconds if settings.seconds else math.inf
    threads = measuring_threads(settings.threads)
    log = open_log(settings.db, database_key(target, threads))
    tvm_target = tvm.target.Target(target.target)
    with tvm_target, tvm.transform.PassContext(opt_level=3):
        fused = tvm.transform.Sequential(fusion_passes(tvm_target, options))(mod)
    contents = log.read()
    tasks = _plan(fused, tvm_target, contents, _trial_budget(settings))
    open_ended = settings.trials is None

    def emit(kind, index=0, total=0, task=None, message=""):
        if progress:
            model_ms = estimate_model_ms(tasks)
            progress(TuneEvent(kind, index, total, task, model_ms, message, open_ended))

    emit("plan", message=plan_message(tasks))
    todo = [t for t in tasks if t.status == "pending"]
    measured = 0
    if todo:
        session = _Session(tvm_target, log, threads, contents, emit)
        with _stop_on_interrupt(session.stop):
            measured = _run(session, todo, deadline, emit)
    records = sum(r.get("mean_s") is not None for r in log.read().records)
    out_of_time = any(t.status == "out of time" for t in tasks)
    model_ms = estimate_model_ms(tasks)
    return TuneResult(
        log.path,
        threads,
        tasks,
        measured,
        records,
        model_ms,
        out_of_time,
        settings.trials,
        kernel_workloads=kernel_workloads(fused),
    )


def _run(session: _Session, todo: list[TaskState], deadline: float, emit) -> int:
    """Two rounds, as MetaSchedule's own scheduler warms up: one batch for every task first
    (so a short time limit still leaves each kernel a record), then each task up to its target,
    the time left split by the tasks' shares."""
    measured = 0
    for warmup in (True, False):
        for i, task in enumerate(todo, 1):
            goal = min(task.target, task.trials + _TRIALS_PER_BATCH) if warmup else task.target
            if task.status != "pending" or task.trials >= goal:
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                task.status = "out of time"
                emit("skip", i, len(todo), task, "out of time")
                continue
            pending = sum(t.share for t in todo[i - 1 :] if t.status == "pending")
            task_deadline = deadline if warmup else time.monotonic() + left * task.share / pending
            emit("task", i, len(todo), task)
            measured += session.run(
                task, goal, task_deadline, lambda t, i=i: emit("batch", i, len(todo), t)
            )
            if task.status != "pending":
                emit("end", i, len(todo), task)
            if session.stop:
                raise KeyboardInterrupt  # here, not inside MetaSchedule's C++ loop
    return measured


@contextlib.contextmanager
def _stop_on_interrupt(stop: list):
    """Ctrl-C while tuning: a KeyboardInterrupt raised inside MetaSchedule's C++ loop (from a
    Python callback) kills the process with std::terminate. The first Ctrl-C instead ends the
    task after the batch being measured, which is kept; a second one exits at once."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(
        signal.SIGINT
    ) in (signal.SIG_IGN, None):
        yield
        return

    def handler(_signum, _frame):
        if stop:
            os.write(2, b"\ninterrupted\n")
            os._exit(130)  # every measured batch is already in the database
        stop.append(True)
        os.write(2, b"\nstopping after the batch being measured (Ctrl-C again: now)\n")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _trial_budget(settings: TuneSettings) -> int:
    if settings.trials is not None:
        return settings.trials
    return TIME_ONLY_TRIALS if settings.seconds else 64


def _plan(fused, tvm_target, contents: LogContents, budget: int) -> list[TaskState]:
    """Tasks by estimated share, with their trial targets and what the database already has."""
    from tvm.s_tir import meta_schedule as ms

    from ._ms_support import workload_hash

    tasks = []
    for extracted in ms.relax_integration.extract_tasks(fused, tvm_target):
        func = extracted.dispatched[0]
        workload = workload_hash(func)
        prim = func["main"] if hasattr(func, "functions") else func
        estimate = kernel_seconds(prim)
        task = TaskState(extracted.task_name, workload, int(extracted.weight), estimate)
        task.extracted = extracted
        task.trials, task.best_s = contents.trials(workload), contents.best(workload)
        if is_scheduled(prim):
            task.status = "scheduled"  # written whole (the AMX kernels), nothing to tune
        elif rule_only(prim):
            task.status = "by rule"  # a Winograd transform: its rule's schedule (cost.py)
        tasks.append(task)
    total = sum(t.calls * t.estimate_s for t in tasks) or 1.0
    for t in tasks:
        t.share = t.calls * t.estimate_s / total
        if t.status == "pending" and t.share < MIN_SHARE:
            t.status = "cheap"
    tasks.sort(key=lambda t: t.share, reverse=True)
    wanted = [t for t in tasks if t.status == "pending"]
    for t, n in zip(wanted, allocate([t.share for t in wanted], budget)):
        t.target = n
        if n == 0:
            t.status = "no budget"
        elif t.trials >= n:
            t.status = "already tuned"
        elif contents.exhausted(t.workload):
            t.status = "exhausted"
    return tasks


class _Session:
    """MetaSchedule's builder, runner, cost model and an in-memory copy of the database, shared
    by the tasks of one run; `run` tunes one task."""

    def __init__(self, tvm_target, log: TuningLog, threads: int, contents, emit):
        from tvm.s_tir import meta_schedule as ms

        from ._ms_support import PersistentBuilder, import_intrinsics, memory_database

        import_intrinsics(tvm_target.kind.name)
        logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)
        # The runner's worker inherits this: candidates are timed with the bundle's threads.
        os.environ["TVM_NUM_THREADS"] = str(threads)
        cpus = len(os.sched_getaffinity(0))
        self.target, self.log, self.cpus = tvm_target, log, cpus
        self.stop: list = []  # non-empty once the user pressed Ctrl-C
        self.builder = PersistentBuilder(max_workers=cpus, timeout_sec=_BUILD_TIMEOUT_S)
        # On CPUs each candidate runs with its weights flushed from the caches, as in a whole
        # model: measured warm, schedules that re-read weights from cache won every time and
        # then lost end to end (BERT-mini: kernels faster alone, model 20% slower).
        cpu = tvm_target.kind.name == "llvm"
        self.runner = ms.runner.LocalRunner(
            evaluator_config=ms.runner.EvaluatorConfig(
                number=1 if cpu else 3,
                repeat=10 if cpu else 1,
                min_repeat_ms=0 if cpu else 100,
                enable_cpu_cache_flush=cpu,
            )
        )
        self.cost_model = ms.cost_model.CostModel.create("xgb", num_tuning_cores=cpus)
        self.database = memory_database(contents, _TOP_K)

    def run(self, task: TaskState, goal: int, deadline: float, on_batch) -> int:
        """Tune `task` up to `goal` trials or `deadline`; returns the trials measured. Leaves
        the task "pending" if it reached `goal` but not its target."""
        from tvm.s_tir import meta_schedule as ms

        from ._ms_support import Recorder

        wanted, before = goal - task.trials, task.trials
        first_batch = self._baseline(task)
        recorder = Recorder(self._on_batch(task, goal, deadline, on_batch, first_batch))
        context = ms.TuneContext(
            mod=task.extracted.dispatched[0],
            target=self.target,
            space_generator="post-order-apply",
            # MetaSchedule's population of 512 is for thousands of trials; a small budget
            # would spend most of its time searching.
            search_strategy=ms.search_strategy.EvolutionarySearch(
                population_size=min(512, max(64, 16 * wanted)),
                init_min_unmeasured=min(50, max(16, 4 * wanted)),
            ),
            task_name=task.name,
            logger=_quiet_logger(),
            num_threads=self.cpus,
        ).clone()
        try:
            ms.TaskScheduler.create("round-robin").tune(
                tasks=[context],
                task_weights=[1.0],
                max_trials_global=wanted,
                max_trials_per_task=wanted,
                num_trials_per_iter=min(_TRIALS_PER_BATCH, wanted),
                builder=self.builder,
                runner=self.runner,
                measure_callbacks=[*ms.MeasureCallback.create("default"), recorder],
                database=self.database,
                cost_model=self.cost_model,
            )
        except (RuntimeError, ValueError) as exc:
            raise BuildError(
                f"tuning kernel {task.name!r} failed: {str(exc).strip().splitlines()[-1]}",
                hint="rerun with MLC_DEBUG=1 for MetaSchedule's full error",
            ) from exc
        out_of_time = recorder.state.get("out_of_time", False)
        exhausted = task.trials - before < wanted and not out_of_time
        if out_of_time or exhausted or task.trials >= task.target:
            task.status = "out of time" if out_of_time else "exhausted" if exhausted else "tuned"
        note = {"kind": "tuned", "workload": task.workload, "trials": task.trials}
        self.log.append([{**note, "exhausted": exhausted}])
        return task.trials - before

    def _baseline(self, task: TaskState) -> bool:
        """Measure the default schedule once per kernel (see baseline_entries); returns
        whether the first tuned batch must still write the workload line."""
        from ._ms_support import baseline_entries

        if task.trials or task.baseline_done:
            return True
        entries = baseline_entries(task, self.target, self.builder, self.runner, True)
        task.baseline_done = True
        if not entries:
            return True
        self.log.append(entries)
        record = entries[-1]
        if record.get("mean_s") is not None:  # (not a seed for the search: memory_database)
            task.best_s = min(record["mean_s"], task.best_s or record["mean_s"])
        return False

    def _on_batch(self, task: TaskState, goal: int, deadline: float, report, first_batch=True):
        from ._ms_support import batch_entries

        first = [first_batch]

        def on_batch(scheduler, task_id, candidates, builds, runs, state):
            if candidates:  # (an exhausted search space yields empty batches)
                entries, times = batch_entries(
                    task, self.target, candidates, builds, runs, first[0]
                )
                first[0] = False
                self.log.append(entries)  # durable before anything else happens
                task.trials += len(candidates)
                if times:
                    task.best_s = min([*times, *([task.best_s] if task.best_s else [])])
                report(task)
            # (At its goal the scheduler ends the task itself; ending it twice is an error.)
            if (self.stop or time.monotonic() >= deadline) and task.trials < goal:
                state["out_of_time"] = True
                scheduler.terminate_task(task_id)

        return on_batch


def _quiet_logger() -> logging.Logger:
    logger = logging.getLogger("mlc.metaschedule")
    logger.setLevel(logging.ERROR)
    return logger


def _check_tunable(target: ResolvedTarget) -> None:
    if target.preset.is_cross:
        raise UsageError(
            f"tuning for {target.preset.name!r} measures candidates on an {target.preset.arch} "
            "CPU, and this host is not one; tune on the device (remote measurement is not "
            "supported yet)"
        )
    if target.device == "cuda":
        from ..cuda import gpu_available

        if not gpu_available():
            raise UsageError(
                "tuning for CUDA measures each candidate kernel on a GPU, and this host has "
                "none (no NVIDIA driver or GPU found)",
                hint="run `mlc tune` on a GPU host and copy the --db directory here; compiling "
                "with --db needs no GPU (remote measurement is not supported yet)",
            )
