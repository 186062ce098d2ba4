"""The native runner: `bin/mlc-runner` in a bundle runs the model on a device without Python.

The runner is compiled from runtime/runner.cc against TVM-FFI's C++ headers and linked with the
bundle's own runtime libraries, so one source serves every architecture a C++ compiler targets:

    runner = build_runner(bundle, "aarch64-linux-gnu-g++", Path("arm-wheel/tvm_ffi/lib"))
    subprocess.run(runner_command(bundle, ["--input", "x=x.npy"], emulator=["qemu-aarch64", ...]))
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

SOURCE = Path(__file__).resolve().parent / "runtime" / "runner.cc"
RUNNER = Path("bin") / "mlc-runner"  # relative to the bundle
FFI_LIBRARY = "libtvm_ffi.so"
RUNTIME_LIBRARY = "libtvm_runtime.so"

# Options whose value is a path, which an emulator must see as absolute (see runner_command).
_PATH_OPTIONS = ("--output-dir",)


def build_runner(bundle_dir: Path, cxx: str, ffi_lib_dir: Path) -> Path:
    """Compile the runner into `bundle_dir/bin/mlc-runner` with the C++ compiler `cxx`.

    `ffi_lib_dir` holds the `libtvm_ffi.so` built for the bundle's architecture; it is copied
    into the bundle's `lib/` so that the bundle runs on its own. Raises RuntimeError with the
    compiler's message when the compiler is missing or fails. Returns the runner's path.
    """
    import tvm_ffi.libinfo

    bundle_dir = Path(bundle_dir)
    lib_dir = bundle_dir / "lib"
    ffi_library = Path(ffi_lib_dir) / FFI_LIBRARY
    if not ffi_library.is_file():
        raise RuntimeError(f"{FFI_LIBRARY} is not in {str(ffi_lib_dir)!r}")
    if not (lib_dir / RUNTIME_LIBRARY).is_file():
        raise RuntimeError(f"{str(bundle_dir)!r} has no {RUNTIME_LIBRARY} in lib/: not a bundle")
    # libtvm_runtime.so finds libtvm_ffi.so through its $ORIGIN runpath, i.e. in lib/ too.
    shutil.copyfile(ffi_library, lib_dir / FFI_LIBRARY)
    includes = {tvm_ffi.libinfo.find_include_path(), tvm_ffi.libinfo.find_dlpack_include_path()}
    runner = bundle_dir / RUNNER
    runner.parent.mkdir(exist_ok=True)
    # Written beside the target and renamed: a failed build never leaves a broken runner.
    fd, partial = tempfile.mkstemp(prefix=".mlc-runner.", dir=runner.parent)
    os.close(fd)
    command = [
        cxx,
        "-O2",
        "-std=c++17",
        *(f"-I{path}" for path in sorted(includes)),
        str(SOURCE),
        "-o",
        partial,
        f"-L{lib_dir}",
        # Nothing in runner.cc calls into libtvm_runtime.so directly, but loading it registers
        # the module loaders model.so needs; --as-needed (the default on some distributions)
        # would drop it. -l: records the bare file name, which the runpath then finds.
        "-Wl,--no-as-needed",
        f"-l:{RUNTIME_LIBRARY}",
        f"-l:{FFI_LIBRARY}",
        "-ldl",
        "-Wl,-rpath,$ORIGIN/../lib",
    ]
    try:
        try:
            result = subprocess.run(command, capture_output=True, text=True)
        except OSError as exc:  # the compiler is not installed
            raise RuntimeError(f"cannot run C++ compiler {cxx!r}: {exc}") from None
        if result.returncode != 0:
            raise RuntimeError(
                f"compiling the runner with {cxx!r} failed (exit {result.returncode}):\n"
                f"{(result.stderr or result.stdout)[-2000:]}"
            )
        os.chmod(partial, 0o755)
        os.replace(partial, runner)
    finally:
        Path(partial).unlink(missing_ok=True)
    return runner


def runner_command(
    bundle_dir: Path, args: list[str], emulator: list[str] | None = None
) -> list[str]:
    """The argv that runs the bundle's runner with `args`, under `emulator` if given.

    `emulator` is a command prefix such as `["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu"]`.
    Under an emulator, the input files and the output directory in `args` are made absolute,
    so that they mean the same to the emulated runner whatever path translation (`-L`) and
    working directory the emulator applies.
    """
    bundle = Path(bundle_dir).resolve()
    argv = [str(bundle / RUNNER), str(bundle)]
    if not emulator:
        return argv + list(args)
    rewritten: list[str] = []
    pending: str | None = None  # the option whose value is the next argument
    for arg in args:
        if pending is not None:
            rewritten.append(_absolute(pending, arg))
            pending = None
        elif arg in ("--input", *_PATH_OPTIONS):
            rewritten.append(arg)
            pending = arg
        elif "=" in arg and arg.split("=", 1)[0] in ("--input", *_PATH_OPTIONS):
            option, value = arg.split("=", 1)
            rewritten.append(f"{option}={_absolute(option, value)}")
        else:
            rewritten.append(arg)
    return [*emulator, *argv, *rewritten]


def _absolute(option: str, value: str) -> str:
    if option == "--input" and "=" in value:
        name, path = value.split("=", 1)
        return f"{name}={Path(path).absolute()}"
    return str(Path(value).absolute())
