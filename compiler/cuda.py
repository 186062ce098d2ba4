"""CUDA build hooks: GPU architectures, nvcc, multi-architecture fatbins, the CUDA runtime.

TVM generates CUDA C once, for the oldest architecture a bundle targets, and hands it to the
global callback `tvm_callback_cuda_compile`. mlc replaces that callback while it builds, so
that nvcc compiles the source into one fatbin holding machine code (SASS) for every requested
architecture plus PTX for the newest, which newer GPUs compile at load time. One bundle then
runs on a mixed fleet. None of this needs a GPU on the build host.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BuildError, UsageError

DEFAULT_ARCHES = ("sm_75", "sm_80", "sm_86", "sm_89", "sm_90")
NVCC_HINT = (
    "install the CUDA toolkit's nvcc (apt-get install nvidia-cuda-toolkit, or "
    "pip install nvidia-cuda-nvcc) and put it on PATH"
)
_FATBIN_MAGIC = 0xBA55ED50


def parse_arches(value: str | list[str]) -> tuple[str, ...]:
    """`sm_80`, `sm_80,sm_90` or a list -> validated architectures, oldest first."""
    items = value.split(",") if isinstance(value, str) else list(value)
    arches = []
    for item in (i.strip() for i in items):
        if not (item.startswith("sm_") and item[3:].isdigit() and len(item) in (5, 6)):
            raise UsageError(f"GPU architecture {item!r} is not of the form sm_XY (e.g. sm_80)")
        arches.append(item)
    return tuple(sorted(set(arches), key=lambda a: int(a[3:])))


def local_gpu_arch() -> str | None:
    """The first local GPU's architecture (`sm_90`), or None without a GPU or nvidia-smi."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    first = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else ""
    return "sm_" + first.replace(".", "") if first.replace(".", "").isdigit() else None


def gpu_available() -> bool:
    """Whether this host has an NVIDIA driver and at least one GPU."""
    import ctypes

    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return local_gpu_arch() is not None


def require_nvcc() -> str:
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        raise BuildError("compiling for CUDA needs nvcc, which is not on PATH", hint=NVCC_HINT)
    return nvcc


# The driver functions libtvm_runtime_cuda.so links against (apache-tvm 0.27).
_DRIVER_SYMBOLS = (
    "cuDeviceGetName",
    "cuFuncSetAttribute",
    "cuGetErrorName",
    "cuGetErrorString",
    "cuLaunchKernelEx",
    "cuModuleGetFunction",
    "cuModuleLoadData",
    "cuModuleUnload",
    "cuTensorMapEncodeTiled",
)


def ensure_cuda_codegen() -> None:
    """Make TVM build real CUDA modules in this process, GPU driver or not.

    TVM builds a CUDA module only when its CUDA runtime library is loaded, and that library
    links the driver, libcuda.so.1. A build host without a GPU has no driver: then TVM makes
    a placeholder module that cannot be exported. The CUDA toolkit's answer for such hosts is
    a stub libcuda; mlc compiles one (every entry point returns CUDA_ERROR_NO_DEVICE) into its
    cache and loads it first. Nothing runs on a GPU at build time, and the stub never ships.
    """
    import ctypes

    import tvm
    import tvm_ffi

    if tvm_ffi.get_global_func("ffi.Module.create.cuda", allow_missing=True) is not None:
        return
    try:
        ctypes.CDLL("libcuda.so.1", mode=ctypes.RTLD_GLOBAL)  # a real driver, if there is one
    except OSError:
        ctypes.CDLL(str(_driver_stub()), mode=ctypes.RTLD_GLOBAL)
    try:
        ctypes.CDLL(
            str(Path(tvm.__file__).parent / "lib" / "libtvm_runtime_cuda.so"),
            mode=ctypes.RTLD_GLOBAL,
        )
    except OSError as exc:
        raise BuildError(
            f"cannot load TVM's CUDA runtime to generate CUDA code: {exc}", hint=NVCC_HINT
        ) from None


