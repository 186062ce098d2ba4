"""Native (C++) log lines of TVM and LLVM, written straight to file descriptor 2.

TVM's C++ code logs warnings such as "Fast mode segfaults when there are out-of-bounds
indices" with no way to turn them off from Python. They are for whoever debugs the compiler
(MLC_DEBUG=1), not for a user of `mlc compile -q`: while a command runs, fd 2 goes to
/dev/null and Python's own stderr (mlc's messages, warnings) to a copy of the real one.
"""

from __future__ import annotations

import gc
import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def native_logs_hidden() -> Iterator[None]:
    """Hide what native code writes to fd 2 for the duration; Python's stderr still shows."""
    if os.environ.get("MLC_DEBUG"):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no fd 2 (a daemon), or stderr already closed
        yield
        return
    original = sys.stderr
    replaced = original is sys.__stderr__ and _writes_to_fd2(original)
    if replaced:
        sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1, errors="backslashreplace")
    sink = os.open(os.devnull, os.O_WRONLY)
    os.dup2(sink, 2)
    os.close(sink)
    try:
        yield
    except BaseException as exc:
        # A failed import or build leaves TVM objects in the traceback's frames, whose
        # destructors log ("BlockBuilder destroyed with remaining blocks") when the frames
        # go: let them go now, while fd 2 is hidden. The CLI prints no traceback here.
        _drop_frames(exc)
        raise
    finally:
        if replaced:
            stream, sys.stderr = sys.stderr, original
            stream.close()
        os.dup2(saved, 2)
        os.close(saved)


def _drop_frames(exc: BaseException) -> None:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if exc.__traceback__ is not None:
            traceback.clear_frames(exc.__traceback__)
        exc = exc.__context__ or exc.__cause__
    gc.collect()


def _writes_to_fd2(stream) -> bool:
    try:
        return stream.fileno() == 2
    except (OSError, ValueError, AttributeError):
        return False
