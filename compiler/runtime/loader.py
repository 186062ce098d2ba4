"""Loader for mlc bundles.

This file is copied into every bundle and runs on deploy hosts that have only the Python
standard library, numpy and apache-tvm-ffi. It must never import tvm, onnx, click or the mlc
compiler package.

    from loader import load
    model = load("build/resnet")          # verifies, loads model.so and the bundled runtime
    outputs = model(data=x)               # dict: output name -> numpy array
                                          # (a list of arrays for an ONNX sequence output)
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import platform
import threading
from pathlib import Path
from typing import Any

import numpy as np

# The bundle layout. The compiler imports these names, so they live in exactly one place.
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
LIBRARY_FILE = "model.so"
WEIGHTS_FILE = "weights.bin"
LOADER_FILE = "loader.py"
RUNTIME_DIR = "lib"
ALIGNMENT = 64  # bytes; TVM's kernels assume it for every tensor

_DEVICE_TYPES = {"cpu": 1, "cuda": 2}
_POOLED_ALLOCATOR = 2
_runtime_lock = threading.Lock()
_loaded_runtime_libs: dict[str, ctypes.CDLL] = {}  # by file name, for the process's life


class BundleError(RuntimeError):
    """The bundle is damaged, incompatible with this loader, or cannot run on this host."""


class InputError(ValueError):
    """The inputs passed to a model do not match its manifest."""


def load(
    path: str | os.PathLike,
    device: str | None = None,
    threads: int | None = None,
    verify: bool = True,
) -> Model:
    """Load the bundle in directory `path`.

    `device` is "cpu", or "cuda"/"cuda:N" for bundles compiled for NVIDIA GPUs (default: the
    bundle's kind, GPU 0). `threads` sets the number of worker threads for each calling thread
    (default: TVM_NUM_THREADS, else one per physical core). `verify=False` skips the sha256 check.
    """
    return Model(Path(path), device=device, threads=threads, verify=verify)


def read_manifest(bundle: Path) -> dict[str, Any]:
    """Read and sanity-check a bundle's manifest."""
    manifest_path = bundle / MANIFEST_FILE
    if not bundle.is_dir():
        raise BundleError(f"bundle directory {str(bundle)!r} does not exist")
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise BundleError(
            f"{str(bundle)!r} is not an mlc bundle: it has no {MANIFEST_FILE}"
        ) from None
    except (OSError, ValueError) as exc:
        raise BundleError(f"cannot read {manifest_path}: {exc}") from None
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if version != FORMAT_VERSION:
        raise BundleError(
            f"bundle format version {version!r} is not supported: this loader reads version "
            f"{FORMAT_VERSION}; recompile the model with a matching mlc"
        )
    return manifest


def verify_files(bundle: Path, manifest: dict[str, Any]) -> None:
    """Check every file listed in the manifest against its sha256."""
    for rel, expected in manifest["files"].items():
        path = bundle / rel
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise BundleError(f"manifest lists an unsafe file path {rel!r}")
        try:
            with open(path, "rb") as f:
                actual = hashlib.file_digest(f, "sha256").hexdigest()
        except FileNotFoundError:
            raise BundleError(f"bundle file {rel!r} is missing from {str(bundle)!r}") from None
        if actual != expected:
            raise BundleError(
                f"bundle file {rel!r} does not match its sha256 in the manifest "
                f"(expected {expected[:12]}…, found {actual[:12]}…): the bundle is damaged"
            )


AMX_FLAG = "amx_tile"  # /proc/cpuinfo's name for AMX's tile registers
_SYS_ARCH_PRCTL, _ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA = 158, 0x1023, 18  # Linux x86-64


def enable_amx() -> bool:
    """Ask Linux for this process's use of AMX tile data (Linux 5.16+ grants it on request;
    without it the first tile instruction kills the process). True where granted."""
    if platform.machine().lower() not in ("x86_64", "amd64") or platform.system() != "Linux":
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.syscall(_SYS_ARCH_PRCTL, _ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA) == 0
    except (OSError, AttributeError):
        return False


def check_host(manifest: dict[str, Any]) -> None:
    """Refuse to run a bundle whose machine code this CPU cannot execute."""
    requires = manifest["target"].get("requires", {})
    arch = requires.get("arch")
    machine = platform.machine().lower().replace("amd64", "x86_64").replace("arm64", "aarch64")
    if arch and machine != arch:
        raise BundleError(f"bundle was compiled for {arch}, but this host is {machine}")
    needed = set(requires.get("cpu_features", []))
    have = _cpu_flags(machine)
    if needed and have is not None and not needed <= have:
        missing = ", ".join(sorted(needed - have))
        raise BundleError(
            f"this CPU lacks {missing}, which the bundle's target "
            f"{manifest['target']['name']!r} requires; recompile with a target this host supports "
            "(`mlc targets` lists them)"
        )
    if AMX_FLAG in needed and not enable_amx():
        raise BundleError(
            "the bundle's kernels use AMX tiles, and Linux refused this process their use "
            "(arch_prctl ARCH_REQ_XCOMP_PERM needs Linux 5.16 or newer); recompile with "
            "`--disable-pass AmxMatmul`"
        )


def _cpu_flags(machine: str = "x86_64") -> set[str] | None:
    """The CPU's feature names, or None where they cannot be read (then nothing is checked)."""
    key = {"x86_64": "flags", "aarch64": "Features"}.get(machine)
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        # Only this architecture's line: under qemu-user /proc/cpuinfo may be the host's.
        if key and line.split(":", 1)[0].strip() == key:
            return set(line.split(":", 1)[1].split())
    return None


def physical_cores() -> int:
    """The physical cores this process may run on (hardware threads of one core count once)."""
    cores = set()
    for cpu in os.sched_getaffinity(0):
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            package = (topology / "physical_package_id").read_text().strip()
            cores.add((package, (topology / "core_id").read_text().strip()))
        except OSError:  # no sysfs (a container, an emulator): count the CPU as a core
            cores.add(("cpu", str(cpu)))
    return max(1, len(cores))


def _load_runtime(bundle: Path, manifest: dict[str, Any]) -> None:
    # TVM sizes its thread pool when the runtime starts: one thread per physical core this
    # process may use (what `mlc tune` measures with), unless the user set TVM_NUM_THREADS.
    # TVM's own default, half the hardware threads, would use one core on a 2-vCPU machine.
    os.environ.setdefault("TVM_NUM_THREADS", str(physical_cores()))
    import tvm_ffi  # loads libtvm_ffi.so, which the runtime links against

    with _runtime_lock:
        # One TVM runtime per process: a second copy would register its global functions again.
        # A runtime this loader did not load comes from an imported `tvm` package, which has
        # every runtime function; otherwise load what this bundle needs and is not loaded yet.
        foreign = tvm_ffi.get_global_func("runtime.NumThreads", allow_missing=True) is not None
        if foreign and not _loaded_runtime_libs:
            return
        for name in manifest["runtime_libs"]:
            if name not in _loaded_runtime_libs:
                path = str(bundle / RUNTIME_DIR / name)
                try:
                    _loaded_runtime_libs[name] = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
                except OSError as exc:
                    if "libcuda.so" in str(exc):
                        raise BundleError(
                            "this bundle runs on NVIDIA GPUs, and this host has no NVIDIA driver "
                            "(libcuda.so.1 was not found); install the driver (CUDA 13 or newer) "
                            "or compile for a CPU target"
                        ) from None
                    raise BundleError(f"cannot load runtime library {name}: {exc}") from None


class _Spec:
    __slots__ = ("dims", "dtype", "name", "ranges", "static")

    def __init__(self, entry: dict[str, Any], ranges: dict[str, tuple] | None = None):
        self.name = entry["name"]
        self.dtype = np.dtype(entry["dtype"])
        self.dims = tuple(entry["shape"])  # ints, or strings naming symbolic dims
        self.static = self.dims if all(type(d) is int for d in self.dims) else None
        # symbolic dim -> (min, max), either None: the range the bundle was compiled for
        self.ranges = {d: ranges[d] for d in self.dims if d in ranges} if ranges else {}

    def describe(self) -> str:
        return f"{self.name}: {self.dtype}[{', '.join(str(d) for d in self.dims)}]"


class Model:
    """A loaded bundle. Calling it runs the model; it is safe to call from several threads."""

    def __init__(self, bundle: Path, device: str, threads: int | None, verify: bool):
        self.path = bundle
        self.manifest = manifest = read_manifest(bundle)
        if verify:
            verify_files(bundle, manifest)
        check_host(manifest)
        kind, index = _parse_device(device, manifest)
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        self.device = f"{kind}:{index}"
        self._device_type, self._device_id = _DEVICE_TYPES[kind], index
        self._threads = threads
        ranges = {d["name"]: (d["min"], d["max"]) for d in manifest.get("dims", [])}
        self.inputs = [_Spec(e, ranges) for e in manifest["inputs"]]
        self.outputs = [_Spec(e) for e in manifest["outputs"]]
        self.input_names = [s.name for s in self.inputs]
        self.output_names = [s.name for s in self.outputs]
        self._by_name = {s.name: i for i, s in enumerate(self.inputs)}

        _load_runtime(bundle, manifest)
        import tvm_ffi

        self._tvm_ffi = tvm_ffi
        if kind == "cuda":
            try:
                _check_gpu(tvm_ffi, index, manifest)
            except (RuntimeError, ValueError) as exc:  # the CUDA runtime's own failures
                if isinstance(exc, BundleError):
                    raise
                raise BundleError(f"cannot use CUDA device {index}: {exc}") from None
        self._library = tvm_ffi.load_module(str((bundle / LIBRARY_FILE).resolve()))
        self._transfer = _Transfer(tvm_ffi, kind, index) if kind != "cpu" else None
        self._weights = self._map_weights(bundle, manifest)
        self._local = threading.local()
        self._create_lock = threading.Lock()

    def _map_weights(self, bundle: Path, manifest: dict[str, Any]) -> list[Any]:
        entries = manifest["weights"]
        if not entries:
            return []
        # Copy-on-write mapping: pages load lazily and are shared between processes; DLPack
        # cannot export read-only arrays, and the model never writes to its weights.
        blob = np.memmap(bundle / WEIGHTS_FILE, dtype=np.uint8, mode="c")
        self._blob = blob
        tensors = []
        for e in entries:
            raw = blob[e["offset"] : e["offset"] + e["nbytes"]]
            tensor = self._weight_tensor(raw, e["dtype"], e["shape"])
            # On a GPU the weights are copied once, at load, and stay resident.
            tensors.append(self._transfer.to_device(tensor) if self._transfer else tensor)
        return tensors

    def _weight_tensor(self, raw: np.ndarray, dtype: str, shape: list[int]) -> Any:
        if dtype != "bfloat16":
            return self._tvm_ffi.from_dlpack(raw.view(np.dtype(dtype)).reshape(shape))
        # numpy has no bfloat16: map the bits as uint16 and let the runtime retype the view.
        bits = self._tvm_ffi.from_dlpack(raw.view(np.uint16).reshape(shape))
        view = self._tvm_ffi.get_global_func("runtime.TVMTensorCreateView")
        return view(bits, tuple(shape), self._tvm_ffi.dtype("bfloat16"), 0)

    def _thread_state(self) -> _ThreadState:
        state = getattr(self._local, "state", None)
        if state is None:
            with self._create_lock:
                vm = self._library["vm_load_executable"]()
                dev, dev_id = self._device_type, self._device_id
                vm["vm_initialization"](dev, dev_id, _POOLED_ALLOCATOR, 1, 0, _POOLED_ALLOCATOR)
            if self._threads is not None:
                self._tvm_ffi.get_global_func("runtime.config_threadpool")(0, self._threads)
            state = self._local.state = _ThreadState(vm, len(self.inputs), self._tvm_ffi)
        return state

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, np.ndarray]:
        """Run the model. Inputs by position or by name; returns {output name: array}."""
        if self._transfer is not None:
            return self._call_on_device(args, kwargs)
        state = self._thread_state()
        from_dlpack = self._tvm_ffi.from_dlpack
        bound: dict[str, int] = {}
        tensors = []
        for index, (spec, value) in enumerate(zip(self.inputs, self._arrange(args, kwargs))):
            array = _check(spec, value, bound)
            tensor = from_dlpack(array)
            if tensor.data_ptr() % ALIGNMENT and array.size:
                tensor = state.stage(index, array)
            tensors.append(tensor)
        result = state.main(*tensors, *self._weights)
        if len(self.outputs) == 1:
            return {self.output_names[0]: _to_numpy(result, tensors)}
        return {name: _to_numpy(t, tensors) for name, t in zip(self.output_names, result)}

    def _call_on_device(self, args: tuple, kwargs: dict) -> dict[str, np.ndarray]:
        """GPU bundles: inputs already on the model's GPU (DLPack) are used in place, host
        arrays are copied in; outputs come back to the host as numpy arrays."""
        state = self._thread_state()
        transfer = self._transfer
        bound: dict[str, int] = {}
        tensors = []
        for spec, value in zip(self.inputs, self._arrange(args, kwargs)):
            tensor = transfer.device_input(spec, value, bound)
            if tensor is None:
                tensor = transfer.to_device(self._tvm_ffi.from_dlpack(_check(spec, value, bound)))
            tensors.append(tensor)
        result = state.main(*tensors, *self._weights)
        results = [result] if len(self.outputs) == 1 else list(result)
        return {n: _host(transfer, t) for n, t in zip(self.output_names, results)}

    def _arrange(self, args: tuple, kwargs: dict) -> list[Any]:
        specs = self.inputs
        if not args and len(kwargs) == len(specs):
            try:
                return [kwargs[name] for name in self.input_names]
            except KeyError:
                pass  # fall through to the checks that name the problem
        elif not kwargs and len(args) == len(specs):
            return list(args)
        if len(args) > len(specs):
            raise InputError(f"model takes {len(specs)} inputs, {len(args)} were given")
        given: list[Any] = list(args) + [None] * (len(specs) - len(args))
        for name, value in kwargs.items():
            index = self._by_name.get(name)
            if index is None:
                expected = ", ".join(self.input_names)
                raise InputError(f"unknown input {name!r}; the model's inputs are: {expected}")
            if given[index] is not None:
                raise InputError(f"input {name!r} was given twice")
            given[index] = value
        for spec, value in zip(specs, given):
            if value is None:
                raise InputError(f"missing input {spec.name!r} ({spec.describe()})")
        return given


