#!/usr/bin/env python3
"""Build a corpus of real third-party-style ONNX models, offline, from PyPI packages only.

    build/corpus/venv/bin/python corpus/build.py [--out build/corpus/models] [--only A,B] [--list]
    build/corpus/venv/bin/python corpus/build.py --tiny --out corpus/tiny

Every model comes from a package installed by corpus/requirements.txt: torchvision and timm
models with weights=None / pretrained=False, transformers models built from a config object
(random weights), Keras applications through tf2onnx, paddle.vision models through
paddle2onnx, ONNX files that PyPI wheels ship, and models derived from those exports by
onnxruntime.quantization and onnxconverter-common's float16 converter. Nothing is downloaded
from a model hub: the build sets HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE and a torch hub
directory of its own.

Each model is built in its own subprocess with a timeout (one failing export does not stop
the rest), verified in onnxruntime on random inputs made from its sidecar (in another
subprocess), and reported on one line: `built`, `reused`, `skipped: why` or `dropped: why`.
Outputs that exist are reused unless --force. `<out>/index.json` records every model's status.

For each model the build writes `<out>/<name>.onnx` (weights inside the file unless it would
pass 2 GB) and `<out>/<name>.json`:
  name, source, family, exporter, opset, dynamic_axes ({input: {axis: dim name}} as exported,
  read back from the file), pins (the `--dim NAME=VALUE` / `--input-shape NAME:AxB` flags that
  compile the model at the size verified here), input_ranges ({input: [lo, hi]}, inclusive, for
  integer inputs such as token ids), inputs / outputs (name, dtype, shape as exported), size,
  sha256, notes.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_OUT = ROOT / "build" / "corpus" / "models"
PADDLE_PYTHON = ROOT / "build" / "corpus" / "venv-paddle" / "bin" / "python"
TWO_GB = 2 * 1024**3

# Offline: nothing may come from a hub, ever.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "TF_ENABLE_ONEDNN_OPTS": "0",
    "CUDA_VISIBLE_DEVICES": "",
    "PYTHONHASHSEED": "0",
}


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Spec:
    name: str
    fn: Callable[..., Any]
    family: str
    exporter: str  # torchscript | dynamo | tf2onnx | paddle2onnx | shipped:<pkg> | derived
    opset: int | None = None
    tiny: bool = False
    timeout: int = 900
    deps: tuple[str, ...] = ()
    python: str | None = None  # another interpreter for the worker (paddle)
    args: dict = dataclasses.field(default_factory=dict)


REGISTRY: dict[str, Spec] = {}


def register(
    name, family, exporter, opset=None, *, tiny=False, timeout=900, deps=(), python=None, **args
):
    def deco(fn):
        key = name
        if key in REGISTRY:
            raise ValueError(f"duplicate model {key}")
        REGISTRY[key] = Spec(
            name, fn, family, exporter, opset, tiny, timeout, tuple(deps), python, args
        )
        return fn

    return deco


def torch_model(name, family, opset, *, dynamo_opset=None, tiny=False, timeout=900, **args):
    """Register a torch builder under `name` (TorchScript exporter) and, when dynamo_opset is
    given, under `name-dynamo` too (the dynamo exporter, same module and inputs)."""

    def deco(fn):
        register(name, family, "torchscript", opset, tiny=tiny, timeout=timeout, **args)(fn)
        if dynamo_opset:
            register(
                f"{name}-dynamo",
                family,
                "dynamo",
                dynamo_opset,
                tiny=tiny,
                timeout=max(timeout, 1500),
                **args,
            )(fn)
        return fn

    return deco


@dataclasses.dataclass
class TorchExport:
    module: Any
    args: tuple
    input_names: list[str]
    output_names: list[str]
    source: str
    dynamic_axes: dict | None = None  # {input: {axis: name}}
    pin_values: dict | None = None  # {dim name: value} for the sidecar's pins (default: example)
    input_ranges: dict | None = None
    notes: str = ""


# --------------------------------------------------------------------------------------------
# Helpers used by the builders (they import torch lazily: the parent process never does)
# --------------------------------------------------------------------------------------------


def _ver(pkg):
    from importlib import metadata

    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "?"


def _seed():
    import torch

    torch.manual_seed(0)
    import numpy as np

    np.random.seed(0)


def _tv(arch, **kw):
    import torchvision.models as tvm

    _seed()
    for ns in (tvm, tvm.detection, tvm.segmentation, tvm.video, tvm.optical_flow):
        if hasattr(ns, arch):
            return getattr(ns, arch)(weights=None, **kw).eval()
    raise AttributeError(f"torchvision.models has no {arch}")


def _tv_src(arch, extra=""):
    return f"torchvision {_ver('torchvision')} {arch}(weights=None{extra})"


def _img(b=1, h=224, w=224, c=3):
    import torch

    g = torch.Generator().manual_seed(1)
    return torch.randn(b, c, h, w, generator=g)


BATCH = {0: "batch"}
BHW = {0: "batch", 2: "height", 3: "width"}


def _image_classifier(arch, dyn, *, h=224, w=224, extra_kw=None, note="", extra_src=""):
    m = _tv(arch, **(extra_kw or {}))
    b = 2 if dyn else 1
    axes = None
    if dyn == "batch":
        axes = {"input": BATCH}
    elif dyn == "bhw":
        axes = {"input": BHW}
    return TorchExport(
        m,
        (_img(b, h, w),),
        ["input"],
        ["logits"],
        _tv_src(arch, extra_src),
        dynamic_axes=axes,
        pin_values={"batch": 1},
        notes=note,
    )


def _wrappers():
    """torch.nn.Module wrappers, defined on first use so that the parent never imports torch."""
    import torch

    class OutputSelect(torch.nn.Module):
        """Call `inner(**dict(zip(arg_names, args)))` and return the chosen outputs as a tuple
        (dict keys, attributes or indices)."""

        def __init__(self, inner, arg_names, outputs, call_kw=None):
            super().__init__()
            self.inner = inner
            self.arg_names = list(arg_names)
            self.outputs = list(outputs)
            self.call_kw = dict(call_kw or {})

        def forward(self, *args):
            out = self.inner(**dict(zip(self.arg_names, args)), **self.call_kw)
            res = []
            for k in self.outputs:
                if isinstance(k, int):
                    res.append(out[k])
                elif isinstance(out, dict) or hasattr(out, "keys"):
                    res.append(out[k])
                else:
                    res.append(getattr(out, k))
            return tuple(res) if len(res) > 1 else res[0]

    class Detection(torch.nn.Module):
        """torchvision detection models take a list of CHW images and return a list of dicts:
        one image in, its boxes / scores / labels (and masks) out."""

        def __init__(self, inner, keys=("boxes", "scores", "labels")):
            super().__init__()
            self.inner = inner
            self.keys = keys

        def forward(self, image):
            out = self.inner([image])[0]
            return tuple(out[k] for k in self.keys)

    class GPT2WithPast(torch.nn.Module):
        """GPT-2 decoder step with past key/values as flat inputs and present key/values as
        flat outputs (the layout of optimum's decoder_with_past exports)."""

        def __init__(self, inner, n_layer):
            super().__init__()
            self.inner = inner
            self.n_layer = n_layer

        def forward(self, input_ids, attention_mask, position_ids, *past):
            from transformers import DynamicCache

            cache = DynamicCache(
                ddp_cache_data=[(past[2 * i], past[2 * i + 1]) for i in range(self.n_layer)]
            )
            out = self.inner(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                past_key_values=cache,
                use_cache=True,
                return_dict=True,
            )
            pkv = out.past_key_values
            flat = []
            for layer in pkv.layers:
                flat += [layer.keys, layer.values]
            return (out.logits, *flat)

    return OutputSelect, Detection, GPT2WithPast


def _hf(cls_name, cfg, attn="sdpa"):
    import transformers

    _seed()
    cls = getattr(transformers, cls_name)
    try:
        m = cls._from_config(cfg, attn_implementation=attn)
    except (TypeError, ValueError):
        m = cls(cfg)
    return m.eval()


def _hf_src(cls_name, cfg_desc):
    return f"transformers {_ver('transformers')} {cls_name}({cfg_desc}), random weights"


def _ids(b, s, vocab, seed=2):
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (b, s), generator=g, dtype=torch.int64)


def _text_encoder(
    cls_name,
    cfg,
    cfg_desc,
    *,
    b=2,
    s=128,
    inputs=("input_ids", "attention_mask"),
    outputs=("last_hidden_state",),
    dyn="bs",
    attn="sdpa",
    vocab=None,
    note="",
    type_vocab=2,
    out_names=None,
):
    import torch

    OutputSelect, _, _ = _wrappers()
    m = _hf(cls_name, cfg, attn)
    vocab = vocab or cfg.vocab_size
    ex, ranges = [], {}
    for n in inputs:
        if n == "input_ids":
            ex.append(_ids(b, s, vocab))
            ranges[n] = [0, vocab - 1]
        elif n == "attention_mask":
            ex.append(torch.ones(b, s, dtype=torch.int64))
            ranges[n] = [1, 1]
        elif n == "token_type_ids":
            ex.append(torch.zeros(b, s, dtype=torch.int64))
            ranges[n] = [0, type_vocab - 1]
        else:
            raise ValueError(n)
    axes = None
    if dyn == "bs":
        axes = {n: {0: "batch", 1: "sequence"} for n in inputs}
    elif dyn == "b":
        axes = {n: {0: "batch"} for n in inputs}
    wrap = OutputSelect(m, inputs, outputs, {"return_dict": True})
    return TorchExport(
        wrap,
        tuple(ex),
        list(inputs),
        list(out_names or outputs),
        _hf_src(cls_name, cfg_desc),
        dynamic_axes=axes,
        pin_values={"batch": 1, "sequence": s},
        input_ranges=ranges,
        notes=note,
    )


