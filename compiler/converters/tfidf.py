"""TfIdfVectorizer over integer tokens (string pools are not supported: TVM has no strings).

Every (gram length, skip, start) window of the static input is enumerated at compile time into
one gather table per gram length; the gathered windows are compared with that length's pool
and the matches counted, weighted and mapped to the output slots by a constant matrix.
"""

from __future__ import annotations

import numpy as np
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from ..errors import ModelError
from . import register, text_attr
from .static import static_shape


def _pool(attr) -> dict[int, np.ndarray]:
    """Gram length -> [entries, length] pool grams (ngram_counts gives each length's start)."""
    if "pool_int64s" not in attr:
        raise ModelError("TfIdfVectorizer with a string pool is not supported: integer tokens only")
    pool = np.asarray(attr["pool_int64s"], dtype=np.int64)
    starts = list(attr.get("ngram_counts", [0]))
    grams = {}
    for n, start in enumerate(starts, start=1):
        end = starts[n] if n < len(starts) else len(pool)
        grams[n] = pool[start:end].reshape(-1, n)
    return grams


def _windows(length: int, n: int, max_skip: int) -> np.ndarray:
    """[windows, n] token positions of every n-gram with gaps of 0..max_skip tokens."""
    skips = range(max_skip + 1) if n > 1 else [0]
    rows = [
        [start + j * (skip + 1) for j in range(n)]
        for skip in skips
        for start in range(length)
        if start + (n - 1) * (skip + 1) < length
    ]
    return np.asarray(rows, dtype=np.int64).reshape(-1, n)


@register("TfIdfVectorizer")
class TfIdfVectorizer(OnnxOpConverter):
    """Counts of pool n-grams (TF), their presence times weights (IDF), or counts times
    weights (TFIDF), for a [C] or [N, C] integer input."""

    @classmethod
    def _impl_v9(cls, bb, inputs, attr, params):
        x = inputs[0]
        shape = static_shape(x, "TfIdfVectorizer")
        mode = text_attr(attr, "mode", "TF")
        if mode not in ("TF", "IDF", "TFIDF"):
            raise ModelError(f"TfIdfVectorizer mode {mode!r} is not supported: TF, IDF, TFIDF")
        low, high = int(attr["min_gram_length"]), int(attr["max_gram_length"])
        grams = _pool(attr)
        skip = int(attr.get("max_skip_count", 0))
        indexes = np.asarray(attr["ngram_indexes"], dtype=np.int64)
        weights = np.asarray(attr.get("weights", np.ones(len(indexes))), dtype=np.float32)
        tokens = bb.emit(relax.op.astype(x, "int64"))
        counts, first = [], 0
        for n, pool in grams.items():
            if low <= n <= high and len(pool) and shape[-1] >= n:
                counts.append(cls._count(bb, tokens, _windows(shape[-1], n, skip), pool))
            elif len(pool):
                zeros = relax.op.zeros((*shape[:-1], len(pool)), "float32")
                counts.append(zeros)
            first += len(pool)
        if not counts:
            raise ModelError("TfIdfVectorizer has an empty pool")
        found = bb.emit(relax.op.concat(counts, axis=-1)) if len(counts) > 1 else counts[0]
        if mode == "IDF":
            found = relax.op.minimum(found, relax.const(1.0))
        if mode != "TF":
            found = relax.op.multiply(found, relax.const(weights))
        slots = np.zeros((first, int(indexes.max()) + 1), dtype=np.float32)
        slots[np.arange(first), indexes[:first]] = 1.0
        return relax.op.matmul(found, relax.const(slots))

    @classmethod
    def _count(cls, bb, tokens, windows, pool):
        """[..., entries] float32: how many windows equal each pool gram."""
        n = windows.shape[1]
        if len(windows) == 0:
            lead = [int(d) for d in tokens.ty.shape][:-1]
            return relax.op.zeros((*lead, len(pool)), "float32")
        gathered = bb.emit(relax.op.take(tokens, relax.const(windows), axis=-1))
        found = relax.op.expand_dims(gathered, -2)  # [..., windows, 1, n]
        same = relax.op.astype(relax.op.equal(found, relax.const(pool, "int64")), "int32")
        hits = relax.op.equal(relax.op.sum(same, axis=[-1]), relax.const(n, "int32"))
        return bb.emit(relax.op.sum(relax.op.astype(hits, "float32"), axis=[-2]))