def _driver_stub() -> Path:
    from .runtime_libs import cache_root

    stub = cache_root() / "cuda-driver-stub" / "libcuda.so.1"
    if stub.is_file():
        return stub
    stub.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=stub.parent) as tmp:
        source = Path(tmp) / "stub.c"
        source.write_text(
            "".join(f"int {name}(void) {{ return 100; }}\n" for name in _DRIVER_SYMBOLS)
        )
        built = Path(tmp) / "libcuda.so.1"
        result = subprocess.run(
            ["cc", "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", str(source), "-o", str(built)],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise BuildError(f"building the CUDA driver stub failed: {result.stderr[-500:]}")
        os.replace(built, stub)
    return stub


def gencode_flags(arches: tuple[str, ...], ptx: bool) -> list[str]:
    flags = []
    for arch in arches:
        num = arch[3:]
        flags += ["-gencode", f"arch=compute_{num},code=sm_{num}"]
    if ptx:
        num = arches[-1][3:]
        flags += ["-gencode", f"arch=compute_{num},code=compute_{num}"]
    return flags


@dataclass
class DeviceCode:
    """What the CUDA compiles of one build produced."""

    fatbins: list[bytes] = field(default_factory=list)
    kernels: set[str] = field(default_factory=set)  # __global__ function names


@contextlib.contextmanager
def fatbin_compiler(arches: tuple[str, ...], ptx: bool) -> Iterator[DeviceCode]:
    """While active, TVM's CUDA compiles produce multi-arch fatbins, collected in the result."""
    import tvm_ffi

    nvcc = require_nvcc()
    ensure_cuda_codegen()
    produced = DeviceCode()
    previous = tvm_ffi.get_global_func("tvm_callback_cuda_compile", allow_missing=True)

    def compile_fatbin(code: str) -> bytes:
        with tempfile.TemporaryDirectory(prefix="mlc-cuda-") as tmp:
            src, out = Path(tmp) / "kernels.cu", Path(tmp) / "kernels.fatbin"
            src.write_text(code)
            cmd = [nvcc, "--fatbin", "-O3", *gencode_flags(arches, ptx), str(src), "-o", str(out)]
            result = subprocess.run(cmd, capture_output=True, text=True)
            if result.returncode != 0:
                raise RuntimeError(f"nvcc failed: {result.stderr.strip()[-1500:]}")
            data = out.read_bytes()
        produced.fatbins.append(data)
        produced.kernels.update(
            re.findall(r"__global__ void (?:__launch_bounds__\(\d+\) )?(\w+)\(", code)
        )
        return bytearray(data)

    tvm_ffi.register_global_func("tvm_callback_cuda_compile", compile_fatbin, override=True)
    try:
        yield produced
    finally:
        if previous is not None:
            tvm_ffi.register_global_func("tvm_callback_cuda_compile", previous, override=True)


def fatbin_contents(data: bytes) -> list[tuple[str, str]]:
    """What a fatbin holds: [("sass", "sm_80"), ("ptx", "compute_90"), ...]."""
    magic, _version, header, size = struct.unpack_from("<IHHQ", data, 0)
    if magic != _FATBIN_MAGIC:
        raise ValueError("not a CUDA fatbin")
    entries, offset, end = [], header, header + size
    while offset < end:
        kind, _v, entry_header, padded = struct.unpack_from("<HHII", data, offset)
        sm = struct.unpack_from("<I", data, offset + 28)[0]
        entries.append(("ptx", f"compute_{sm}") if kind == 1 else ("sass", f"sm_{sm}"))
        offset += entry_header + padded
    return entries


def find_cudart() -> Path:
    """libcudart.so.13 from the CUDA toolkit that nvcc belongs to, to ship in the bundle."""
    # nvcc may be a wrapper script; ask it where it lives (its -v output names TOP=...).
    probe = subprocess.run(
        [require_nvcc(), "--dryrun", "-v", "x.cu"], capture_output=True, text=True
    )
    tops = [ln.split("=", 1)[1].strip() for ln in probe.stderr.splitlines() if "TOP=" in ln]
    roots = [Path(t) for t in tops[:1]] + [Path("/usr/local/cuda")]
    candidates = [root / d / "libcudart.so.13" for root in roots for d in ("lib64", "lib")]
    for path in candidates:
        if path.is_file():
            return path
    raise BuildError(
        "cannot find libcudart.so.13 (the CUDA 13 runtime) to put in the bundle",
        hint="install the CUDA 13 toolkit, or pip install nvidia-cuda-runtime",
    )