# --------------------------------------------------------------------------------------------
# torchvision
# --------------------------------------------------------------------------------------------


@torch_model("resnet50", "classification", 17, dynamo_opset=18)
def _resnet50(spec):
    return _image_classifier("resnet50", "batch")


@torch_model("efficientnet_b0", "classification", 13)
def _effnet_b0(spec):
    return _image_classifier("efficientnet_b0", None, note="static shapes")


@torch_model("mobilenet_v3_small", "classification", 14, dynamo_opset=18)
def _mnv3s(spec):
    return _image_classifier("mobilenet_v3_small", "bhw", note="dynamic batch, height, width")


@torch_model("convnext_tiny", "classification", 17, dynamo_opset=18)
def _convnext_tiny(spec):
    return _image_classifier("convnext_tiny", "batch")


@torch_model("regnet_y_400mf", "classification", 13)
def _regnet(spec):
    return _image_classifier("regnet_y_400mf", None, note="static shapes")


@torch_model("vit_s16", "classification", 17, dynamo_opset=18)
def _vit_s16(spec):
    from torchvision.models.vision_transformer import VisionTransformer

    _seed()
    m = VisionTransformer(
        image_size=224, patch_size=16, num_layers=12, num_heads=6, hidden_dim=384, mlp_dim=1536
    ).eval()
    return TorchExport(
        m,
        (_img(2),),
        ["input"],
        ["logits"],
        f"torchvision {_ver('torchvision')} VisionTransformer(ViT-S/16: 12 layers, "
        "6 heads, hidden 384, mlp 1536)",
        dynamic_axes={"input": BATCH},
        pin_values={"batch": 1},
        notes="ViT-S/16 (vit_b_16 is 330 MB); torchvision's ViT class",
    )


@torch_model("swin_t", "classification", 17, dynamo_opset=18)
def _swin_t(spec):
    return _image_classifier("swin_t", None, note="static shapes (shifted windows, torch.roll)")


@torch_model("squeezenet1_1", "classification", 13)
def _squeeze(spec):
    return _image_classifier("squeezenet1_1", "batch")


@torch_model("shufflenet_v2_x1_0", "classification", 14)
def _shuffle(spec):
    return _image_classifier("shufflenet_v2_x1_0", "batch")


@torch_model("densenet121", "classification", 17)
def _densenet(spec):
    return _image_classifier("densenet121", "bhw", note="dynamic batch, height, width")


@torch_model("googlenet", "classification", 13)
def _googlenet(spec):
    return _image_classifier(
        "googlenet",
        None,
        extra_kw={"aux_logits": False, "init_weights": True},
        extra_src=", aux_logits=False",
        note="static shapes",
    )


@torch_model("mnasnet1_0", "classification", 14)
def _mnasnet(spec):
    return _image_classifier("mnasnet1_0", "batch")


@torch_model("ssdlite320_mobilenet_v3_large", "detection", 17)
def _ssdlite(spec):
    _, Detection, _ = _wrappers()
    m = _tv("ssdlite320_mobilenet_v3_large", weights_backbone=None)
    return TorchExport(
        Detection(m),
        (_img(1, 320, 320)[0],),
        ["image"],
        ["boxes", "scores", "labels"],
        _tv_src("ssdlite320_mobilenet_v3_large", ", weights_backbone=None"),
        notes="one CHW image in; pre/post-processing, anchors, NMS in the graph; "
        "outputs have a data-dependent length",
    )


@torch_model("fasterrcnn_mobilenet_v3_large_320_fpn", "detection", 17, timeout=1200)
def _frcnn(spec):
    _, Detection, _ = _wrappers()
    m = _tv("fasterrcnn_mobilenet_v3_large_320_fpn", weights_backbone=None, box_score_thresh=0.0)
    return TorchExport(
        Detection(m),
        (_img(1, 320, 320)[0],),
        ["image"],
        ["boxes", "scores", "labels"],
        _tv_src(
            "fasterrcnn_mobilenet_v3_large_320_fpn", ", weights_backbone=None, box_score_thresh=0.0"
        ),
        notes="two-stage detector: RPN, NMS, RoIAlign; one CHW image in; score "
        "threshold 0 so that random weights still give boxes",
    )


@torch_model("retinanet_resnet50_fpn", "detection", 17, timeout=1500)
def _retina(spec):
    _, Detection, _ = _wrappers()
    m = _tv("retinanet_resnet50_fpn", weights_backbone=None, min_size=320, max_size=320)
    return TorchExport(
        Detection(m),
        (_img(1, 320, 320)[0],),
        ["image"],
        ["boxes", "scores", "labels"],
        _tv_src("retinanet_resnet50_fpn", ", weights_backbone=None, min_size=320, max_size=320"),
        notes="one-stage detector with per-level TopK and batched NMS",
    )


@torch_model("deeplabv3_mobilenet_v3_large", "segmentation", 17, dynamo_opset=18)
def _deeplab(spec):
    OutputSelect, _, _ = _wrappers()
    m = _tv("deeplabv3_mobilenet_v3_large", weights_backbone=None, aux_loss=False)
    return TorchExport(
        OutputSelect(m, ["x"], ["out"]),
        (_img(2, 224, 224),),
        ["input"],
        ["out"],
        _tv_src("deeplabv3_mobilenet_v3_large", ", weights_backbone=None"),
        dynamic_axes={"input": BHW},
        pin_values={"batch": 1},
        notes="dynamic batch, height, width; bilinear Resize back to the input size",
    )


@torch_model("fcn_resnet50", "segmentation", 13)
def _fcn(spec):
    OutputSelect, _, _ = _wrappers()
    m = _tv("fcn_resnet50", weights_backbone=None, aux_loss=False)
    return TorchExport(
        OutputSelect(m, ["x"], ["out"]),
        (_img(1, 224, 224),),
        ["input"],
        ["out"],
        _tv_src("fcn_resnet50", ", weights_backbone=None"),
        notes="static shapes; dilated ResNet-50 backbone",
    )


@torch_model("r3d_18", "video", 17)
def _r3d(spec):
    import torch

    m = _tv("r3d_18")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 8, 112, 112, generator=g)
    return TorchExport(
        m,
        (x,),
        ["video"],
        ["logits"],
        _tv_src("r3d_18"),
        dynamic_axes={"video": BATCH},
        pin_values={"batch": 1},
        notes="3D convolutions over 8 frames of 112x112",
    )


# --------------------------------------------------------------------------------------------
# timm
# --------------------------------------------------------------------------------------------


def _timm(arch, dyn=True, h=224, note="", **kw):
    import timm

    _seed()
    m = timm.create_model(arch, pretrained=False, **kw).eval()
    b = 2 if dyn else 1
    return TorchExport(
        m,
        (_img(b, h, h),),
        ["input"],
        ["logits"],
        f"timm {_ver('timm')} {arch}(pretrained=False)",
        dynamic_axes={"input": BATCH} if dyn else None,
        pin_values={"batch": 1},
        notes=note,
    )


@torch_model("timm_convnext_atto", "classification", 17)
def _timm_convnext(spec):
    return _timm("convnext_atto")


@torch_model("timm_deit_tiny", "classification", 14, dynamo_opset=18)
def _timm_deit(spec):
    return _timm("deit_tiny_patch16_224")


@torch_model("timm_mobilevit_xxs", "classification", 17)
def _timm_mvit(spec):
    return _timm("mobilevit_xxs", dyn=False, h=256, note="static; unfold/fold of patches")


@torch_model("timm_efficientnet_lite0", "classification", 13)
def _timm_eff(spec):
    return _timm("efficientnet_lite0")


# --------------------------------------------------------------------------------------------
# transformers, from configs (random weights)
# --------------------------------------------------------------------------------------------


@torch_model("bert", "nlp-encoder", 14, dynamo_opset=18)
def _bert(spec):
    from transformers import BertConfig

    cfg = BertConfig(
        hidden_size=512, num_hidden_layers=4, num_attention_heads=8, intermediate_size=2048
    )
    return _text_encoder(
        "BertModel",
        cfg,
        "BERT-small: hidden 512, 4 layers, 8 heads, vocab 30522",
        inputs=("input_ids", "attention_mask", "token_type_ids"),
        outputs=("last_hidden_state", "pooler_output"),
        note="dynamic batch and sequence; SDPA attention",
    )


@torch_model("distilbert", "nlp-encoder", 13, dynamo_opset=18)
def _distilbert(spec):
    from transformers import DistilBertConfig

    cfg = DistilBertConfig(dim=384, n_layers=6, n_heads=6, hidden_dim=1536)
    return _text_encoder(
        "DistilBertModel",
        cfg,
        "dim 384, 6 layers, 6 heads, vocab 30522",
        attn="eager",
        note="opset 13, eager attention; dynamic batch and sequence",
    )


