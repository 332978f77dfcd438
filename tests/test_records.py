"""Record readers: WFDB (real records + files written with wfdb.wrsamp), CSV, EDF."""

from __future__ import annotations

import builtins
from pathlib import Path

import numpy as np
import pytest
from recordings import CINC, MITDB, needs_data

from anyecg_edge.io import MissingDependencyError, Record, RecordError, list_leads, read_record
from anyecg_edge.signal import preprocess

pytestmark = pytest.mark.device  # no torch: also run on arm64 by make test-arm64

wfdb = pytest.importorskip("wfdb")


def _wrsamp(tmp_path: Path, name: str, p_signal: np.ndarray, *, fs=500, units=None, sig_name=None):
    p = np.asarray(p_signal, dtype=np.float64)
    if p.ndim == 1:
        p = p[:, None]
    n = p.shape[1]
    wfdb.wrsamp(
        name,
        fs=fs,
        units=units or ["mV"] * n,
        sig_name=sig_name or [f"ch{i}" for i in range(n)],
        p_signal=p,
        fmt=["16"] * n,
        write_dir=str(tmp_path),
    )
    return tmp_path / name


def _ecg_like(n=5000, fs=500, amp_mv=1.0):
    t = np.arange(n) / fs
    return amp_mv * (np.sin(2 * np.pi * 1.2 * t) ** 31) + 0.05 * np.sin(2 * np.pi * 0.3 * t)


# --- WFDB: real records -------------------------------------------------------------------


@needs_data
def test_mitdb_lead_ii_is_found_as_mlii():
    rec = read_record(MITDB, lead="II")
    assert isinstance(rec, Record)
    assert rec.lead == "MLII" and rec.fs == 360.0 and rec.units == "mV"
    assert rec.signal_mv.dtype == np.float32 and rec.signal_mv.shape == (650000,)
    assert rec.duration_s == pytest.approx(650000 / 360)
    assert "MLII" in rec.note and "II" in rec.note
    ref = wfdb.rdrecord(str(MITDB), channels=[0], sampto=1000).p_signal[:, 0]
    np.testing.assert_allclose(rec.signal_mv[:1000], ref, atol=1e-6)
    assert read_record(MITDB, lead="mlii").lead == "MLII"  # case-insensitive
    assert read_record(MITDB, lead="V5").lead == "V5"


@needs_data
def test_mitdb_default_lead_prefers_ii_over_v5():
    rec = read_record(str(MITDB) + ".hea")
    assert rec.lead == "MLII" and "automatically" in rec.note


@needs_data
def test_cinc_default_lead_is_ii_and_path_variants():
    """Lead II, the lab models' training lead (MC-MED), not lead I listed first."""
    base = CINC / "E07500"
    for p in (base, Path(str(base) + ".hea"), Path(str(base) + ".mat"), str(base)):
        rec = read_record(p)
        assert rec.lead == "II" and rec.fs == 500.0 and rec.signal_mv.shape == (5000,)
    assert "chosen automatically" in rec.note
    ref = wfdb.rdrecord(str(base)).p_signal[:, 1]
    np.testing.assert_allclose(rec.signal_mv, ref, atol=1e-6)
    assert read_record(base, lead="avr").lead == "aVR"
    assert list_leads(base) == ["I", "II", "III", "aVR", "aVL", "aVF"] + [
        f"V{i}" for i in range(1, 7)
    ]
    assert list_leads(MITDB) == ["MLII", "V5"]


@needs_data
def test_record_feeds_preprocess():
    rec = read_record(MITDB, lead="II")
    y = preprocess(rec.signal_mv[: int(10 * rec.fs)], rec.fs)
    assert y.shape == (5000,) and np.isfinite(y).all()


@needs_data
def test_wrong_lead_lists_available_leads():
    with pytest.raises(
        RecordError, match=r"E07500: no lead 'V9'; available leads: I, II, III, aVR"
    ):
        read_record(CINC / "E07500", lead="V9")
    with pytest.raises(RecordError, match="available leads: MLII, V5"):
        read_record(MITDB, lead="I")


@needs_data
def test_fs_contradicting_header_names_both():
    with pytest.raises(RecordError, match=r"fs=250 Hz was given but the file header says 360 Hz"):
        read_record(MITDB, fs=250)
    assert read_record(MITDB, fs=360.0).fs == 360.0


# --- WFDB: files written here -------------------------------------------------------------


