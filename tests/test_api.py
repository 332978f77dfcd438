"""The public Python API (issue 13 item 2): `ae.load_model` + `ae.estimate` on a numpy
array, `to_dict()` equal to `predict --json` on the same signal (CSV and .npy through the
real CLI), the README example run as written (model path swapped for the stand-in), the
lazy package import, and `Model.predict` refusing raw mV windows.

The model is the streaming tests' tiny ONNX graph run by onnxruntime, its manifest given
a calibration, thresholds and bootstrap calibrations so every lab-entry field is filled."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.signal
from click.testing import CliRunner
from test_stream import LABS, write_tiny_onnx

import anyecg_edge as ae
from anyecg_edge.cli import cli
from anyecg_edge.io import RecordError, read_record
from anyecg_edge.runtime import ModelError
from anyecg_edge.signal import preprocess

REPO = Path(__file__).resolve().parents[1]
FS = 130.0


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    path = write_tiny_onnx(tmp_path_factory.mktemp("api") / "tiny.onnx")
    manifest = Path(str(path) + ".manifest.json")
    meta = json.loads(manifest.read_text())
    rng = np.random.default_rng(1)
    # potassium and glucose calibrated (threshold + bootstrap fits), hemoglobin not.
    meta["thresholds"] = {"potassium": 0.4, "sodium": 0.55, "glucose": 0.6}
    meta["calibration"] = {lab: [0.8, 0.1] for lab in LABS}
    meta["calibrated"] = {"sodium": False}
    meta["calibration_bootstrap"] = {
        lab: [[0.8 + 0.1 * rng.standard_normal(), 0.1 * rng.standard_normal()] for _ in range(20)]
        for lab in ("potassium", "glucose")
    }
    meta["uncertainty"] = {"level": 0.9, "n": 20}
    manifest.write_text(json.dumps(meta))
    return path


@pytest.fixture(scope="module")
def signal_130(shared_data) -> np.ndarray:
    """60 s of MIT-BIH record 100 (lead MLII) resampled 360 -> 130 Hz, float32 mV."""
    rec = read_record(shared_data / "mitdb" / "100")
    x = scipy.signal.resample_poly(rec.signal_mv[: 60 * 360].astype(np.float64), 13, 36)
    return x.astype(np.float32)


def _predict_json(*args: str) -> dict:
    res = CliRunner().invoke(cli, ["predict", *args, "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def test_estimate_equals_predict_json_on_csv_and_npy(model_path, signal_130, tmp_path):
    model = ae.load_model(model_path)
    csv = tmp_path / "ecg.csv"
    # 9 significant digits bring a float32 back exactly: both paths see the same samples.
    csv.write_text("II\n" + "\n".join(f"{v:.9g}" for v in signal_130) + "\n")
    npy = tmp_path / "ecg.npy"
    np.save(npy, signal_130)
    for path, lead in ((csv, "II"), (npy, "unnamed")):
        cli_out = _predict_json("--model", str(model_path), "--input", str(path), "--fs", "130")
        result = ae.estimate(model, signal_130, fs=FS, lead=lead, source=str(path))
        assert json.loads(json.dumps(result.to_dict())) == cli_out
    # The fields the issue names, and the call rule: no call without calibration.
    assert result.status == "ok" and result.quality["windows_used"] == 6
    k, na, hb = result.labs["potassium"], result.labs["sodium"], result.labs["hemoglobin"]
    assert 0 < k.probability < 1 and k.threshold == 0.4
    assert k.abnormal == (k.probability >= 0.4) and k.status in ("abnormal", "normal")
    lo, hi = k.interval
    assert lo <= hi and k.interval_level == 0.9
    assert k.spread["n_windows"] == 6 and k.unit is not None
    assert na.abnormal is None and na.status == "not calibrated" and na.threshold is None
    assert hb.abnormal is None and hb.interval is None
    assert k.to_dict() == cli_out["labs"]["potassium"]


def test_estimate_accepts_a_path_and_other_units(model_path, signal_130):
    ref = ae.estimate(model_path, signal_130, fs=FS).to_dict()
    uv = ae.estimate(str(model_path), signal_130.astype(np.float64) * 1000, fs=FS, units="uV")
    auto = ae.estimate(model_path, signal_130 * 1000, fs=FS, units="auto")
    for other in (uv.to_dict(), auto.to_dict()):
        for lab in LABS:
            assert other["labs"][lab]["probability"] == pytest.approx(
                ref["labs"][lab]["probability"], abs=2e-4
            )
    # The same µV array read as mV: every window fails the amplitude gate, no estimates.
    raw = ae.estimate(model_path, signal_130 * 1000, fs=FS)
    assert raw.status == "rejected" and raw.labs == {}
    assert raw.quality["reasons"] == ["implausible_amplitude"]


@pytest.mark.parametrize(
    ("signal", "kwargs", "message"),
    [
        (np.zeros((2, 5000)), {}, r"must be 1-D \(one lead\), got shape \(2, 5000\)"),
        (np.zeros(600), {}, r"4\.62 s long .* one window needs 10\.00 s"),
        (np.array(["a"] * 2000), {}, "must be numeric"),
        (None, {"units": "auto", "scale": 30}, r"peak-to-peak amplitude 4\d\.\d+ per 10 s"),
        (None, {"units": "furlong"}, "units 'furlong'"),
        (None, {"fs": 5.0}, r"fs=5 Hz is not a plausible ECG sampling rate"),
    ],
)
def test_estimate_errors_are_one_line(model_path, signal_130, signal, kwargs, message):
    kwargs = dict(kwargs)
    scale = kwargs.pop("scale", 1)
    fs = kwargs.pop("fs", FS)
    x = signal_130 * scale if signal is None else signal
    with pytest.raises((RecordError, ModelError), match=message) as info:
        ae.estimate(model_path, x, fs=fs, **kwargs)
    assert "\n" not in str(info.value)


def test_load_model_errors(tmp_path):
    with pytest.raises(ModelError, match="folder has no model.pt"):
        ae.load_model(tmp_path)
    with pytest.raises(ModelError, match="no such model file"):
        ae.load_model(tmp_path / "missing.bin")
    (tmp_path / "m.bin").write_bytes(b"x")
    with pytest.raises(ModelError, match=r"unknown model type '\.bin'"):
        ae.load_model(tmp_path / "m.bin")
    with pytest.raises(ModelError, match="model file not found"):
        ae.load_model(tmp_path / "missing.onnx")


def test_readme_example_runs(model_path, signal_130, tmp_path):
    """The README's Python block, run as written in a folder holding its input file; only
    the model path is swapped for the stand-in (no trained export here)."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Python API", 1)[1]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    model_literal = re.search(r'ae\.load_model\("([^"]+)"\)', block).group(1)
    data_literal = re.search(r'np\.load\("([^"]+)"\)', block).group(1)
    np.save(tmp_path / data_literal, signal_130)
    code = block.replace(model_literal, str(model_path))
    code += "\nimport json, sys\njson.dump(record, sys.stdout)\n"
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    printed, record = res.stdout.rsplit("\n", 1)[0], json.loads(res.stdout.rsplit("\n", 1)[1])
    assert record["status"] == "ok" and set(record["labs"]) == set(LABS)
    assert f"{record['labs']['potassium']['probability']}" in printed
    assert "6 of 6" in printed