@torch_model("roberta", "nlp-encoder", 17)
def _roberta(spec):
    from transformers import RobertaConfig

    cfg = RobertaConfig(
        hidden_size=384,
        num_hidden_layers=4,
        num_attention_heads=6,
        intermediate_size=1536,
        vocab_size=50265,
        max_position_embeddings=514,
    )
    return _text_encoder(
        "RobertaModel",
        cfg,
        "hidden 384, 4 layers, 6 heads, vocab 50265",
        outputs=("last_hidden_state", "pooler_output"),
        dyn="b",
        note="dynamic batch only (sequence 128); position ids from input_ids (CumSum)",
    )


@torch_model("mobilebert", "nlp-encoder", 13)
def _mobilebert(spec):
    from transformers import MobileBertConfig

    cfg = MobileBertConfig(num_hidden_layers=6)
    return _text_encoder(
        "MobileBertModel",
        cfg,
        "mobilebert-uncased sizes, 6 of 24 layers",
        inputs=("input_ids", "attention_mask", "token_type_ids"),
        outputs=("last_hidden_state", "pooler_output"),
        attn="eager",
        note="bottleneck layers, NoNorm (elementwise affine instead of LayerNorm)",
    )


@torch_model("albert", "nlp-encoder", 14)
def _albert(spec):
    from transformers import AlbertConfig

    cfg = AlbertConfig(
        embedding_size=128,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        vocab_size=30000,
    )
    return _text_encoder(
        "AlbertModel",
        cfg,
        "albert-base-v2 sizes (shared layers)",
        inputs=("input_ids", "attention_mask", "token_type_ids"),
        outputs=("last_hidden_state", "pooler_output"),
        note="one layer's weights shared by 12 layers",
    )


@torch_model("deberta_v2", "nlp-encoder", 17)
def _deberta(spec):
    from transformers import DebertaV2Config

    cfg = DebertaV2Config(
        hidden_size=384,
        num_hidden_layers=4,
        num_attention_heads=6,
        intermediate_size=1536,
        vocab_size=32000,
        max_position_embeddings=512,
        relative_attention=True,
        position_buckets=256,
        norm_rel_ebd="layer_norm",
        pos_att_type=["p2c", "c2p"],
        position_biased_input=False,
        share_att_key=True,
    )
    return _text_encoder(
        "DebertaV2Model",
        cfg,
        "deberta-v3-xsmall-like: hidden 384, 4 layers, vocab 32000",
        inputs=("input_ids", "attention_mask"),
        dyn="b",
        attn="eager",
        note="disentangled relative attention; dynamic batch only",
    )


@torch_model("t5_encoder", "nlp-encoder", 17, dynamo_opset=18)
def _t5(spec):
    from transformers import T5Config

    cfg = T5Config(
        d_model=256,
        d_ff=1024,
        d_kv=32,
        num_layers=4,
        num_heads=8,
        vocab_size=32128,
        feed_forward_proj="gated-gelu",
    )
    return _text_encoder(
        "T5EncoderModel",
        cfg,
        "t5-v1.1-like: d_model 256, 4 layers, gated-gelu",
        note="relative position buckets, RMSNorm",
    )


@torch_model("bart_encoder", "nlp-encoder", 14)
def _bart(spec):
    from transformers import BartConfig

    OutputSelect, _, _ = _wrappers()
    cfg = BartConfig(
        d_model=256,
        encoder_layers=3,
        decoder_layers=3,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=1024,
        decoder_ffn_dim=1024,
    )
    m = _hf("BartModel", cfg).get_encoder()
    ex = (
        _ids(2, 128, cfg.vocab_size),
        __import__("torch").ones(2, 128, dtype=__import__("torch").int64),
    )
    return TorchExport(
        OutputSelect(
            m, ["input_ids", "attention_mask"], ["last_hidden_state"], {"return_dict": True}
        ),
        ex,
        ["input_ids", "attention_mask"],
        ["last_hidden_state"],
        _hf_src("BartModel", "d_model 256, 3+3 layers, vocab 50265") + ", encoder",
        dynamic_axes={
            "input_ids": {0: "batch", 1: "sequence"},
            "attention_mask": {0: "batch", 1: "sequence"},
        },
        pin_values={"batch": 1, "sequence": 128},
        input_ranges={"input_ids": [0, cfg.vocab_size - 1], "attention_mask": [1, 1]},
    )


@torch_model("gpt2", "decoder", 14, dynamo_opset=18)
def _gpt2(spec):
    from transformers import GPT2Config

    cfg = GPT2Config(n_embd=256, n_layer=6, n_head=4, use_cache=False)
    return _text_encoder(
        "GPT2LMHeadModel",
        cfg,
        "n_embd 256, 6 layers, 4 heads, vocab 50257",
        outputs=("logits",),
        out_names=("logits",),
        note="causal LM without past key/values; dynamic batch and sequence; "
        "the TorchScript exporter stores the tied embedding / LM-head "
        "weight twice, the dynamo exporter once",
    )


def _gpt2_past_export(cfg, cfg_desc, past, seq, note):
    import torch

    _, _, GPT2WithPast = _wrappers()
    m = _hf("GPT2LMHeadModel", cfg)
    b = 2
    heads, hd = cfg.n_head, cfg.n_embd // cfg.n_head
    g = torch.Generator().manual_seed(3)
    names = ["input_ids", "attention_mask", "position_ids"]
    ex = [
        _ids(b, seq, cfg.vocab_size),
        torch.ones(b, past + seq, dtype=torch.int64),
        torch.arange(past, past + seq, dtype=torch.int64).unsqueeze(0).expand(b, seq).contiguous(),
    ]
    axes = {
        "input_ids": {0: "batch", 1: "sequence"},
        "attention_mask": {0: "batch", 1: "total_sequence"},
        "position_ids": {0: "batch", 1: "sequence"},
    }
    outs = ["logits"]
    for i in range(cfg.n_layer):
        for kv in ("key", "value"):
            n = f"past_key_values.{i}.{kv}"
            names.append(n)
            ex.append(torch.randn(b, heads, past, hd, generator=g))
            axes[n] = {0: "batch", 2: "past_sequence"}
            outs.append(f"present.{i}.{kv}")
    return TorchExport(
        GPT2WithPast(m, cfg.n_layer),
        tuple(ex),
        names,
        outs,
        _hf_src("GPT2LMHeadModel", cfg_desc) + ", use_cache=True",
        dynamic_axes=axes,
        pin_values={"batch": 1, "sequence": 1, "past_sequence": past, "total_sequence": past + 1},
        input_ranges={
            "input_ids": [0, cfg.vocab_size - 1],
            "attention_mask": [1, 1],
            "position_ids": [past, past],
        },
        notes=note,
    )


@torch_model("gpt2_past", "decoder", 14)
def _gpt2_past(spec):
    from transformers import GPT2Config

    cfg = GPT2Config(n_embd=256, n_layer=6, n_head=4, use_cache=True)
    return _gpt2_past_export(
        cfg,
        "n_embd 256, 6 layers, 4 heads, vocab 50257",
        32,
        4,
        "decoder step with past key/values (optimum's decoder_with_past "
        "layout): total_sequence = past_sequence + sequence; pins are one "
        "new token after 32 past ones",
    )


@torch_model("llama", "decoder", 17, dynamo_opset=18)
def _llama(spec):
    from transformers import LlamaConfig

    cfg = LlamaConfig(
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=4,
        vocab_size=32000,
        max_position_embeddings=2048,
        use_cache=False,
    )
    return _text_encoder(
        "LlamaForCausalLM",
        cfg,
        "hidden 256, 4 layers, 8 heads, 4 KV heads, vocab 32000",
        outputs=("logits",),
        out_names=("logits",),
        note="rotary embeddings, RMSNorm, SwiGLU, grouped-query attention",
    )


@torch_model("whisper_encoder", "speech", 17, dynamo_opset=18)
def _whisper(spec):
    import torch
    from transformers import WhisperConfig

    OutputSelect, _, _ = _wrappers()
    cfg = WhisperConfig(
        d_model=384,
        encoder_layers=4,
        decoder_layers=4,
        encoder_attention_heads=6,
        decoder_attention_heads=6,
        encoder_ffn_dim=1536,
        decoder_ffn_dim=1536,
        num_mel_bins=80,
        max_source_positions=1500,
    )
    m = _hf("WhisperModel", cfg).get_encoder()
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 80, 3000, generator=g)
    return TorchExport(
        OutputSelect(m, ["input_features"], ["last_hidden_state"], {"return_dict": True}),
        (x,),
        ["input_features"],
        ["last_hidden_state"],
        _hf_src("WhisperModel", "whisper-tiny sizes: d_model 384, 4 layers") + ", encoder",
        dynamic_axes={"input_features": BATCH},
        pin_values={"batch": 1},
        notes="80 mel bins x 3000 frames (30 s)",
    )


