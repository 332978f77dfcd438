"""runtime/manifest.py on its own (fast; the mutation target's test file): where the
manifest and parity report live, and that a manifest is refused for a model file it does
not describe. The exported-model versions of these checks are in test_runtime.py."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from anyecg_edge.runtime.base import ModelError
from anyecg_edge.runtime.manifest import (
    MANIFEST_SUFFIX,
    PARITY_SUFFIX,
    load_manifest,
    manifest_path,
    parity_path,
)


def test_paths_keep_the_full_model_file_name(tmp_path: Path) -> None:
    # an .onnx and a .tflite of one model side by side: each its own manifest
    assert manifest_path(tmp_path / "m.onnx") == tmp_path / "m.onnx.manifest.json"
    assert manifest_path("a/m.tflite") == Path("a/m.tflite.manifest.json")
    assert parity_path(tmp_path / "m.onnx") == tmp_path / "m.onnx.parity.json"
    assert parity_path("m.tflite") == Path("m.tflite.parity.json")
    assert (MANIFEST_SUFFIX, PARITY_SUFFIX) == (".manifest.json", ".parity.json")


def _model(tmp_path: Path, sha: str | None = "own") -> Path:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"model bytes")
    doc: dict = {"labs": ["potassium", "sodium"], "fs": 500.0}
    if sha is not None:
        doc["model_sha256"] = hashlib.sha256(b"model bytes").hexdigest() if sha == "own" else sha
    manifest_path(model).write_text(json.dumps(doc))
    return model


def test_a_manifest_for_this_model_file_loads(tmp_path: Path) -> None:
    meta = load_manifest(_model(tmp_path))
    assert meta.labs == ["potassium", "sodium"]
    assert meta.extra["model_sha256"] == hashlib.sha256(b"model bytes").hexdigest()
    # accepts a str path too
    assert load_manifest(str(tmp_path / "m.onnx")).labs == ["potassium", "sodium"]


def test_a_manifest_without_sha_loads(tmp_path: Path) -> None:
    # older manifests recorded no sha256: nothing to check against
    assert load_manifest(_model(tmp_path, sha=None)).fs == 500.0


def test_a_replaced_model_file_is_refused(tmp_path: Path) -> None:
    model = _model(tmp_path)
    model.write_bytes(b"another model")
    own = hashlib.sha256(b"model bytes").hexdigest()
    other = hashlib.sha256(b"another model").hexdigest()
    with pytest.raises(ModelError) as exc:
        load_manifest(model)
    msg = str(exc.value)
    assert msg == (
        f"{manifest_path(model)}: model_sha256 {own[:12]}... does not match m.onnx "
        f"({other[:12]}...): the model file was replaced after export"
    )


def test_a_missing_manifest_is_named(tmp_path: Path) -> None:
    model = tmp_path / "lone.onnx"
    model.write_bytes(b"x")
    with pytest.raises(ModelError) as exc:
        load_manifest(model)
    assert str(exc.value) == (
        f"{model}: its manifest lone.onnx.manifest.json is missing (every `anyecg-edge export` "
        "writes one next to the model; the device needs it for lab names and thresholds)"
    )
    # a folder with the manifest's name is not a manifest either
    manifest_path(model).mkdir()
    with pytest.raises(ModelError, match="is missing"):
        load_manifest(model)