@pytest.mark.parametrize(("unit", "scale"), [("uV", 1e3), ("V", 1e-3), ("mV", 1.0)])
def test_wfdb_units_converted_to_mv(tmp_path, unit, scale):
    x_mv = _ecg_like()
    base = _wrsamp(tmp_path, "u", x_mv * scale, units=[unit], sig_name=["II"])
    rec = read_record(base)
    assert rec.units == "mV" and rec.lead == "II"
    # 16-bit storage: wfdb picks the gain; allow its quantisation step.
    np.testing.assert_allclose(rec.signal_mv, x_mv, atol=2e-4 * np.ptp(x_mv))
    if unit != "mV":
        assert f"converted from {unit}" in rec.note


def test_wfdb_unknown_units_and_units_argument(tmp_path):
    base = _wrsamp(tmp_path, "nu", _ecg_like(), units=["NU"], sig_name=["I"])
    with pytest.raises(RecordError, match=r"channel 'I' has units 'NU'; expected mV, uV"):
        read_record(base)
    base = _wrsamp(tmp_path, "uv", _ecg_like() * 1000, units=["uV"], sig_name=["I"])
    with pytest.raises(
        RecordError, match=r"units='mV' was given but channel 'I' is stored in 'uV'"
    ):
        read_record(base, units="mV")
    assert read_record(base, units="µV").lead == "I"


def test_wfdb_all_nan_record(tmp_path):
    # -32768 is WFDB's "no sample" value for format 16; wfdb reads it back as NaN.
    d = np.zeros((1000, 2), dtype=np.int16)
    d[:, 0] = -32768
    d[:, 1] = np.round(_ecg_like(1000) * 1000).astype(np.int16)
    wfdb.wrsamp(
        "nan",
        fs=500,
        units=["mV", "mV"],
        sig_name=["I", "II"],
        d_signal=d,
        fmt=["16", "16"],
        adc_gain=[1000.0, 1000.0],
        baseline=[0, 0],
        write_dir=str(tmp_path),
    )
    with pytest.raises(RecordError, match=r"nan: lead I is entirely missing"):
        read_record(tmp_path / "nan", lead="I")
    assert np.isfinite(read_record(tmp_path / "nan", lead="II").signal_mv).all()


def test_wfdb_absurd_header_rate(tmp_path):
    base = _wrsamp(tmp_path, "fast", _ecg_like(), fs=5_000_000, sig_name=["I"])
    with pytest.raises(RecordError, match="header sampling rate is not usable.*not a plausible"):
        read_record(base)


def test_wfdb_multichannel_without_i_or_ii_needs_a_lead(tmp_path):
    base = _wrsamp(tmp_path, "v", np.stack([_ecg_like()] * 2, 1), sig_name=["V1", "V2"])
    with pytest.raises(RecordError, match="none is II or I; choose one with lead="):
        read_record(base)
    assert read_record(base, lead="v2").lead == "V2"


def test_wfdb_missing_signal_file(tmp_path):
    base = _wrsamp(tmp_path, "gone", _ecg_like(), sig_name=["I"])
    (tmp_path / "gone.dat").unlink()
    with pytest.raises(RecordError, match=r"gone.dat: missing \(the signal file gone.hea names\)"):
        read_record(base)


def test_wfdb_signal_file_cut_short_names_what_it_holds(tmp_path):
    """wfdb said "could not broadcast input array from shape (334,) into shape (650000,)"
    for a cut .dat; the error now says how many samples the file holds of how many."""
    base = _wrsamp(tmp_path, "cut", np.stack([_ecg_like(), _ecg_like()], axis=1),
                   sig_name=["I", "II"])  # fmt: skip
    dat = tmp_path / "cut.dat"
    full = dat.stat().st_size
    assert full == 5000 * 2 * 2  # format 16, two signals: the size the check expects
    dat.write_bytes(dat.read_bytes()[:1002])
    with pytest.raises(
        RecordError,
        match=r"cut.dat: holds 250 of the 5000 samples per signal that cut.hea promises "
        r"\(1002 bytes, 20000 needed\): the file is cut short",
    ):
        read_record(base)
    # A header promising more samples than any file could hold is the same error.
    hea = tmp_path / "cut.hea"
    hea.write_text(hea.read_text().replace(" 5000", " 999999999999", 1))
    with pytest.raises(RecordError, match="of the 999999999999 samples per signal"):
        read_record(base)


