"""The benchmark models, built as ONNX files with onnx.helper and seeded random weights.

    python benchmarks/models.py [NAME ...]      # build the missing ones into build/bench-models/

Each is structured as PyTorch exports the real network at opset 17, batch 1, fp32:
  mlp           3 x (Gemm 1024, transB=1) with Relu between; input x [1, 1024]
  resnet18      conv-BN-relu, 8 basic blocks, global average pool, Gemm 1000; x [1, 3, 224, 224]
  mobilenetv2   inverted residuals, depthwise convs (group=C), BN, Clip(0, 6); x [1, 3, 224, 224]
  bert-mini     L=4, H=256, 4 heads, FF 1024, seq 128 \\ input_ids int64 [1, 128] -> embedding
  bert-base     L=12, H=768, 12 heads, FF 3072, seq 128 / Gathers, LayerNormalization, erf-GELU
Weights are scaled so activations stay near unit size (He init for convs, 1/sqrt(fan_in) for
linear layers, batch-norm statistics near the ones a trained net has), which makes the max abs
difference against onnxruntime meaningful.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper
from onnx import helper as h

OPSET = 17
VOCAB = 30522  # BERT's WordPiece vocabulary
CACHE = Path(__file__).resolve().parents[1] / "build" / "bench-models"


class _Graph:
    """Collects nodes and seeded initializers; names are made unique by a counter."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._count = 0

    def name(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}_{self._count}"

    def const(self, prefix: str, array: np.ndarray) -> str:
        name = self.name(prefix)
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def normal(self, prefix: str, shape, std: float, mean: float = 0.0) -> str:
        data = self.rng.standard_normal(shape, dtype=np.float32) * np.float32(std) + mean
        return self.const(prefix, data.astype(np.float32))

    def op(self, op_type: str, inputs: list[str], **attrs) -> str:
        out = self.name(op_type.lower())
        self.nodes.append(h.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def model(self, inputs, outputs, name: str) -> onnx.ModelProto:
        graph = h.make_graph(self.nodes, name, inputs, outputs, self.inits)
        model = h.make_model(graph, opset_imports=[h.make_opsetid("", OPSET)])
        model.producer_name = "mlc-benchmarks"
        model.ir_version = 8
        return model


def _conv_bn(g: _Graph, x: str, c_in: int, c_out: int, k: int, stride=1, groups=1, gain=1.0):
    """Conv (no bias, He init) then BatchNormalization with eval-mode statistics; `gain`
    scales the BN weight (residual branches use less, so that activations do not grow)."""
    fan_in = c_in // groups * k * k
    w = g.normal("conv.w", (c_out, c_in // groups, k, k), math.sqrt(2.0 / fan_in))
    pad = k // 2
    y = g.op("Conv", [x, w], kernel_shape=[k, k], strides=[stride, stride], group=groups,
             pads=[pad] * 4)  # fmt: skip
    gamma = g.normal("bn.gamma", (c_out,), 0.1 * gain, gain)
    beta = g.normal("bn.beta", (c_out,), 0.1)
    mean = g.normal("bn.mean", (c_out,), 0.1)
    var = g.const("bn.var", g.rng.uniform(0.8, 1.5, c_out).astype(np.float32))
    return g.op("BatchNormalization", [y, gamma, beta, mean, var], epsilon=1e-5, momentum=0.9)


def _classifier(g: _Graph, x: str, c_in: int, classes: int = 1000) -> str:
    flat = g.op("Flatten", [g.op("GlobalAveragePool", [x])], axis=1)
    w = g.normal("fc.w", (classes, c_in), 1.0 / math.sqrt(c_in))
    return g.op("Gemm", [flat, w, g.normal("fc.b", (classes,), 0.01)], transB=1)


def _image_input(size: int):
    return h.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])


def mlp(width: int = 1024, layers: int = 3) -> onnx.ModelProto:
    g = _Graph(seed=1)
    x = "x"
    for i in range(layers):
        w = g.normal("fc.w", (width, width), math.sqrt(2.0 / width))
        x = g.op("Gemm", [x, w, g.normal("fc.b", (width,), 0.01)], transB=1)
        if i < layers - 1:
            x = g.op("Relu", [x])
    out = h.make_tensor_value_info(x, TensorProto.FLOAT, [1, width])
    return g.model([h.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])], [out], "mlp")