def test_import_is_light_and_the_api_is_lazy():
    code = (
        "import sys, anyecg_edge as ae\n"
        "assert 'numpy' not in sys.modules, 'import anyecg_edge loaded numpy'\n"
        "assert {'load_model', 'estimate', 'Estimate', 'LabEstimate'} <= set(ae.__all__)\n"
        "assert 'estimate' in dir(ae)\n"
        "f = ae.estimate\n"
        "assert 'numpy' in sys.modules and f.__module__ == 'anyecg_edge.api'\n"
        "try:\n    ae.nope\nexcept AttributeError as e:\n    print(e)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "has no attribute 'nope'" in res.stdout


def test_model_predict_refuses_raw_mv_windows(model_path, signal_130):
    model = ae.load_model(model_path)
    raw = scipy.signal.resample_poly(signal_130[: 10 * 130].astype(np.float64), 50, 13)
    with pytest.raises(
        ModelError, match=r"window 0 is not preprocessed \(mean .*, std 0\.\d+"
    ) as e:
        model.predict(raw[None, None, :].astype(np.float32))
    assert "\n" not in str(e.value) and "anyecg_edge.estimate" in str(e.value)
    x = preprocess(signal_130[: 10 * 130], FS)
    assert abs(x.mean()) < 1e-6 and abs(x.std() - 1) < 1e-6
    # Preprocessed windows pass, so do constant rows (a z-scored constant is all zeros) and
    # float16-stored corpus windows; the second row's raw offset is refused by its index.
    batch = np.stack([x, np.zeros_like(x), x.astype(np.float16).astype(np.float32)])
    assert model.predict(batch).shape == (3, len(LABS))
    with pytest.raises(ModelError, match="window 1 is not preprocessed"):
        model.predict(np.stack([x, x + 1.0]))
    with pytest.raises(ModelError, match="window 0 is not preprocessed"):
        model.logits(np.stack([x * 3.0]))


@pytest.mark.parametrize("kind", ["tflite_int8", "onnx_int8", "checkpoint_dir"])
def test_real_exports_and_run_folder(art, kind, shared_data, tmp_path):
    """The int8 .tflite / .onnx exports and the torch run folder they came from (real
    models of the export tests): `to_dict()` equals `predict --json` for each."""
    path = getattr(art, kind)
    signal = read_record(shared_data / "mitdb" / "100").signal_mv[: 60 * 360]
    npy = tmp_path / "ecg.npy"
    np.save(npy, signal)
    cli_out = _predict_json("--model", str(path), "--input", str(npy), "--fs", "360")
    model = ae.load_model(path)
    assert model.backend == ("torch" if kind == "checkpoint_dir" else cli_out["model"]["backend"])
    result = ae.estimate(model, signal, fs=360.0, source=str(npy))
    assert json.loads(json.dumps(result.to_dict())) == cli_out
    assert result.status == "ok" and len(result.labs) == len(model.labs)
    k = result.labs[model.labs[0]]
    assert 0 <= k.probability <= 1 and k.spread["n_windows"] == result.quality["windows_used"]


@pytest.mark.parametrize("fs", [130.04, 129.96, 256.3, 500.3])
def test_estimate_at_a_measured_rate_fills_the_model_window(model_path, shared_data, fs):
    """A Polar H10 measures 130.04 Hz, not 130: round(10 s x fs) raw samples resampled to
    4999 and the model refused the windows, blaming itself. Each window now takes the raw
    samples that resample to 5000 at least (1301 at 130.04 Hz) and is cut to 5000; the
    estimate equals the one at the nominal rate within the resampling's effect."""
    from anyecg_edge.signal import raw_window_samples, resample

    x_mv = read_record(shared_data / "mitdb" / "100").signal_mv[: 360 * 60]
    model = ae.load_model(model_path)
    at_fs = ae.estimate(model, resample(x_mv, 360.0, fs), fs=fs)
    nominal = ae.estimate(model, resample(x_mv, 360.0, round(fs)), fs=float(round(fs)))
    n_raw = raw_window_samples(5000, fs, 500.0)
    assert at_fs.quality["windows_used"] == (round(60 * fs) - n_raw) // n_raw + 1 >= 5
    for lab in LABS:
        assert abs(at_fs.labs[lab].probability - nominal.labs[lab].probability) < 0.05
