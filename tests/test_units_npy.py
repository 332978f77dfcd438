"""Inputs (issue 13 item 4): `predict --units mV|uV|V|auto` for files that do not state
their unit (an unlabelled CSV column, a .npy array), auto refusing an ambiguous amplitude
and naming it, and `.npy` input with `--fs`. Real files (MIT-BIH record 100 written as
CSV / .npy in mV and in µV) through the real CLI."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from click.testing import CliRunner
from test_stream import write_tiny_onnx

from anyecg_edge.cli import cli
from anyecg_edge.io import RecordError, list_leads, read_record

pytestmark = pytest.mark.device  # no torch: also run on arm64 by make test-arm64

FS = 360.0


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return write_tiny_onnx(tmp_path_factory.mktemp("units") / "tiny.onnx")


@pytest.fixture(scope="module")
def mv(shared_data) -> np.ndarray:
    """40 s of MIT-BIH 100 (MLII) in mV."""
    return read_record(shared_data / "mitdb" / "100").signal_mv[: int(40 * FS)]


def _csv(path, values, header: str | None = None):
    body = "\n".join(f"{v:.9g}" for v in values)
    path.write_text((header + "\n" if header else "") + body + "\n")
    return path


def _predict(model_path, path, *extra):
    return CliRunner().invoke(
        cli, ["predict", "--model", str(model_path), "--input", str(path), *extra, "--json"]
    )


def _probs(res) -> dict[str, float]:
    assert res.exit_code == 0, res.output
    return {k: v["probability"] for k, v in json.loads(res.output)["labs"].items()}


def test_uv_csv_with_units_uv_or_auto_matches_mv(model_path, mv, tmp_path):
    ref = _probs(_predict(model_path, _csv(tmp_path / "mv.csv", mv), "--fs", "360"))
    uv = _csv(tmp_path / "uv.csv", mv.astype(np.float64) * 1000)
    for units in ("uV", "UV", "auto"):
        got = _probs(_predict(model_path, uv, "--fs", "360", "--units", units))
        assert got == pytest.approx(ref, abs=2e-4)
    # Without --units the column is mV (documented default): every window fails the
    # amplitude gate, predict says so and exits 3.
    res = _predict(model_path, uv, "--fs", "360")
    assert res.exit_code == 3
    # stdout is the JSON; the failure is still one line on stderr, with the likely cause.
    assert res.stderr.splitlines() == [
        f"Error: {uv}: no window passed the signal-quality gate (implausible_amplitude) "
        "(a µV signal read as mV? see --units); no estimates"
    ]
    out = json.loads(res.stdout)
    assert out["status"] == "rejected" and out["quality"]["reasons"] == ["implausible_amplitude"]
    rec = read_record(uv, fs=FS, units="auto")
    assert rec.note.startswith("units inferred as uV (median peak-to-peak ")
    assert read_record(tmp_path / "mv.csv", fs=FS, units="auto").note.startswith(
        "units inferred as mV"
    )
    # Volts are recognised too.
    v = read_record(_csv(tmp_path / "v.csv", mv.astype(np.float64) / 1000), fs=FS, units="auto")
    np.testing.assert_allclose(v.signal_mv, mv, atol=1e-6)


def test_auto_refuses_an_ambiguous_amplitude_naming_it(model_path, mv, tmp_path):
    amb = _csv(tmp_path / "amb.csv", mv.astype(np.float64) * 30)  # 30x mV: neither mV nor µV
    res = _predict(model_path, amb, "--fs", "360", "--units", "auto")
    assert res.exit_code == 1 and "Traceback" not in res.output
    (line,) = res.output.strip().splitlines()
    assert str(amb) in line and "--units auto" in line
    assert "median peak-to-peak amplitude 4" in line and "mV 0.1-10, uV 100-10000" in line
    flat = _csv(tmp_path / "flat.csv", np.zeros(4000))
    with pytest.raises(RecordError, match="peak-to-peak amplitude 0 per 10 s"):
        read_record(flat, fs=FS, units="auto")


def test_header_unit_wins_and_conflicts_are_refused(mv, tmp_path):
    path = _csv(tmp_path / "h.csv", mv.astype(np.float64) * 1000, header="MLII (uV)")
    auto = read_record(path, fs=FS, units="auto")  # auto takes the header's unit
    np.testing.assert_allclose(auto.signal_mv, mv, atol=1e-5)
    assert auto.note == "converted from uV to mV"
    with pytest.raises(RecordError, match=r"units='mV' was given but channel 'MLII' is stored in"):
        read_record(path, fs=FS, units="mV")


def test_wfdb_with_units_auto_uses_the_header(shared_data):
    rec = read_record(shared_data / "mitdb" / "100", units="auto")
    assert rec.fs == FS and rec.lead == "MLII"


def test_npy_input_with_fs(model_path, mv, tmp_path):
    csv_probs = _probs(_predict(model_path, _csv(tmp_path / "a.csv", mv), "--fs", "360"))
    npy = tmp_path / "a.npy"
    np.save(npy, mv)
    assert _probs(_predict(model_path, npy, "--fs", "360")) == csv_probs
    assert list_leads(npy) == ["unnamed"]
    rec = read_record(npy, fs=FS, lead="II")
    assert rec.lead == "II" and rec.duration_s == 40.0
    # (1, n) is one lead; µV with --units uV / auto.
    np.save(tmp_path / "row.npy", mv[None, :].astype(np.float64) * 1000)
    assert _probs(_predict(model_path, tmp_path / "row.npy", "--fs", "360", "--units", "uV")) == (
        pytest.approx(csv_probs, abs=2e-4)
    )
    assert _probs(
        _predict(model_path, tmp_path / "row.npy", "--fs", "360", "--units", "auto")
    ) == pytest.approx(csv_probs, abs=2e-4)


@pytest.mark.parametrize(
    ("make", "extra", "message"),
    [
        (lambda p: np.save(p, np.zeros(9000)), [], r"carry no sampling rate; pass fs \(--fs\)"),
        (
            lambda p: np.save(p, np.zeros((2, 9000))),
            ["--fs", "360"],
            r"expected a 1-D array of one lead's samples, got shape \(2, 9000\)",
        ),
        (
            lambda p: np.save(p, np.array([{"a": 1}], dtype=object)),
            ["--fs", "360"],
            "not a readable .npy array",
        ),
        (lambda p: np.save(p, np.array(["x"] * 10)), ["--fs", "360"], "expected a numeric array"),
        (lambda p: p.write_bytes(b"not numpy"), ["--fs", "360"], "not a readable .npy array"),
        (lambda p: np.save(p, np.zeros(0)), ["--fs", "360"], "has no samples"),
    ],
)
def test_npy_errors_are_one_line(model_path, tmp_path, make, extra, message):
    path = tmp_path / "bad.npy"
    make(path)
    res = _predict(model_path, path, *extra)
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    (line,) = res.output.strip().splitlines()
    assert str(path) in line
    assert re.search(message, line), line