def resnet18(width: int = 64, size: int = 224, classes: int = 1000) -> onnx.ModelProto:
    g = _Graph(seed=2)
    x = g.op("Relu", [_conv_bn(g, "x", 3, width, 7, stride=2)])
    x = g.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    c_in = width
    for stage, c_out in enumerate((width, width * 2, width * 4, width * 8)):
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            y = g.op("Relu", [_conv_bn(g, x, c_in, c_out, 3, stride)])
            y = _conv_bn(g, y, c_out, c_out, 3, gain=0.5)
            skip = x if stride == 1 and c_in == c_out else _conv_bn(g, x, c_in, c_out, 1, stride)
            x = g.op("Relu", [g.op("Add", [y, skip])])
            c_in = c_out
    logits = _classifier(g, x, c_in, classes)
    out = h.make_tensor_value_info(logits, TensorProto.FLOAT, [1, classes])
    return g.model([_image_input(size)], [out], "resnet18")


# (expansion t, channels c, repeats n, first stride s), as in the MobileNetV2 paper
_MBV2 = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
         (6, 160, 3, 2), (6, 320, 1, 1))  # fmt: skip


def mobilenetv2(size: int = 224, classes: int = 1000) -> onnx.ModelProto:
    g = _Graph(seed=3)
    lo, hi = g.const("clip.min", np.float32(0.0)), g.const("clip.max", np.float32(6.0))

    def relu6(v: str) -> str:
        return g.op("Clip", [v, lo, hi])

    x = relu6(_conv_bn(g, "x", 3, 32, 3, stride=2))
    c_in = 32
    for t, c, n, s in _MBV2:
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = c_in * t
            y = relu6(_conv_bn(g, x, c_in, hidden, 1)) if t != 1 else x
            y = relu6(_conv_bn(g, y, hidden, hidden, 3, stride, groups=hidden))
            y = _conv_bn(g, y, hidden, c, 1)
            x = g.op("Add", [x, y]) if stride == 1 and c_in == c else y
            c_in = c
    x = relu6(_conv_bn(g, x, c_in, 1280, 1))
    logits = _classifier(g, x, 1280, classes)
    out = h.make_tensor_value_info(logits, TensorProto.FLOAT, [1, classes])
    return g.model([_image_input(size)], [out], "mobilenetv2")


def _linear(g: _Graph, x: str, n_in: int, n_out: int) -> str:
    """PyTorch's nn.Linear on a 3-D input: MatMul by the transposed weight, then Add."""
    w = g.normal("linear.w", (n_in, n_out), 1.0 / math.sqrt(n_in))
    return g.op("Add", [g.op("MatMul", [x, w]), g.normal("linear.b", (n_out,), 0.02)])


def _layer_norm(g: _Graph, x: str, hidden: int) -> str:
    gamma, beta = g.normal("ln.gamma", (hidden,), 0.05, 1.0), g.normal("ln.beta", (hidden,), 0.05)
    return g.op("LayerNormalization", [x, gamma, beta], axis=-1, epsilon=1e-12)


def _attention(g: _Graph, x: str, seq: int, hidden: int, heads: int) -> str:
    dh = hidden // heads
    split = g.const("shape", np.array([1, seq, heads, dh], np.int64))
    q, k, v = (g.op("Reshape", [_linear(g, x, hidden, hidden), split]) for _ in range(3))
    q = g.op("Transpose", [q], perm=[0, 2, 1, 3])
    k = g.op("Transpose", [k], perm=[0, 2, 3, 1])
    v = g.op("Transpose", [v], perm=[0, 2, 1, 3])
    scores = g.op("Div", [g.op("MatMul", [q, k]), g.const("sqrt_dh", np.float32(math.sqrt(dh)))])
    context = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), v])
    context = g.op("Transpose", [context], perm=[0, 2, 1, 3])
    merged = g.op("Reshape", [context, g.const("shape", np.array([1, seq, hidden], np.int64))])
    return _linear(g, merged, hidden, hidden)


