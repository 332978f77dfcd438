"""The device side end to end: a clean venv with only `pip install ".[edge]"` (no torch)
runs `anyecg-edge predict` on the int8 .onnx and .tflite exports of the student with real
records and makes the torch fp32 model's abnormal calls."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from anyecg_edge.io import read_record
from anyecg_edge.predict import predict_record
from anyecg_edge.runtime import load_model, parity_path

FORBIDDEN = {"torch", "peft", "onnx", "onnxscript", "litert-torch", "ai-edge-quantizer", "jax"}


def _device_predict(py: Path, model: Path, record: Path, lead: str) -> dict:
    cli = py.parent / "anyecg-edge"
    proc = subprocess.run(
        [str(cli), "-q", "predict", "--model", str(model), "--input", str(record)]
        + ["--lead", lead, "--threads", "1", "--json"],
        capture_output=True,
        text=True,
        cwd="/",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def _torch_prediction(art, record: Path, lead: str) -> dict:
    from anyecg_edge.training.torch_model import TorchModel

    return predict_record(read_record(record, lead=lead), TorchModel.load(art.checkpoint)).to_dict()


@pytest.mark.venv
@pytest.mark.parametrize("which", ["onnx_int8", "tflite_int8"])
def test_device_predict_makes_the_torch_models_calls_on_a_30_min_record(
    art, edge_venv: Path, shared_data: Path, which: str
) -> None:
    """MIT-BIH 100 (MLII, 360 Hz, 30 min: 180 windows averaged per lab)."""
    model = getattr(art, which)
    record = shared_data / "mitdb" / "100"
    device = _device_predict(edge_venv, model, record, "MLII")
    ref = _torch_prediction(art, record, "MLII")
    assert device["status"] == ref["status"] == "ok"
    assert device["quality"]["windows_used"] == ref["quality"]["windows_used"] == 180
    assert device["model"]["backend"] == (
        "onnxruntime" if which == "onnx_int8" else "ai-edge-litert"
    )
    assert device["model"]["precision"] == "int8"
    calls = {lab: v["abnormal"] for lab, v in device["labs"].items()}
    ref_calls = {lab: v["abnormal"] for lab, v in ref["labs"].items()}
    assert calls == ref_calls
    assert 0 < sum(calls.values()) < len(calls)  # both kinds of call occur
    # The device venv's runtime gives what the workstation's runtime gives on this file.
    here = predict_record(read_record(record, lead="MLII"), load_model(model, threads=1)).to_dict()
    p_dev = np.array([device["labs"][k]["probability"] for k in ref_calls])
    p_here = np.array([here["labs"][k]["probability"] for k in ref_calls])
    np.testing.assert_allclose(p_dev, p_here, atol=2e-3)


@pytest.mark.venv
@pytest.mark.parametrize("which", ["onnx_int8", "tflite_int8"])
def test_device_predict_on_single_window_records_flips_only_borderline_calls(
    art, edge_venv: Path, shared_data: Path, which: str
) -> None:
    """One 10 s CinC window per record: no averaging. A call may flip only for a lab whose
    torch probability lies within the parity report's measured probability error of the
    threshold; everything else must match."""
    model = getattr(art, which)
    band = json.loads(parity_path(model).read_text())["probabilities"]["max_abs_error"]
    n_labs = n_flips = 0
    for name in ("E07500", "E07506"):
        record = shared_data / "cinc2021" / name
        device = _device_predict(edge_venv, model, record, "II")
        ref = _torch_prediction(art, record, "II")
        for lab, r in ref["labs"].items():
            n_labs += 1
            if device["labs"][lab]["abnormal"] != r["abnormal"]:
                n_flips += 1
                assert abs(r["probability"] - r["threshold"]) <= band, (name, lab, r)
    assert n_flips <= 0.03 * n_labs, f"{n_flips} of {n_labs} calls differ"