def _parse_device(device: str | None, manifest: dict[str, Any]) -> tuple[str, int]:
    kind = manifest["target"].get("device", "cpu")
    device = device if device is not None else kind
    name, _, index = device.partition(":")
    if name not in _DEVICE_TYPES or (index and not index.isdigit()):
        raise BundleError(f"device {device!r} is not valid; expected 'cpu', 'cuda' or 'cuda:N'")
    if name != kind:
        raise BundleError(
            f"bundle was compiled for {kind} (target {manifest['target']['name']!r}) and cannot "
            f"run on device {device!r}"
        )
    return name, int(index or 0)


def _check_gpu(tvm_ffi: Any, index: int, manifest: dict[str, Any]) -> None:
    """The GPU must exist and be able to run one of the bundle's architectures."""
    attr = tvm_ffi.get_global_func("runtime.GetDeviceAttr")
    if not attr(_DEVICE_TYPES["cuda"], index, 0):  # kExist
        count = tvm_ffi.get_global_func("runtime.GetCudaDeviceCount")()
        raise BundleError(f"there is no CUDA device {index}: this host has {count} GPU(s)")
    major, minor = (int(v) for v in str(attr(_DEVICE_TYPES["cuda"], index, 4)).split("."))
    name = attr(_DEVICE_TYPES["cuda"], index, 5)  # kDeviceName
    cuda = manifest["target"]["cuda"]
    sass = [(int(a[3:-1]), int(a[-1])) for a in cuda["sass"]]
    ptx = [(int(a[8:-1]), int(a[-1])) for a in cuda["ptx"]]
    # Machine code runs on its major version at an equal or higher minor; PTX on anything newer.
    if any(m == major and n <= minor for m, n in sass) or any(p <= (major, minor) for p in ptx):
        return
    raise BundleError(
        f"GPU {index} ({name}) is sm_{major}{minor}, and the bundle has machine code for "
        f"{', '.join(cuda['sass'])} and PTX for {', '.join(cuda['ptx']) or 'none'}, none of which "
        f"runs on it; recompile with --target sm_{major}{minor}"
    )