@torch_model("wav2vec2", "speech", 17, dynamo_opset=18)
def _wav2vec2(spec):
    import torch
    from transformers import Wav2Vec2Config

    OutputSelect, _, _ = _wrappers()
    cfg = Wav2Vec2Config(
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=1024,
        feat_extract_norm="group",
    )
    m = _hf("Wav2Vec2Model", cfg, "eager")
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 16000, generator=g)
    return TorchExport(
        OutputSelect(m, ["input_values"], ["last_hidden_state"], {"return_dict": True}),
        (x,),
        ["input_values"],
        ["last_hidden_state"],
        _hf_src("Wav2Vec2Model", "hidden 256, 4 layers, wav2vec2-base conv stack"),
        dynamic_axes={"input_values": {0: "batch", 1: "samples"}},
        pin_values={"batch": 1, "samples": 16000},
        notes="raw 16 kHz audio, 1 s; 7 strided Conv1d + GroupNorm, weight-normed positional conv",
    )


@torch_model("hf_vit", "classification", 14)
def _hf_vit(spec):
    from transformers import ViTConfig

    OutputSelect, _, _ = _wrappers()
    cfg = ViTConfig(
        hidden_size=384,
        num_hidden_layers=6,
        num_attention_heads=6,
        intermediate_size=1536,
        image_size=224,
        patch_size=16,
        num_labels=1000,
    )
    m = _hf("ViTForImageClassification", cfg)
    return TorchExport(
        OutputSelect(m, ["pixel_values"], ["logits"], {"return_dict": True}),
        (_img(2),),
        ["pixel_values"],
        ["logits"],
        _hf_src("ViTForImageClassification", "hidden 384, 6 layers, patch 16"),
        dynamic_axes={"pixel_values": BATCH},
        pin_values={"batch": 1},
    )


@torch_model("clip_text", "vision-language", 14, dynamo_opset=18)
def _clip_text(spec):
    from transformers import CLIPTextConfig

    cfg = CLIPTextConfig(
        hidden_size=256,
        intermediate_size=1024,
        num_hidden_layers=4,
        num_attention_heads=4,
        vocab_size=49408,
        max_position_embeddings=77,
    )
    return _text_encoder(
        "CLIPTextModel",
        cfg,
        "hidden 256, 4 layers, vocab 49408",
        s=77,
        inputs=("input_ids", "attention_mask"),
        outputs=("last_hidden_state", "pooler_output"),
        note="causal mask; pooled at the argmax of the EOS token; sequence <= 77",
    )


@torch_model("clip_vision", "vision-language", 14)
def _clip_vision(spec):
    from transformers import CLIPVisionConfig

    OutputSelect, _, _ = _wrappers()
    cfg = CLIPVisionConfig(
        hidden_size=384,
        intermediate_size=1536,
        num_hidden_layers=6,
        num_attention_heads=6,
        image_size=224,
        patch_size=32,
    )
    m = _hf("CLIPVisionModel", cfg)
    return TorchExport(
        OutputSelect(
            m, ["pixel_values"], ["last_hidden_state", "pooler_output"], {"return_dict": True}
        ),
        (_img(2),),
        ["pixel_values"],
        ["last_hidden_state", "pooler_output"],
        _hf_src("CLIPVisionModel", "hidden 384, 6 layers, patch 32"),
        dynamic_axes={"pixel_values": BATCH},
        pin_values={"batch": 1},
        notes="quick_gelu",
    )


# --------------------------------------------------------------------------------------------
# Keras (tf2onnx) and Paddle (paddle2onnx)
# --------------------------------------------------------------------------------------------


@register("keras_mobilenet_v2", "classification", "tf2onnx", 13)
def _keras_mnv2(spec, path):
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    m = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3), alpha=1.0)
    _tf2onnx(m, [tf.TensorSpec((None, 224, 224, 3), tf.float32, name="input")], spec.opset, path)
    return dict(
        source=f"keras {_ver('keras')} applications.MobileNetV2(weights=None) via "
        f"tf2onnx {_ver('tf2onnx')}, tensorflow-cpu {_ver('tensorflow-cpu')}",
        pin_values={},
        notes="NHWC input; tf2onnx transposes to NCHW convolutions",
    )


