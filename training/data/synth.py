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
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from anyecg_edge.fileio import write_json

__all__ = ["FS_HZ", "EFFECTS", "LAB_SPECS", "LabSpec", "SynthError", "synth_cohort"]

#: MC-MED's ECG rate (lead II).
FS_HZ = 500

# Years are shifted in MC-MED (DESIGN.md section 4); spanning 2205-2295 puts about
# a third of the visits past datetime64[ns]'s limit (2262-04-11).
_YEAR_MIN, _YEAR_MAX = 2205, 2295
_ADC_GAIN = 1000.0  # adu per mV: 1 uV resolution, +-32.7 mV range in 16 bits


@dataclass(frozen=True)
class LabSpec:
    """How one lab is generated. ``low``/``high`` are fallbacks: the catalog's range wins."""

    component_name: str
    panel: str
    units: str
    low: float
    high: float
    p_low: float  # fraction of visits whose true state is below the range
    p_high: float  # ... above the range
    decimals: int
    synonyms: tuple[str, ...] = ()  # other Component_names written for the same analyte
    report_low: float | None = None  # values below are reported as '<report_low'
    report_high: float | None = None  # values above are reported as '>report_high'
    planted: bool = False


LAB_SPECS: tuple[LabSpec, ...] = (
    LabSpec(
        "POTASSIUM",
        "BASIC METABOLIC PANEL",
        "mmol/L",
        3.5,
        5.1,
        0.10,
        0.25,
        1,
        report_high=7.5,
        planted=True,
    ),
    LabSpec("CALCIUM", "BASIC METABOLIC PANEL", "mg/dL", 8.5, 10.5, 0.28, 0.06, 1, planted=True),
    LabSpec(
        "HEMOGLOBIN (HGB)",
        "CBC WITH DIFFERENTIAL",
        "g/dL",
        12.0,
        17.5,
        0.32,
        0.02,
        1,
        synonyms=("HEMOGLOBIN",),
        planted=True,
    ),
    LabSpec("MAGNESIUM", "MAGNESIUM", "mg/dL", 1.7, 2.4, 0.30, 0.04, 1, planted=True),
    LabSpec("SODIUM", "BASIC METABOLIC PANEL", "mmol/L", 135.0, 145.0, 0.15, 0.06, 0),
    LabSpec("CHLORIDE", "BASIC METABOLIC PANEL", "mmol/L", 98.0, 107.0, 0.10, 0.10, 0),
    LabSpec(
        "GLUCOSE", "BASIC METABOLIC PANEL", "mg/dL", 70.0, 99.0, 0.04, 0.35, 0, report_high=600.0
    ),
    LabSpec(
        "BLOOD UREA NITROGEN (BUN)",
        "BASIC METABOLIC PANEL",
        "mg/dL",
        7.0,
        20.0,
        0.03,
        0.25,
        0,
        synonyms=("BUN",),
    ),
    LabSpec(
        "CREATININE", "BASIC METABOLIC PANEL", "mg/dL", 0.6, 1.3, 0.05, 0.22, 2, report_low=0.15
    ),
    LabSpec("WBC", "CBC WITH DIFFERENTIAL", "K/uL", 4.0, 11.0, 0.06, 0.22, 1),
    LabSpec(
        "PLATELET COUNT (PLT)",
        "CBC WITH DIFFERENTIAL",
        "K/uL",
        150.0,
        400.0,
        0.10,
        0.05,
        0,
        synonyms=("PLATELET COUNT",),
    ),
    LabSpec("ALBUMIN", "HEPATIC FUNCTION PANEL", "g/dL", 3.5, 5.0, 0.25, 0.01, 1),
    LabSpec("TROPONIN I", "TROPONIN I", "ng/mL", 0.0, 0.04, 0.0, 0.15, 3, report_low=0.01),
    LabSpec(
        "ESTIMATED GFR (EGFR)",
        "BASIC METABOLIC PANEL",
        "mL/min/1.73m2",
        60.0,
        120.0,
        0.22,
        0.0,
        0,
        report_high=60.0,
    ),
    LabSpec(
        "LACTATE",
        "LACTATE",
        "mmol/L",
        0.5,
        2.0,
        0.0,
        0.25,
        1,
        synonyms=("LACTIC ACID", "POC:LACTATE, ISTAT"),
        report_low=0.3,
    ),
)

