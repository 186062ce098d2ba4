"""Which tuning records a build uses: the database key for a target and the threads, and the
records of that key applied before the default schedules."""

from __future__ import annotations

import os

from ..errors import UsageError
from ..targets import ResolvedTarget
from ..tuning_db import DatabaseKey, TuningLog, open_logs


def measuring_threads(threads: int | None) -> int:
    """--threads, else TVM_NUM_THREADS, else the physical cores this process may use."""
    from ..runtime.loader import physical_cores

    if threads is not None:
        return threads
    env = os.environ.get("TVM_NUM_THREADS", "")
    if env:
        if not env.isdigit() or int(env) < 1:
            raise UsageError(f"TVM_NUM_THREADS must be a positive integer, got {env!r}")
        return int(env)
    return physical_cores()


def database_key(target: ResolvedTarget, threads: int) -> DatabaseKey:
    import tvm

    return DatabaseKey(target.preset.name, target.target, tvm.__version__, threads)


def apply_database(
    db: str | os.PathLike, target: ResolvedTarget, log: TuningLog | None = None, judged=True
):
    """(pass, database, info): the pass schedules every kernel the database has a record for,
    and must run inside the database's context; info says which records were used. `log`: that
    key rather than the one for the runtime's threads; `judged=False`: ignore the in-model
    verdicts (the fastest record alone wins)."""
    from tvm import relax

    from ._ms_support import compile_database

    log = log or _log_for_compile(db, target)
    contents = log.read()
    info = {
        "db": str(db),
        "key": log.path.name,
        "threads": log.key.threads,
        "runtime_threads": measuring_threads(None),
        "sha256": contents.sha256,
    }
    database = compile_database(contents, judged)
    return relax.transform.MetaScheduleApplyDatabase(), database, info


def _log_for_compile(db, target: ResolvedTarget) -> TuningLog:
    """The key for this target and TVM version; of several (tuned with different threads), the
    one for the threads the bundle runs with by default, else the one with most records."""
    wanted = database_key(target, measuring_threads(None))
    logs = [log for log in open_logs(db) if log.key.matches(wanted)]
    if not logs:
        raise UsageError(
            f"tuning database {str(db)!r} has no records for target {target.preset.name!r} "
            "on this machine and TVM version",
            hint=f"run `mlc tune MODEL --target {target.preset.name} --db {db}` first",
        )
    for log in logs:
        if log.key.threads == wanted.threads:
            return log
    return max(logs, key=lambda log: len(log.read().records))