def test_wfdb_unknown_storage_format_and_unnamed_signals(tmp_path):
    base = _wrsamp(tmp_path, "fmt", np.stack([_ecg_like(), _ecg_like()], axis=1),
                   sig_name=["I", "II"])  # fmt: skip
    hea = tmp_path / "fmt.hea"
    lines = hea.read_text().splitlines()
    lines[1] = lines[1].replace(" 16 ", " 999 ", 1)
    hea.write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordError, match=r"fmt.hea: storage format '999' of I is not a WFDB"):
        read_record(base)
    # header(5) allows a signal line without a description: named by position, choosable.
    lines = _wrsamp(tmp_path, "un", np.stack([_ecg_like(), 2 * _ecg_like()], axis=1),
                    sig_name=["I", "II"]).with_suffix(".hea")  # fmt: skip
    text = [" ".join(ln.split()[:-1]) if k else ln
            for k, ln in enumerate(lines.read_text().splitlines())]  # fmt: skip
    lines.write_text("\n".join(text) + "\n")
    assert list_leads(tmp_path / "un") == ["signal 1", "signal 2"]
    with pytest.raises(RecordError, match="has leads signal 1, signal 2 but none is II or I"):
        read_record(tmp_path / "un")
    rec = read_record(tmp_path / "un", lead="signal 2")
    np.testing.assert_allclose(rec.signal_mv, 2 * _ecg_like(), atol=2e-3)


