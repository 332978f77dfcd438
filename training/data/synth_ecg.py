"""The ECG side of the synthetic cohort (see :mod:`.synth` for the model): a patient's
baseline, one visit's beat morphology from its true lab state (the planted effects), a
lead-II recording with noise and artefacts, and its WFDB files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from anyecg_edge.training.data.synth_labs import EFFECTS

__all__ = ["FS_HZ"]

#: MC-MED's ECG rate (lead II).
FS_HZ = 500
_ADC_GAIN = 1000.0  # adu per mV: 1 uV resolution, +-32.7 mV range in 16 bits
_P_LATE_SEGMENT = 0.3


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


def _write_recordings(
    rec_dir: Path,
    csn: str,
    pat: _Patient,
    state: dict[str, float],
    order0: int,
    rng: np.random.Generator,
    segments_per_visit: tuple[int, int],
    segment_s: tuple[float, float],
) -> int:
    """A visit's lead-II segments (``{csn}_{seg}``) in ``rec_dir``; returns their number.

    Monitoring starts around the first order at ``order0`` s (mostly before it), with gaps;
    some visits get one more recording 1-2.5 h later, outside the order's window.
    """
    lo_seg, hi_seg = segments_per_visit
    morph = _morphology(pat, state, rng)
    n_seg = int(rng.integers(lo_seg, hi_seg + 1))
    t_seg = order0 - int(rng.uniform(2, 20) * 60)
    rec_dir.mkdir(parents=True, exist_ok=True)
    late = rng.random() < _P_LATE_SEGMENT
    if late:
        n_seg += 1
    for seg in range(1, n_seg + 1):
        n = int(rng.uniform(*segment_s) * FS_HZ)
        x = _segment_signal(morph, n, FS_HZ, pat.noise, rng)
        _write_wfdb(rec_dir, f"{csn}_{seg}", x, t_seg, FS_HZ)
        t_seg += n // FS_HZ + int(rng.uniform(20, 240))
        if late and seg == n_seg - 1:
            t_seg = order0 + int(rng.uniform(60, 150) * 60)
    return n_seg
