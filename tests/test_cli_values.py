"""`predict --json` probabilities against an independent computation, not just their shape.

The independent path shares no code with the CLI's: the record is read with wfdb, the lead
preprocessed by the test oracle written from DESIGN.md (tests/reference/preprocess_oracle.py),
the exported int8 ONNX file run with onnxruntime directly, and the manifest's Platt
calibration and thresholds applied by hand. The manifest is given non-trivial calibration
(slopes and offsets away from the identity), so a CLI that skipped or misapplied it fails.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from anyecg_edge.cli import cli

ort = pytest.importorskip("onnxruntime")
wfdb = pytest.importorskip("wfdb")

ORACLE_PATH = Path(__file__).resolve().parent / "reference" / "preprocess_oracle.py"
CASES = [("E07500", "I"), ("E07501", "II"), ("HR06000", "V5"), ("JS20001", "aVF")]


def _oracle():
    spec = importlib.util.spec_from_file_location("preprocess_oracle", ORACLE_PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def calibrated_onnx(art, tmp_path_factory) -> tuple[Path, dict]:
    """A copy of the export tests' int8 ONNX whose manifest gets per-lab Platt fits and
    thresholds (the model file is unchanged, so its sha256 still matches)."""
    root = tmp_path_factory.mktemp("cli-values")
    model = root / art.onnx_int8.name
    shutil.copy(art.onnx_int8, model)
    manifest = json.loads(Path(f"{art.onnx_int8}.manifest.json").read_text())
    labs = manifest["labs"]
    rng = np.random.default_rng(7)
    manifest["calibration"] = {
        lab: [float(rng.uniform(0.4, 2.5)), float(rng.uniform(-1.5, 1.5))] for lab in labs
    }
    manifest["thresholds"] = {lab: float(rng.uniform(0.2, 0.8)) for lab in labs[::2]}
    manifest["calibrated"] = {lab: lab in manifest["thresholds"] for lab in labs}
    manifest["calibration_bootstrap"] = {}
    Path(f"{model}.manifest.json").write_text(json.dumps(manifest))
    return model, manifest


def _by_hand(model: Path, manifest: dict, record: Path, lead: str) -> tuple[np.ndarray, ...]:
    rec = wfdb.rdrecord(str(record))
    assert rec.fs == manifest["fs"] == 500  # one 10 s window, no resampling
    x = rec.p_signal[:, rec.sig_name.index(lead)]
    assert x.size == int(manifest["fs"] * manifest["window_s"])
    z = _oracle().authors_chain(x, rec.fs, mains_hz=manifest["mains_hz"]).astype(np.float32)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {session.get_inputs()[0].name: z[None, None, :]})
    a, b = np.array([manifest["calibration"][lab] for lab in manifest["labs"]]).T
    raw = 1.0 / (1.0 + np.exp(-logits[0].astype(np.float64)))
    calibrated = 1.0 / (1.0 + np.exp(-(a * logits[0].astype(np.float64) + b)))
    return raw, calibrated


@pytest.mark.parametrize(("name", "lead"), CASES)
def test_predict_json_equals_the_independent_computation(
    calibrated_onnx, shared_data: Path, name: str, lead: str
) -> None:
    model, manifest = calibrated_onnx
    record = shared_data / "cinc2021" / name
    result = CliRunner().invoke(
        cli, ["-q", "predict", "--model", str(model), "--input", str(record), "--lead", lead,
              "--json"]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["quality"]["windows_used"] == 1, out["quality"]
    labs = manifest["labs"]
    cli_p = np.array([out["labs"][lab]["probability"] for lab in labs])

    raw, expected = _by_hand(model, manifest, record, lead)
    # The CLI rounds to 4 decimals; the oracle and the fast path agree to ~1e-6 z.
    np.testing.assert_allclose(cli_p, expected, atol=1e-4, rtol=0)
    # ... and the calibration is what makes them agree: the uncalibrated sigmoid is far off.
    assert np.median(np.abs(raw - expected)) > 0.02

    for lab, p in zip(labs, expected, strict=True):
        entry = out["labs"][lab]
        if lab in manifest["thresholds"]:
            t = manifest["thresholds"][lab]
            if abs(p - t) > 1e-4:  # a call exactly at the threshold depends on the rounding
                assert entry["abnormal"] == bool(p >= t), lab
            assert entry["threshold"] == pytest.approx(t, abs=5e-5)
        else:
            assert entry["abnormal"] is None and entry["status"] == "not calibrated", lab
