"""`anyecg-edge export`: int8 ONNX / LiteRT / C-array exports of a student, manifests,
parity reports, and loud failure when a broken calibration set ruins parity."""

from __future__ import annotations

import json
import math
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
    # Every lab of the stand-in has a threshold: all of them are called.
    assert report["calls"]["n_labs_called"] == 108 and report["calls"]["uncalibrated_labs"] == []
    # The calibration actually used, and how it was chosen.
    assert report["calibration"] == {
        "method": "percentile",
        "chosen_by": "default",
        "n_windows": report["quantization"]["calibration_windows"]["n_windows"],
        "n_records": 40,
    }
    # The CLI's --json summary is the parity report's numbers.
    summary = json.loads(art.cli_output["onnx" if which == "onnx_int8" else "c-array"])
    assert summary["passed"] is True and summary["bytes"] == model.stat().st_size
    assert summary["mean_auroc_delta"] == report["auroc"]["mean_delta"]
    assert summary["calibration_method"] == "percentile"
    assert summary["worst_layers"][0]["layer"] == report["layer_errors"]["worst"]


def _conv_layers(checkpoint: Path) -> list[str]:
    from anyecg_edge.quantization.layer_error import weight_module_names
    from anyecg_edge.training.torch_model import load_model_checkpoint

    return weight_module_names(load_model_checkpoint(checkpoint)[0])


