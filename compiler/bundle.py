"""Bundle stage: write model.so, weights.bin, manifest.json, loader.py and the runtime libraries.

The bundle is assembled in a temporary directory beside the destination and renamed into place
only when complete, so an interrupted or failed compile never leaves a half-written bundle.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .build import BuiltModel
from .errors import BuildError, BundleError, UsageError
from .frontend import ImportedModel
from .options import CompileOptions
from .runtime import loader
from .runtime_libs import cache_root, find_runtime_library, runtime_lib_dir
from .targets import host_arch

# The bundle's file names and format version are defined once, in the loader that reads them.
FORMAT_VERSION = loader.FORMAT_VERSION
MANIFEST_FILE = loader.MANIFEST_FILE
LIBRARY_FILE = loader.LIBRARY_FILE
WEIGHTS_FILE = loader.WEIGHTS_FILE
LOADER_FILE = loader.LOADER_FILE
RUNTIME_DIR = loader.RUNTIME_DIR


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: dict[str, Any]


def check_destination(out_dir: Path, force: bool) -> None:
    """Refuse to overwrite an existing path unless forced; called before compiling."""
    if out_dir.exists() or out_dir.is_symlink():
        if not force:
            raise UsageError(
                f"output directory {str(out_dir)!r} already exists",
                hint="pass --force to replace it, or choose another -o",
            )
        if not out_dir.is_dir() or (
            not (out_dir / MANIFEST_FILE).exists() and any(out_dir.iterdir())
        ):
            raise UsageError(
                f"--force will only replace an mlc bundle, and {str(out_dir)!r} is not one",
                hint="remove it yourself or choose another -o",
            )


def write_bundle(
    built: BuiltModel,
    imported: ImportedModel,
    options: CompileOptions,
    provenance: dict[str, Any],
    out_dir: Path,
    force: bool = False,
) -> Bundle:
    """Write the bundle for `built` at `out_dir`, atomically."""
    out_dir = Path(out_dir)
    check_destination(out_dir, force)
    parent = out_dir.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=parent))
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes it private; a bundle is not
        manifest = _write_files(staging, built, imported, options, provenance)
        _check_deployable(staging, built)
        _replace(staging, out_dir.resolve())
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Bundle(path=out_dir, manifest=manifest)


def _write_files(
    staging: Path,
    built: BuiltModel,
    imported: ImportedModel,
    options: CompileOptions,
    provenance: dict[str, Any],
) -> dict[str, Any]:
    preset = built.target.preset
    _link(built, staging / LIBRARY_FILE)
    weights = _write_weights(staging / WEIGHTS_FILE, built)
    shutil.copyfile(loader.__file__, staging / LOADER_FILE)
    (staging / RUNTIME_DIR).mkdir()
    lib_dir = runtime_lib_dir(preset.arch)
    for name in preset.runtime_libs:
        shutil.copyfile(find_runtime_library(name, preset.arch), staging / RUNTIME_DIR / name)
    if built.target.device == "cpu":  # the native runner drives CPU bundles only, for now
        _add_runner(staging, preset, lib_dir)
    files = sorted(p for p in staging.rglob("*") if p.is_file())
    manifest = {
        "format_version": FORMAT_VERSION,
        **provenance,
        "target": built.target.manifest_entry(),
        "inputs": [t.to_json() for t in imported.inputs],
        "outputs": [t.to_json() for t in imported.outputs],
        "dims": _symbolic_dims(imported, options),
        "weights": weights,
        "runtime_libs": list(built.target.preset.runtime_libs),
        "files": {p.relative_to(staging).as_posix(): _sha256(p) for p in files},
        "options": options.to_json(),
    }
    if built.tuning is not None:  # coverage, the records' key and the sha256 of their log
        manifest["tuning"] = dict(built.tuning)
    (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _symbolic_dims(imported: ImportedModel, options: CompileOptions) -> list[dict[str, Any]]:
    """Each symbolic dim of the inputs, with the range `--dim NAME=MIN..MAX` declared (the
    loader enforces it) or null bounds."""
    names = dict.fromkeys(d for t in imported.inputs for d in t.shape if isinstance(d, str))
    ranges = options.dim_ranges
    return [
        {"name": n, "min": ranges[n][0], "max": ranges[n][1]}
        if n in ranges
        else {"name": n, "min": None, "max": None}
        for n in names
    ]


def _write_weights(path: Path, built: BuiltModel) -> list[dict[str, Any]]:
    entries = []
    offset = 0
    with open(path, "wb") as f:
        for w in built.weights:
            pad = -offset % loader.ALIGNMENT
            f.write(b"\0" * pad)
            offset += pad
            data = w.array.tobytes() if not w.array.flags.c_contiguous else memoryview(w.array)
            f.write(data)
            nbytes = w.array.nbytes
            entries.append(
                {
                    "name": w.name,
                    "shape": list(w.array.shape),
                    "dtype": w.dtype or str(w.array.dtype),
                    "offset": offset,
                    "nbytes": nbytes,
                }
            )
            offset += nbytes
    return entries


def _link(built: BuiltModel, path: Path) -> None:
    preset = built.target.preset
    kwargs = {}
    if preset.cross_compiler:
        from tvm.support.cc import cross_compiler

        kwargs["fcompile"] = cross_compiler(preset.cross_compiler)
    try:
        built.executable.export_library(str(path), **kwargs)
    except Exception as exc:  # the compiler or linker failed
        raise BundleError(f"linking {LIBRARY_FILE} failed: {exc}") from exc


def _add_runner(staging: Path, preset, lib_dir: Path) -> None:
    """Put the native runner (bin/mlc-runner + lib/libtvm_ffi.so) into the bundle.

    The runner reads everything model-specific from the bundle at run time, so one binary per
    architecture, compiler and runner source serves every bundle: it is built once and cached.
    """
    from .runner import FFI_LIBRARY, RUNNER, SOURCE, build_runner

    cxx = preset.cross_compiler or "g++"
    key = hashlib.sha256(SOURCE.read_bytes() + cxx.encode() + str(lib_dir).encode()).hexdigest()
    cached = cache_root() / "runner" / f"{preset.arch}-{key[:16]}"
    if not (cached / ".complete").exists():
        work = Path(tempfile.mkdtemp(dir=_mkdirs(cached.parent)))
        try:
            (work / RUNTIME_DIR).mkdir()
            shutil.copyfile(lib_dir / "libtvm_runtime.so", work / RUNTIME_DIR / "libtvm_runtime.so")
            build_runner(work, cxx, lib_dir)
            (work / ".complete").write_text("ok\n")
            os.rename(work, cached)
        except RuntimeError as exc:
            raise BuildError(f"building the native runner failed: {exc}") from None
        except OSError:
            if not (cached / ".complete").exists():  # else a concurrent mlc built it first
                raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
    (staging / RUNNER).parent.mkdir(exist_ok=True)
    shutil.copy2(cached / RUNNER, staging / RUNNER)
    shutil.copyfile(cached / RUNTIME_DIR / FFI_LIBRARY, staging / RUNTIME_DIR / FFI_LIBRARY)


def _mkdirs(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _check_deployable(staging: Path, built: BuiltModel) -> None:
    """Fail the compile if the model calls a TVM function that the bundled runtime lacks.

    Some lowerings call functions that exist only in TVM's compiler library (TVM's nonzero and
    unique call `relax.run.nonzero`/`relax.run.unique`; mlc's converters avoid both), which no
    deploy host has. Every function the program calls is looked
    up in a clean process that has loaded only the runtime libraries and, where this host can
    run it, the finished model library. A cross-compiled model's own kernels are looked up in
    its module here, and the rest in this host's runtime of the same TVM version, which
    registers the same functions.
    """
    preset = built.target.preset
    names = re.findall(r"^@(\S+) packed_func;$", built.executable.as_text(), re.MULTILINE)
    model = str(staging / LIBRARY_FILE)
    lib_dir = staging / RUNTIME_DIR
    libs = list(preset.runtime_libs)
    device_libs = [n for n in libs if "cuda" in n]  # need a GPU driver to load at all
    if preset.is_cross or device_libs:
        names = [n for n in names if not _implements(built.executable.mod, n)]
        model, lib_dir = "-", runtime_lib_dir(host_arch())
        libs = [n for n in libs if n not in device_libs]
        if built.device_code is not None:  # GPU kernels are functions of the device module
            names = [n for n in names if not _is_kernel(n, built.device_code.kernels)]
        # Functions the CUDA runtime registers: their names are in its data.
        registered = b"".join(
            find_runtime_library(n, host_arch()).read_bytes() for n in device_libs
        )
        names = [n for n in names if n.encode() + b"\0" not in registered]
    probe = subprocess.run(
        [
            sys.executable,
            str(Path(loader.__file__).with_name("probe.py")),
            str(lib_dir),
            ",".join(libs),
            model,
            *names,
        ],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        raise BundleError(f"the bundle does not load in a clean process: {probe.stderr[-500:]}")
    missing = json.loads(probe.stdout)
    if missing:
        raise BuildError(
            "the compiled model calls TVM functions that the bundled runtime libraries do not "
            f"provide: {', '.join(missing)}",
            hint="they exist only in TVM's compiler library; this usually comes from an "
            "operator with data-dependent output shapes; please report the model",
        )


def _implements(module, name: str) -> bool:
    """Whether `module` or its imports define `name`. Device modules (CUDA) are skipped: in
    the compiler they are placeholders that raise when asked; their kernels are known from
    the device code the build produced."""
    if module.kind == "cuda":
        return False
    return module.implements_function(name, False) or any(
        _implements(m, name) for m in module.imports
    )


def _is_kernel(name: str, kernels: set[str]) -> bool:
    # TVM names a PrimFunc's CUDA kernels NAME_kernel, NAME_kernel0, NAME_kernel1, ...
    return any(k == name or re.fullmatch(re.escape(name) + r"_kernel\d*", k) for k in kernels)


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _replace(staging: Path, out_dir: Path) -> None:
    """Move the finished bundle into place; an old bundle is removed only after that."""
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.rename(out_dir, old)
    try:
        os.rename(staging, out_dir)
    except BaseException:
        if old is not None:
            os.rename(old, out_dir)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
