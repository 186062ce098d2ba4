"""Targets are data: TOML presets in targets/, or a user's own preset file.

Reading and listing presets needs no TVM import; `resolve_target` turns a preset into a TVM
target for the build stage.
"""

from __future__ import annotations

import os
import platform
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UsageError

PRESET_DIR = Path(
    os.environ.get("MLC_TARGETS_DIR", Path(__file__).resolve().parents[1] / "targets")
)

# LLVM feature name -> the name Linux shows in /proc/cpuinfo, for the features whose absence
# makes compiled code die with SIGILL. The loader checks these before it runs anything.
_X86_FEATURES = {
    "sse4.1": "sse4_1",
    "sse4.2": "sse4_2",
    "avx": "avx",
    "avx2": "avx2",
    "fma": "fma",
    "f16c": "f16c",
    "avx512f": "avx512f",
    "avx512bw": "avx512bw",
    "avx512dq": "avx512dq",
    "avx512vl": "avx512vl",
    "avx512cd": "avx512cd",
    "avx512vnni": "avx512_vnni",
    "avx512bf16": "avx512_bf16",
    "amx-tile": "amx_tile",  # AMX: only where the build host can use it (see _host_amx)
    "amx-bf16": "amx_bf16",
}
AMX_FEATURES = ("amx-tile", "amx-bf16")  # LLVM's names of what passes/amx_matmul.py needs


@dataclass(frozen=True)
class TargetPreset:
    """A preset as written in its TOML file."""

    name: str
    path: Path
    description: str
    target: dict[str, Any]
    arch: str
    runtime_libs: tuple[str, ...]
    cpu_features: tuple[str, ...] | str
    cross_compiler: str | None = None  # C++ compiler for the target; None: the host's
    cross_install_hint: str = ""
    emulator: dict[str, str] | None = None  # how this host runs the target's code (qemu)
    cuda: dict[str, Any] | None = None  # {"arches": "auto" | [sm_XY...], "ptx": bool}

    @property
    def is_cross(self) -> bool:
        return self.arch != host_arch()


@dataclass(frozen=True)
class ResolvedTarget:
    """A preset made concrete for this build: the TVM target and what the deploy host needs."""

    preset: TargetPreset
    target: dict[str, Any]
    cpu_features: tuple[str, ...]
    gpu_arches: tuple[str, ...] = ()  # CUDA: machine code for each, oldest first
    gpu_ptx: bool = False
    gpu_arches_from: str = ""  # why these arches: the preset, the local GPU, or the default

    @property
    def device(self) -> str:
        return "cuda" if self.gpu_arches else "cpu"

    def manifest_entry(self) -> dict[str, Any]:
        entry = {
            "name": self.preset.name,
            "tvm_target": self.target,
            "requires": {"arch": self.preset.arch, "cpu_features": list(self.cpu_features)},
        }
        if self.preset.emulator:
            entry["emulator"] = dict(self.preset.emulator)
        entry["device"] = self.device
        if self.gpu_arches:
            entry["cuda"] = {
                "sass": list(self.gpu_arches),
                "ptx": [f"compute_{self.gpu_arches[-1][3:]}"] if self.gpu_ptx else [],
                "arches_from": self.gpu_arches_from,
            }
        return entry


def host_arch() -> str:
    """This machine's architecture, named as in presets (x86_64, aarch64)."""
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


def list_presets() -> list[TargetPreset]:
    """Every preset in the preset directory, by name."""
    return [load_preset(p.stem) for p in sorted(PRESET_DIR.glob("*.toml"))]


def load_preset(name_or_path: str) -> TargetPreset:
    """A preset by name (`x86`) or by the path of a TOML file."""
    path = Path(name_or_path)
    if name_or_path.endswith(".toml") or path.parent != Path("."):
        if not path.is_file():
            raise UsageError(f"target preset file {name_or_path!r} does not exist")
    else:
        path = PRESET_DIR / f"{name_or_path}.toml"
        if not path.is_file():
            known = ", ".join(p.stem for p in sorted(PRESET_DIR.glob("*.toml")))
            raise UsageError(
                f"unknown target {name_or_path!r}; expected one of: {known}, "
                "or the path of a preset .toml file",
                hint="`mlc targets` lists the presets",
            )
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"target preset {str(path)!r} is not valid TOML: {exc}") from None
    return _parse_preset(path, data)


def _parse_preset(path: Path, data: dict[str, Any]) -> TargetPreset:
    def need(table: dict, key: str, kind: type, where: str) -> Any:
        value = table.get(key)
        if not isinstance(value, kind):
            raise UsageError(
                f"target preset {str(path)!r}: {where}{key} must be a {kind.__name__}, "
                f"got {value!r}"
            )
        return value

    target = need(data, "target", dict, "")
    need(target, "kind", str, "target.")
    runtime = need(data, "runtime", dict, "")
    libs = need(runtime, "libs", list, "runtime.")
    features = runtime.get("cpu_features", [])
    if not (features == "host" or isinstance(features, list)):
        raise UsageError(
            f'target preset {str(path)!r}: runtime.cpu_features must be a list or "host", '
            f"got {features!r}"
        )
    build = data.get("build", {})
    emulator = data.get("emulator")
    if emulator is not None:
        for key in ("qemu", "cpu", "sysroot"):
            need(emulator, key, str, "emulator.")
    return TargetPreset(
        name=path.stem,
        path=path,
        description=str(data.get("description", "")),
        target=dict(target),
        arch=need(runtime, "arch", str, "runtime."),
        runtime_libs=tuple(libs),
        cpu_features=features if isinstance(features, str) else tuple(features),
        cross_compiler=build.get("cross_compiler"),
        cross_install_hint=str(build.get("install_hint", "")),
        emulator={k: str(v) for k, v in emulator.items()} if emulator else None,
        cuda=dict(data["cuda"]) if isinstance(data.get("cuda"), dict) else None,
    )


