"""The corpus in miniature: tiny versions of real exports (corpus/tiny, made by
`corpus/build.py --tiny` from transformers and torch, both exporters) compile with their pins
and match onnxruntime, run with the inputs mlc makes for them; the symbolic ones also compile
without pins. The full corpus is `make corpus`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import mlc

TINY = Path(__file__).resolve().parents[1] / "corpus" / "tiny"
MODELS = sorted(p.stem for p in TINY.glob("*.onnx"))
TOLERANCE = {"fp32": "1e-4", "int8": "5e-2"}


def _meta(name: str) -> dict:
    return json.loads((TINY / f"{name}.json").read_text())


def _precision(name: str) -> str:
    return "int8" if "qdq" in name else "fp32"


def test_the_tiny_corpus_is_there():
    assert len(MODELS) >= 8, MODELS


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_tiny_model_compiles_and_matches(tmp_path, name):
    meta = _meta(name)
    model = TINY / f"{name}.onnx"
    r = mlc("compile", model, "-o", tmp_path / "b", "-q", *meta["pins"])
    assert r.exit_code == 0, r.stderr
    tol = TOLERANCE[_precision(name)]
    r = mlc("run", tmp_path / "b", "--check", model, "--rtol", tol, "--atol", tol)
    assert r.exit_code == 0, r.stderr + r.stdout


def test_token_ids_are_drawn_within_their_table(tmp_path):
    """BERT's input_ids index a 100-row embedding, token_type_ids a 2-row one, and the mask is
    ones: the manifest records those ranges and `mlc run` draws from them (onnxruntime refuses
    ids past the table)."""
    model = TINY / "bert_tiny.onnx"
    r = mlc("compile", model, "-o", tmp_path / "b", "-q", *_meta("bert_tiny")["pins"])
    assert r.exit_code == 0, r.stderr
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    ranges = {i["name"]: i.get("sample_range") for i in manifest["inputs"]}
    table = _embedding_rows(model)
    assert ranges == {"input_ids": [0, table], "attention_mask": [1, 2], "token_type_ids": [0, 2]}


def _embedding_rows(model: Path) -> int:
    import onnx

    proto = onnx.load(str(model))
    return next(t.dims[0] for t in proto.graph.initializer if "word_embeddings" in t.name)
