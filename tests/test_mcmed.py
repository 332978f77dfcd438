"""MC-MED reader: exact far-future dates, labs.csv quirks, splits, WFDB segments."""

from __future__ import annotations

import csv
import datetime as dt
import os

import numpy as np
import pytest
from anyecg_edge.training.data import mcmed
from anyecg_edge.training.data.mcmed import MCMEDError

from anyecg_edge.io import read_record

EPOCH = dt.datetime(1970, 1, 1)


def _secs(d: dt.datetime) -> int:
    return int((d - EPOCH).total_seconds())


# ----------------------------------------------------------------------------- dates


def test_dates_beyond_2262_parse_exactly_at_second_resolution():
    texts = [
        "2205-01-01 00:00:00",
        "2262-04-11 23:47:16",  # datetime64[ns]'s last second
        "2262-04-11 23:47:17",  # one past it
        "2295-12-31 23:59:59",
        "2271-03-04T13:45:02",
        "2240-05-12 13:45:00.999",  # sub-second part is dropped, not rounded
    ]
    out = mcmed.parse_datetimes(texts, file="x.csv", column="Order_time")
    assert out.dtype == np.dtype("datetime64[s]")
    want = [
        dt.datetime(2205, 1, 1),
        dt.datetime(2262, 4, 11, 23, 47, 16),
        dt.datetime(2262, 4, 11, 23, 47, 17),
        dt.datetime(2295, 12, 31, 23, 59, 59),
        dt.datetime(2271, 3, 4, 13, 45, 2),
        dt.datetime(2240, 5, 12, 13, 45, 0),
    ]
    assert out.astype(np.int64).tolist() == [_secs(w) for w in want]


def test_dates_us_format_fallback_and_missing_cells():
    out = mcmed.parse_datetimes(
        ["05/12/2240 13:45", "", None, "12/31/2290 23:59:59"], file="f.csv", column="T"
    )
    assert out[0] == np.datetime64("2240-05-12T13:45:00")
    assert np.isnat(out[1]) and np.isnat(out[2])
    assert out[3] == np.datetime64("2290-12-31T23:59:59")


def test_bad_date_is_an_error_naming_file_line_and_column():
    with pytest.raises(MCMEDError, match=r"labs\.csv: line 4, column Result_time: .*'soon'"):
        mcmed.parse_datetimes(
            ["2240-01-01 00:00:00", "2240-01-01 00:00:01", "soon"],
            file="labs.csv",
            column="Result_time",
            first_line=2,
        )
    with pytest.raises(MCMEDError, match="line 3, column Arrival_time: empty date"):
        mcmed.parse_datetimes(
            ["2240-01-01", ""], file="v.csv", column="Arrival_time", allow_missing=False
        )
    bad: list[int] = []
    out = mcmed.parse_datetimes(["2240-01-01", "2240-13-45 99:00"], file="f", column="c", bad=bad)
    assert bad == [1] and np.isnat(out[1]) and not np.isnat(out[0])


# ----------------------------------------------------------------------------- tables


def _write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


LAB_HEADER = [
    "CSN", "Order_time", "Result_time", "Display_name", "Abnormal", "Component_name",
    "Component_result", "Component_value", "Component_units", "Component_abnormal",
    "Component_nml_low", "Component_nml_high",
]  # fmt: skip


def _lab(csn, order, result, name, value):
    return [csn, order, result, "PANEL", "N", name, value, value, "", "", "", ""]


def test_read_visits_keeps_exact_times_and_rejects_duplicates(tmp_path):
    _write_csv(
        tmp_path / "visits.csv",
        ["MRN", "CSN", "Age", "Arrival_time", "Departure_time"],
        [
            ["77", "1001", "50", "2290-07-04 10:00:00", "2290-07-04 14:30:05"],
            ["78", "1002", "61", "2210-01-02 03:04:05", ""],
        ],
    )
    v = mcmed.read_visits(tmp_path)
    assert v["CSN"].tolist() == ["1001", "1002"]
    assert v["Arrival_time"].dtype == np.dtype("datetime64[s]")
    assert v["Arrival_time"].iat[0] == np.datetime64("2290-07-04T10:00:00")
    assert v["Departure_time"].iat[0] == np.datetime64("2290-07-04T14:30:05")
    assert v["Departure_time"].isna().iat[1]  # empty cell: missing, explicitly NaT
    _write_csv(
        tmp_path / "visits.csv",
        ["MRN", "CSN", "Arrival_time"],
        [["1", "5", "2240-01-01"], ["2", "5", "2240-01-02"]],
    )
    with pytest.raises(MCMEDError, match="line 3, column CSN: duplicate CSN '5'"):
        mcmed.read_visits(tmp_path)
    _write_csv(tmp_path / "visits.csv", ["CSN", "Arrival_time"], [["5", "2240-01-01"]])
    with pytest.raises(MCMEDError, match=r"visits\.csv: missing column\(s\) MRN"):
        mcmed.read_visits(tmp_path)