def resolve_target(preset: TargetPreset) -> ResolvedTarget:
    """Make a preset concrete: detect the host CPU where it asks for `host`."""
    import tvm
    import tvm_ffi

    target = dict(preset.target)
    features = preset.cpu_features
    if target.get("mcpu") == "host" or features == "host":
        if host_arch() != "x86_64":
            raise UsageError(
                f"target {preset.name!r} detects the build host's x86-64 CPU, but this host is "
                f"{platform.machine()}"
            )
        host_features = tvm_ffi.get_global_func("tvm.codegen.llvm.GetHostCPUFeatures")()
        if target.get("mcpu") == "host":
            target["mcpu"] = str(tvm_ffi.get_global_func("tvm.codegen.llvm.GetHostCPUName")())
        amx = preset.target.get("mcpu") == "host" and _host_amx(host_features)
        if amx:  # LLVM's name for a virtual machine's CPU may be one without AMX
            target["mattr"] = [*target.get("mattr", []), *(f"+{f}" for f in AMX_FEATURES)]
        if features == "host":
            features = tuple(
                proc
                for llvm, proc in _X86_FEATURES.items()
                if bool(host_features.get(llvm)) and (amx or llvm not in AMX_FEATURES)
            )
    if not preset.is_cross and target["kind"] == "llvm":  # cores say nothing of another machine
        target.setdefault("num-cores", len(os.sched_getaffinity(0)))
    _check_llvm_cpu(preset.name, target)
    gpu: dict[str, Any] = {}
    if target["kind"] == "cuda":
        gpu = _resolve_gpu_arches(preset)
        target["arch"] = gpu["gpu_arches"][0]  # code for the oldest runs on all of them
    try:
        tvm.target.Target(target)
    except Exception as exc:  # TVM raises several types for a bad target dict
        raise UsageError(
            f"target preset {preset.name!r} has an invalid TVM target: {exc}"
        ) from None
    # The dict as given (not TVM's export, which adds derived keys): it recreates the target.
    return ResolvedTarget(preset=preset, target=target, cpu_features=tuple(features), **gpu)


def has_fp16_arithmetic(target: ResolvedTarget) -> bool:
    """Can the target compute in fp16 at full speed? GPUs and AArch64 with +fullfp16 can;
    x86 only with AVX512-FP16. Elsewhere fp16 models compute in fp32 (onnx_fp16.py)."""
    t = target.target
    if t["kind"] != "llvm":
        return True
    mattr = t.get("mattr", [])
    if target.preset.arch == "aarch64":
        return "+fullfp16" in mattr
    if "+avx512fp16" in mattr:
        return True
    if target.preset.target.get("mcpu") == "host":
        import tvm_ffi

        host = tvm_ffi.get_global_func("tvm.codegen.llvm.GetHostCPUFeatures")()
        return bool(host.get("avx512fp16"))
    return False


def _host_amx(host_features) -> bool:
    """Whether this host's CPU has AMX tiles with bf16 products and Linux lets processes use
    them: the `x86` preset builds for this host, where its bundles are run (`mlc run`, the
    tests, tuning's in-model check)."""
    from .runtime.loader import enable_amx

    return all(bool(host_features.get(f)) for f in AMX_FEATURES) and enable_amx()


def _resolve_gpu_arches(preset: TargetPreset) -> dict[str, Any]:
    from .cuda import DEFAULT_ARCHES, local_gpu_arch, parse_arches

    settings = preset.cuda or {}
    wanted = settings.get("arches", "auto")
    if wanted == "auto":
        local = local_gpu_arch()
        arches, source = ((local,), "local GPU") if local else (DEFAULT_ARCHES, "default")
    else:
        arches, source = parse_arches(wanted), "preset"
    return {
        "gpu_arches": arches,
        "gpu_ptx": bool(settings.get("ptx", True)),
        "gpu_arches_from": source,
    }


def _check_llvm_cpu(name: str, target: dict[str, Any]) -> None:
    """LLVM quietly falls back to generic code for a CPU name it does not know: refuse it."""
    import tvm_ffi

    cpu = target.get("mcpu")
    if target["kind"] != "llvm" or not cpu:
        return
    triple = target.get("mtriple") or tvm_ffi.get_global_func("target.llvm_get_system_triple")()
    if not tvm_ffi.get_global_func("target.llvm_is_valid_cpu")(cpu, triple):
        raise UsageError(
            f"target preset {name!r} has an invalid TVM target: LLVM does not know CPU {cpu!r} "
            f"for {triple}",
            hint="`llc -mtriple=TRIPLE -mcpu=help` lists the CPU names",
        )