def test_per_layer_error_table_names_real_layers_worst_first(art) -> None:
    import onnx

    conv = _conv_layers(art.checkpoint)
    tables = {}
    for which in ("onnx_int8", "tflite_int8"):
        t = _json(parity_path(getattr(art, which)))["layer_errors"]
        tables[which] = t
        rows = t["layers"]
        assert t["n_windows"] == 64 and t["worst"] == rows[0]["layer"]
        sqnr = [r["sqnr_db"] for r in rows]
        assert sqnr == sorted(sqnr)  # worst (least SQNR) first
        assert all(math.isfinite(v) and 20 < v < 60 for v in sqnr), sqnr
        # Own loss >= loss vs the fp32 model (which adds everything upstream), up to noise.
        assert all(r["cumulative_sqnr_db"] <= r["sqnr_db"] + 0.5 for r in rows)
        assert all(0 <= r["clipped_fraction"] < 0.01 for r in rows)
        assert sorted(r["position"] for r in rows) == list(range(len(rows)))
        assert {"input"} < {r["layer"] for r in rows}
        assert all(r["dtype"] == ("uint8" if which == "onnx_int8" else "int8") for r in rows)
        # Weights: per-channel int8, far finer than the activations.
        assert {w["layer"] for w in t["weights"]} >= set(conv[:-1])
        assert all(35 < w["sqnr_db"] < 80 for w in t["weights"])
    onnx_rows, tfl_rows = tables["onnx_int8"]["layers"], tables["tflite_int8"]["layers"]
    # ONNX rows: real tensors and nodes of the exported QDQ graph; every conv of the
    # checkpoint (the lab head stays float32: no row).
    graph = onnx.load(str(art.onnx_int8)).graph
    nodes = {n.name: n.op_type for n in graph.node}
    tensors = {t for n in graph.node for t in n.input} | {t for n in graph.node for t in n.output}
    for r in onnx_rows:
        assert r["tensor"] in tensors
        assert r["node"] is None or nodes[r["node"]] == r["op"]
    assert {r["layer"] for r in onnx_rows} == {"input", *conv[:-1]}
    # LiteRT rows: the torch module names (conv / fully-connected ops in order), the op each
    # runs as, and the MEAN pooling under its op name.
    assert {r["layer"] for r in tfl_rows} - {"input"} - set(conv) == {
        r["node"] for r in tfl_rows if r["op"] == "MEAN"
    }
    assert {r["op"] for r in tfl_rows} == {
        "input", "CONV_2D", "DEPTHWISE_CONV_2D", "MEAN", "FULLY_CONNECTED"
    }  # fmt: skip
    # Two independent paths (ORT's weight matching, LiteRT's per-channel params) give the
    # same int8 weights: the same SQNR per layer, which also checks the LiteRT labels.
    onnx_w = {w["layer"]: w["sqnr_db"] for w in tables["onnx_int8"]["weights"]}
    for w in tables["tflite_int8"]["weights"]:
        if w["layer"] in onnx_w:
            assert abs(w["sqnr_db"] - onnx_w[w["layer"]]) < 0.1, w
    # The same weak spot in both formats (the same model, the same calibration method): the
    # layer ONNX ranks worst is, in LiteRT, within 1.5 dB of LiteRT's worst. Not the identical
    # name: two layers a fraction of a dB apart swap ranks between CPUs (CI saw dw <-> pw).
    tfl_sqnr = {r["layer"]: r["sqnr_db"] for r in tfl_rows}
    onnx_worst = tables["onnx_int8"]["worst"]
    assert onnx_worst in tfl_sqnr, (onnx_worst, sorted(tfl_sqnr))
    assert tfl_sqnr[onnx_worst] - tfl_rows[0]["sqnr_db"] < 1.5, (onnx_worst, tfl_rows[:3])
    # The CLI prints the worst layers.
    res = ef.run_cli(
        "export", "--model", str(art.checkpoint), "--format", "tflite", "--int8",
        "--calib", str(art.windows_npy), "--heldout", str(art.heldout_npy),
        "--calib-size", "64", "--out", str(art.root / "printed.tflite"),
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "worst quantized layers" in res.stdout
    assert "calibration: percentile (default) on 64 windows" in res.stdout


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
    x = np.load(art.windows_npy)[:64]  # a broken set is broken at any size
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
    assert res.stderr.splitlines()[-1].startswith("Error: ")  # as every failure's last line
    assert "mean_auroc_delta" in res.stderr and "agreement" in res.stderr
    assert not out.exists() and not manifest_path(out).exists()  # nothing deployable left
    report = _json(parity_path(out))
    assert report["passed"] is False and report["failures"]
    assert report["calls"]["agreement"] < 0.9 and report["auroc"]["mean_delta"] > 0.1
    assert report["calibration_warnings"]  # the set itself was flagged too
    # The per-layer table shows where: the worst layer loses far more than the clean
    # export's worst layer (same model, same held-out windows).
    clean = _json(parity_path(art.onnx_int8 if fmt == "onnx" else art.tflite_int8))
    worst, clean_worst = report["layer_errors"]["layers"][0], clean["layer_errors"]["layers"][0]
    assert worst["sqnr_db"] < clean_worst["sqnr_db"] - 15, (worst, clean_worst)
    assert worst["clipped_fraction"] > 0.2 or worst["sqnr_db"] < 5
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
    assert report["calibration"]["method"] == "minmax"
    assert report["calibration"]["chosen_by"] == "option"
    assert report["calibration"]["n_windows"] == 64


def test_litert_16x8_export_runs_on_the_device_runtime_and_beats_int8(art, tmp_path) -> None:
    out = tmp_path / "s16x8.tflite"
    res = ef.run_cli(
        "-q", "export", "--model", str(art.checkpoint), "--format", "tflite", "--int8",
        "--activations", "int16", "--calib", str(ef.CINC), "--out", str(out), "--json",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    m = _json(manifest_path(out))
    assert m["precision"] == "int16x8"
    q = m["quantization"]
    assert q["recipe"] == "static_wi8_ai16" and q["activation_type"] == "int16"
    assert q["weight_type"] == "int8" and q["calibration_method"] == "minmax"
    for key in ("input_quant", "output_quant"):
        assert m[key]["dtype"] == "int16" and m[key]["zero_point"] == 0 and m[key]["scale"] > 0
    report = _json(parity_path(out))
    assert report["passed"] and report["precision"] == "int16x8"
    assert report["tolerance"] == {
        "mean_auroc_delta": 0.001, "agreement": 0.99, "rel_mean_abs_logit_error": 0.05
    }  # fmt: skip
    assert report["calibration"]["chosen_by"] == "default"
    # Through the device runtime: int16 in, int16 out, float logits close to torch.
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(out))
    assert interp.get_input_details()[0]["dtype"] == np.int16
    model = load_model(out, threads=1)
    assert model.precision == "int16x8"
    x = np.load(art.heldout_npy)[:8]
    import torch
    from anyecg_edge.training.torch_model import load_model_checkpoint

    torch_model = load_model_checkpoint(art.checkpoint)[0].eval()
    with torch.inference_mode():
        ref = torch_model(torch.from_numpy(x[:, None, :])).numpy()
    got = model.predict_logits(x[:, None, :])
    assert np.abs(got - ref).max() < 0.5 and np.abs(got - ref).mean() < 0.05
    # Better than the int8 export of the same model on the same held-out windows.
    i8 = _json(parity_path(art.tflite_int8))
    assert report["heldout"]["n_windows"] == i8["heldout"]["n_windows"]
    assert report["logits"]["mean_abs_error"] < 0.5 * i8["logits"]["mean_abs_error"]
    assert report["calls"]["agreement"] > i8["calls"]["agreement"]
    t16, t8 = report["layer_errors"], i8["layer_errors"]
    assert all(r["dtype"] == "int16" for r in t16["layers"])
    assert t16["layers"][0]["sqnr_db"] > t8["layers"][0]["sqnr_db"] + 30  # ~6 dB per bit


def test_calib_method_auto_records_every_method_tried(art, tmp_path) -> None:
    out = tmp_path / "auto.onnx"
    res = ef.run_cli(
        "export", "--model", str(art.checkpoint), "--format", "onnx", "--int8",
        "--calib", str(ef.CINC), "--heldout", str(art.heldout_npy), "--out", str(out),
        "--calib-method", "auto",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    cal = _json(parity_path(out))["calibration"]
    sel = cal["selection"]
    assert cal["chosen_by"] == "auto" and cal["n_records"] == 50 and cal["n_windows"] == 512
    assert sel["candidates"] == ["minmax", "percentile"] and sel["not_tried"] == ["entropy"]
    # Held out by record from the calibration set (25 % of 50 records), the rest fits.
    assert sel["selection_records"] == 12 and sel["fit_windows"] + sel["selection_windows"] == 512
    trials = {t["method"]: t for t in sel["trials"]}
    assert set(trials) == {"minmax", "percentile"}
    for t in trials.values():
        assert 0.9 < t["agreement"] <= 1 and t["n_disagree"] > 0 and t["mean_abs_logit_error"] > 0
    # The rule: fewest broken limits, then fewest call flips, then mean |dlogit|.
    best = min(
        trials.values(),
        key=lambda t: (len(t["failures"]), t["n_disagree"], t["mean_abs_logit_error"]),
    )
    assert cal["method"] == best["method"]
    assert _json(manifest_path(out))["quantization"]["calibration_method"] == best["method"]
    assert f"calibration: {best['method']} (auto)" in res.stdout and "tried on" in res.stdout


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
        (
            [
                "--format",
                "onnx",
                "--int8",
                "--activations",
                "int16",
                "--out",
                "x.onnx",
                "--calib",
                "CALIB",
            ],  # fmt: skip
            "--activations int16 (16x8: int16 activations, int8 weights) needs --format tflite",
        ),
        (
            ["--format", "tflite", "--activations", "int16", "--out", "x.tflite"],
            "needs --format tflite --int8 (static)",
        ),
        (
            ["--format", "tflite", "--int8", "--activations", "int4", "--out", "x.tflite"],
            "Invalid value for '--activations'",
        ),
        (
            ["--format", "tflite", "--int8", "--calib-method", "kl", "--out", "x.tflite"],
            "Invalid value for '--calib-method'",
        ),
    ],
)
def test_bad_options_give_one_line_errors(art, tmp_path, extra: list[str], message: str) -> None:
    args = ["export", "--model", str(art.checkpoint)]
    args += [str(tmp_path / a) if a.startswith("x.") else a for a in extra]
    args = [str(art.heldout_npy) if a == "CALIB" else a for a in args]
    if "--calib" not in extra and "entropy" in extra:
        args += ["--calib", str(art.heldout_npy)]
    res = ef.run_cli(*args)
    assert res.exit_code == (2 if "Invalid value" in message else 1), res.output
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
    # Corpus windows group by patient (the --calib-method auto split, the record counts).
    import pandas as pd

    index = pd.read_parquet(tmp_path / "corpus" / "index.parquet")
    ok = index[index["quality_ok"].astype(bool)]
    assert cal["n_records"] == ok.loc[ok["split"] == "train", "mrn"].nunique() > 1
    assert report["heldout"]["n_records"] == ok.loc[ok["split"] == "val", "mrn"].nunique()
    assert report["auroc"]["reference"] == "labels" and report["auroc"]["n_labs"] >= 1
    assert report["auroc_vs_calls"]["reference"] == "torch_calls"
    labeled = [v["vs_labels"] for v in report["per_lab"].values() if "vs_labels" in v]
    assert labeled and all(e["n_pos"] + e["n_neg"] <= report["n_windows"] for e in labeled)
    assert json.loads(res.stdout)["auroc_reference"] == "labels"