def test_read_labs_handles_mcmed_quirks_in_any_chunking(tmp_path):
    o, r = "2280-02-03 10:00:00", "2280-02-03 10:45:00"
    rows = [
        _lab("1001", o, r, "POTASSIUM", ">10.0"),  # censored, still abnormal
        _lab("1001", o, r, "HEMOGLOBIN", "12.3 (H)"),  # synonym + flag
        _lab("1001", o, r, "HEMOGLOBIN (HGB)", "9.1"),
        _lab("1001", o, r, "SODIUM", "Canceled"),
        _lab("1001", o, r, "POC:LACTATE, ISTAT", "3.3"),  # a comma inside the name
        _lab("1001", o, r, "SMEAR REVIEW,\nCOMMENT", "See comment"),  # newline in a name
        _lab("1001", o, r, "TROPONIN I", "<0.01"),
        _lab("1001", o, r, "CREATININE", "<5"),  # straddles the 1.3 upper bound
        _lab("1001", o, r, "GLUCOSE", "lots"),
        _lab("1002", "", r, "SODIUM", "140"),  # no order time
        _lab("1002", o, "", "SODIUM", "129"),  # no result time: kept, counted
        _lab("1002", r, o, "SODIUM", "140"),  # result before order
    ]
    _write_csv(tmp_path / "labs.csv", LAB_HEADER, rows)
    full, st = mcmed.read_labs(tmp_path)
    small, st2 = mcmed.read_labs(tmp_path, chunksize=2)
    assert full.equals(small) and st.as_dict() == st2.as_dict()
    got = list(zip(full["lab_key"], full["value"], full["censored"], full["abnormal"], strict=True))
    assert got == [
        ("potassium", 10.0, ">", True),
        ("hemoglobin", 12.3, "", False),  # the flag is the site's; targets use the catalog
        ("hemoglobin", 9.1, "", True),
        ("lactate", 3.3, "", True),
        ("troponin_i", 0.01, "<", False),
        ("sodium", 129.0, "", True),
    ]
    assert full["Order_time"].iat[0] == np.datetime64("2280-02-03T10:00:00")
    assert full["Result_time"].isna().iat[-1]
    d = st.as_dict()
    assert d["rows"] == 12 and d["kept"] == 6 and d["missing_result_time"] == 1
    assert d["skipped"] == {
        "canceled": 1,
        "censored value straddles the reference bound": 1,
        "missing Order_time": 1,
        "non-numeric value": 1,
        "result before order": 1,
        "unknown component": 1,
    }
    assert d["unknown_components_top"] == {"SMEAR REVIEW, COMMENT": 1}


def test_read_labs_bad_date_error_or_counted_skip(tmp_path):
    rows = [_lab("1", "2240-01-01 00:00", "2240-01-01 01:00", "SODIUM", "140")] * 3
    rows.append(_lab("1", "2240-01-01 00:00", "tomorrow", "SODIUM", "140"))
    _write_csv(tmp_path / "labs.csv", LAB_HEADER, rows)
    with pytest.raises(MCMEDError, match=r"labs\.csv: line 5, column Result_time"):
        mcmed.read_labs(tmp_path, chunksize=2)
    df, st = mcmed.read_labs(tmp_path, on_bad_date="skip")
    assert len(df) == 3 and st.skipped["bad Result_time"] == 1