# Panels ordered together, with the probability that a visit with labs gets them.
_PANELS: dict[str, float] = {
    "BASIC METABOLIC PANEL": 0.92,
    "CBC WITH DIFFERENTIAL": 0.85,
    "MAGNESIUM": 0.55,
    "HEPATIC FUNCTION PANEL": 0.35,
    "LACTATE": 0.30,
    "TROPONIN I": 0.45,
}

#: Effect sizes of the planted labs on the beat model (written to truth.json).
EFFECTS: dict[str, dict[str, float]] = {
    "POTASSIUM": {
        "reference_mmol_l": 4.2,
        "t_amp_log_gain_per_mmol_l": 0.60,  # T amplitude x exp(0.60 * (K - 4.2))
        "t_width_rel_change_per_mmol_l": -0.14,  # narrower (peaked) T when K is high
        "qrs_width_rel_change_per_mmol_l_above_5_3": 0.40,
        "u_wave_mv_per_mmol_l_below_3_6": 0.15,
    },
    "CALCIUM": {
        "reference_mg_dl": 9.4,
        "qtc_ms_per_mg_dl": -45.0,  # QTc = 410 ms - 45 ms * (Ca - 9.4)
        "qtc_ms_at_reference": 410.0,
    },
    "HEMOGLOBIN (HGB)": {
        "reference_g_dl": 13.5,
        "hr_bpm_per_g_dl_below_reference": 3.8,
        "hr_bpm_per_g_dl_above_reference": 1.0,
    },
    "MAGNESIUM": {
        "reference_mg_dl": 2.0,
        "pr_ms_per_mg_dl": -150.0,  # PR = 160 ms - 150 ms * (Mg - 2.0)
        "pr_ms_at_reference": 160.0,
        "t_amp_rel_change_per_mg_dl_below_1_8": 0.08,
    },
}

# Visit mix.
_P_NO_WAVEFORM = 0.25  # MC-MED: 83,623 of 118,385 visits have waveforms
_P_NO_LABS = 0.12
_P_REPEAT_ORDER = 0.30
_P_CANCELED = 0.025
_P_FLAG_SUFFIX = 0.35  # abnormal values written as '5.9 (H)'
_P_MISSING_RESULT_TIME = 0.01
_P_LATE_SEGMENT = 0.3
_VISITS_PER_PATIENT = 1.35
_YEAR_S = 365.25 * 86_400
_PATIENT_SPAN_S = int(3 * _YEAR_S)  # one patient's visits fall within ~3 years


def _catalog_ranges() -> dict[str, tuple[str, float, float]]:
    """Component_name -> (catalog key, low, high) for the specs the catalog knows."""
    from anyecg_edge.labs import load_catalog

    catalog = load_catalog()
    out = {}
    for spec in LAB_SPECS:
        lab = catalog.lookup(spec.component_name)
        if lab is None:
            continue
        # One-sided catalog ranges (troponin: high only) keep the spec's other bound.
        low = spec.low if lab.low is None else float(lab.low)
        high = spec.high if lab.high is None else float(lab.high)
        out[spec.component_name] = (lab.key, low, high)
    return out


@dataclass
class _Patient:
    mrn: str
    sex: str
    age0: float
    t0: int  # seconds since epoch of the patient's first possible visit
    hr_base: float
    r_amp: float
    t_amp: float
    p_amp: float
    qrs_w: float
    t_w: float
    noise: float


def _draw_state(rng: np.random.Generator, spec: LabSpec, low: float, high: float) -> float:
    """True lab state: in range, or in the tail below/above it (half-normal tails)."""
    span = high - low
    u = rng.random()
    if u < spec.p_low:
        return low - abs(rng.normal(0.0, 0.35 * span)) - 0.02 * span
    if u < spec.p_low + spec.p_high:
        return high + abs(rng.normal(0.0, 0.35 * span)) + 0.02 * span
    mid = 0.5 * (low + high)
    return float(np.clip(rng.normal(mid, span / 4.0), low + 0.03 * span, high - 0.03 * span))


