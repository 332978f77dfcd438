"""A synthetic cohort in MC-MED's layout, with planted, physiologically motivated lab effects.

MC-MED is credentialed, so the reader and the corpus builder are exercised on this
cohort instead. It writes exactly what :mod:`anyecg_edge.training.data.mcmed` reads:

* ``visits.csv`` (MRN, CSN, Age, Gender, ..., Arrival_time, Roomed_time, Dispo_time,
  Departure_time), dates in the shifted years 2205-2295, several visits per patient;
* ``labs.csv`` with MC-MED's columns, dirty ``Component_value`` strings ('>8.0',
  '3.1 (L)', 'Canceled'), synonyms ('HEMOGLOBIN' vs 'HEMOGLOBIN (HGB)'), a component
  name with a comma and one with a newline (quoted CSV), missing panels;
* ``split_{random,chrono}_{train,val,test}.csv`` (no header, one CSN per line; the
  random split is grouped by MRN, the chrono one is by arrival and so, like a real
  chronological split, can put one patient on both sides);
* WFDB lead-II records ``waveforms/{CSN[-3:]}/{CSN}/II/{CSN}_{seg}.hea/.dat`` at 500 Hz,
  16-bit, mV, several segments per visit with gaps, the start in base_date/base_time;
* ``truth.json``: the planted labs (Component_names and catalog keys), effect sizes,
  the planted defects, counts.

ECG model: every beat is a sum of Gaussian waves (P, Q, R, S, asymmetric T, U) placed
relative to the R peak; a per-visit template is stamped at each beat with heart-rate
variability and respiratory amplitude modulation, then baseline wander, white noise,
mains hum, EMG bursts, motion artefacts and lead-off flat lines are added.

Planted effects act on the visit's *true* lab state (each measured value is that state
plus assay noise); all other labs are drawn independently of everything, so they carry
no signal. Effects (see ``EFFECTS``), chosen to be clear to a small CNN and to follow
the textbook ECG signs:

* potassium: hyperkalaemia -> tall, narrow (peaked) T waves and a wider QRS;
  hypokalaemia -> flat T waves and a U wave;
* calcium: QTc shortens as calcium rises (hypocalcaemia -> long ST/QT);
* haemoglobin: anaemia -> sinus tachycardia;
* magnesium: hypomagnesaemia -> longer PR interval (AV-conduction slowing), a small
  T flattening.

Sodium, glucose, creatinine, BUN, chloride, WBC, platelets, albumin, lactate: none.

Modules: `synth_labs` (lab specs, effects, a visit's lab rows), `synth_ecg` (beats, a
recording, WFDB files), this one (patients, visits, splits, defects, the staged folder).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from anyecg_edge.training.data.synth_ecg import FS_HZ, _Patient, _write_recordings
from anyecg_edge.training.data.synth_labs import (
    _LAB_COLUMNS,
    EFFECTS,
    LAB_SPECS,
    LabSpec,
    _catalog_ranges,
    _draw_state,
    _fmt_time,
    _visit_labs,
)

from anyecg_edge.fileio import write_json

__all__ = ["FS_HZ", "EFFECTS", "LAB_SPECS", "LabSpec", "SynthError", "synth_cohort"]

# Years are shifted in MC-MED (DESIGN.md section 4); spanning 2205-2295 puts about
# a third of the visits past datetime64[ns]'s limit (2262-04-11).
_YEAR_MIN, _YEAR_MAX = 2205, 2295

# Visit mix.
_P_NO_WAVEFORM = 0.25  # MC-MED: 83,623 of 118,385 visits have waveforms
_P_NO_LABS = 0.12
_VISITS_PER_PATIENT = 1.35
_YEAR_S = 365.25 * 86_400
_PATIENT_SPAN_S = int(3 * _YEAR_S)  # one patient's visits fall within ~3 years


def _year_seconds(year: int) -> int:
    return int(np.datetime64(f"{year:04d}-01-01T00:00:00", "s").astype(np.int64))


def synth_cohort(
    out_dir: str | os.PathLike,
    n_visits: int = 100,
    seed: int = 0,
    *,
    segments_per_visit: tuple[int, int] = (2, 4),
    segment_s: tuple[float, float] = (60.0, 150.0),
    defects: bool = True,
) -> dict[str, Any]:
    """Write a synthetic MC-MED-shaped cohort of ``n_visits`` visits into ``out_dir``.

    Deterministic for ``seed``. ``segments_per_visit`` (inclusive range) and
    ``segment_s`` (seconds, uniform) size each visit's lead-II recording; the defaults
    give ~5 min (~30 ten-second windows) per visit with waveforms. ``defects`` plants
    one truncated .dat and one header with a wrong fs (listed in truth.json) so a build
    has bad records to skip. Returns the truth dict (also written to truth.json).
    """
    n_visits = int(n_visits)
    if n_visits < 1:
        raise ValueError(f"n_visits must be >= 1, got {n_visits}")
    lo_seg, hi_seg = (int(v) for v in segments_per_visit)
    if not 1 <= lo_seg <= hi_seg:
        raise ValueError(
            f"segments_per_visit must be (min, max) with 1 <= min <= max, "
            f"got {segments_per_visit!r}"
        )
    if not 10.0 <= segment_s[0] <= segment_s[1]:
        raise ValueError(
            f"segment_s must be (min, max) seconds with 10 <= min <= max, got {segment_s!r}"
        )
    with _staged_cohort(Path(out_dir)) as stage:
        return _write_cohort(
            stage, n_visits, int(seed), (lo_seg, hi_seg), segment_s, defects=defects
        )


#: What a cohort folder holds (a folder holding anything else is not replaced).
_COHORT_NAMES = frozenset(
    {"visits.csv", "labs.csv", "waveforms", "truth.json"}
    | {f"split_{k}_{s}.csv" for k in ("random", "chrono") for s in ("train", "val", "test")}
)


class SynthError(ValueError):
    """The output folder cannot take a cohort (it holds other files, or is not a folder)."""


def _lock(fd: int, blocking: bool) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    return True


def _sweep_stale_stages(out: Path) -> None:
    """Remove what killed writers of ``out`` left beside it (their staging folders, or the
    previous cohort set aside by a swap that did not finish): a folder no live writer locks."""
    import glob
    import shutil

    for p in out.parent.glob(f".{glob.escape(out.name)}.synth-*"):
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            continue
        try:
            if _lock(fd, blocking=False):
                shutil.rmtree(p, ignore_errors=True)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _staged_cohort(out: Path) -> Iterator[Path]:
    """A private folder beside ``out`` to write the cohort into, renamed to ``out`` only once
    the cohort is complete. A kill or an error mid-way leaves ``out`` as it was (absent, or
    the previous cohort): never a half cohort that a later `data build` would take for a
    whole one (truth.json, the last file written, used to be the only sign)."""
    import shutil
    import tempfile

    if out.exists():
        if not out.is_dir():
            raise SynthError(f"{out}: not a folder (a cohort is a folder)")
        foreign = sorted(p.name for p in out.iterdir() if p.name not in _COHORT_NAMES)
        if foreign:
            raise SynthError(
                f"{out}: holds files that are not part of a synthetic cohort ({foreign[0]}"
                f"{f' and {len(foreign) - 1} more' if len(foreign) > 1 else ''}); choose a "
                "new or empty folder"
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    _sweep_stale_stages(out)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.synth-", dir=out.parent))
    fd = os.open(stage, os.O_RDONLY)
    try:
        _lock(fd, blocking=True)  # ours alone: a concurrent synth's sweep leaves it be
        try:
            yield stage
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        old = None
        if out.exists() and any(out.iterdir()):
            # Set the previous cohort aside under the staging prefix: a kill between the two
            # renames leaves no cohort (the next run sweeps the old one), never a mixed one.
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.synth-", dir=out.parent))
            os.rmdir(old)
            os.rename(out, old)
        elif out.exists():
            os.rmdir(out)
        os.rename(stage, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        os.close(fd)


def _write_cohort(
    out: Path,
    n_visits: int,
    seed: int,
    segments_per_visit: tuple[int, int],
    segment_s: tuple[float, float],
    *,
    defects: bool,
) -> dict[str, Any]:
    ranges = _catalog_ranges()
    specs = list(LAB_SPECS)
    lab_range = {
        s.component_name: ranges.get(s.component_name, (None, s.low, s.high))[1:] for s in specs
    }

    ss = np.random.SeedSequence(int(seed))
    cohort_rng = np.random.default_rng(ss.spawn(1)[0])
    n_patients = max(1, int(round(n_visits / _VISITS_PER_PATIENT)))
    # Every patient gets one visit; the rest go to random patients (some get 2-4).
    owner = np.concatenate(
        [np.arange(n_patients), cohort_rng.integers(0, n_patients, n_visits - n_patients)]
    )
    cohort_rng.shuffle(owner)
    mrns = [
        str(v) for v in 1_000_000 + np.sort(cohort_rng.choice(8_999_999, n_patients, replace=False))
    ]
    csns = [
        str(v) for v in 10_000_000 + np.sort(cohort_rng.choice(89_999_999, n_visits, replace=False))
    ]
    patients = _make_patients(cohort_rng, mrns)
    visit_rows, lab_rows = [], []
    n_segments = 0
    wf_visits: list[tuple[str, int, bool]] = []  # (csn, n segments, has lab results)
    visit_seeds = ss.spawn(n_visits + 1)[1:]
    for v in range(n_visits):
        rng = np.random.default_rng(visit_seeds[v])
        csn = csns[v]
        pat = patients[int(owner[v])]
        row, roomed = _visit_row(rng, pat, csn)
        visit_rows.append(row)
        state = {s.component_name: _draw_state(rng, s, *lab_range[s.component_name]) for s in specs}
        has_labs = rng.random() >= _P_NO_LABS
        panels: list[str] = []
        order0 = roomed + int(rng.uniform(0, 30) * 60)
        if has_labs:
            panels, rows = _visit_labs(rng, csn, order0, state, specs, lab_range)
            lab_rows += rows
        if rng.random() < _P_NO_WAVEFORM:
            continue
        rec_dir = out / "waveforms" / csn[-3:] / csn / "II"
        n_seg = _write_recordings(
            rec_dir, csn, pat, state, order0, rng, segments_per_visit, segment_s
        )
        n_segments += n_seg
        wf_visits.append((csn, n_seg, bool(has_labs and panels)))

    import pandas as pd

    pd.DataFrame(visit_rows).to_csv(out / "visits.csv", index=False)
    pd.DataFrame(lab_rows, columns=list(_LAB_COLUMNS)).to_csv(out / "labs.csv", index=False)
    _write_splits(out, visit_rows, np.random.default_rng(ss.spawn(1)[0]))

    defect_list = _plant_defects(out, wf_visits) if defects else []
    n_canceled = sum(r["Component_value"] == "Canceled" for r in lab_rows)
    truth = {
        "seed": int(seed),
        "n_visits": n_visits,
        "n_patients": n_patients,
        "n_visits_with_waveforms": len(wf_visits),
        "n_segments": n_segments,
        "n_lab_rows": len(lab_rows),
        "n_canceled": int(n_canceled),
        "fs": FS_HZ,
        **_truth_labs(specs, ranges, lab_range),
        "defects": defect_list,
    }
    write_json(out / "truth.json", truth)
    return truth


def _make_patients(rng: np.random.Generator, mrns: list[str]) -> list[_Patient]:
    """One baseline per patient (rate, amplitudes, widths, noise), drawn in MRN order."""
    t_lo, t_hi = _year_seconds(_YEAR_MIN), _year_seconds(_YEAR_MAX + 1) - 86_400
    return [
        _Patient(
            mrn=mrn,
            sex=str(rng.choice(["F", "M"])),
            age0=float(rng.uniform(18, 88)),
            t0=int(rng.integers(t_lo, t_hi - _PATIENT_SPAN_S)),
            hr_base=float(rng.normal(70.0, 6.0)),
            r_amp=float(np.clip(rng.normal(1.1, 0.25), 0.4, 2.2)),
            t_amp=float(np.clip(rng.normal(0.28, 0.05), 0.12, 0.5)),
            p_amp=float(np.clip(rng.normal(0.12, 0.025), 0.05, 0.25)),
            qrs_w=float(np.clip(rng.normal(1.0, 0.07), 0.8, 1.25)),
            t_w=float(np.clip(rng.normal(0.045, 0.004), 0.035, 0.06)),
            noise=float(rng.uniform(0.008, 0.035)),
        )
        for mrn in mrns
    ]


def _visit_row(rng: np.random.Generator, pat: _Patient, csn: str) -> tuple[dict[str, Any], int]:
    """The visit's ``visits.csv`` row and its roomed time (seconds)."""
    arrival = pat.t0 + int(rng.integers(0, _PATIENT_SPAN_S))
    roomed = arrival + int(rng.uniform(5, 40) * 60)
    dispo = roomed + int(rng.uniform(1.5, 6.0) * 3600)
    departure = dispo + int(rng.uniform(10, 120) * 60)
    row = {
        "MRN": pat.mrn,
        "CSN": csn,
        "Age": int(pat.age0 + (arrival - pat.t0) / _YEAR_S),
        "Gender": pat.sex,
        "Race": str(rng.choice(["White", "Asian", "Black", "Other"])),
        "Ethnicity": str(rng.choice(["Non-Hispanic", "Hispanic"])),
        "Triage_acuity": f"{int(rng.integers(1, 6))}-ESI",
        "CC": str(
            rng.choice(
                [
                    "CHEST PAIN",
                    "SHORTNESS OF BREATH",
                    "WEAKNESS",
                    "ABDOMINAL PAIN",
                    "SYNCOPE, NEAR SYNCOPE",
                ]
            )
        ),
        "ED_dispo": str(rng.choice(["Discharge", "Admit", "Observation"])),
        "Arrival_time": _fmt_time(arrival),
        "Roomed_time": _fmt_time(roomed),
        "Dispo_time": _fmt_time(dispo),
        "Departure_time": _fmt_time(departure),
    }
    return row, roomed