def test_labs_without_a_threshold_make_no_calls_in_the_gate(art, tmp_path) -> None:
    """A checkpoint whose calibration left some labs without a threshold (too little
    validation data): agreement counts the other labs only; the AUROC deltas cover all."""
    from dataclasses import replace

    from anyecg_edge.training.torch_model import load_model_checkpoint, save_model_checkpoint

    module, meta = load_model_checkpoint(art.checkpoint)
    dropped = meta.labs[::3]  # every third lab uncalibrated
    thresholds = {lab: t for lab, t in meta.thresholds.items() if lab not in dropped}
    ckpt = save_model_checkpoint(
        tmp_path / "partial.pt",
        module,
        arch="student-s",
        model_kwargs={"n_classes": len(meta.labs)},
        metadata=replace(meta, thresholds=thresholds),
    )
    out = tmp_path / "partial.onnx"
    res = ef.run_cli(
        "export", "--model", str(ckpt), "--format", "onnx", "--int8", "--calib-size", "64",
        "--calib", str(art.windows_npy), "--heldout", str(art.heldout_npy), "--out", str(out),
        "--allow-degraded",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    r = _json(parity_path(out))
    calls = r["calls"]
    assert calls["n_labs_called"] == len(meta.labs) - len(dropped)
    assert calls["uncalibrated_labs"] == dropped
    assert calls["n_total"] == r["n_windows"] * calls["n_labs_called"]
    assert all(r["per_lab"][lab]["agreement"] is None for lab in dropped)
    assert all(r["per_lab"][lab]["vs_calls"]["reference"] == "median" for lab in dropped)
    assert r["auroc"]["n_labs"] == len(meta.labs)
    assert f"({calls['n_labs_called']} of 108 labs have a threshold)" in res.stdout


def test_calibration_bar_counts_every_window_on_a_terminal(art, tmp_path) -> None:
    """On a terminal the export draws a calibration bar that advances per calibration window:
    ORT through our data reader (percentile feeds one window at a time), LiteRT per window
    through ai-edge-quantizer and again through the value-percentile histogram pass. Its
    count reaches the number of calibration windows (the stage bar only counts 3)."""
    import re

    from tty_stderr import run_with_tty_stderr

    n = 24
    code = (
        "import sys\n"
        "from anyecg_edge.cli import cli\n"
        "for fmt, ext in (('onnx', 'onnx'), ('tflite', 'tflite')):\n"
        "    cli.main(['export', '--model', sys.argv[1], '--format', fmt, '--int8',\n"
        "              '--calib', sys.argv[2], '--heldout', sys.argv[3], '--calib-size',\n"
        f"              '{n}', '--heldout-size', '16', '--out', f'{{sys.argv[4]}}/m.{{ext}}'],\n"
        "             standalone_mode=False)\n"
        "    print(fmt, 'done', flush=True)\n"
        "    print(f'@@ {fmt} done @@', file=sys.stderr, flush=True)\n"
    )
    proc, drawn = run_with_tty_stderr(
        code, timeout_s=600, columns=200,
        args=(art.checkpoint, art.windows_npy, art.heldout_npy, tmp_path),
    )  # fmt: skip
    stdout = proc.stdout
    assert proc.returncode == 0, drawn[-2000:]
    assert b"onnx done" in stdout and b"tflite done" in stdout
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", drawn)  # no ANSI
    onnx, tflite = text.split("@@ onnx done @@")
    calib, hist = "int8 calibration (windows)", "int8 calibration: value histogram (windows)"
    for part, task in ((onnx, calib), (tflite, calib), (tflite, hist)):
        seen = [int(k) for k in re.findall(re.escape(task) + rf"[^0-9\n]*?(\d+)/{n}\b", part)]
        assert seen and max(seen) == n, (task, seen, part[-1500:])  # every window counted
    assert "3/3" in text  # the stage bar beside it