def test_read_splits(tmp_path):
    assert mcmed.read_splits(tmp_path) is None
    (tmp_path / "split_random_train.csv").write_text("1001\n1002\n")
    (tmp_path / "split_random_test.csv").write_text("1003\n")
    assert mcmed.read_splits(tmp_path) == {"1001": "train", "1002": "train", "1003": "test"}
    (tmp_path / "split_random_val.csv").write_text("CSN\n")
    with pytest.raises(MCMEDError, match="line 1: 'CSN' is not a CSN"):
        mcmed.read_splits(tmp_path)
    (tmp_path / "split_random_val.csv").write_text("1003\n")
    with pytest.raises(MCMEDError, match="CSN 1003 is also in the"):
        mcmed.read_splits(tmp_path)


# ----------------------------------------------------------------------------- waveforms


def _write_segment(root, csn, seg, x_mv, start: dt.datetime, fs=500):
    import wfdb

    d = mcmed.waveform_dir(root, csn)
    d.mkdir(parents=True, exist_ok=True)
    wfdb.wrsamp(
        f"{csn}_{seg}", fs=fs, units=["mV"], sig_name=["II"],
        d_signal=np.round(x_mv * 1000).astype(np.int16)[:, None], fmt=["16"],
        adc_gain=[1000.0], baseline=[0], base_time=start.time(), base_date=start.date(),
        write_dir=str(d),
    )  # fmt: skip
    return d / f"{csn}_{seg}"


def test_segments_listing_start_times_and_fast_reader(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.5, 2000)
    x[5] = -32.768  # WFDB's invalid-sample code in format 16 -> NaN
    start = dt.datetime(2271, 3, 4, 13, 45, 2)
    _write_segment(tmp_path, "99912345", 2, x, start + dt.timedelta(minutes=5))
    rec = _write_segment(tmp_path, "99912345", 1, x, start)
    (rec.parent / "notes.hea").write_text("junk\n")
    segs, errs = mcmed.list_segments(tmp_path, "99912345")
    assert [s.seg for s in segs] == [1, 2]
    assert segs[0].start == np.datetime64("2271-03-04T13:45:02.000")
    assert segs[1].start - segs[0].start == np.timedelta64(300_000, "ms")
    assert segs[0].fs == 500.0 and segs[0].n_samples == 2000
    assert len(errs) == 1 and "unexpected record name" in errs[0][1]
    y = mcmed.read_segment(segs[0])
    ref = read_record(str(rec) + ".hea", lead="II").signal_mv
    assert y.dtype == np.float32 and np.isnan(y[5])
    np.testing.assert_array_equal(y, ref)  # fast path == the general reader, bit for bit
    assert mcmed.list_segments(tmp_path, "12345678") == ([], [])


def test_truncated_dat_and_wrong_fs_are_clear_errors(tmp_path):
    x = np.sin(np.arange(3000) / 30.0)
    rec = _write_segment(tmp_path, "5550001", 1, x, dt.datetime(2250, 1, 1))
    os.truncate(rec.with_suffix(".dat"), 2000)
    (info,), _ = mcmed.list_segments(tmp_path, "5550001")
    with pytest.raises(MCMEDError, match=r"5550001_1\.dat: truncated: holds 1000 samples, "
                       "header says 3000") as e:  # fmt: skip
        mcmed.read_segment(info)
    assert str(e.value) == mcmed.check_segment(info)
    os.remove(rec.with_suffix(".dat"))
    with pytest.raises(MCMEDError, match=r"5550001_1\.dat: data file not found") as e:
        mcmed.read_segment(info)
    assert str(e.value) == mcmed.check_segment(info)
    rec = _write_segment(tmp_path, "5550002", 1, x, dt.datetime(2250, 1, 1), fs=250)
    (info,), _ = mcmed.list_segments(tmp_path, "5550002")
    with pytest.raises(MCMEDError, match=r"fs 250 Hz, expected 500 Hz") as e:
        mcmed.read_segment(info)
    # read_segment raises exactly check_segment's problem (the corpus classifies the text).
    assert str(e.value) == mcmed.check_segment(info)
    hea = rec.with_suffix(".hea")
    hea.write_text(hea.read_text().replace(" 00:00:00 01/01/2250", ""))
    with pytest.raises(MCMEDError, match="no base_time/base_date"):
        mcmed.read_segment_header(hea)
