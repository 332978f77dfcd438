"""The lab side of the synthetic cohort (see :mod:`.synth`): what each lab is (``LabSpec``,
``LAB_SPECS``, panels), the planted ECG effects (``EFFECTS``), a visit's true lab state and
its orders written as MC-MED ``labs.csv`` rows (dirty values, synonyms, cancellations,
free-text components).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["EFFECTS", "LAB_SPECS", "LabSpec"]

_P_REPEAT_ORDER = 0.30
_P_CANCELED = 0.025
_P_FLAG_SUFFIX = 0.35  # abnormal values written as '5.9 (H)'
_P_MISSING_RESULT_TIME = 0.01


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


def _fmt_time(s: int | None) -> str:
    if s is None:
        return ""
    return str(np.datetime64(int(s), "s")).replace("T", " ")


def _fmt_value(v: float, decimals: int) -> str:
    return f"{v:.{decimals}f}"


#: ``labs.csv``'s columns, as MC-MED ships them.
_LAB_COLUMNS = (
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
)


def _visit_labs(
    rng: np.random.Generator,
    csn: str,
    order0: int,
    state: dict[str, float],
    specs: list[LabSpec],
    lab_range: dict[str, tuple[float, float]],
) -> tuple[list[str], list[dict[str, str]]]:
    """A visit's lab orders (the first at ``order0`` s, sometimes a repeat): the panels
    drawn and their ``labs.csv`` rows, each measured value the true state plus assay noise."""
    lab_rows: list[dict[str, str]] = []
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
                rows.append([name, _value_text(rng, s, val, flag), s, flag])
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
    return panels, lab_rows


def _value_text(rng: np.random.Generator, s: LabSpec, val: float, flag: str) -> str:
    """``Component_value`` as MC-MED writes it: 'Canceled', '>8.0', '5.9 (H)' or the number."""
    if rng.random() < _P_CANCELED:
        return "Canceled"
    if s.report_high is not None and val > s.report_high:
        return f">{_fmt_value(s.report_high, s.decimals)}"
    if s.report_low is not None and val < s.report_low:
        return f"<{_fmt_value(s.report_low, s.decimals)}"
    if flag and rng.random() < _P_FLAG_SUFFIX:
        return f"{_fmt_value(val, s.decimals)} ({flag})"
    return _fmt_value(val, s.decimals)
