"""Pass instruments for `--dump-ir` and `--time-passes`: they watch the pipeline's passes by name.

TVM calls an instrument around every pass that runs under the PassContext, including TVM's own
nested helpers and the TIR passes after the Relax pipeline; these keep to the names of mlc's
pipeline steps, so the dump and the table show the pipeline as `pipeline.py` lists it.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import tvm


@dataclass(frozen=True)
class PassTime:
    name: str
    phase: str  # every phase the name appears in, comma-separated
    runs: int
    seconds: float

    def to_json(self) -> dict:
        return {**vars(self), "seconds": round(self.seconds, 4)}


@tvm.instrument.pass_instrument
class DumpIR:
    """Write the module after each watched pass to DIR/NNN-<pass>.py (000-input.py first)."""

    def __init__(self, directory: str | Path, names: set[str]):
        self.directory = Path(directory)
        self.names = names
        self.count = 0
        if self.directory.is_dir():  # an earlier run's dump would mix with this one's
            for old in self.directory.glob("[0-9][0-9][0-9]-*.py"):
                old.unlink()

    def _write(self, mod: tvm.IRModule, label: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        safe = re.sub(r"[^\w.-]", "_", label)
        try:
            text = mod.script()
        except Exception as exc:  # a dump must never be what breaks the compile
            text = f"# the IR could not be printed: {type(exc).__name__}: {exc}\n"
        (self.directory / f"{self.count:03d}-{safe}.py").write_text(text)
        self.count += 1

    def run_before_pass(self, mod, info):
        if self.count == 0 and info.name in self.names:
            self._write(mod, "input")

    def run_after_pass(self, mod, info):
        if info.name in self.names:
            self._write(mod, info.name)


@tvm.instrument.pass_instrument
class PassTimer:
    """Wall time per watched pass name, in the order the names first ran."""

    def __init__(self, phases: dict[str, str]):
        self.phases = phases  # pass name -> phase(s)
        self.seconds: dict[str, float] = {}
        self.runs: dict[str, int] = {}
        self._started: list[tuple[str, float]] = []

    def run_before_pass(self, mod, info):
        if info.name in self.phases:
            self._started.append((info.name, time.perf_counter()))

    def run_after_pass(self, mod, info):
        if info.name in self.phases and self._started and self._started[-1][0] == info.name:
            name, t0 = self._started.pop()
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
            self.runs[name] = self.runs.get(name, 0) + 1

    def report(self) -> tuple[PassTime, ...]:
        return tuple(
            PassTime(name, self.phases[name], self.runs[name], secs)
            for name, secs in self.seconds.items()
        )


def format_pass_times(times: tuple[PassTime, ...]) -> str:
    """The `--time-passes` table, slowest first."""
    rows = sorted(times, key=lambda t: -t.seconds)
    width = max([len(t.name) for t in rows] + [4])
    lines = [f"{'pass':{width}}  {'phase':24} {'runs':>4} {'seconds':>9}"]
    lines += [f"{t.name:{width}}  {t.phase:24} {t.runs:4d} {t.seconds:9.4f}" for t in rows]
    lines.append(f"{'total':{width}}  {'':24} {'':4} {sum(t.seconds for t in rows):9.4f}")
    return "\n".join(lines)


def instruments_for(options, target: tvm.target.Target, schedules: list):
    """The instruments `options` asks for, and the PassTimer among them (or None)."""
    from .pipeline import all_steps, lowering_steps

    steps = all_steps(options, target) + lowering_steps(target, schedules)
    phases: dict[str, list[str]] = {}
    for step in steps:
        seen = phases.setdefault(step.name, [])
        if step.phase not in seen:
            seen.append(step.phase)
    instruments: list = []
    if options.dump_ir:
        instruments.append(DumpIR(options.dump_ir, set(phases)))
    timer = PassTimer({k: ",".join(v) for k, v in phases.items()}) if options.time_passes else None
    return ([timer] if timer else []) + instruments, timer
