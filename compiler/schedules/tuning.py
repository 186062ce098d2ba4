"""Autotuning with MetaSchedule and its XGBoost cost model: the one module that imports them.

The database is a directory. Records live in a subdirectory per target and TVM version (the
full target dict: CPU, features, cores), so a record never applies to another machine;
MetaSchedule's JSON database appends each measured batch as it goes, so an interrupted run
keeps what it measured and the next run continues from it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import BuildError, UsageError
from ..targets import ResolvedTarget


@dataclass(frozen=True)
class TuneResult:
    db: Path
    tasks: int
    trials: int
    records: int


def database_dir(db: str | os.PathLike, target: ResolvedTarget) -> Path:
    """The part of database `db` that belongs to `target` on this TVM version."""
    import tvm

    key = json.dumps({"target": target.target, "tvm": tvm.__version__}, sort_keys=True)
    path = Path(db) / f"{target.preset.name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    return path


def tune(mod, target: ResolvedTarget, db: str | os.PathLike, trials: int, verbose: bool):
    """Tune the fused kernels of `mod` (after mlc's graph passes) for `target`."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from ..build import fusion_passes

    if target.preset.is_cross:
        raise UsageError(
            f"tuning for {target.preset.name!r} measures candidates on an {target.preset.arch} "
            "CPU, and this host is not one; tune on the device (remote measurement is not "
            "supported yet)"
        )
    if target.device == "cuda":
        _require_gpu()
    work_dir = database_dir(db, target)
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "target.json").write_text(json.dumps(target.target, indent=2) + "\n")
    tvm_target = tvm.target.Target(target.target)
    with tvm_target, tvm.transform.PassContext(opt_level=3):
        fused = tvm.transform.Sequential(fusion_passes(tvm_target))(mod)
    tasks = ms.relax_integration.extract_tasks(fused, tvm_target)
    logging.getLogger("tvm.s_tir.meta_schedule").setLevel(
        logging.INFO if verbose else logging.WARNING
    )
    # Measure with the threads the bundle will run with (TVM's default is half the cores).
    os.environ.setdefault("TVM_NUM_THREADS", str(len(os.sched_getaffinity(0))))
    # A builder worker's first build imports tvm.s_tir.tensor_intrin, about 30 s on a 2-core
    # machine: inside MetaSchedule's default 30 s build timeout, every candidate then "fails".
    # The workers import it when they start, and the timeout leaves room for a slow machine.
    builder = ms.builder.LocalBuilder(timeout_sec=_BUILD_TIMEOUT_S, initializer=_warm_worker)
    try:
        database = ms.relax_integration.tune_relax(
            mod=fused,
            params={},
            target=tvm_target,
            work_dir=str(work_dir),
            max_trials_global=trials,
            num_trials_per_iter=min(64, max(1, trials)),
            builder=builder,
        )
    except (RuntimeError, ValueError) as exc:
        raise BuildError(f"tuning failed: {str(exc).strip().splitlines()[-1]}") from exc
    records = len(database.get_all_tuning_records())
    return TuneResult(work_dir, len(tasks), trials, records)


_BUILD_TIMEOUT_S = 120.0


def _warm_worker() -> None:
    import tvm.s_tir.tensor_intrin  # noqa: F401  (registers intrinsics; slow, see tune())


def apply_database(db: str | os.PathLike, target: ResolvedTarget):
    """(pass, context): the pass schedules every kernel the database has a record for, and
    must run inside the context, which makes the database current."""
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms

    work_dir = database_dir(db, target)
    if not (work_dir / "database_tuning_record.json").exists():
        raise UsageError(
            f"tuning database {str(db)!r} has no records for target {target.preset.name!r} "
            "on this machine and TVM version",
            hint=f"run `mlc tune MODEL --target {target.preset.name} --db {db}` first",
        )
    database = ms.database.JSONDatabase(
        path_workload=str(work_dir / "database_workload.json"),
        path_tuning_record=str(work_dir / "database_tuning_record.json"),
        allow_missing=False,
    )
    return relax.transform.MetaScheduleApplyDatabase(), database


def _require_gpu() -> None:
    from ..cuda import gpu_available

    has_gpu = gpu_available()
    if not has_gpu:
        raise UsageError(
            "tuning for CUDA measures each candidate kernel on a GPU, and this host has none "
            "(no NVIDIA driver or GPU found)",
            hint="run `mlc tune` on a GPU host and copy the --db directory here; compiling with "
            "--db needs no GPU (remote measurement is not supported yet)",
        )