@register("keras_lstm_text", "nlp-encoder", "tf2onnx", 15)
def _keras_lstm(spec, path):
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    inp = keras.Input((64,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(5000, 64)(inp)
    x = keras.layers.Bidirectional(keras.layers.LSTM(64, return_sequences=True))(x)
    x = keras.layers.GRU(32)(x)
    out = keras.layers.Dense(4, activation="softmax")(x)
    m = keras.Model(inp, out)
    _tf2onnx(m, [tf.TensorSpec((None, 64), tf.int32, name="tokens")], spec.opset, path)
    return dict(
        source=f"keras {_ver('keras')} Embedding+Bidirectional(LSTM)+GRU+Dense (random) "
        f"via tf2onnx {_ver('tf2onnx')}",
        input_ranges={"tokens": [0, 4999]},
        notes="recurrent layers become ONNX LSTM / GRU (or Loop) nodes",
    )


def _tf2onnx(model, signature, opset, path):
    import tensorflow as tf
    import tf2onnx

    @tf.function(input_signature=signature)
    def fn(*xs):
        return model(*xs, training=False)

    tf2onnx.convert.from_function(fn, input_signature=signature, opset=opset, output_path=str(path))


PADDLE_CODE = r"""
import sys, paddle, paddle2onnx
paddle.seed(0)
arch, prefix, out, opset = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
model = getattr(paddle.vision.models, arch)(pretrained=False)
model.eval()
spec = [paddle.static.InputSpec([None, 3, 224, 224], "float32", "x")]
paddle.jit.save(paddle.jit.to_static(model, input_spec=spec, full_graph=True), prefix)
import os, glob
files = sorted(glob.glob(prefix + "*"))
print("saved", files)
model_file = next(f for f in files if f.endswith((".json", ".pdmodel")))
paddle2onnx.export(model_file, prefix + ".pdiparams", out, opset_version=opset)
print("paddle", paddle.__version__, "paddle2onnx", paddle2onnx.__version__)
"""


def _paddle(arch):
    def fn(spec, path):
        with tempfile.TemporaryDirectory() as d:
            code = Path(d) / "export.py"
            code.write_text(PADDLE_CODE)
            r = subprocess.run(
                [
                    str(PADDLE_PYTHON),
                    str(code),
                    arch,
                    str(Path(d) / "m"),
                    str(path),
                    str(spec.opset),
                ],
                capture_output=True,
                text=True,
                timeout=spec.timeout,
                env={**os.environ, **OFFLINE_ENV},
            )
            sys.stdout.write(r.stdout[-4000:])
            sys.stderr.write(r.stderr[-4000:])
            if r.returncode:
                raise RuntimeError(f"paddle export exited {r.returncode}: {r.stderr[-800:]}")
        v = subprocess.run(
            [
                str(PADDLE_PYTHON),
                "-c",
                "import paddle, paddle2onnx; print(paddle.__version__, paddle2onnx.__version__)",
            ],
            capture_output=True,
            text=True,
        ).stdout.split()
        return dict(
            source=f"paddlepaddle {v[0]} paddle.vision.models.{arch}(pretrained=False) "
            f"via paddle2onnx {v[1]}",
            pin_values={"batch": 1},
            notes="built in build/corpus/venv-paddle",
        )

    return fn


register("paddle_mobilenet_v2", "classification", "paddle2onnx", 13)(_paddle("mobilenet_v2"))
register("paddle_resnet18", "classification", "paddle2onnx", 11)(_paddle("resnet18"))


# --------------------------------------------------------------------------------------------
# ONNX files shipped inside PyPI wheels
# --------------------------------------------------------------------------------------------


def _shipped(pkg_module, dist, rel, **meta):
    def fn(spec, path):
        import importlib.util

        s = importlib.util.find_spec(pkg_module)  # finds the package without importing it
        if s is None or not s.submodule_search_locations:
            raise ModuleNotFoundError(f"package {dist} is not installed")
        src = Path(next(iter(s.submodule_search_locations))) / rel
        if not src.exists():
            raise FileNotFoundError(f"{dist} {_ver(dist)} does not ship {rel}")
        shutil.copyfile(src, path)
        return dict(source=f"{dist} {_ver(dist)} {pkg_module}/{rel}", **meta)

    return fn


def _reg_shipped(name, family, dist, module, rel, **meta):
    register(name, family, f"shipped:{dist}", None)(_shipped(module, dist, rel, **meta))


_reg_shipped(
    "ppocr_v4_det",
    "ocr",
    "rapidocr-onnxruntime",
    "rapidocr_onnxruntime",
    "models/ch_PP-OCRv4_det_infer.onnx",
    input_shapes={"x": [1, 3, 640, 640]},
    notes="Paddle-exported (paddle2onnx) PP-OCRv4 text detector, DB head; dims named "
    "p2o.DynamicDimension.N; H and W multiples of 32",
)
_reg_shipped(
    "ppocr_v4_rec",
    "ocr",
    "rapidocr-onnxruntime",
    "rapidocr_onnxruntime",
    "models/ch_PP-OCRv4_rec_infer.onnx",
    input_shapes={"x": [1, 3, 48, 320]},
    notes="Paddle-exported PP-OCRv4 text recognizer (SVTR-LCNet, CTC over 6625 "
    "characters); input 3x48xW, the height dim is unnamed",
)
_reg_shipped(
    "ppocr_mobile_v2_cls",
    "ocr",
    "rapidocr-onnxruntime",
    "rapidocr_onnxruntime",
    "models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
    input_shapes={"x": [1, 3, 48, 192]},
    notes="Paddle-exported text-direction classifier; dims -1 / unnamed, so it is pinned "
    "with --input-shape",
)
_reg_shipped(
    "ddddocr_common",
    "ocr",
    "ddddocr",
    "ddddocr",
    "common.onnx",
    input_shapes={"input1": [1, 1, 64, 256]},
    notes="CNN + LSTM + CTC captcha OCR; grayscale, height 64, dynamic image_width",
)
_reg_shipped(
    "ddddocr_common_old",
    "ocr",
    "ddddocr",
    "ddddocr",
    "common_old.onnx",
    input_shapes={"input1": [1, 1, 64, 256]},
    notes="older CNN + LSTM + CTC captcha OCR; dynamic image_width",
)
_reg_shipped(
    "ddddocr_det",
    "detection",
    "ddddocr",
    "ddddocr",
    "common_det.onnx",
    notes="YOLOX-style character detector, static 1x3x416x416, no NMS in the graph",
)
_reg_shipped(
    "nudenet_320n",
    "detection",
    "nudenet",
    "nudenet",
    "320n.onnx",
    input_shapes={"images": [1, 3, 320, 320]},
    notes="Ultralytics YOLOv8n detector exported at 320 with dynamic batch, height, "
    "width (H, W multiples of 32); no NMS in the graph",
)
_reg_shipped(
    "silero_vad",
    "speech",
    "silero-vad",
    "silero_vad",
    "data/silero_vad.onnx",
    input_shapes={"input": [1, 512], "state": [2, 1, 128], "sr": []},
    input_ranges={"sr": [16000, 16000]},
    # The If on sr needs it at compile time: mlc's error says to --bind it (corpus/run.py).
    binds={"sr": {"dtype": "int64", "value": 16000}},
    notes="voice activity detector: If on the sample rate (sr must be 16000 or 8000; "
    "512 samples at 16 kHz), STFT as Conv, LSTM state in/out; unnamed dims",
)
_reg_shipped(
    "silero_vad_op18_ifless",
    "speech",
    "silero-vad",
    "silero_vad",
    "data/silero_vad_op18_ifless.onnx",
    input_shapes={"input": [1, 512], "state": [2, 1, 128], "sr": []},
    input_ranges={"sr": [16000, 16000]},
    notes="opset-18 silero VAD; 512 samples at 16 kHz",
)
_reg_shipped(
    "silero_vad_half",
    "speech",
    "silero-vad",
    "silero_vad",
    "data/silero_vad_half.onnx",
    input_shapes={"input": [1, 512], "state": [2, 1, 128]},
    notes="the variant silero-vad ships as silero_vad_half.onnx (float32 inputs and "
    "weights, If nodes); 512 samples at 16 kHz",
)


# --------------------------------------------------------------------------------------------
# Derived: quantized and float16 versions of exports above
# --------------------------------------------------------------------------------------------


def _quant_static(base, calib_batches=4):
    def fn(spec, path, out):
        from onnxruntime.quantization import (
            CalibrationDataReader,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process

        side = json.loads((out / f"{base}.json").read_text())

        class Reader(CalibrationDataReader):
            def __init__(self):
                self.batches = iter([make_inputs(side, seed=i) for i in range(calib_batches)])

            def get_next(self):
                return next(self.batches, None)

        pre = Path(str(path) + ".pre.onnx")
        try:
            quant_pre_process(str(out / f"{base}.onnx"), str(pre), skip_symbolic_shape=False)
            src = pre
        except Exception as e:
            print("quant_pre_process failed, quantizing the export as is:", e)
            src = out / f"{base}.onnx"
        quantize_static(
            str(src),
            str(path),
            Reader(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
        )
        pre.unlink(missing_ok=True)
        return dict(
            source=f"onnxruntime {_ver('onnxruntime')} quantize_static(QDQ, per-channel "
            f"int8 weights, uint8 activations) of {base} ({side['source']})",
            inherit=base,
            notes=f"{calib_batches} random calibration batches",
        )

    return fn


def _quant_dynamic(base):
    def fn(spec, path, out):
        from onnxruntime.quantization import QuantType, quantize_dynamic

        side = json.loads((out / f"{base}.json").read_text())
        quantize_dynamic(str(out / f"{base}.onnx"), str(path), weight_type=QuantType.QInt8)
        return dict(
            source=f"onnxruntime {_ver('onnxruntime')} quantize_dynamic(int8 weights) of "
            f"{base} ({side['source']})",
            inherit=base,
            notes="MatMulInteger / DynamicQuantizeLinear",
        )

    return fn


def _fp16(base, keep_io_types, tool="onnxconverter-common"):
    def fn(spec, path, out):
        import onnx

        side = json.loads((out / f"{base}.json").read_text())
        m = onnx.load(str(out / f"{base}.onnx"))
        if tool == "onnxconverter-common":
            from onnxconverter_common import float16

            m16 = float16.convert_float_to_float16(m, keep_io_types=keep_io_types)
            how = (
                f"onnxconverter-common {_ver('onnxconverter-common')} "
                "float16.convert_float_to_float16"
            )
        else:
            # onnxconverter-common's converter leaves BERT's pooler Gather typed float32 next to
            # a float16 Gemm, which onnxruntime rejects; onnxruntime's own wrapper of it gets
            # the graph right.
            from onnxruntime.transformers.onnx_model import OnnxModel

            om = OnnxModel(m)
            om.convert_float_to_float16(keep_io_types=keep_io_types)
            m16 = om.model
            how = (
                f"onnxruntime {_ver('onnxruntime')} transformers OnnxModel.convert_float_to_float16"
            )
        onnx.save(m16, str(path))
        io = (
            "float32 inputs/outputs, Casts at the boundary"
            if keep_io_types
            else "float16 inputs/outputs"
        )
        return dict(source=f"{how} of {base} ({side['source']})", inherit=base, notes=io)

    return fn


register(
    "mobilenet_v3_small-qdq", "quantized", "onnxruntime.quantization", deps=["mobilenet_v3_small"]
)(_quant_static("mobilenet_v3_small"))
register("resnet50-qdq", "quantized", "onnxruntime.quantization", deps=["resnet50"], timeout=1500)(
    _quant_static("resnet50", calib_batches=3)
)
register("bert-qdq", "quantized", "onnxruntime.quantization", deps=["bert"])(
    _quant_static("bert", calib_batches=3)
)
register("bert-dynamic-int8", "quantized", "onnxruntime.quantization", deps=["bert"])(
    _quant_dynamic("bert")
)
register("gpt2-dynamic-int8", "quantized", "onnxruntime.quantization", deps=["gpt2"])(
    _quant_dynamic("gpt2")
)
register("resnet50-fp16", "fp16", "onnxconverter-common.float16", deps=["resnet50"])(
    _fp16("resnet50", keep_io_types=False)
)
register("bert-fp16", "fp16", "onnxruntime.transformers.float16", deps=["bert"])(
    _fp16("bert", keep_io_types=True, tool="onnxruntime")
)


# --------------------------------------------------------------------------------------------
# Tiny models (--tiny): committed in corpus/tiny, each under 400 KB
# --------------------------------------------------------------------------------------------


def _tiny_bert_cfg():
    from transformers import BertConfig

    return BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        vocab_size=100,
        max_position_embeddings=64,
    )


@torch_model("bert_tiny", "nlp-encoder", 14, dynamo_opset=18, tiny=True)
def _tiny_bert(spec):
    return _text_encoder(
        "BertModel",
        _tiny_bert_cfg(),
        "hidden 32, 2 layers, 2 heads, vocab 100",
        s=16,
        inputs=("input_ids", "attention_mask", "token_type_ids"),
        outputs=("last_hidden_state", "pooler_output"),
        note="dynamic batch and sequence (sequence <= 64)",
    )


@torch_model("gpt2_past_tiny", "decoder", 14, tiny=True)
def _tiny_gpt2_past(spec):
    from transformers import GPT2Config

    cfg = GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=100, n_positions=64, use_cache=True)
    return _gpt2_past_export(
        cfg,
        "n_embd 32, 2 layers, 2 heads, vocab 100",
        8,
        2,
        "decoder step with past key/values: total_sequence = past_sequence + "
        "sequence; pins are one new token after 8 past ones",
    )


@torch_model("gpt2_tiny", "decoder", 17, tiny=True)
def _tiny_gpt2(spec):
    from transformers import GPT2Config

    cfg = GPT2Config(
        n_embd=32, n_layer=2, n_head=2, vocab_size=100, n_positions=64, use_cache=False
    )
    return _text_encoder(
        "GPT2LMHeadModel",
        cfg,
        "n_embd 32, 2 layers, vocab 100",
        s=16,
        outputs=("logits",),
        out_names=("logits",),
    )


@torch_model("vit_tiny", "classification", 17, tiny=True)
def _tiny_vit(spec):
    from transformers import ViTConfig

    OutputSelect, _, _ = _wrappers()
    cfg = ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
        num_labels=10,
    )
    m = _hf("ViTForImageClassification", cfg)
    return TorchExport(
        OutputSelect(m, ["pixel_values"], ["logits"], {"return_dict": True}),
        (_img(2, 32, 32),),
        ["pixel_values"],
        ["logits"],
        _hf_src("ViTForImageClassification", "hidden 32, 2 layers, 32x32, patch 8"),
        dynamic_axes={"pixel_values": BATCH},
        pin_values={"batch": 1},
    )


@torch_model("unet_tiny", "segmentation", 13, tiny=True)
def _tiny_unet(spec):
    import torch
    from torch import nn

    def block(i, o):
        return nn.Sequential(
            nn.Conv2d(i, o, 3, padding=1),
            nn.BatchNorm2d(o),
            nn.ReLU(),
            nn.Conv2d(o, o, 3, padding=1),
            nn.BatchNorm2d(o),
            nn.ReLU(),
        )

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.e1, self.e2, self.e3 = block(3, 8), block(8, 16), block(16, 32)
            self.pool = nn.MaxPool2d(2)
            self.u2 = nn.ConvTranspose2d(32, 16, 2, stride=2)
            self.d2 = block(32, 16)
            self.u1 = nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1)
            self.d1 = block(16, 8)
            self.head = nn.Conv2d(8, 2, 1)

        def forward(self, x):
            a = self.e1(x)
            b = self.e2(self.pool(a))
            c = self.e3(self.pool(b))
            y = self.d2(torch.cat([self.u2(c), b], 1))
            y = self.d1(torch.cat([self.u1(y), a], 1))
            return torch.sigmoid(self.head(y))

    _seed()
    m = UNet().eval()
    return TorchExport(
        m,
        (_img(2, 32, 32),),
        ["image"],
        ["mask"],
        f"torch {_ver('torch')} U-Net-style encoder/decoder (3 levels, "
        "ConvTranspose2d upsampling, skip Concats)",
        dynamic_axes={"image": BHW},
        pin_values={"batch": 1},
        notes="dynamic batch, height, width (H, W multiples of 4)",
    )