def _beat_template(
    *,
    fs: int,
    rr_s: float,
    r_amp: float,
    p_amp: float,
    t_amp: float,
    u_amp: float,
    qrs_w: float,
    t_w: float,
    pr_s: float,
    qtc_s: float,
    pvc: bool = False,
) -> tuple[np.ndarray, int]:
    """One beat (mV) as a sum of Gaussians; returns (template, index of the R peak)."""
    pre_s, post_s = 0.40, 0.80
    t = np.arange(-int(pre_s * fs), int(post_s * fs)) / fs
    y = np.zeros_like(t)

    def g(center: float, sigma: float, amp: float) -> None:
        y[:] += amp * np.exp(-0.5 * ((t - center) / sigma) ** 2)

    qt_s = qtc_s * math.sqrt(rr_s)  # Bazett
    if pvc:
        g(0.0, 0.030, 1.3 * r_amp)
        g(0.07, 0.030, -0.6 * r_amp)
        g(min(qt_s, 0.55) - 0.10, 0.06, -0.5 * abs(t_amp) - 0.1)
        return y, int(pre_s * fs)
    qrs_onset = -0.035 * qrs_w
    g(qrs_onset - pr_s + 0.045, 0.022, p_amp)  # P
    g(-0.022 * qrs_w, 0.008 * qrs_w, -0.10 * r_amp)  # Q
    g(0.0, 0.0085 * qrs_w, r_amp)  # R
    g(0.026 * qrs_w, 0.010 * qrs_w, -0.25 * r_amp)  # S
    # Asymmetric T: slower upstroke than downstroke; T end ~ peak + 2.2 sigma_right.
    sig_l, sig_r = 1.35 * t_w, 0.85 * t_w
    t_peak = qrs_onset + qt_s - 2.2 * sig_r
    left = t <= t_peak
    y[left] += t_amp * np.exp(-0.5 * ((t[left] - t_peak) / sig_l) ** 2)
    y[~left] += t_amp * np.exp(-0.5 * ((t[~left] - t_peak) / sig_r) ** 2)
    if u_amp > 0:
        g(t_peak + 2.2 * sig_r + 0.06, 0.035, u_amp)
    return y, int(pre_s * fs)


def _morphology(p: _Patient, state: dict[str, float], rng: np.random.Generator) -> dict:
    """Beat parameters of one visit from the patient's baseline and the planted labs."""
    k = state["POTASSIUM"]
    ca = state["CALCIUM"]
    hgb = state["HEMOGLOBIN (HGB)"]
    mg = state["MAGNESIUM"]
    ek, eca, ehb, emg = (
        EFFECTS[n] for n in ("POTASSIUM", "CALCIUM", "HEMOGLOBIN (HGB)", "MAGNESIUM")
    )
    dk = k - ek["reference_mmol_l"]
    t_gain = math.exp(ek["t_amp_log_gain_per_mmol_l"] * float(np.clip(dk, -2.0, 3.5)))
    t_width = p.t_w * float(np.clip(1.0 + ek["t_width_rel_change_per_mmol_l"] * dk, 0.45, 1.5))
    qrs_w = p.qrs_w * (1.0 + ek["qrs_width_rel_change_per_mmol_l_above_5_3"] * max(0.0, k - 5.3))
    u_amp = ek["u_wave_mv_per_mmol_l_below_3_6"] * max(0.0, 3.6 - k)
    mg_flat = 1.0 - emg["t_amp_rel_change_per_mg_dl_below_1_8"] * max(0.0, 1.8 - mg) / 0.3
    qtc_ms = eca["qtc_ms_at_reference"] + eca["qtc_ms_per_mg_dl"] * (ca - eca["reference_mg_dl"])
    qtc_ms = float(np.clip(qtc_ms + rng.normal(0.0, 8.0), 300.0, 600.0))
    dhb = hgb - ehb["reference_g_dl"]
    hr = p.hr_base + (
        -ehb["hr_bpm_per_g_dl_below_reference"] * dhb
        if dhb < 0
        else -ehb["hr_bpm_per_g_dl_above_reference"] * dhb
    )
    hr = float(np.clip(hr + rng.normal(0.0, 2.0), 45.0, 150.0))
    pr_ms = emg["pr_ms_at_reference"] + emg["pr_ms_per_mg_dl"] * (mg - emg["reference_mg_dl"])
    pr_ms = float(np.clip(pr_ms + rng.normal(0.0, 6.0), 100.0, 320.0))
    return {
        "hr_bpm": hr,
        "r_amp": p.r_amp,
        "p_amp": p.p_amp,
        "t_amp": p.t_amp * t_gain * max(0.2, mg_flat),
        "u_amp": u_amp,
        "qrs_w": qrs_w,
        "t_w": t_width,
        "pr_s": pr_ms / 1000.0,
        "qtc_s": qtc_ms / 1000.0,
    }


