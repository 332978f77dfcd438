"""TFLite Micro check (quantization/tflm.py) with the real tflite-micro interpreter, on the
full-int8 .tflite that `export --format c-array` makes in tests/export_fixtures.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import export_fixtures as ef
import numpy as np
import pytest
from anyecg_edge.quantization.errors import ExportError
from anyecg_edge.quantization.tflm import _probe, check_tflm, unavailable_reason

from anyecg_edge.runtime import manifest_path

_REASON = unavailable_reason()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")


def test_c_array_export_records_the_measured_arena_and_parity(art) -> None:
    m = json.loads(manifest_path(art.tflite_int8).read_text())
    check = m["tflm"]["check"]
    assert check["ran"] and check["unsupported_ops"] == []
    assert m["tflm"]["arena_bytes"] == check["arena_bytes"]
    # The reference kernels and LiteRT's optimized ones round differently by at most a
    # couple of int8 steps; most outputs are bit-equal.
    p = check["parity_vs_litert"]
    assert p["unit"] == "int8 steps" and p["n_windows"] == 64
    assert p["max_abs_diff"] <= 2 and p["exact_fraction"] >= 0.5
    header = art.c_array.with_suffix(".h").read_text()
    define = re.search(r"#define \w+_TENSOR_ARENA_SIZE (\d+)", header)
    assert define is not None and int(define.group(1)) == check["arena_bytes"]
    assert "Measured in TFLite Micro" in header
    summary = json.loads(art.cli_output["c-array"])
    assert summary["tflm"]["arena_bytes"] == check["arena_bytes"]


def test_the_arena_is_the_smallest_that_allocates(art) -> None:
    arena = json.loads(manifest_path(art.tflite_int8).read_text())["tflm"]["arena_bytes"]
    assert arena % 16 == 0 and 5_000 < arena < 1_000_000
    assert _probe(art.tflite_int8, arena)[0]
    ok, log = _probe(art.tflite_int8, arena - 16)
    assert not ok, "one alignment step less still allocated: the arena is not the smallest"


def test_tflm_command_on_npy_windows(art) -> None:
    res = ef.run_cli(
        "tflm", "--model", str(art.tflite_int8), "--calib", str(art.heldout_npy),
        "--windows", "16", "--json",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    arena = json.loads(manifest_path(art.tflite_int8).read_text())["tflm"]["arena_bytes"]
    assert out["arena_bytes"] == arena and out["parity_vs_litert"]["n_windows"] == 16
    assert "DEPTHWISE_CONV_2D" in out["ops"] or "CONV_2D" in out["ops"]


def test_an_onnx_model_is_refused_in_one_line(art) -> None:
    """An .onnx given to tflm: exit 5 naming the file (it was an internal error, exit 70,
    from the FlatBuffer reader: "unpack_from requires a buffer of at least ... bytes")."""
    res = ef.run_cli("tflm", "--model", str(art.onnx_int8), "--calib", str(art.heldout_npy))
    assert res.exit_code == 5, res.output
    assert res.stderr.strip().splitlines() == [
        f"Error: {art.onnx_int8}: not a .tflite model (no TFL3 FlatBuffer identifier); tflm "
        "runs an int8 .tflite from `export --format tflite --int8` or `--format c-array`"
    ]


def _with_op_replaced(src: Path, dst: Path, old: str, new: str) -> Path:
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(src.read_bytes()), 0)
    old_code, new_code = getattr(schema.BuiltinOperator, old), getattr(schema.BuiltinOperator, new)
    hit = False
    for code in model.operatorCodes:
        if max(code.builtinCode, code.deprecatedBuiltinCode) == old_code:
            code.builtinCode = code.deprecatedBuiltinCode = new_code
            hit = True
    assert hit, f"{src.name} has no {old} op"
    b = flatbuffers.Builder(1024)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    dst.write_bytes(b.Output())
    return dst


def test_an_operator_tflm_lacks_is_named_in_one_line(art, tmp_path) -> None:
    bad = _with_op_replaced(art.tflite_int8, tmp_path / "bad.tflite", "MEAN", "LSH_PROJECTION")
    windows = np.load(art.heldout_npy)[:4]
    with pytest.raises(ExportError) as exc:
        check_tflm(bad, windows)
    msg = str(exc.value)
    assert "\n" not in msg and msg.endswith("TFLite Micro has no kernel for LSH_PROJECTION")