@torch_model("detect_head_tiny", "detection", 17, tiny=True)
def _tiny_detect(spec):
    import torch
    import torchvision
    from torch import nn

    class Head(nn.Module):
        """SSD-style head: conv features, per-anchor box deltas and scores, box decoding,
        TopK, and torchvision's batched NMS."""

        def __init__(self, anchors=3, classes=4):
            super().__init__()
            self.a, self.k = anchors, classes
            self.body = nn.Sequential(
                nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 16, 3, 2, 1), nn.ReLU()
            )
            self.box = nn.Conv2d(16, anchors * 4, 3, padding=1)
            self.cls = nn.Conv2d(16, anchors * classes, 3, padding=1)

        def forward(self, x):
            f = self.body(x)
            n, _, h, w = f.shape
            d = self.box(f).reshape(n, self.a, 4, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, 4)
            s = self.cls(f).reshape(n, self.a, self.k, h, w).permute(0, 3, 4, 1, 2)
            s = s.reshape(n, -1, self.k).sigmoid()
            ys = (torch.arange(h, dtype=torch.float32) + 0.5) / h
            xs = (torch.arange(w, dtype=torch.float32) + 0.5) / w
            cy, cx = torch.meshgrid(ys, xs, indexing="ij")
            ctr = torch.stack([cx, cy], -1).reshape(-1, 1, 2).expand(-1, self.a, 2).reshape(-1, 2)
            wh = torch.exp(d[0, :, 2:].clamp(max=4.0)) * 0.1
            xy = ctr + d[0, :, :2] * 0.1
            boxes = torch.cat([xy - wh / 2, xy + wh / 2], -1)
            score, label = s[0].max(-1)
            k = min(50, boxes.shape[0])
            top, idx = score.topk(k)
            boxes, label = boxes[idx], label[idx]
            keep = torchvision.ops.batched_nms(boxes, top, label, 0.5)
            return boxes[keep], top[keep], label[keep]

    _seed()
    return TorchExport(
        Head().eval(),
        (_img(1, 32, 32),),
        ["image"],
        ["boxes", "scores", "labels"],
        f"torch {_ver('torch')} + torchvision {_ver('torchvision')} SSD-style "
        "head with box decoding, TopK and batched_nms",
        notes="static 1x3x32x32; NonMaxSuppression with data-dependent output",
    )


@torch_model("lstm_tagger_tiny", "nlp-encoder", 14, tiny=True)
def _tiny_lstm(spec):
    from torch import nn

    class Tagger(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(100, 16)
            self.lstm = nn.LSTM(16, 16, num_layers=1, batch_first=True, bidirectional=True)
            self.out = nn.Linear(32, 5)

        def forward(self, ids):
            y, _ = self.lstm(self.emb(ids))
            return self.out(y).log_softmax(-1)

    _seed()
    return TorchExport(
        Tagger().eval(),
        (_ids(2, 12, 100),),
        ["input_ids"],
        ["log_probs"],
        f"torch {_ver('torch')} Embedding + bidirectional LSTM tagger",
        dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}},
        pin_values={"batch": 1, "sequence": 12},
        input_ranges={"input_ids": [0, 99]},
        notes="ONNX LSTM node (bidirectional)",
    )


register("unet_tiny-qdq", "quantized", "onnxruntime.quantization", tiny=True, deps=["unet_tiny"])(
    _quant_static("unet_tiny")
)


# --------------------------------------------------------------------------------------------
# Reading an ONNX file back: inputs, dynamic axes, pins, random inputs
# --------------------------------------------------------------------------------------------

ONNX_DTYPES = {
    1: "float32",
    2: "uint8",
    3: "int8",
    5: "int16",
    6: "int32",
    7: "int64",
    9: "bool",
    10: "float16",
    11: "float64",
    12: "uint32",
    13: "uint64",
    16: "bfloat16",
}


# dim_params that name no dim (Paddle2ONNX writes "?" for every unknown size): unnamed, as mlc
# and onnxruntime's free-dimension override treat them.
PLACEHOLDER_DIMS = ("", "?", "-1", "None")


