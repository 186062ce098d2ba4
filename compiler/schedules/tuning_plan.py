"""What a tuning run plans and reports: tasks with their shares, budgets and progress. No
MetaSchedule import (tuning.py does the tuning)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class TuneSettings:
    db: str
    trials: int | None = None  # total trials; None with `seconds`: until the time is spent
    seconds: float | None = None
    threads: int | None = None  # measuring threads; None: TVM_NUM_THREADS or physical cores
    model_check: bool = True  # judge new records inside the model (schedules/validate.py)


@dataclass
class TaskState:
    """One tuning task: a distinct kernel, how often the model calls it, and its progress."""

    name: str
    workload: str  # MetaSchedule's structural hash
    calls: int
    estimate_s: float  # estimated time of one call
    share: float = 0.0
    target: int = 0  # trials this task should have in the database
    trials: int = 0  # trials it has
    best_s: float | None = None
    status: str = "pending"  # pending, cheap, by rule, tuned, already tuned, exhausted, out of time
    extracted: object = field(default=None, repr=False)
    baseline_done: bool = False  # the default schedule was measured in this run


@dataclass(frozen=True)
class TuneEvent:
    """Progress: kind is "plan", "task" (a task starts), "batch", "skip", "end" or "note"
    (a message about the run, such as the in-model check)."""

    kind: str
    index: int  # 1-based among the tasks being tuned; 0 for "plan"
    total: int
    task: TaskState | None
    model_ms: float | None  # estimated end-to-end latency of the kernels
    message: str = ""
    open_ended: bool = False  # only a time limit: the trial targets mean nothing to the user


@dataclass(frozen=True)
class TuneResult:
    db: Path
    threads: int
    tasks: list[TaskState]
    trials: int  # measured by this run
    records: int  # valid records in the database for this target
    model_ms: float | None
    out_of_time: bool
    trial_budget: int | None  # None: only a time limit
    validation: object = None  # validate.Validation, when the in-model check ran
    kernel_workloads: dict = field(default_factory=dict, repr=False)  # kernel -> workload

    def to_json(self) -> dict:
        return {
            "db": str(self.db),
            "threads": self.threads,
            "trial_budget": self.trial_budget,
            "trials": self.trials,
            "records": self.records,
            "est_model_ms": None if self.model_ms is None else round(self.model_ms, 4),
            "out_of_time": self.out_of_time,
            "model_check": self.validation.to_json() if self.validation else None,
            "kernels": [
                {
                    "name": t.name,
                    "calls": t.calls,
                    "share": round(t.share, 4),
                    "trials": t.trials,
                    "target_trials": t.target if self.trial_budget else None,
                    "best_ms": None if t.best_s is None else round(t.best_s * 1e3, 6),
                    "status": t.status,
                }
                for t in self.tasks
            ],
        }


Progress = Callable[[TuneEvent], None]


def allocate(shares: list[float], budget: int) -> list[int]:
    """Split `budget` trials by `shares` (largest remainder), at least one per task while the
    budget lasts, the largest shares first."""
    if not shares:
        return []
    total = sum(shares) or 1.0
    exact = [budget * s / total for s in shares]
    counts = [max(1, math.floor(x)) for x in exact]
    order = sorted(range(len(shares)), key=lambda i: exact[i] - math.floor(exact[i]), reverse=True)
    for i in order[: max(0, budget - sum(counts))]:
        counts[i] += 1
    for i in sorted(range(len(shares)), key=lambda i: shares[i]):  # over budget: trim smallest
        while sum(counts) > budget and counts[i] > 0:
            counts[i] -= 1
    return counts


def plan_message(tasks: list[TaskState]) -> str:
    counts: dict[str, int] = {}
    for t in tasks:
        counts[t.status] = counts.get(t.status, 0) + 1
    todo = counts.pop("pending", 0)
    parts = [f"{n} {status}" for status, n in counts.items()]
    return f"{len(tasks)} kernels: {todo} to tune" + "".join(f", {p}" for p in parts)


def estimate_model_ms(tasks: list[TaskState]) -> float | None:
    """Calls times time per call, summed over the kernels: measured where tuned, else the
    estimate scaled by how far off the measured kernels' estimates were. None before anything
    is measured."""
    ratios = sorted(t.best_s / t.estimate_s for t in tasks if t.best_s and t.estimate_s > 0)
    if not ratios:
        return None
    scale = ratios[len(ratios) // 2]
    return 1e3 * sum(t.calls * (t.best_s or t.estimate_s * scale) for t in tasks)