def _gelu(g: _Graph, x: str) -> str:
    """erf-GELU as PyTorch exports it at opset 17: x * 0.5 * (1 + erf(x / sqrt(2)))."""
    erf = g.op("Erf", [g.op("Div", [x, g.const("sqrt2", np.float32(math.sqrt(2.0)))])])
    one_plus = g.op("Add", [erf, g.const("one", np.float32(1.0))])
    return g.op("Mul", [g.op("Mul", [x, one_plus]), g.const("half", np.float32(0.5))])


def bert(layers: int, hidden: int, heads: int, ff: int, seq: int = 128, vocab: int = VOCAB):
    """A BERT encoder (HF BertModel's last_hidden_state) without an attention mask."""
    g = _Graph(seed=4 + layers)
    words = g.op("Gather", [g.normal("word_emb", (vocab, hidden), 1.0), "input_ids"], axis=0)
    positions = g.normal("pos_emb", (1, seq, hidden), 0.5)  # positions 0..seq-1, folded
    token_type = g.normal("type_emb", (hidden,), 0.5)  # token type 0 for every token
    x = _layer_norm(g, g.op("Add", [g.op("Add", [words, positions]), token_type]), hidden)
    for _ in range(layers):
        x = _layer_norm(g, g.op("Add", [_attention(g, x, seq, hidden, heads), x]), hidden)
        y = _linear(g, _gelu(g, _linear(g, x, hidden, ff)), ff, hidden)
        x = _layer_norm(g, g.op("Add", [y, x]), hidden)
    ids = h.make_tensor_value_info("input_ids", TensorProto.INT64, [1, seq])
    out = h.make_tensor_value_info(x, TensorProto.FLOAT, [1, seq, hidden])
    return g.model([ids], [out], f"bert-L{layers}-H{hidden}")


MODELS: dict[str, Callable[[], onnx.ModelProto]] = {
    "mlp": mlp,
    "resnet18": resnet18,
    "mobilenetv2": mobilenetv2,
    "bert-mini": lambda: bert(layers=4, hidden=256, heads=4, ff=1024),
    "bert-base": lambda: bert(layers=12, hidden=768, heads=12, ff=3072),
}


def input_specs(session) -> list[tuple[str, list[int], np.dtype]]:
    """(name, shape, dtype) of each input of an onnxruntime session (the models are static)."""
    dtypes = {"tensor(float)": np.float32, "tensor(int64)": np.int64}
    return [(i.name, list(i.shape), np.dtype(dtypes[i.type])) for i in session.get_inputs()]


def example_inputs(specs, seed: int = 0, vocab: int = VOCAB) -> dict[str, np.ndarray]:
    """Seeded inputs: standard normal images/features, token ids over the whole vocabulary."""
    rng = np.random.default_rng(seed)
    inputs = {}
    for name, shape, dtype in specs:
        if dtype.kind == "i":
            inputs[name] = rng.integers(0, vocab, shape, dtype=dtype)
        else:
            inputs[name] = rng.standard_normal(shape, dtype=dtype)
    return inputs


def save_checked(model: onnx.ModelProto, path: Path, vocab: int = VOCAB) -> Path:
    """Check `model` with onnx.checker and run it once in onnxruntime, then write it atomically."""
    import onnxruntime as ort

    onnx.checker.check_model(model, full_check=True)
    tmp = path.with_suffix(".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, tmp)
    session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    outputs = session.run(None, example_inputs(input_specs(session), vocab=vocab))
    if not all(np.isfinite(o).all() for o in outputs):
        tmp.unlink()
        raise ValueError(f"{path.name}: onnxruntime gives non-finite outputs")
    tmp.replace(path)
    return path


def ensure(name: str, cache: Path = CACHE) -> Path:
    """The path of benchmark model `name`, built into `cache` if it is not there yet."""
    if name not in MODELS:
        raise KeyError(f"unknown benchmark model {name!r}; known: {', '.join(MODELS)}")
    path = cache / f"{name}.onnx"
    if not path.exists():
        print(f"building {path}", file=sys.stderr)
        save_checked(MODELS[name](), path)
    return path


if __name__ == "__main__":
    for model_name in sys.argv[1:] or MODELS:
        print(ensure(model_name))