def _segment_signal(
    morph: dict, n: int, fs: int, noise_mv: float, rng: np.random.Generator
) -> np.ndarray:
    """A lead-II recording of n samples (mV) with beats, noise and artefacts."""
    rr = 60.0 / morph["hr_bpm"]
    tmpl_args = {
        k: morph[k] for k in ("r_amp", "p_amp", "t_amp", "u_amp", "qrs_w", "t_w", "pr_s", "qtc_s")
    }
    tmpl, r_idx = _beat_template(fs=fs, rr_s=rr, **tmpl_args)
    pvc_tmpl, pvc_idx = _beat_template(fs=fs, rr_s=rr, pvc=True, **tmpl_args)
    sig = np.zeros(n + 2 * len(tmpl))
    off = len(tmpl)
    t_now = rng.uniform(0.0, rr)
    resp_f = rng.uniform(0.2, 0.33)
    resp_phase = rng.uniform(0, 2 * np.pi)
    while t_now < n / fs:
        pvc = rng.random() < 0.01
        amp = 1.0 + 0.06 * math.sin(2 * math.pi * resp_f * t_now + resp_phase)
        r = off + int(round(t_now * fs))
        if pvc:
            sig[r - pvc_idx : r - pvc_idx + len(pvc_tmpl)] += amp * pvc_tmpl
        else:
            sig[r - r_idx : r - r_idx + len(tmpl)] += amp * tmpl
        # HRV: respiratory sinus arrhythmia plus a little white jitter.
        rr_k = rr * (
            1.0
            + 0.03 * math.sin(2 * math.pi * resp_f * t_now + resp_phase)
            + rng.normal(0.0, 0.015)
        )
        t_now += rr_k * (1.25 if pvc else 1.0)  # compensatory pause after a PVC
    x = sig[off : off + n]
    t = np.arange(n) / fs
    for _ in range(2):  # baseline wander
        x += rng.uniform(0.03, 0.25) * np.sin(
            2 * np.pi * rng.uniform(0.05, 0.45) * t + rng.uniform(0, 2 * np.pi)
        )
    x += rng.normal(0.0, noise_mv, n)
    x += rng.uniform(0.0, 0.03) * np.sin(2 * np.pi * 60.0 * t)  # US mains hum
    if rng.random() < 0.15:  # EMG burst
        a = int(rng.integers(0, max(1, n - 5 * fs)))
        b = min(n, a + int(rng.uniform(2, 6) * fs))
        x[a:b] += rng.normal(0.0, rng.uniform(0.05, 0.2), b - a)
    if rng.random() < 0.12:  # motion artefact: large, slow swings and spikes
        a = int(rng.integers(0, max(1, n - 12 * fs)))
        b = min(n, a + int(rng.uniform(6, 15) * fs))
        walk = np.cumsum(rng.normal(0.0, 0.08, b - a))
        x[a:b] += walk - np.linspace(0, walk[-1], b - a)
        spikes = rng.integers(a, b, size=8)
        x[spikes] += rng.choice([-1, 1], size=8) * rng.uniform(2.0, 5.0, size=8)
    if rng.random() < 0.06:  # lead off: flat line near zero
        a = int(rng.integers(0, max(1, n - 15 * fs)))
        b = min(n, a + int(rng.uniform(10, 20) * fs))
        x[a:b] = rng.normal(0.0, 0.002, b - a)
    return x


def _fmt_time(s: int | None) -> str:
    if s is None:
        return ""
    return str(np.datetime64(int(s), "s")).replace("T", " ")