def io_of(path):
    """[(name, dtype, [dim: int | str | None])] for the graph inputs (initializers excluded)
    and outputs, read without loading the weights."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}

    def shape(vi):
        t = vi.type.tensor_type
        dims = []
        for d in t.shape.dim:
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(d.dim_value)
            elif d.HasField("dim_param") and d.dim_param not in PLACEHOLDER_DIMS:
                dims.append(d.dim_param)
            else:
                dims.append(None)
        return ONNX_DTYPES.get(t.elem_type, str(t.elem_type)), dims

    ins = [(vi.name, *shape(vi)) for vi in m.graph.input if vi.name not in inits]
    outs = [(vi.name, *shape(vi)) for vi in m.graph.output]
    opset = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), None)
    return ins, outs, opset, m


def pins_for(ins, example_shapes, pin_values, declared_axes):
    """The compile flags that fix every dynamic input dim. A named dim gets `--dim NAME=V`; an
    input with an unnamed dynamic dim (or a name given two sizes) gets `--input-shape`."""
    pin_values = dict(pin_values or {})
    declared_axes = declared_axes or {}
    named: dict[str, int] = {}
    conflict: set[str] = set()
    whole: dict[str, list[int]] = {}
    for name, _, dims in ins:
        ex = example_shapes.get(name)
        full = []
        for ax, d in enumerate(dims):
            if isinstance(d, int) and d > 0:
                full.append(d)
                continue
            decl = declared_axes.get(name, {}).get(ax)
            if isinstance(d, str) and d in pin_values:
                v = pin_values[d]
            elif decl is not None and decl in pin_values:
                v = pin_values[decl]
            elif ex is not None:
                v = ex[ax]
            else:
                raise ValueError(f"no size for dim {ax} ({d}) of input {name}")
            full.append(int(v))
            if isinstance(d, str):
                if d in named and named[d] != v:
                    conflict.add(d)
                named.setdefault(d, int(v))
            else:
                whole[name] = full
        if name in whole:
            whole[name] = full
    for name, _, dims in ins:  # inputs that carry a conflicting name are pinned whole
        if any(isinstance(d, str) and d in conflict for d in dims):
            raise ValueError(f"dim name given two sizes in {name}")
    flags = []
    loose = {d for name, _, dims in ins if name not in whole for d in dims if isinstance(d, str)}
    for d, v in named.items():
        if d in loose:  # a dim that only wholly pinned inputs carry is fixed by their shapes
            flags += ["--dim", f"{d}={v}"]
    for name, full in whole.items():
        flags += ["--input-shape", f"{name}:{'x'.join(map(str, full))}"]
    return flags


def parse_pins(flags):
    dims, shapes = {}, {}
    it = iter(flags)
    for f in it:
        v = next(it)
        if f == "--dim":
            k, n = v.split("=", 1)
            dims[k] = int(n)
        elif f == "--input-shape":
            k, s = v.rsplit(":", 1)
            shapes[k] = [int(x) for x in s.split("x")]
    return dims, shapes


def concrete_shapes(side):
    dims, shapes = parse_pins(side["pins"])
    out = {}
    for inp in side["inputs"]:
        n = inp["name"]
        if n in shapes:
            out[n] = shapes[n]
            continue
        s = []
        for d in inp["shape"]:
            if isinstance(d, int) and d > 0:
                s.append(d)
            elif isinstance(d, str) and d in dims:
                s.append(dims[d])
            else:
                raise ValueError(f"input {n}: dim {d!r} is not pinned")
        out[n] = s
    return out


def make_inputs(side, seed=0):
    """Random inputs at the pinned sizes: integers uniform in input_ranges (inclusive), floats
    standard normal."""
    import numpy as np

    rng = np.random.default_rng(seed)
    ranges = side.get("input_ranges") or {}
    feeds = {}
    for inp, shape in zip(side["inputs"], concrete_shapes(side).values()):
        n, dt = inp["name"], inp["dtype"]
        if dt in ("float32", "float16", "float64"):
            feeds[n] = rng.standard_normal(shape).astype(dt)
        elif dt == "bool":
            feeds[n] = rng.integers(0, 2, shape).astype(bool)
        else:
            lo, hi = ranges.get(n, [0, 1])
            feeds[n] = np.asarray(rng.integers(lo, hi + 1, shape)).astype(dt)
    return feeds


# --------------------------------------------------------------------------------------------
# Worker: build one model (runs in its own subprocess)
# --------------------------------------------------------------------------------------------


def _export_torch(spec, te: TorchExport, path: Path):
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    te.module.eval()
    if hasattr(torch.backends, "mha"):  # nn.MultiheadAttention's fused fast path has no ONNX form
        torch.backends.mha.set_fastpath_enabled(False)
    kw = dict(input_names=te.input_names, output_names=te.output_names, opset_version=spec.opset)
    with torch.no_grad():
        if spec.exporter == "torchscript":
            torch.onnx.export(
                te.module,
                te.args,
                str(path),
                dynamo=False,
                dynamic_axes=te.dynamic_axes,
                do_constant_folding=True,
                **kw,
            )
        else:
            dyn = None
            if te.dynamic_axes:
                dims: dict[str, Any] = {}
                dyn = []
                for n in te.input_names:
                    axes = te.dynamic_axes.get(n)
                    dyn.append(
                        {
                            ax: dims.setdefault(nm, torch.export.Dim(nm.replace(".", "_"), min=1))
                            for ax, nm in axes.items()
                        }
                        if axes
                        else None
                    )
                dyn = _match_signature(te.module, dyn)
            try:
                prog = torch.onnx.export(
                    te.module,
                    te.args,
                    None,
                    dynamo=True,
                    dynamic_shapes=dyn,
                    external_data=False,
                    **kw,
                )
            except Exception as e:
                print(
                    f"dynamo export with Dim objects failed ({type(e).__name__}: "
                    f"{str(e)[-3000:]}); retrying with dynamic_axes",
                    file=sys.stderr,
                )
                prog = torch.onnx.export(
                    te.module,
                    te.args,
                    None,
                    dynamo=True,
                    dynamic_axes=te.dynamic_axes,
                    external_data=False,
                    **kw,
                )
            _rename_dynamo_dims(prog, te)
            size = sum(t.numel() * t.element_size() for t in te.module.state_dict().values())
            prog.save(str(path), external_data=size > TWO_GB - 64 * 1024**2)


def _match_signature(module, per_arg):
    """dynamic_shapes must follow forward's signature: the arguments a `*args` parameter
    collects go in one tuple."""
    import inspect

    params = list(inspect.signature(module.forward).parameters.values())
    out = []
    for i, p in enumerate(params):
        if p.kind is inspect.Parameter.VAR_POSITIONAL:
            out.append(tuple(per_arg[i:]))
            return tuple(out)
        if i < len(per_arg):
            out.append(per_arg[i])
    return tuple(out)


def _rename_dynamo_dims(prog, te):
    """The dynamo exporter names dims after torch.export's symbols (s0, s1, ...); name them as
    dynamic_axes does, so the two exporters' files agree. Dims it has specialised stay ints."""
    if not te.dynamic_axes:
        return
    try:
        import onnx_ir as ir
    except ImportError:
        return
    graph = prog.model.graph
    mapping = {}
    for v in graph.inputs:
        axes = te.dynamic_axes.get(v.name) or {}
        if v.shape is None:
            continue
        for ax, nm in axes.items():
            d = v.shape[ax]
            if isinstance(d, ir.SymbolicDim) and d.value and d.value != nm:
                mapping.setdefault(d.value, nm)
    if not mapping:
        return

    def fix(value):
        if value.shape is None:
            return
        dims = []
        changed = False
        for d in value.shape:
            if isinstance(d, ir.SymbolicDim) and d.value in mapping:
                dims.append(mapping[d.value])
                changed = True
            elif isinstance(d, ir.SymbolicDim) and d.value:
                s = d.value
                for old, new in sorted(mapping.items(), key=lambda kv: -len(kv[0])):
                    s = s.replace(old, new)
                dims.append(s)
                changed = changed or s != d.value
            else:
                dims.append(d)
        if changed:
            value.shape = ir.Shape(dims)

    for v in list(graph.inputs) + list(graph.outputs):
        fix(v)
    for node in graph.all_nodes() if hasattr(graph, "all_nodes") else graph:
        for v in node.outputs:
            fix(v)


def worker(name, out: Path, tiny: bool):
    spec = REGISTRY[name]
    for k, v in OFFLINE_ENV.items():
        os.environ.setdefault(k, v)
    tmpdir = out / ".tmp"
    tmpdir.mkdir(parents=True, exist_ok=True)
    path = tmpdir / f"{name}.onnx"
    for p in tmpdir.glob(f"{name}.onnx*"):
        p.unlink()
    meta: dict[str, Any] = {}
    example_shapes: dict[str, list[int]] = {}
    declared = None
    pin_values: dict = {}
    if spec.exporter in ("torchscript", "dynamo"):
        te = spec.fn(spec)
        _export_torch(spec, te, path)
        example_shapes = {n: list(a.shape) for n, a in zip(te.input_names, te.args)}
        declared = te.dynamic_axes
        pin_values = te.pin_values or {}
        meta = dict(source=te.source, input_ranges=te.input_ranges or {}, notes=te.notes)
    elif spec.deps:
        meta = spec.fn(spec, path, out)
    else:
        meta = spec.fn(spec, path)
    meta = dict(meta or {})
    inherit = meta.pop("inherit", None)
    pin_values = {**pin_values, **meta.pop("pin_values", {})}
    default_dims = meta.pop("default_dims", {})
    if inherit:
        base = json.loads((out / f"{inherit}.json").read_text())
        meta.setdefault("input_ranges", base.get("input_ranges", {}))
        base_dims, _ = parse_pins(base["pins"])
        pin_values = {**base_dims, **pin_values}
        example_shapes = concrete_shapes(base)
    ins, outs, opset, _ = io_of(path)
    for n, _, dims in ins:  # shipped files: an unnamed dim with no example gets a default
        if n not in example_shapes and any(not (isinstance(d, int) and d > 0) for d in dims):
            example_shapes[n] = [
                d
                if isinstance(d, int) and d > 0
                else int(pin_values.get(d, default_dims.get(d or "?", 1)))
                for d in dims
            ]
    shipped_shapes = meta.pop("input_shapes", None)
    if shipped_shapes:
        example_shapes.update(shipped_shapes)
    pins = pins_for(ins, example_shapes, pin_values, declared)
    dyn_axes = {
        n: {
            str(ax): (d if isinstance(d, str) else "?")
            for ax, d in enumerate(dims)
            if not (isinstance(d, int) and d > 0)
        }
        for n, _, dims in ins
    }
    dyn_axes = {n: a for n, a in dyn_axes.items() if a}
    size = path.stat().st_size + sum(p.stat().st_size for p in tmpdir.glob(f"{name}.onnx.data"))
    side = {
        "name": name,
        "source": meta.pop("source", ""),
        "family": spec.family,
        "exporter": spec.exporter,
        "opset": opset,
        "dynamic_axes": dyn_axes,
        "pins": pins,
        "input_ranges": meta.pop("input_ranges", {}) or {},
        "inputs": [{"name": n, "dtype": t, "shape": d} for n, t, d in ins],
        "outputs": [{"name": n, "dtype": t, "shape": d} for n, t, d in outs],
        "size": size,
        "sha256": _sha256(path),
        "notes": meta.pop("notes", ""),
    }
    if spec.exporter in ("torchscript", "dynamo"):
        side["torch"] = _ver("torch")
    side.update(meta)
    # move into place
    final = out / f"{name}.onnx"
    for p in out.glob(f"{name}.onnx*"):
        p.unlink()
    for p in sorted(tmpdir.glob(f"{name}.onnx*")):
        p.replace(out / p.name)
    (out / f"{name}.json").write_text(json.dumps(side, indent=1) + "\n")
    print(json.dumps({"status": "built", "size": size, "file": str(final)}))


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(name, out: Path):
    """Run the model in onnxruntime on random inputs made from its sidecar."""
    import numpy as np
    import onnxruntime as ort

    side = json.loads((out / f"{name}.json").read_text())
    so = ort.SessionOptions()
    so.intra_op_num_threads = os.cpu_count() or 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(out / f"{name}.onnx"), so, providers=["CPUExecutionProvider"])
    feeds = make_inputs(side)
    t0 = time.time()
    res = sess.run(None, feeds)
    dt = time.time() - t0
    shapes = [list(np.shape(r)) for r in res]
    nonfinite = sum(
        int(np.size(r) - np.isfinite(r).sum())
        for r in res
        if np.issubdtype(np.asarray(r).dtype, np.floating)
    )
    side["verified"] = {
        "onnxruntime": ort.__version__,
        "output_shapes": shapes,
        "nonfinite_outputs": nonfinite,
        "other_size": _other_size(sess, side),
    }
    (out / f"{name}.json").write_text(json.dumps(side, indent=1) + "\n")
    print(
        json.dumps(
            {"status": "ok", "shapes": shapes, "seconds": round(dt, 3), "nonfinite": nonfinite}
        )
    )


