"""Run a bundle built for another architecture on this host, under qemu-user.

`mlc run` and `mlc bench` use this transparently for cross-compiled bundles: inputs go to the
bundle's own native runner (bin/mlc-runner) as .npy files, and its outputs come back the same
way. Latency measured this way is emulated and says nothing about the device's speed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from .errors import BundleError, UsageError
from .runner import RUNNER, runner_command


class EmulatedModel:
    """A cross-compiled bundle behind the same call interface as the loader's Model."""

    emulated = True

    def __init__(self, bundle: Path, manifest: dict[str, Any], loader: ModuleType, threads=None):
        emulator = manifest["target"].get("emulator")
        arch = manifest["target"]["requires"]["arch"]
        if not emulator:
            raise BundleError(f"bundle was compiled for {arch} and names no emulator for this host")
        if shutil.which(emulator["qemu"]) is None:
            raise BundleError(
                f"running a {arch} bundle here needs {emulator['qemu']}, which is not installed",
                hint=emulator.get("install_hint") or f"install {emulator['qemu']}",
            )
        if not (bundle / RUNNER).is_file():
            raise BundleError(f"bundle {str(bundle)!r} has no native runner ({RUNNER})")
        self.path = bundle.resolve()
        self.manifest = manifest
        self.description = f"{emulator['qemu']} -cpu {emulator['cpu']}"
        self._prefix = [emulator["qemu"], "-L", emulator["sysroot"], "-cpu", emulator["cpu"]]
        self._threads = threads
        self._loader = loader
        self.inputs = [loader._Spec(e) for e in manifest["inputs"]]
        self.outputs = [loader._Spec(e) for e in manifest["outputs"]]
        self.input_names = [s.name for s in self.inputs]
        self.output_names = [s.name for s in self.outputs]

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, np.ndarray]:
        outputs, _ = self.run(dict(zip(self.input_names, args)) | kwargs, repeat=1)
        return outputs

    def run(self, inputs: dict[str, Any], repeat: int = 1) -> tuple[dict[str, np.ndarray], dict]:
        """Outputs and the runner's latency line (emulated) for one set of inputs."""
        bound: dict[str, int] = {}
        for name in inputs:
            if name not in self.input_names:
                expected = ", ".join(self.input_names)
                raise UsageError(f"unknown input {name!r}; the model's inputs are: {expected}")
        with tempfile.TemporaryDirectory(prefix="mlc-emu-") as tmp:
            args = []
            for spec in self.inputs:
                if spec.name not in inputs:
                    raise UsageError(f"missing input {spec.name!r} ({spec.describe()})")
                try:
                    array = self._loader._check(spec, inputs[spec.name], bound)
                except ValueError as exc:
                    raise UsageError(str(exc)) from None
                path = Path(tmp) / f"in{len(args) // 2}.npy"
                np.save(path, array)
                args += ["--input", f"{spec.name}={path}"]
            args += ["--output-dir", tmp, "--repeat", str(repeat), "--warmup", "1"]
            if self._threads:
                args += ["--threads", str(self._threads)]
            result = subprocess.run(
                runner_command(self.path, args, self._prefix), capture_output=True, text=True
            )
            if result.returncode != 0:
                message = (result.stderr.strip().splitlines() or ["no output"])[-1]
                raise BundleError(f"the bundle failed under {self.description}: {message}")
            # The runner names files after outputs, with "/" as "_": an ONNX name is no path.
            outputs = {
                n: np.load(Path(tmp) / f"{n.replace('/', '_')}.npy") for n in self.output_names
            }
        return outputs, _parse_latency(result.stdout)


def _parse_latency(stdout: str) -> dict:
    match = re.search(r"latency_ms min=(\S+) median=(\S+) p90=(\S+) runs=(\d+)", stdout)
    if not match:
        return {}
    lo, median, p90, runs = match.groups()
    return {
        "min_ms": float(lo),
        "median_ms": float(median),
        "p90_ms": float(p90),
        "runs": int(runs),
    }