def _fmt_value(v: float, decimals: int) -> str:
    return f"{v:.{decimals}f}"


def _write_wfdb(rec_dir: Path, name: str, x_mv: np.ndarray, start_s: int, fs: int) -> None:
    import wfdb

    start = np.datetime64(int(start_s), "s").astype(object)  # datetime.datetime (year < 10000)
    d = np.clip(np.round(x_mv * _ADC_GAIN), -32767, 32767).astype(np.int16)
    wfdb.wrsamp(
        name,
        fs=fs,
        units=["mV"],
        sig_name=["II"],
        d_signal=d[:, None],
        fmt=["16"],
        adc_gain=[_ADC_GAIN],
        baseline=[0],
        base_time=start.time(),
        base_date=start.date(),
        write_dir=str(rec_dir),
    )


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
    lo_seg, hi_seg = segments_per_visit
    ranges = _catalog_ranges()
    specs = list(LAB_SPECS)
    lab_range = {
        s.component_name: ranges.get(s.component_name, (None, s.low, s.high))[1:] for s in specs
    }

    ss = np.random.SeedSequence(int(seed))
    cohort_rng = np.random.default_rng(ss.spawn(1)[0])
    t_lo, t_hi = _year_seconds(_YEAR_MIN), _year_seconds(_YEAR_MAX + 1) - 86_400
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
    patients = []
    for i in range(n_patients):
        r = cohort_rng
        patients.append(
            _Patient(
                mrn=mrns[i],
                sex=str(r.choice(["F", "M"])),
                age0=float(r.uniform(18, 88)),
                t0=int(r.integers(t_lo, t_hi - _PATIENT_SPAN_S)),
                hr_base=float(r.normal(70.0, 6.0)),
                r_amp=float(np.clip(r.normal(1.1, 0.25), 0.4, 2.2)),
                t_amp=float(np.clip(r.normal(0.28, 0.05), 0.12, 0.5)),
                p_amp=float(np.clip(r.normal(0.12, 0.025), 0.05, 0.25)),
                qrs_w=float(np.clip(r.normal(1.0, 0.07), 0.8, 1.25)),
                t_w=float(np.clip(r.normal(0.045, 0.004), 0.035, 0.06)),
                noise=float(r.uniform(0.008, 0.035)),
            )
        )
    visit_rows, lab_rows = [], []
    n_segments = 0
    wf_visits: list[tuple[str, int, bool]] = []  # (csn, n segments, has lab results)
    visit_seeds = ss.spawn(n_visits + 1)[1:]
    for v in range(n_visits):
        rng = np.random.default_rng(visit_seeds[v])
        csn = csns[v]
        pat = patients[int(owner[v])]
        arrival = pat.t0 + int(rng.integers(0, _PATIENT_SPAN_S))
        roomed = arrival + int(rng.uniform(5, 40) * 60)
        dispo = roomed + int(rng.uniform(1.5, 6.0) * 3600)
        departure = dispo + int(rng.uniform(10, 120) * 60)
        visit_rows.append(
            {
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
        )
        state = {s.component_name: _draw_state(rng, s, *lab_range[s.component_name]) for s in specs}
        has_labs = rng.random() >= _P_NO_LABS
        panels: list[str] = []
        order0 = roomed + int(rng.uniform(0, 30) * 60)
        if has_labs:
            orders = [order0]
            if rng.random() < _P_REPEAT_ORDER:
                orders.append(order0 + int(rng.uniform(1.0, 3.0) * 3600))
            panels = [p for p, pr in _PANELS.items() if rng.random() < pr]
            for k_order, order_t in enumerate(orders):
                for panel in panels:
                    result_t = order_t + int(rng.uniform(20, 70) * 60)
                    panel_specs = [s for s in specs if s.panel == panel]
                    rows = []
                    for s in panel_specs:
                        low, high = lab_range[s.component_name]
                        drift = rng.normal(0.0, 0.05 * (high - low)) if k_order else 0.0
                        val = state[s.component_name] + drift + rng.normal(0, 0.02 * (high - low))
                        val = max(val, 10.0**-s.decimals)
                        val = round(val, s.decimals)
                        names = (s.component_name, *s.synonyms)
                        name = names[int(rng.integers(0, len(names)))]
                        flag = "H" if val > s.high else ("L" if val < s.low else "")
                        if rng.random() < _P_CANCELED:
                            text = "Canceled"
                        elif s.report_high is not None and val > s.report_high:
                            text = f">{_fmt_value(s.report_high, s.decimals)}"
                        elif s.report_low is not None and val < s.report_low:
                            text = f"<{_fmt_value(s.report_low, s.decimals)}"
                        elif flag and rng.random() < _P_FLAG_SUFFIX:
                            text = f"{_fmt_value(val, s.decimals)} ({flag})"
                        else:
                            text = _fmt_value(val, s.decimals)
                        rows.append([name, text, s, flag])
                    any_abn = "Y" if any(r[3] for r in rows) else "N"
                    missing_result = rng.random() < _P_MISSING_RESULT_TIME
                    for name, text, s, flag in rows:
                        lab_rows.append(
                            {
                                "CSN": csn,
                                "Order_time": _fmt_time(order_t),
                                "Result_time": "" if missing_result else _fmt_time(result_t),
                                "Display_name": panel,
                                "Abnormal": any_abn,
                                "Component_name": name,
                                "Component_result": text,
                                "Component_value": text,
                                "Component_units": s.units,
                                "Component_abnormal": "" if text == "Canceled" else flag,
                                "Component_nml_low": _fmt_value(s.low, s.decimals),
                                "Component_nml_high": _fmt_value(s.high, s.decimals),
                            }
                        )
                    if panel == "CBC WITH DIFFERENTIAL" and rng.random() < 0.1:
                        # Free-text components exist in MC-MED too; one with a newline.
                        lab_rows.append(
                            {
                                "CSN": csn,
                                "Order_time": _fmt_time(order_t),
                                "Result_time": _fmt_time(result_t),
                                "Display_name": panel,
                                "Abnormal": any_abn,
                                "Component_name": "SMEAR REVIEW,\nPATHOLOGIST COMMENT",
                                "Component_result": "See comment",
                                "Component_value": "See comment",
                                "Component_units": "",
                                "Component_abnormal": "",
                                "Component_nml_low": "",
                                "Component_nml_high": "",
                            }
                        )
        if rng.random() < _P_NO_WAVEFORM:
            continue
        morph = _morphology(pat, state, rng)
        n_seg = int(rng.integers(lo_seg, hi_seg + 1))
        # Monitoring starts around the first order (mostly before it), with gaps.
        t_seg = order0 - int(rng.uniform(2, 20) * 60)
        rec_dir = out / "waveforms" / csn[-3:] / csn / "II"
        rec_dir.mkdir(parents=True, exist_ok=True)
        late = rng.random() < _P_LATE_SEGMENT
        if late:
            n_seg += 1  # one more recording 1-2.5 h later: outside the order's window
        for seg in range(1, n_seg + 1):
            n = int(rng.uniform(*segment_s) * FS_HZ)
            x = _segment_signal(morph, n, FS_HZ, pat.noise, rng)
            _write_wfdb(rec_dir, f"{csn}_{seg}", x, t_seg, FS_HZ)
            n_segments += 1
            t_seg += n // FS_HZ + int(rng.uniform(20, 240))
            if late and seg == n_seg - 1:
                t_seg = order0 + int(rng.uniform(60, 150) * 60)
        wf_visits.append((csn, n_seg, bool(has_labs and panels)))

    import pandas as pd

    pd.DataFrame(visit_rows).to_csv(out / "visits.csv", index=False)
    lab_cols = [
        "CSN",
        "Order_time",
        "Result_time",
        "Display_name",
        "Abnormal",
        "Component_name",
        "Component_result",
        "Component_value",
        "Component_units",
        "Component_abnormal",
        "Component_nml_low",
        "Component_nml_high",
    ]
    pd.DataFrame(lab_rows, columns=lab_cols).to_csv(out / "labs.csv", index=False)
    _write_splits(out, visit_rows, np.random.default_rng(ss.spawn(1)[0]))

    defect_list = []
    if defects:
        defect_list = _plant_defects(out, wf_visits)
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
        "defects": defect_list,
    }
    write_json(out / "truth.json", truth)
    return truth


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
