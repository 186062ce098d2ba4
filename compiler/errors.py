"""The one error type of mlc: a message, a hint for the next step, and the CLI's exit code."""

from __future__ import annotations

# Exit codes, documented in README.md. click itself exits 2 for malformed command lines.
EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_MODEL = 3
EXIT_BUILD = 4
EXIT_CHECK = 5
EXIT_BUNDLE = 6
EXIT_UNTUNED = 7


class MlcError(Exception):
    """An error the user can act on. The CLI prints `error: message` and `hint: hint`."""

    exit_code = EXIT_INTERNAL

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(MlcError):
    """A bad option value: a target, a shape, a path."""

    exit_code = EXIT_USAGE


class ModelError(MlcError):
    """The ONNX model cannot be read or contains what mlc cannot compile."""

    exit_code = EXIT_MODEL


class BuildError(MlcError):
    """TVM failed while compiling a model that passed the frontend's checks."""

    exit_code = EXIT_BUILD


class CheckError(MlcError):
    """The compiled model's outputs differ from onnxruntime's."""

    exit_code = EXIT_CHECK


class BundleError(MlcError):
    """A bundle is damaged, incompatible, or cannot be written."""

    exit_code = EXIT_BUNDLE


class UntunedError(BuildError):
    """`--db-strict`: kernels worth tuning have no record in the tuning database."""

    exit_code = EXIT_UNTUNED