def _truth_labs(
    specs: list[LabSpec],
    ranges: dict[str, tuple[str, float, float]],
    lab_range: dict[str, tuple[float, float]],
) -> dict[str, Any]:
    """truth.json's lab part: planted and unplanted labs (names, catalog keys), effects."""
    return {
        "planted_labs": [s.component_name for s in specs if s.planted],
        "planted_keys": [
            ranges[s.component_name][0] for s in specs if s.planted and s.component_name in ranges
        ],
        "unplanted_labs": [s.component_name for s in specs if not s.planted],
        "unplanted_keys": [
            ranges[s.component_name][0]
            for s in specs
            if not s.planted and s.component_name in ranges
        ],
        "effects": EFFECTS,
        "abnormal_fractions": {s.component_name: {"low": s.p_low, "high": s.p_high} for s in specs},
        "ranges": {name: list(r) for name, r in lab_range.items()},
    }


def _write_splits(out: Path, visit_rows: list[dict], rng: np.random.Generator) -> None:
    # Random: 80/10/10 grouped by MRN, like MC-MED's shipped random split.
    mrns = sorted({r["MRN"] for r in visit_rows})
    perm = rng.permutation(len(mrns))
    n_tr, n_va = int(round(0.8 * len(mrns))), int(round(0.1 * len(mrns)))
    side = {}
    for rank, i in enumerate(perm):
        side[mrns[i]] = "train" if rank < n_tr else ("val" if rank < n_tr + n_va else "test")
    # Chrono: by arrival (a patient can land on both sides, as in a real chrono split).
    order = sorted(range(len(visit_rows)), key=lambda i: visit_rows[i]["Arrival_time"])
    n = len(order)
    chrono = {}
    for rank, i in enumerate(order):
        chrono[visit_rows[i]["CSN"]] = (
            "train" if rank < 0.8 * n else "val" if rank < 0.9 * n else "test"
        )
    for name in ("train", "val", "test"):
        with open(out / f"split_random_{name}.csv", "w") as f:
            f.writelines(r["CSN"] + "\n" for r in visit_rows if side[r["MRN"]] == name)
        with open(out / f"split_chrono_{name}.csv", "w") as f:
            f.writelines(r["CSN"] + "\n" for r in visit_rows if chrono[r["CSN"]] == name)