def _other_size(sess, side):
    """Run once more with each named dim at another size (batch 2, others halved), to show
    whether the exported graph really is dynamic; recorded, never a reason to drop."""
    dims, shapes = parse_pins(side["pins"])
    if not dims:
        return None
    alt = {k: (2 if k == "batch" else max(1, v // 2)) for k, v in dims.items()}
    if "past_sequence" in alt and "total_sequence" in alt:
        alt["total_sequence"] = alt["past_sequence"] + alt.get("sequence", 1)
    flags = [f for k, v in alt.items() for f in ("--dim", f"{k}={v}")]
    for n, sh in shapes.items():
        flags += ["--input-shape", f"{n}:{'x'.join(map(str, sh))}"]
    try:
        sess.run(None, make_inputs({**side, "pins": flags}, seed=1))
        return {"pins": flags, "ok": True}
    except Exception as e:
        return {"pins": flags, "ok": False, "error": str(e).splitlines()[0][:300]}


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def _run_sub(cmd, timeout, log):
    env = {**os.environ, **OFFLINE_ENV}
    env.setdefault("TORCH_HOME", str(ROOT / "build" / "corpus" / "torch_home"))
    t0 = time.time()
    # A scratch working directory: onnxruntime's quantization tools write temporary files
    # (sym_shape_infer_temp.onnx, <uuid>.data) into the current directory.
    with open(log, "w") as lf, tempfile.TemporaryDirectory(prefix="corpus-") as scratch:
        try:
            p = subprocess.run(
                cmd,
                stdout=subprocess.PIPE,
                stderr=lf,
                text=True,
                timeout=timeout,
                env=env,
                cwd=scratch,
            )
        except subprocess.TimeoutExpired:
            lf.write(f"\n[timeout after {timeout} s]\n")
            return None, f"timed out after {timeout} s", time.time() - t0
        lf.write("\n[stdout]\n" + p.stdout)
    last = None
    for line in p.stdout.splitlines():
        if line.startswith("{"):
            try:
                last = json.loads(line)
            except json.JSONDecodeError:
                pass
    if p.returncode != 0 or last is None:
        return None, _last_error(log) or f"exit {p.returncode}", time.time() - t0
    return last, None, time.time() - t0


def _last_error(log):
    text = Path(log).read_text(errors="replace")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("[")]
    for ln in reversed(lines):
        if ("Error" in ln or "error" in ln or "Exception" in ln) and not ln.startswith("File "):
            return ln[:400]
    return lines[-1][:400] if lines else ""


def _requirement_missing(spec):
    import importlib.util

    need = {
        "torchscript": ["torch", "onnx"],
        "dynamo": ["torch", "onnx", "onnxscript"],
        "tf2onnx": ["tensorflow", "tf2onnx"],
        "onnxruntime.quantization": ["onnxruntime"],
        "onnxconverter-common.float16": ["onnxconverter_common"],
        "onnxruntime.transformers.float16": ["onnxruntime", "onnxconverter_common"],
    }.get(spec.exporter, [])
    for mod in need:
        if importlib.util.find_spec(mod) is None:
            return f"module {mod} is not installed"
    if spec.exporter == "paddle2onnx" and not PADDLE_PYTHON.exists():
        return f"{PADDLE_PYTHON.relative_to(ROOT)} does not exist (see corpus/MODELS.md)"
    return None


def _fmt_axes(axes):
    """The distinct dynamic dims: `batch, sequence`; an unnamed one as `input[axis]`."""
    if not axes:
        return "static"
    names = []
    for inp, a in axes.items():
        for k, v in a.items():
            nm = v if v != "?" else f"{inp}[{k}]"
            if nm not in names:
                names.append(nm)
    return ", ".join(names)


def markdown(out: Path, names):
    index = json.loads((out / "index.json").read_text()) if (out / "index.json").exists() else {}
    rows = [
        "| name | family | source & version | exporter | opset | dynamic axes | pins | size |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    missing = []
    for n in names:
        side_path = out / f"{n}.json"
        if not side_path.exists():
            e = index.get(n, {})
            missing.append(f"| {n} | {e.get('status', 'not built')} | {e.get('reason', '')} |")
            continue
        d = json.loads(side_path.read_text())
        size = d["size"]
        size_s = f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.0f} KB"
        pins = " ".join(d["pins"]) or "-"
        rows.append(
            f"| {n} | {d['family']} | {d['source']} | {d['exporter']} | {d['opset']} | "
            f"{_fmt_axes(d['dynamic_axes'])} | `{pins}` | {size_s} |".replace("\n", " ")
        )
    text = "\n".join(rows)
    if missing:
        text += "\n\n| name | status | reason |\n| --- | --- | --- |\n" + "\n".join(missing)
    return text


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--only", default="", help="comma-separated model names")
    ap.add_argument("--list", action="store_true", help="list the models and exit")
    ap.add_argument("--force", action="store_true", help="rebuild outputs that exist")
    ap.add_argument("--tiny", action="store_true", help="the tiny models (corpus/tiny)")
    ap.add_argument("--timeout", type=int, default=None, help="seconds per model (override)")
    ap.add_argument("--no-verify", action="store_true")
    ap.add_argument(
        "--markdown",
        action="store_true",
        help="print the Markdown table of what --out holds (for corpus/MODELS.md)",
    )
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--verify-one", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    out = (a.out or (HERE / "tiny" if a.tiny else DEFAULT_OUT)).resolve()

    if a.worker:
        worker(a.worker, out, a.tiny)
        return 0
    if a.verify_one:
        verify(a.verify_one, out)
        return 0

    specs = [s for s in REGISTRY.values() if s.tiny == a.tiny]
    if a.only:
        wanted = [n.strip() for n in a.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in REGISTRY]
        if unknown:
            ap.error(f"unknown model(s): {', '.join(unknown)} (see --list)")
        specs = [REGISTRY[n] for n in wanted]
    if a.list:
        for s in specs:
            print(f"{s.name:40s} {s.family:16s} {s.exporter:28s} opset {s.opset or '-'}")
        return 0

    if a.markdown:
        print(markdown(out, [s.name for s in specs]))
        return 0

    out.mkdir(parents=True, exist_ok=True)
    logs = ROOT / "build" / "corpus" / "logs" / out.name
    logs.mkdir(parents=True, exist_ok=True)
    index_path = out / "index.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {}
    # dependencies first (a quantized model needs its fp32 export)
    order, seen = [], set()

    def add(s):
        if s.name in seen:
            return
        seen.add(s.name)
        for d in s.deps:
            if not (out / f"{d}.onnx").exists() or (a.force and REGISTRY[d] in specs):
                add(REGISTRY[d])
        order.append(s)

    for s in specs:
        add(s)

    counts = {"built": 0, "reused": 0, "skipped": 0, "dropped": 0}
    for s in order:
        onnx_path, side_path = out / f"{s.name}.onnx", out / f"{s.name}.json"
        miss = _requirement_missing(s)
        if miss:
            status, why = "skipped", miss
        elif any(not (out / f"{d}.onnx").exists() for d in s.deps):
            status, why = "skipped", "needs " + ", ".join(s.deps) + ", which was not built"
        elif onnx_path.exists() and side_path.exists() and not a.force:
            status, why = "reused", ""
        else:
            cmd = [
                sys.executable if not s.python else s.python,
                str(Path(__file__).resolve()),
                "--worker",
                s.name,
                "--out",
                str(out),
            ] + (["--tiny"] if a.tiny else [])
            res, err, dt = _run_sub(cmd, a.timeout or s.timeout, logs / f"{s.name}.build.log")
            status, why = ("built", f"{dt:.0f} s") if res else ("skipped", err)
        if status in ("built", "reused") and not a.no_verify:
            res, err, _ = _run_sub(
                [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--verify-one",
                    s.name,
                    "--out",
                    str(out),
                ],
                600,
                logs / f"{s.name}.verify.log",
            )
            if err:
                status, why = "dropped", f"onnxruntime cannot run it: {err}"
                for p in out.glob(f"{s.name}.onnx*"):
                    p.unlink()
                side_path.unlink(missing_ok=True)
            elif status == "built":
                why += f", onnxruntime ok {res['shapes']}"
        counts[status] += 1
        # the index says what the folder holds: a reused file counts as built
        entry = {
            "status": "built" if status == "reused" else status,
            "family": s.family,
            "exporter": s.exporter,
        }
        if status in ("skipped", "dropped"):
            entry["reason"] = why
        if status in ("built", "reused"):
            entry["size"] = onnx_path.stat().st_size
        index[s.name] = entry
        index_path.write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")
        print(f"{s.name}: {status}" + (f": {why}" if why else ""), flush=True)
    shutil.rmtree(out / ".tmp", ignore_errors=True)
    total = sum(p.stat().st_size for p in out.glob("*.onnx*"))
    print(
        f"{counts['built']} built, {counts['reused']} reused, {counts['skipped']} skipped, "
        f"{counts['dropped']} dropped; {total / 1e6:.1f} MB of ONNX in {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