class _Transfer:
    """Copies between host memory and one device, with the runtime's own functions."""

    def __init__(self, tvm_ffi: Any, kind: str, index: int):
        self._alloc = tvm_ffi.get_global_func("runtime.TVMTensorAllocWithScope")
        self._copy = tvm_ffi.get_global_func("runtime.TVMTensorCopyFromTo")
        self._from_dlpack = tvm_ffi.from_dlpack
        self._device = tvm_ffi.device(kind, index)
        self._host = tvm_ffi.device("cpu", 0)
        self._dtype = tvm_ffi.dtype
        self._dl = (_DEVICE_TYPES[kind], index)

    def to_device(self, tensor: Any) -> Any:
        out = self._alloc(tuple(tensor.shape), tensor.dtype, self._device, "global")
        self._copy(tensor, out)
        return out

    def to_host(self, tensor: Any) -> np.ndarray:
        out = self._alloc(tuple(tensor.shape), tensor.dtype, self._host, "global")
        self._copy(tensor, out)
        return np.from_dlpack(out)

    def device_input(self, spec: _Spec, value: Any, bound: dict[str, int]) -> Any | None:
        """A DLPack tensor already on this device, checked, or None for a host array."""
        if isinstance(value, np.ndarray) or not hasattr(value, "__dlpack_device__"):
            return None
        dev = tuple(value.__dlpack_device__())
        if dev[0] == _DEVICE_TYPES["cpu"]:
            return None
        if dev != self._dl:
            raise InputError(f"input {spec.name!r} is on device {dev}, the model on {self._dl}")
        tensor = self._from_dlpack(value)
        if np.dtype(str(tensor.dtype)) != spec.dtype:
            raise InputError(f"input {spec.name!r} has dtype {tensor.dtype}, expected {spec.dtype}")
        if tuple(tensor.shape) != spec.static:
            _check_shape(spec, tuple(tensor.shape), bound)
        return tensor