def _plant_defects(out: Path, wf_visits: list[tuple[str, int, bool]]) -> list[dict]:
    """Truncate one .dat and mislabel one header's fs, in two different visits."""
    # Visits with labs, so that a corpus build looks at (and reports) these records.
    multi = [c for c, n, labs in wf_visits if n >= 2 and labs]
    if len(multi) < 2:
        return []
    defects = []
    csn = multi[0]
    rec = out / "waveforms" / csn[-3:] / csn / "II" / f"{csn}_2"
    dat = rec.with_suffix(".dat")
    os.truncate(dat, dat.stat().st_size * 2 // 5)
    defects.append({"kind": "truncated_dat", "csn": csn, "record": str(rec.relative_to(out))})
    csn = multi[-1]
    rec = out / "waveforms" / csn[-3:] / csn / "II" / f"{csn}_1"
    hea = rec.with_suffix(".hea")
    lines = hea.read_text().splitlines(keepends=True)
    parts = lines[0].split(" ")
    parts[2] = "250"  # the file holds 500 Hz samples
    lines[0] = " ".join(parts)
    hea.write_text("".join(lines))
    defects.append(
        {"kind": "wrong_fs", "csn": csn, "record": str(rec.relative_to(out)), "header_fs": 250}
    )
    return defects
