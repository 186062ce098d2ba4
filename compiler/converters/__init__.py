"""mlc's own ONNX operator converters, layered over TVM's importer in this one place.

A converter is a TVM `OnnxOpConverter` subclass (methods `_impl_vN(bb, inputs, attr, params)`,
the newest N <= the model's opset is used), registered with `@register("OpType")`. `install()`
makes TVM's importer see the registry on top of its own map; ours win where both have an op.
"""

from __future__ import annotations

from typing import Any

# op type -> (domains, converter class)
_REGISTRY: dict[str, tuple[tuple[str, ...], Any]] = {}
ONNX_DOMAINS = ("", "ai.onnx")
ML_DOMAIN = "ai.onnx.ml"
MS_DOMAIN = "com.microsoft"  # onnxruntime's contrib operators (converters/contrib.py)
_TVM_OPS: frozenset[str] = frozenset()  # TVM's own converters' op types, set by install()
# Ops that never reach the importer: rewritten on the ONNX graph first (compiler/onnx_loops.py).
REWRITTEN = {"Loop", "Scan"}
REWRITTEN_CONTRIB = {"DynamicQuantizeLSTM"}  # to an fp32 LSTM (onnx_prepare.py)


def register(op_type: str, *domains: str):
    """Class decorator: `@register("LSTM")`, `@register("Scaler", ML_DOMAIN)`, or several
    domains: `@register("SimplifiedLayerNormalization", "", MS_DOMAIN)`."""
    named: list[str] = []
    for domain in domains or ("",):
        named += ONNX_DOMAINS if domain in ONNX_DOMAINS else (domain,)
    domains = tuple(named)

    def add(cls):
        _REGISTRY[op_type] = (domains, cls)
        return cls

    return add


def text_attr(attr: dict, name: str, default: str) -> str:
    """A string attribute as str (TVM's importer hands them over as bytes)."""
    value = attr.get(name, default)
    return value.decode() if isinstance(value, bytes) else str(value)


def install() -> None:
    """Point TVM's importer at TVM's converters plus ours (idempotent)."""
    global _TVM_OPS
    if _TVM_OPS:
        return
    from tvm.relax.frontend.onnx import onnx_frontend

    from . import (  # noqa: F401  (each module registers its converters)
        activations,
        attention,
        contrib,
        deform,
        image,
        losses,
        math_ops,
        ml,
        norms,
        pool,
        quant,
        recurrent,
        reductions,
        resize,
        rnn,
        selection,
        sequence,
        spectral,
        tensor_ops,
        tfidf,
        trees,
    )

    tvm_map = onnx_frontend._get_convert_map

    def merged() -> dict[str, Any]:
        return {**tvm_map(), **{op: cls for op, (_d, cls) in _REGISTRY.items()}}

    onnx_frontend._get_convert_map = merged
    _TVM_OPS = frozenset(tvm_map()) | {"If", "Constant"}


def supports(op_type: str, domain: str) -> bool:
    """Can the importer (TVM's converters or ours) convert this node?"""
    install()
    if op_type in REWRITTEN and domain in ONNX_DOMAINS:
        return True
    if op_type in _REGISTRY:
        return domain in _REGISTRY[op_type][0]
    from .contrib import TVM_CONTRIB_OPS

    if domain == MS_DOMAIN:
        return op_type in TVM_CONTRIB_OPS or op_type in REWRITTEN_CONTRIB
    return domain in ONNX_DOMAINS and op_type in _TVM_OPS