class _ThreadState:
    """One VM per calling thread (a VM is not re-entrant), and aligned staging buffers."""

    def __init__(self, vm: Any, num_inputs: int, tvm_ffi: Any):
        self.vm = vm
        self.main = vm["main"]
        self._from_dlpack = tvm_ffi.from_dlpack
        self._staging: list[tuple[np.ndarray, Any] | None] = [None] * num_inputs

    def stage(self, index: int, array: np.ndarray) -> Any:
        """Copy `array` into a reused 64-byte-aligned buffer: compiled kernels assume that
        alignment and use aligned vector loads, which fault on numpy's 16-byte alignment."""
        staged = self._staging[index]
        # The dtype of input `index` is fixed by the manifest: only the shape can change.
        if staged is None or staged[0].shape != array.shape:
            raw = np.empty(array.nbytes + ALIGNMENT, dtype=np.uint8)
            start = -raw.ctypes.data % ALIGNMENT
            buffer = raw[start : start + array.nbytes].view(array.dtype).reshape(array.shape)
            staged = self._staging[index] = (buffer, self._from_dlpack(buffer))
        staged[0][...] = array
        return staged[1]


def _host(transfer: Any, tensor: Any) -> np.ndarray | list[np.ndarray]:
    """A GPU output on the host; a sequence output as a list of arrays."""
    if not hasattr(tensor, "data_ptr"):
        return [_host(transfer, t) for t in tensor]
    return transfer.to_host(tensor)


