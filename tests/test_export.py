"""`anyecg-edge export`: int8 ONNX / LiteRT / C-array exports of a student, manifests,
parity reports, and loud failure when a broken calibration set ruins parity."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import export_fixtures as ef
import numpy as np
import pytest

from anyecg_edge.runtime import file_sha256, load_model, manifest_path, parity_path

MAX_BYTES = 1_000_000


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.mark.parametrize("which", ["onnx_int8", "tflite_int8"])
def test_int8_student_export_meets_size_and_parity_goals(art, which: str) -> None:
    model = getattr(art, which)
    assert model.is_file() and model.stat().st_size <= MAX_BYTES
    report = _json(parity_path(model))
    assert report["passed"] is True and report["failures"] == []
    assert report["precision"] == "int8"
    # Held out by record: 10 of the 50 CinC records (~120 windows), never calibrated on.
    assert report["heldout"]["n_records"] == 10 and report["n_windows"] >= 100
    assert report["heldout"]["records_shared_with_calibration"] == 0
    assert report["auroc"]["reference"] == "torch_calls" and report["auroc"]["n_labs"] == 108
    assert 0.0 <= report["auroc"]["mean_delta"] <= 0.002
    assert report["calls"]["agreement"] >= 0.97
    assert 0 < report["logits"]["mean_abs_error"] < 0.1 * report["logits"]["torch_mean_std"]
    assert set(report["per_lab"]) == set(_json(manifest_path(model))["labs"])
    # The CLI's --json summary is the parity report's numbers.
    summary = json.loads(art.cli_output["onnx" if which == "onnx_int8" else "c-array"])
    assert summary["passed"] is True and summary["bytes"] == model.stat().st_size
    assert summary["mean_auroc_delta"] == report["auroc"]["mean_delta"]


def test_manifest_holds_everything_the_device_needs(art) -> None:
    for model in (art.onnx_int8, art.tflite_int8):
        m = _json(manifest_path(model))
        assert m["format"] == "anyecg-edge/manifest/1"
        assert len(m["labs"]) == 108 and m["fs"] == 500.0 and m["window_s"] == 10.0
        assert isinstance(m["thresholds"], dict) and isinstance(m["calibration"], dict)
        pre = m["preprocessing"]
        assert pre["bandpass_hz"] == [0.67, 40.0] and pre["mains_notch_hz"] == 50.0
        assert pre["baseline_median_kernel_samples"] == 201 and pre["window_samples"] == 5000
        assert m["model_sha256"] == file_sha256(model) and m["model_file"] == model.name
        assert m["source"]["sha256"] == file_sha256(art.checkpoint)
        assert m["source"]["arch"] == "student-s" and m["bn_folded"] is True
        assert m["source"]["checkpoint_format"] == "anyecg-edge/torch-model/1"
        assert m["source"]["model_kwargs"] == {"n_classes": 108}
        for tool in ("torch", "onnxruntime", "onnx", "litert-torch", "ai-edge-quantizer"):
            assert m["tools"][tool]
        q = m["quantization"]
        assert q["scheme"] == "static" and q["calibration_method"] == "percentile"
        assert q["calibration_windows"]["n_records"] == 40
        assert abs(q["calibration_windows"]["std"] - 1.0) < 0.05
        assert m["parity"]["passed"] is True and m["parity"]["file"] == parity_path(model).name
    onnx_m, tfl_m = _json(manifest_path(art.onnx_int8)), _json(manifest_path(art.tflite_int8))
    assert onnx_m["input_quant"] is None  # ORT QDQ: float I/O, quantized inside
    assert onnx_m["quantization"]["activation_type"] == "uint8"
    assert onnx_m["quantization"]["fp32_nodes"]  # the lab head stays float32
    for key in ("input_quant", "output_quant"):
        q = tfl_m[key]
        assert q["dtype"] == "int8" and q["scale"] > 0 and -128 <= q["zero_point"] <= 127


def test_onnx_int8_graph_is_qdq_per_channel_opset17_dynamic_batch(art) -> None:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(art.onnx_int8))
    onnx.checker.check_model(model)
    opset = {o.domain: o.version for o in model.opset_import}[""]
    assert opset >= 17
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") >= 10 and ops.count("DequantizeLinear") >= 10
    dim0 = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param and not dim0.dim_value  # symbolic batch
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    weight_scales = [v for k, v in inits.items() if "weight" in k and k.endswith("_scale")]
    assert weight_scales and all(v.ndim == 1 and v.size > 1 for v in weight_scales)
    assert any(v.dtype == np.int8 for k, v in inits.items() if k.endswith("_quantized"))
    # BN was folded: no BatchNormalization anywhere.
    assert "BatchNormalization" not in ops


def test_tflite_int8_is_full_integer(art) -> None:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(art.tflite_int8))
    interp.allocate_tensors()
    assert interp.get_input_details()[0]["dtype"] == np.int8
    assert interp.get_output_details()[0]["dtype"] == np.int8
    ops = {op["op_name"] for op in interp._get_ops_details()}
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"} <= ops
    assert not ops & {"QUANTIZE", "DEQUANTIZE"}  # no float islands
    m = _json(manifest_path(art.tflite_int8))
    assert m["tflm"]["arena_bytes_estimate"] > m["tflm"]["activation_bytes"] > 5000


def test_c_array_compiles_and_holds_the_model_bytes(art, tmp_path) -> None:
    header = art.c_array.with_suffix(".h")
    text = header.read_text()
    assert "STUDENT_S_INT8_TENSOR_ARENA_SIZE" in text and "resolver.AddConv2D();" in text
    main = tmp_path / "main.cc"
    main.write_text(
        f'#include "{header}"\n#include <cstdio>\n#include <cstdint>\n'
        "int main() {\n"
        "  if (reinterpret_cast<uintptr_t>(g_student_s_int8_model) % 16) return 2;\n"
        "  fwrite(g_student_s_int8_model, 1, g_student_s_int8_model_len, stdout);\n"
        "  return 0;\n}\n"
    )
    exe = tmp_path / "dump"
    gxx = subprocess.run(["which", "g++"], capture_output=True, text=True).stdout.strip()
    if not gxx:
        pytest.skip("no C++ compiler (g++) on this machine")
    subprocess.run(
        [
            gxx,
            "-std=c++17",
            "-O0",
            "-I",
            str(header.parent),
            str(main),
            str(art.c_array),
            "-o",
            str(exe),
        ],
        check=True,
        capture_output=True,
    )
    dumped = subprocess.run([str(exe)], capture_output=True, check=True).stdout
    assert dumped == art.tflite_int8.read_bytes()


def test_fp32_onnx_export_matches_torch_tightly(art, tmp_path) -> None:
    from anyecg_edge.quantization.export import export_model

    # (LiteRT fp32 is the int8 quantizer's input: its conversion is exercised by the int8
    # parity above and timed by bench_runtime.)
    res = export_model(
        art.checkpoint, fmt="onnx", out=tmp_path / "s.onnx", heldout=[str(art.heldout_npy)]
    )
    r = res.report
    assert res.passed and r["precision"] == "fp32" and r["quantization"] is None
    assert r["logits"]["max_abs_error"] < 1e-3 and r["calls"]["agreement"] >= 0.999
    m = load_model(res.path)
    assert m.metadata.input_quant is None and m.precision == "fp32"


@pytest.mark.parametrize(
    ("fmt", "broken", "method"),
    [("onnx", "zeros", "percentile"), ("tflite", "huge", "minmax")],
)
def test_broken_calibration_set_fails_the_export_loudly(
    art, tmp_path, fmt: str, broken: str, method: str
) -> None:
    x = np.load(art.windows_npy)[:200]
    # zeros: a dead sensor / all-constant set; huge: raw ADC counts instead of z-scores.
    bad = np.zeros_like(x) if broken == "zeros" else x * 1000.0
    calib = tmp_path / f"{broken}.npy"
    np.save(calib, bad)
    out = tmp_path / f"bad.{fmt}"
    args = ["export", "--model", str(art.checkpoint), "--format", fmt, "--int8"]
    args += ["--calib", str(calib), "--heldout", str(art.heldout_npy), "--out", str(out)]
    args += ["--calib-method", method]
    res = ef.run_cli(*args)
    assert res.exit_code == 4, res.output
    assert "parity vs the torch fp32 model failed" in res.stderr
    assert "mean_auroc_delta" in res.stderr and "agreement" in res.stderr
    assert not out.exists() and not manifest_path(out).exists()  # nothing deployable left
    report = _json(parity_path(out))
    assert report["passed"] is False and report["failures"]
    assert report["calls"]["agreement"] < 0.9 and report["auroc"]["mean_delta"] > 0.1
    assert report["calibration_warnings"]  # the set itself was flagged too
    # --allow-degraded keeps the (bad) model and exits 0, still reporting the failure.
    if broken == "zeros":
        res = ef.run_cli(*args, "--allow-degraded")
        assert res.exit_code == 0, res.output
        assert out.is_file() and _json(parity_path(out))["passed"] is False
        assert _json(manifest_path(out))["parity"]["passed"] is False


def test_tolerance_option_is_applied(art, tmp_path) -> None:
    # The clean int8 export fails an impossible limit, with the limit named.
    out = tmp_path / "strict.onnx"
    res = ef.run_cli(
        "export", "--model", str(art.checkpoint), "--format", "onnx", "--int8",
        "--calib", str(art.windows_npy), "--heldout", str(art.heldout_npy), "--out", str(out),
        "--calib-size", "64", "--calib-method", "minmax",
        "--tolerance", "max_abs_logit_error=1e-6,agreement=0.5",
    )  # fmt: skip
    assert res.exit_code == 4, res.output
    assert "max_abs_logit_error" in res.stderr and "> 1e-06" in res.stderr
    report = _json(parity_path(out))
    assert report["tolerance"]["agreement"] == 0.5
    assert report["quantization"]["calibration_windows"]["n_windows"] == 64
    assert report["quantization"]["calibration_method"] == "minmax"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--format", "onnx", "--int8", "--out", "x.onnx"], "--int8 (static) needs --calib"),
        (["--format", "onnx", "--out", "x.onnx"], "parity needs real windows"),
        (["--format", "tflite", "--out", "x.onnx", "--calib", "c"], "must end in .tflite"),
        (["--format", "onnx", "--out", "x.onnx", "--tolerance", "speed=1"], "KEY=VALUE"),
        (
            ["--format", "tflite", "--int8", "--calib-method", "entropy", "--out", "x.tflite"],
            "not available for tflite",
        ),
    ],
)
def test_bad_options_give_one_line_errors(art, tmp_path, extra: list[str], message: str) -> None:
    args = ["export", "--model", str(art.checkpoint)]
    args += [str(tmp_path / a) if a.startswith("x.") else a for a in extra]
    if "--calib" not in extra and "entropy" in extra:
        args += ["--calib", str(art.heldout_npy)]
    res = ef.run_cli(*args)
    assert res.exit_code == 1, res.output
    assert message in res.output
    assert "Traceback" not in res.output


def test_model_folder_without_checkpoint_and_bad_calib_source(art, tmp_path) -> None:
    res = ef.run_cli("export", "--model", str(tmp_path), "--format", "onnx", "--out", "x.onnx")
    assert res.exit_code == 1 and "no model.pt or model.pth checkpoint" in res.output
    wrong = tmp_path / "w.npy"
    np.save(wrong, np.zeros((4, 2500), dtype=np.float32))
    res = ef.run_cli(
        "export", "--model", str(art.checkpoint_dir), "--format", "onnx", "--int8",
        "--calib", str(wrong), "--out", str(tmp_path / "x.onnx"),
    )  # fmt: skip
    assert res.exit_code == 1 and "windows have 2500 samples, the model takes 5000" in res.output


def test_corpus_calibration_and_label_auroc(art, tmp_path) -> None:
    """A corpus from `data build`: calibrate on its train split, parity on its val split,
    with the AUROC delta against the windows' lab targets."""
    from anyecg_edge.training.data import build_corpus, synth_cohort

    synth_cohort(tmp_path / "cohort", n_visits=30, segments_per_visit=(1, 2), segment_s=(60, 90))
    built = build_corpus(tmp_path / "cohort", tmp_path / "corpus", progress=False, policy="visit")
    out = tmp_path / "corpus.onnx"
    res = ef.run_cli(
        "-q", "export", "--model", str(art.checkpoint), "--format", "onnx", "--int8",
        "--calib", str(tmp_path / "corpus"), "--out", str(out), "--allow-degraded", "--json",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    report = _json(parity_path(out))
    assert report["heldout"]["labels"] is True
    assert report["heldout"]["sources"] == [f"{tmp_path / 'corpus'} (split val)"]
    assert report["n_windows"] == built["splits"]["val"]["windows"]
    cal = report["quantization"]["calibration_windows"]
    assert cal["n_windows"] == min(512, built["splits"]["train"]["windows"])
    assert report["auroc"]["reference"] == "labels" and report["auroc"]["n_labs"] >= 1
    assert report["auroc_vs_calls"]["reference"] == "torch_calls"
    labeled = [v["vs_labels"] for v in report["per_lab"].values() if "vs_labels" in v]
    assert labeled and all(e["n_pos"] + e["n_neg"] <= report["n_windows"] for e in labeled)
    assert json.loads(res.stdout)["auroc_reference"] == "labels"