def test_missing_wfdb_names_the_edge_extra(tmp_path, monkeypatch):
    base = _wrsamp(tmp_path, "r", _ecg_like(), sig_name=["I"])
    real_import = builtins.__import__

    def no_wfdb(name, *args, **kwargs):
        if name == "wfdb" or name.startswith("wfdb."):
            raise ImportError("No module named 'wfdb'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_wfdb)
    with pytest.raises(MissingDependencyError, match=r'pip install "anyecg-edge\[edge\]"') as ei:
        read_record(base)
    assert isinstance(ei.value, RecordError) and isinstance(ei.value, ImportError)


# --- missing / unknown -------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(RecordError, match=r"nope: no such file \(expected a WFDB record"):
        read_record(tmp_path / "nope")
    with pytest.raises(RecordError, match="no such file"):
        read_record(tmp_path / "nope.csv", fs=500)
    with pytest.raises(RecordError, match="no such file"):
        list_leads(tmp_path / "x.hea")


def test_unknown_format(tmp_path):
    p = tmp_path / "ecg.json"
    p.write_text("{}")
    with pytest.raises(RecordError, match=r"ecg.json: unknown record format '.json'"):
        read_record(p)
    with pytest.raises(RecordError, match="is a directory"):
        read_record(tmp_path)


# --- CSV ----------------------------------------------------------------------------------


def _write_csv(path: Path, header: str | None, cols: list[np.ndarray], delim=",") -> Path:
    lines = [] if header is None else [header]
    for row in zip(*cols, strict=True):
        lines.append(delim.join(f"{v:.6f}" for v in row))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_csv_with_header_and_time_column(tmp_path):
    x = _ecg_like(2500, 250)
    t = np.arange(2500) / 250
    p = _write_csv(tmp_path / "a.csv", "time,I,II", [t, x, 2 * x])
    assert list_leads(p) == ["I", "II"]
    rec = read_record(p, fs=250, lead="ii")
    assert rec.lead == "II" and rec.fs == 250.0 and rec.signal_mv.dtype == np.float32
    np.testing.assert_allclose(rec.signal_mv, 2 * x, atol=1e-5)
    assert read_record(p, fs=250).lead == "II"
    assert (
        read_record(_write_csv(tmp_path / "b.csv", "time,I,V1", [t, x, 2 * x]), fs=250).lead == "I"
    )


def test_csv_units_in_header(tmp_path):
    x = _ecg_like(1000)
    p = _write_csv(tmp_path / "u.csv", "II (uV);V1_mV", [x * 1000, x], delim=";")
    assert list_leads(p) == ["II", "V1"]
    rec = read_record(p, fs=500, lead="II")
    np.testing.assert_allclose(rec.signal_mv, x, atol=1e-5)
    assert "converted from uV" in rec.note
    np.testing.assert_allclose(read_record(p, fs=500, lead="V1").signal_mv, x, atol=1e-5)
    with pytest.raises(RecordError, match="units='V' was given but channel 'II' is stored in 'uV'"):
        read_record(p, fs=500, lead="II", units="V")


def test_csv_single_unnamed_column_and_units_argument(tmp_path):
    x = _ecg_like(1000)
    p = _write_csv(tmp_path / "one.csv", None, [x * 1000])
    assert list_leads(p) == ["unnamed"]
    rec = read_record(p, fs=500, units="uV")
    assert rec.lead == "unnamed"
    np.testing.assert_allclose(rec.signal_mv, x, atol=1e-5)
    rec = read_record(p, fs=500, lead="II", units="uV")
    assert rec.lead == "II" and "unnamed" in rec.note


def test_csv_needs_fs(tmp_path):
    p = _write_csv(tmp_path / "a.csv", "I", [_ecg_like(100)])
    with pytest.raises(RecordError, match=r"a.csv: CSV files carry no sampling rate; pass fs"):
        read_record(p)


@pytest.mark.parametrize(
    ("fs", "match"),
    [(0, "positive"), (-250, "positive"), (1e9, "not a plausible"), ("abc", "number")],
)
def test_csv_bad_fs(tmp_path, fs, match):
    p = _write_csv(tmp_path / "a.csv", "I", [_ecg_like(100)])
    with pytest.raises(RecordError, match=match):
        read_record(p, fs=fs)


def test_csv_non_numeric_cell_names_line_and_column(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("I,II\n0.1,0.2\n0.3,oops\n")
    with pytest.raises(
        RecordError, match=r"bad.csv: line 3, column 2 \('II'\): 'oops' is not a number"
    ):
        read_record(p, fs=500, lead="II")


def test_csv_decimal_commas_are_named(tmp_path):
    p = tmp_path / "eu.csv"
    p.write_text("MLII\n0,125\n-0,250\n")
    with pytest.raises(
        RecordError,
        match=r"eu.csv: line 2 has 2 cells, expected 1 \('0,125' looks like a decimal comma",
    ):
        read_record(p, fs=500)
    # Two real columns on a line of a one-column file: no such guess.
    p.write_text("MLII\n0.125\n0.1,0.2\n")
    with pytest.raises(RecordError, match=r"line 3 has 2 cells, expected 1$"):
        read_record(p, fs=500)


def test_csv_ragged_row(tmp_path):
    p = tmp_path / "rag.csv"
    p.write_text("I,II\n0.1,0.2\n0.3\n")
    with pytest.raises(RecordError, match="line 3 has 1 cells, expected 2"):
        read_record(p, fs=500)


def test_csv_all_nan_and_empty_cells(tmp_path):
    p = tmp_path / "nan.csv"
    p.write_text("I,II\n,0.2\nnan,0.3\n,0.4\n")
    with pytest.raises(RecordError, match="lead I is entirely missing"):
        read_record(p, fs=500, lead="I")
    rec = read_record(p, fs=500, lead="II")
    np.testing.assert_allclose(rec.signal_mv, [0.2, 0.3, 0.4], rtol=1e-6)
    p2 = tmp_path / "gap.csv"
    p2.write_text("# exported by a test\nI\n0.1\n\n0.3\n\n")
    rec = read_record(p2, fs=500)
    assert rec.signal_mv.shape == (3,) and np.isnan(rec.signal_mv[1])


def test_csv_structure_errors(tmp_path):
    p = tmp_path / "multi.csv"
    p.write_text("0.1,0.2\n0.3,0.4\n")
    with pytest.raises(RecordError, match="2 columns but no header row naming the leads"):
        read_record(p, fs=500)
    p = tmp_path / "empty.csv"
    p.write_text("# nothing\n\n")
    with pytest.raises(RecordError, match="CSV file is empty"):
        read_record(p, fs=500)
    p = tmp_path / "timeonly.csv"
    p.write_text("time\n0\n1\n")
    with pytest.raises(RecordError, match="names no lead columns"):
        read_record(p, fs=500)


# --- EDF ----------------------------------------------------------------------------------


def _write_edf(path: Path, channels, record_s=1.0, reserved=""):
    """Minimal EDF writer: channels = [(label, unit, fs, physical values, pmin, pmax)]."""
    ns = len(channels)
    spr = [round(fs * record_s) for _, _, fs, *_ in channels]
    n_rec = len(channels[0][3]) // spr[0]
    dmin, dmax = -32768, 32767

    def field(values, width):
        return "".join(f"{v:<{width}}"[:width] for v in values)

    head = (
        f"{'0':<8}{'test':<80}{'test':<80}{'01.01.25':<8}{'00.00.00':<8}"
        f"{256 * (ns + 1):<8}{reserved:<44}{n_rec:<8}{record_s:<8g}{ns:<4}"
    )
    head += field([c[0] for c in channels], 16) + field([""] * ns, 80)
    head += field([c[1] for c in channels], 8)
    head += field([f"{c[4]:g}" for c in channels], 8) + field([f"{c[5]:g}" for c in channels], 8)
    head += field([dmin] * ns, 8) + field([dmax] * ns, 8) + field([""] * ns, 80)
    head += field(spr, 8) + field([""] * ns, 32)
    assert len(head) == 256 * (ns + 1)
    body = bytearray()
    digital = []
    for (_, _, _, vals, pmin, pmax), _n in zip(channels, spr, strict=True):
        d = np.round((np.asarray(vals) - pmin) / (pmax - pmin) * (dmax - dmin) + dmin)
        digital.append(np.clip(d, dmin, dmax).astype("<i2"))
    for r in range(n_rec):
        for d, n in zip(digital, spr, strict=True):
            body += d[r * n : (r + 1) * n].tobytes()
    path.write_bytes(head.encode("latin-1") + bytes(body))
    return path


def test_edf_mixed_rates_units_and_labels(tmp_path):
    x_mv = _ecg_like(5000, 500)
    resp = np.sin(np.arange(250) / 10.0)
    p = _write_edf(
        tmp_path / "r.edf",
        [
            ("ECG I", "uV", 500, x_mv * 1000, -5000, 5000),
            ("Resp", "mV", 25, resp, -2, 2),
            ("ECG II", "mV", 500, 2 * x_mv, -5, 5),
        ],
    )
    assert list_leads(p) == ["ECG I", "Resp", "ECG II"]
    rec = read_record(p, lead="I")
    assert rec.lead == "ECG I" and rec.fs == 500.0 and rec.signal_mv.shape == (5000,)
    step_mv = 10.0 / 65535  # 10 mV range over 16 bits
    np.testing.assert_allclose(rec.signal_mv, x_mv, atol=step_mv)
    rec2 = read_record(p, lead="mlii")  # MIT-style alias finds "ECG II"
    np.testing.assert_allclose(rec2.signal_mv, 2 * x_mv, atol=step_mv)
    assert read_record(p).lead == "ECG II"  # the lab models' training lead first
    # A 25 Hz channel cannot hold an ECG: refused, naming the rate.
    with pytest.raises(RecordError, match="fs=25 Hz is not a plausible ECG sampling rate"):
        read_record(p, lead="resp")
    with pytest.raises(RecordError, match="fs=250 Hz was given but the file header says 500 Hz"):
        read_record(p, lead="I", fs=250)


def test_edf_refuses_discontinuous_and_garbage(tmp_path):
    x = _ecg_like(1000)
    p = _write_edf(tmp_path / "d.edf", [("I", "mV", 500, x, -5, 5)], reserved="EDF+D")
    with pytest.raises(RecordError, match="discontinuous EDF"):
        read_record(p)
    g = tmp_path / "g.edf"
    g.write_bytes(b"not an edf")
    with pytest.raises(RecordError, match="g.edf: too short for an EDF header"):
        read_record(g)
    # 5 kB of noise: named as not EDF by its version field, not by the first number
    # field the parser tripped on ("invalid literal for int()...").
    g.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(RecordError, match=r"g.edf: not an EDF file \(version field .*expected '0'"):
        read_record(g)


def test_edf_cut_short_is_read_and_said(tmp_path):
    """A recording cut by a crash: the complete data records are read and the note (and
    log) says how many of the declared ones there are."""
    x = _ecg_like(12 * 500)
    p = _write_edf(tmp_path / "cut.edf", [("II", "mV", 500, x, -5, 5)])
    whole = read_record(p)
    assert whole.signal_mv.size == 12 * 500 and "cut short" not in whole.note
    data = p.read_bytes()
    p.write_bytes(data[: len(data) - 2 * 500 * 3 - 7])  # 3 records and a piece gone
    rec = read_record(p)
    assert rec.signal_mv.size == 8 * 500
    np.testing.assert_array_equal(rec.signal_mv, whole.signal_mv[: 8 * 500])
    assert "holds 8 of the 12 data records its header declares (8 of 12 s): cut short" in rec.note


def test_edf_unknown_units(tmp_path):
    p = _write_edf(tmp_path / "u.edf", [("I", "degC", 500, _ecg_like(1000), -5, 5)])
    with pytest.raises(RecordError, match="has units 'degC'"):
        read_record(p)