def _to_numpy(tensor: Any, inputs: list[Any]) -> np.ndarray | list[np.ndarray]:
    """The output as numpy, copied if the model returned one of its inputs unchanged, so that
    outputs never alias the caller's arrays or the reused staging buffers. A sequence output
    (a tuple of tensors) becomes a list of arrays."""
    if not hasattr(tensor, "data_ptr"):
        return [_to_numpy(t, inputs) for t in tensor]
    array = np.from_dlpack(tensor)
    ptr = tensor.data_ptr()
    for t in inputs:
        if t.data_ptr() == ptr:
            return array.copy()
    return array


def _check(spec: _Spec, value: Any, bound: dict[str, int]) -> np.ndarray:
    array = value if type(value) is np.ndarray else np.asarray(value)
    if array.dtype != spec.dtype:
        raise InputError(
            f"input {spec.name!r} has dtype {array.dtype}, expected {spec.dtype} "
            f"(convert with .astype(np.{spec.dtype}))"
        )
    if array.shape != spec.static:
        _check_shape(spec, array.shape, bound)
    if not array.flags.c_contiguous or not array.flags.writeable:
        # DLPack cannot export a read-only array (np.frombuffer, a read-only memmap): copy it.
        array = np.array(array, order="C")
    if array.size == 0:  # numpy gives empty arrays any strides; kernels check for compact ones
        array = np.lib.stride_tricks.as_strided(array, strides=_compact_strides(array))
    return array


