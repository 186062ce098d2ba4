"""fp32 matrix multiplication on Intel AMX tiles, exact to fp32 (bf16x6).

AMX multiplies bf16 matrices 16x that fast as AVX-512 multiplies fp32 ones, accumulating in fp32.
An fp32 value splits exactly enough into three bf16 parts, a = a0 + a1 + a2 (each the
round-to-nearest bf16 of what the earlier parts left), with a relative error below 2^-24: that
of fp32 itself. A product then needs the six part products whose weight is at least 2^-16,

    a.b ~ a0.b0 + a0.b1 + a1.b0 + a0.b2 + a1.b1 + a2.b0,

each one AMX pass (the dropped ones weigh 2^-24 and less). Six passes at 16x the rate leave
2.7x of AVX-512's peak; the kernel below reaches about 1.5x of the fp32 kernels in practice. This is
how TPUs compute fp32 matmuls ("bf16_6x"); results differ from fp32 ones by the accumulation
order only, as any two fp32 GEMMs do.

`split_weight` splits and packs a constant [K, N] weight at compile time; `split_kernel` splits
the activations at run time; `gemm_kernel` runs the six passes. The kernels are written out
whole (tile registers are named by immediates, which no schedule primitive produces) and marked
scheduled, so tuning and the default schedules leave them alone.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm.script import tirx as T

TILE_ROWS = 16  # an AMX tile: 16 rows of 64 bytes
TILE_K = 32  # bf16 values in a tile row
BLOCK = 32  # the kernel's output block: 16 rows x 2 column tiles of 16
PARTS = 3
# Of the six (activation part, weight part) products, the five small ones accumulate apart
# from the large a0.b0, and their sum is added at the end: each addition rounds at the
# accumulator's magnitude, so small products added onto a large sum lose their low bits (the
# large products first, in one accumulator, gave 2.4x fp32's error).

# bf16 values after each row of the activation parts: rows of 768 or 3072 values (1.5 or 6 KB)
# put a tile's 16 rows into 8 or 2 of L1's 64 sets, where they evicted each other; 64 more
# bytes spread them over 16. The gemm alone, 128 rows: 3072 -> 768 1.63 -> 1.54 ms, 768 -> 3072
# 1.36 -> 1.30 ms (cold weights, 2 threads).
ROW_PAD = 32


def bf16_parts(x: np.ndarray) -> np.ndarray:
    """x (float32) as PARTS bfloat16 bit patterns (uint16), x ~ sum of the parts."""
    out = np.empty((PARTS, *x.shape), np.uint16)
    rest = np.ascontiguousarray(x, np.float32)
    for p in range(PARTS):
        bits = rest.view(np.uint32)
        rounded = (bits + np.uint32(0x7FFF) + ((bits >> 16) & 1)) & np.uint32(0xFFFF0000)
        out[p] = (rounded >> 16).astype(np.uint16)
        rest = (rest - rounded.view(np.float32)).astype(np.float32)
    return out


def split_weight(w: np.ndarray) -> np.ndarray:
    """A [K, N] float32 weight as the GEMM kernel reads it: [PARTS, N/16, K/2, 32] uint16,
    each 16-column block's K rows in pairs (AMX's VNNI layout: a tile of 16 pair-rows x 16
    columns x 2 values is 1 KB, contiguous)."""
    k, n = w.shape
    parts = bf16_parts(w)  # [P, K, N]
    packed = parts.reshape(PARTS, k // 2, 2, n // TILE_ROWS, TILE_ROWS)
    packed = packed.transpose(0, 3, 1, 4, 2)  # [P, N/16, K/2, 16, 2]
    return np.ascontiguousarray(packed.reshape(PARTS, n // TILE_ROWS, k // 2, 2 * TILE_ROWS))


# The smallest K and N measured to gain: BERT-mini's products (K, N of 256 and 1024), 3.67 ->
# 3.54 ms with this kernel (40 s interleaved). With the previous kernel (32 x 32 blocks) they
# lost, 3.36 -> 3.58 ms: the split and the unfused bias cost more than the products gained.
MIN_DIM = 256


def supported(m: int, k: int, n: int) -> bool:
    """Whether the kernel takes an [m, k] x [k, n] product, and gains: whole tiles of rows,
    whole tile rows of K, whole 32-column blocks, K and N at least MIN_DIM."""
    return (
        m > 0 and m % TILE_ROWS == 0 and k % TILE_K == 0 and n % BLOCK == 0 and min(k, n) >= MIN_DIM
    )


def parts_shape(m: int, k: int) -> tuple[int, int, int]:
    """The activation parts' buffer: [PARTS, m, k + ROW_PAD] uint16 (the pad is never
    written or read)."""
    return (PARTS, m, k + ROW_PAD)


def split_kernel(m: int, k: int) -> tvm.tirx.PrimFunc:
    """x [m, k] float32 → bf16 parts (uint16, `parts_shape`), round to nearest even.

    Written out, not a te.compute for fusion and the default rules: as one, it was fused into
    the GELU that produces x and computed per part (GELU three times, x read three times):
    0.73 ms per call against 0.11 + 0.21 ms apart, BERT-base 74.6 → 84.3 ms. Here each value
    gives its three parts at once."""

    # Expressions only (no let-bound temporaries: TVM's vectoriser broadcasts a let-bound
    # value of the first lane to all lanes).
    def rounded(value):  # the bits of `value` rounded to the nearest bf16, low half zero
        bits = T.reinterpret("uint32", value)
        half = T.uint32(0x7FFF) + ((bits >> T.uint32(16)) & T.uint32(1))
        return (bits + half) & T.uint32(0xFFFF0000)

    def rest(value):  # what the nearest bf16 leaves of `value` (exact in fp32)
        return value - T.reinterpret("float32", rounded(value))

    def high(value):  # the nearest bf16's bit pattern
        return T.Cast("uint16", rounded(value) >> T.uint32(16))

    @T.prim_func(private=True, check_well_formed=False)  # (the checker rejects blocks)
    def split(x: T.Buffer((m, k), "float32"), parts: T.Buffer(parts_shape(m, k), "uint16")):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        with T.sblock("root"):  # (TVM's operator-pattern analysis expects a root block)
            for i in T.parallel(m):
                with T.sblock("split"):
                    for j0 in range(k // 16):  # 16-lane vectors (one vector of k lanes spills)
                        for j1 in T.vectorized(16):
                            parts[0, i, j0 * 16 + j1] = high(x[i, j0 * 16 + j1])
                            parts[1, i, j0 * 16 + j1] = high(rest(x[i, j0 * 16 + j1]))
                            parts[2, i, j0 * 16 + j1] = high(rest(rest(x[i, j0 * 16 + j1])))

    return split


# Activation parts a kernel keeps in L2 while it multiplies them: beyond this (BERT-base's
# 3072-deep product, 2.4 MB of parts) K goes in chunks. 3072 -> 768 on 2 threads, weights
# cold: 1.95 -> 1.55-1.7 ms.
A_BUDGET = 768 * 1024
# Tasks per thread at least, when K is chunked: each task reads each activation chunk once for
# all of its column blocks, so fewer tasks read less; two a thread balance the load.
TASKS_PER_THREAD = 2


def blocking(m: int, k: int, n: int, threads: int) -> tuple[int, int]:
    """(K chunk, column blocks per task) of the [m, k] x [k, n] kernel on `threads` threads:
    the longest chunk whose activation parts fit A_BUDGET; with more than one chunk, the most
    column blocks per task that leave TASKS_PER_THREAD tasks a thread (else one per task)."""
    chunk = max(
        c
        for c in range(TILE_K, k + 1, TILE_K)
        if k % c == 0 and (c == TILE_K or PARTS * m * c * 2 <= A_BUDGET)
    )
    blocks = n // BLOCK
    if chunk == k:
        return chunk, 1
    least = TASKS_PER_THREAD * threads
    fitting = (g for g in range(1, blocks + 1) if blocks % g == 0 and blocks // g >= least)
    return chunk, max(fitting, default=1)


def gemm_kernel(m: int, k: int, n: int, threads: int) -> tvm.tirx.PrimFunc:
    """Activation parts (`parts_shape`) x packed weight parts → [m, n] float32, for `threads`.

    Each parallel task takes `group` 32-column blocks; for each K chunk, each column block and
    each 16-row tile, it runs the six passes over the chunk, K step by K step. A step loads
    each of its nine operand tiles once (three activation parts, three weight parts of two
    column tiles) for twelve products: the five small passes into two accumulator tiles, the
    large one into two others. Between chunks the accumulators go to memory (the small sum to
    a per-task scratch `s`, the large to the output); at the end the small sum is added to the
    output. (The previous kernel, 32 x 32 blocks and one accumulator per output tile, loaded
    one operand tile per product: 128 x 768 x 3072 1.36 -> 1.30 ms with ROW_PAD.)"""
    nb, rt = n // BLOCK, m // TILE_ROWS
    kc, group = blocking(m, k, n, threads)
    chunks, kcs, tasks = k // kc, kc // TILE_K, nb // group
    row = (k + ROW_PAD) * 2  # bytes from one activation row to the next

    def intrin(name, *args):
        return T.call_llvm_intrin("void", "llvm.x86." + name, *args)

    # Tile registers are immediates: 0-1 the small passes' sums for the two column tiles, 2-3
    # the large pass's, 4 the activation part a0, 5 a1 and then a2, 6-7 a weight part's two
    # column tiles.
    def load(tile, address, stride):
        return intrin("tileloadd64", T.int8(tile), address, T.int64(stride))

    def store(tile, address, stride):
        return intrin("tilestored64", T.int8(tile), address, T.int64(stride))

    def product(acc, rows, cols):
        return intrin("tdpbf16ps", T.int8(acc), T.int8(rows), T.int8(cols))

    # A column block's weights for one chunk are PARTS x kc lines of 64 bytes (per part, two
    # 16-column blocks of kc/2 pair-rows). While a task multiplies one, it prefetches the next
    # in task order into L2 (TVM gives each thread a contiguous range of tasks), spread evenly
    # over the rt x kcs steps: BERT-base's products read their weights cold, and this made
    # the model 9% faster (71.6 -> 65.2 ms).
    lines, half = PARTS * kc, kc // 2
    per_step = -(-lines // (rt * kcs))

    def prefetch(w, block, chunk, line):  # `line` of (column block, chunk)'s weights
        line = T.min(line, lines - 1)
        pair_row = chunk * half + line % half
        address = T.address_of(w[line // kc, block * 2 + line % kc // half, pair_row, 0])
        return T.call_llvm_intrin(
            "void", "llvm.prefetch.p0", address, T.int32(0), T.int32(2), T.int32(1)
        )

    def following(task, jj, ch):  # the (column block, chunk) after (task's jj-th, ch)
        last_block = jj + 1 == group
        block = task * group + T.Select(last_block, T.Select(ch + 1 < chunks, 0, group), jj + 1)
        chunk = T.Select(last_block, T.Select(ch + 1 < chunks, ch + 1, 0), ch)
        return block, chunk

    def exists(task, jj, ch):
        return T.Or(T.Or(jj + 1 < group, ch + 1 < chunks), task + 1 < tasks)

    @T.macro
    def pair(op, first, buf, r, col, stride):  # tiles first, first + 1 at buf[r, col (+ 16)]
        T.evaluate(op(first, T.address_of(buf[r, col]), stride))
        T.evaluate(op(first + 1, T.address_of(buf[r, col + 16]), stride))

    @T.macro
    def activation(tile, a, p, r, kstep):  # part p of row tile r, K step kstep
        T.evaluate(load(tile, T.address_of(a[p, r * 16, kstep * 32]), row))

    @T.macro
    def weight(w, p, block, kstep):  # part p of the column block's two tiles into 6, 7
        T.evaluate(load(6, T.address_of(w[p, block * 2, kstep * 16, 0]), 64))
        T.evaluate(load(7, T.address_of(w[p, block * 2 + 1, kstep * 16, 0]), 64))

    @T.macro
    def products(acc, rows):  # acc, acc + 1 += rows x the weight tiles 6, 7
        T.evaluate(product(acc, rows, 6))
        T.evaluate(product(acc + 1, rows, 7))

    @T.macro
    def step(a, w, r, block, kstep):  # one K step: each operand tile loaded once
        activation(4, a, 0, r, kstep)
        activation(5, a, 1, r, kstep)
        weight(w, 1, block, kstep)
        products(0, 4)  # a0.b1
        products(0, 5)  # a1.b1
        weight(w, 0, block, kstep)
        products(2, 4)  # a0.b0, the large pass
        products(0, 5)  # a1.b0
        activation(5, a, 2, r, kstep)
        products(0, 5)  # a2.b0
        weight(w, 2, block, kstep)
        products(0, 4)  # a0.b2

    @T.prim_func(private=True, check_well_formed=False)  # (the checker rejects blocks)
    def gemm(
        a: T.Buffer(parts_shape(m, k), "uint16"),
        w: T.Buffer((PARTS, n // 16, k // 2, 32), "uint16"),
        c: T.Buffer((m, n), "float32"),
    ):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        with T.sblock("root"):
            for task in T.parallel(tasks):
                with T.sblock("tiles"):  # per thread: the tile configuration is thread state
                    cfg = T.alloc_buffer((64,), "uint8", scope="local")
                    s = T.alloc_buffer((group * m, 32), "float32")  # the small passes' sums
                    for b in range(64):
                        cfg[b] = T.uint8(0)
                    cfg[0] = T.uint8(1)  # palette 1: 8 tiles of up to 16 rows x 64 bytes
                    for t in range(8):
                        cfg[16 + 2 * t] = T.uint8(64)
                        cfg[48 + t] = T.uint8(16)
                    T.evaluate(intrin("ldtilecfg", T.address_of(cfg[0])))
                    for ch in range(chunks):
                        for jj in range(group):
                            for r in range(rt):
                                col = (task * group + jj) * 32
                                if ch > 0:
                                    pair(load, 0, s, jj * m + r * 16, 0, 128)
                                    pair(load, 2, c, r * 16, col, n * 4)
                                else:
                                    for t in T.unroll(4):
                                        T.evaluate(intrin("tilezero", T.int8(t)))
                                for kk in range(kcs):
                                    if exists(task, jj, ch):  # a few lines a step
                                        for t in range(per_step):
                                            T.evaluate(
                                                prefetch(
                                                    w,
                                                    *following(task, jj, ch),
                                                    (r * kcs + kk) * per_step + t,
                                                )
                                            )
                                    step(a, w, r, task * group + jj, ch * kcs + kk)
                                pair(store, 0, s, jj * m + r * 16, 0, 128)
                                pair(store, 2, c, r * 16, col, n * 4)
                                if ch == chunks - 1:
                                    for i in range(16):
                                        for j in T.vectorized(32):
                                            c[r * 16 + i, col + j] = (
                                                c[r * 16 + i, col + j] + s[jj * m + r * 16 + i, j]
                                            )
                    T.evaluate(intrin("tilerelease"))

    return gemm