def _compact_strides(array: np.ndarray) -> tuple[int, ...]:
    strides, step = [], array.itemsize
    for dim in reversed(array.shape):
        strides.append(step)
        step *= dim
    return tuple(reversed(strides))


def _check_shape(spec: _Spec, shape: tuple[int, ...], bound: dict[str, int]) -> None:
    dims = spec.dims
    if len(shape) != len(dims):
        raise InputError(
            f"input {spec.name!r} has shape {list(shape)}, expected {len(dims)} dimensions "
            f"{_fmt(dims)}"
        )
    for axis, (got, want) in enumerate(zip(shape, dims)):
        if got == want:
            continue
        if type(want) is str:
            seen = bound.setdefault(want, got)
            if seen == got:
                if want in spec.ranges:
                    _check_range(spec, axis, got, want)
                continue
            raise InputError(
                f"input {spec.name!r} has {got} at axis {axis} for dim {want!r}, but another "
                f"input already set {want!r} = {seen}"
            )
        raise InputError(
            f"input {spec.name!r} has shape {list(shape)}, expected {_fmt(dims)} "
            f"(axis {axis} must be {want})"
        )


def _check_range(spec: _Spec, axis: int, got: int, dim: str) -> None:
    low, high = spec.ranges[dim]
    if (low is not None and got < low) or (high is not None and got > high):
        raise InputError(
            f"input {spec.name!r} has {got} at axis {axis} for dim {dim!r}, outside the range "
            f"the bundle was compiled for: {low}..{high} (recompile with a wider --dim "
            f"{dim}=MIN..MAX for other sizes)"
        )


def _fmt(dims: tuple) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"
