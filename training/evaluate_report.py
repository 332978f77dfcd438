"""The evaluation report: ``report.html`` with its figures (AUROC per lab with CIs, ROC
curves and reliability diagrams of the best labs) embedded, from an evaluation result of
:func:`anyecg_edge.training.evaluate.evaluate_model` / ``evaluate_predictions``.
"""

from __future__ import annotations

import base64
import html
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from anyecg_edge.training.evaluate_metrics import BUCKETS, MIN_VISITS_PER_CLASS, bucket_of

from anyecg_edge.fileio import write_text_atomic

__all__ = ["write_report"]

_COLOURS = {BUCKETS[0]: "#2b8a3e", BUCKETS[1]: "#e8a33d", BUCKETS[2]: "#c92a2a"}
_COLOUR_NAMES = {BUCKETS[0]: "green", BUCKETS[1]: "amber", BUCKETS[2]: "red"}


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#555")
    ax.set_axis_off()


def _auroc_figure(result: dict[str, Any], scored: list[str], path: Path) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    labs = result["labs"]
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.22 * len(scored) + 1.4)))
    if scored:
        vals = np.array([labs[k]["auroc"] for k in scored])
        # A lab without a CI gets no whisker (not a zero-width one that looks certain).
        lo = np.array([(labs[k]["ci"] or [np.nan])[0] for k in scored])
        hi = np.array([(labs[k]["ci"] or [np.nan, np.nan])[1] for k in scored])
        ax.barh(
            range(len(scored)),
            vals - 0.5,
            left=0.5,
            color=[_COLOURS[bucket_of(v)] for v in vals],
            xerr=np.vstack([np.nan_to_num(vals - lo), np.nan_to_num(hi - vals)]),
            ecolor="#333",
            capsize=2,
        )
        ax.set_yticks(range(len(scored)), scored, fontsize=7)
        ax.legend(
            handles=[Patch(color=_COLOURS[b], label=f"AUROC {b}") for b in BUCKETS],
            fontsize=7,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),  # outside: bars and whiskers reach the right edge
        )
    else:
        ax.text(0.5, 0.5, "no lab evaluated", ha="center", va="center", color="#555")
    ax.axvline(0.5, color="#555", lw=0.8)
    for x in (0.55, 0.65):
        ax.axvline(x, color="#999", lw=0.6, ls="--")
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("AUROC per segment (bars from chance 0.5; whiskers: 95 % CI over visits)")
    mean = result["summary"]["mean_auroc"]
    ax.set_title(f"{result.get('split', '')}: mean AUROC {_fmt(mean)} over {len(scored)} labs")
    _save(fig, path)


def _roc_figure(result: dict[str, Any], best: list[str], path: Path) -> None:
    import matplotlib.pyplot as plt

    labs, curves = result["labs"], result.get("_curves", {})
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for k in best:
        if k in curves:
            fpr, tpr = curves[k]
            ax.plot(fpr, tpr, label=f"{k} ({labs[k]['auroc']:.3f})")
    ax.plot([0, 1], [0, 1], color="#999", lw=0.8, ls="--")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="false positive rate", ylabel="true positive rate")
    ax.set_title("ROC per segment, best labs")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="lower right")
    _save(fig, path)


def _reliability_figure(result: dict[str, Any], best: list[str], path: Path) -> None:
    """One panel per lab: observed vs predicted per bin, with the bin's window count."""
    import matplotlib.pyplot as plt

    labs = result["labs"]
    shown = [k for k in best if labs[k].get("reliability")]
    ncols = min(3, max(len(shown), 1))
    nrows = max(1, math.ceil(len(shown) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.3 * nrows), squeeze=False)
    for ax in axes.ravel()[len(shown) :]:
        _empty(ax, "no lab evaluated" if not shown else "")
    for ax, k in zip(axes.ravel(), shown, strict=False):
        rel = labs[k]["reliability"]
        edges = np.asarray(rel["edges"])
        centres, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
        counts = np.asarray(rel["count"])
        bars = ax.twinx()
        bars.bar(centres, counts, width=width * 0.9, color="#bbb", alpha=0.5, zorder=0)
        bars.set_ylim(0, max(counts.max(), 1) * 3)  # keep bars in the lower third
        bars.set_yticks([])
        for x, c in zip(centres, counts, strict=True):
            if c:
                bars.text(x, c, str(int(c)), ha="center", va="bottom", fontsize=6, color="#444")
        ax.set_zorder(bars.get_zorder() + 1)
        ax.patch.set_visible(False)
        pts = [
            (m, f) for m, f in zip(rel["mean_pred"], rel["frac_pos"], strict=True) if m is not None
        ]
        ax.plot(*zip(*pts, strict=True), marker="o", ms=3, color="#1c7ed6")
        ax.plot([0, 1], [0, 1], color="#999", lw=0.8, ls="--")
        ax.set(xlim=(0, 1), ylim=(0, 1))
        ax.set_title(f"{k} (ECE {labs[k]['ece']:.3f})", fontsize=9)
        ax.set_xlabel("mean predicted probability", fontsize=8)
        ax.set_ylabel("observed abnormal rate", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle("Reliability per segment (grey bars and numbers: windows per bin)", fontsize=10)
    _save(fig, path)


_SUMMARY_LABELS = {
    "rule": "evaluation rule",
    "n_segments": "segments (windows)",
    "n_visits": "visits",
    "n_labs": "labs",
    "n_labs_evaluated": "labs evaluated",
    "labs_insufficient": "labs insufficient",
    "labs_not_calibrated": "labs without threshold (not calibrated)",
    "mean_auroc": "mean AUROC (evaluated labs)",
    "median_auroc": "median AUROC",
    "mean_auroc_visit": "mean AUROC per visit",
    "mean_auprc": "mean AUPRC",
    "mean_ece": "mean ECE",
    "buckets": "paper buckets (segments)",
    "buckets_visit": "paper buckets (visits)",
    "best_labs": "best labs",
    "planted_labs": "planted labs",
    "unplanted_labs": "unplanted labs",
    "planted_insufficient": "planted labs insufficient",
    "unplanted_insufficient": "unplanted labs insufficient",
    "planted_mean_auroc": "planted labs mean AUROC",
    "unplanted_mean_auroc": "unplanted labs mean AUROC",
    "planted_mean_auroc_visit": "planted labs mean AUROC per visit",
    "unplanted_mean_auroc_visit": "unplanted labs mean AUROC per visit",
}
# Shown elsewhere in the report, or duplicates kept in the JSON for older readers.
_SUMMARY_SKIP = {"bucket_labs", "labs_not_evaluated", "min_visits_per_class"}


def _fmt_value(v: Any) -> str:
    """Readable text for a JSON value: numbers to 3 decimals, lists and dicts as prose."""
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.3f}"
    if isinstance(v, list | tuple):
        return ", ".join(_fmt_value(x) for x in v) if v else "none"
    if isinstance(v, dict):
        return "; ".join(f"{k}: {_fmt_value(x)}" for k, x in v.items()) if v else "none"
    return str(v)


def _summary_rows(s: dict[str, Any]) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for k, v in s.items():
        if k in _SUMMARY_SKIP:
            continue
        if k == "truth" and isinstance(v, dict):
            rows += [(_SUMMARY_LABELS.get(t, t), _fmt_value(x)) for t, x in v.items()]
        elif k == "buckets" and "bucket_labs" in s:
            text = "; ".join(
                f"{b}: {n}" + (f" ({', '.join(s['bucket_labs'][b])})" if n else "")
                for b, n in v.items()
            )
            rows.append((_SUMMARY_LABELS[k], text))
        else:
            rows.append((_SUMMARY_LABELS.get(k, k.replace("_", " ")), _fmt_value(v)))
    return rows


def _pct(r: dict[str, Any], key: str) -> str:
    v = r.get(key)
    return "n/a" if v is None else f"{100 * v:.1f} %"


def _cells(values: Sequence[Any], style: str = "") -> str:
    return "".join(f"<td{style}>{html.escape(str(c))}</td>" for c in values)


def write_report(result: dict[str, Any], out_dir: str | os.PathLike, *, top: int = 6) -> Path:
    """report.html (self-contained: PNGs inlined) with auroc.png, roc.png and reliability.png.

    Evaluated labs get a row with AUROC, CI, prevalence and the calls at the model's
    threshold; insufficient labs a row of their own with their counts.
    """
    import matplotlib

    matplotlib.use("Agg")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labs = result["labs"]
    scored = sorted(
        (k for k in labs if labs[k].get("status") == "evaluated" and labs[k]["auroc"] is not None),
        key=lambda k: labs[k]["auroc"],
    )
    best = list(reversed(scored))[:top]
    _auroc_figure(result, scored, out / "auroc.png")
    _roc_figure(result, best, out / "roc.png")
    _reliability_figure(result, best, out / "reliability.png")

    s = result["summary"]
    summary_rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in _summary_rows(s)
    )

    def img(name: str) -> str:
        data = base64.b64encode((out / name).read_bytes()).decode()
        return f'<img src="data:image/png;base64,{data}" alt="{name}">'

    esc = html.escape
    page = f"""<!doctype html><html><head><meta charset="utf-8">
<title>AnyECG-Edge evaluation</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:2em auto}}
table{{border-collapse:collapse;margin-bottom:1em}}
td,th{{border:1px solid #ccc;padding:2px 6px;font-size:13px;text-align:left}}
li{{margin-bottom:.3em}}</style>
</head><body>
<h1>Per-lab evaluation ({esc(str(result.get("split", "")))})</h1>
<p>Model {esc(str(result.get("model", {}).get("path", "")))}; corpus
{esc(str(result.get("corpus", "")))}; {s["n_visits"]} visits, {s["n_segments"]} windows.
Research estimates of lab abnormality from one ECG lead, not diagnoses.</p>
{_reading_guide(result)}
<h2>Summary</h2><table>{summary_rows}</table>
<h2>AUROC per lab</h2>{img("auroc.png")}
<h2>ROC, best labs</h2>{img("roc.png")}
<h2>Reliability, best labs</h2>{img("reliability.png")}
<h2>Evaluated labs</h2>{_lab_table(labs, scored)}
<h2>Insufficient labs</h2>{_insufficient_table(labs, scored)}
</body></html>
"""
    write_text_atomic(out / "report.html", page)
    return out / "report.html"


def _reading_guide(result: dict[str, Any]) -> str:
    """ "How to read this report": buckets, AUROC, CI, the evaluation rule, the columns."""
    esc = html.escape
    n_min = result["summary"].get("min_visits_per_class", MIN_VISITS_PER_CLASS)
    boot = result.get("bootstrap", {})
    swatches = ", ".join(
        f'<span style="background:{_COLOURS[b]};color:#fff;padding:0 4px">{html.escape(b)}</span>'
        f" ({_COLOUR_NAMES[b]})"
        for b in BUCKETS
    )
    return f"""<h2>How to read this report</h2><ul>
<li><b>Buckets and colours</b> (the AnyECG-Lab paper's): AUROC {swatches}. In the AUROC
plot the bars start at chance (0.5, solid line); dashed lines mark 0.55 and 0.65.</li>
<li><b>AUROC</b> per segment ranks every measured 10 s window; <b>per visit</b> uses the mean
logit over a visit's windows, abnormal if any of them is.</li>
<li><b>95 % CI</b>: percentile bootstrap resampling visits ({esc(str(boot.get("n", "")))}
resamples, seed {esc(str(boot.get("seed", "")))}); n/a when too few resamples had both
classes. Windows of one visit are correlated, so visits, not windows, are resampled.</li>
<li><b>Evaluated vs insufficient</b>: a lab is scored only with at least {n_min} abnormal and
{n_min} normal visits in this split. Other labs are listed apart with their counts, and are
left out of the means, buckets and best labs.</li>
<li><b>Prevalence</b>: share of the lab's measured windows that are abnormal.</li>
<li><b>Threshold</b>: the model's decision threshold on the calibrated probability (fitted on
the validation split); sensitivity, specificity, PPV and NPV are those of the calls
p &ge; threshold on this split's windows. <i>not calibrated</i>: the model has no threshold
for the lab (too little validation data), so it makes no calls.</li>
<li><b>ECE</b>: expected calibration error over 10 equal-width probability bins, as drawn in
the reliability plots (grey bars and numbers: windows per bin; a point from a few windows
says little). <b>Brier</b>: mean squared error of the probabilities.</li></ul>"""


def _lab_table(labs: dict[str, Any], scored: list[str]) -> str:
    """The evaluated labs, best AUROC first: scores, CI, prevalence, calls, bucket."""
    rows = []
    for k in reversed(scored):
        r = labs[k]
        ci = r["ci"]
        thr = r.get("threshold")
        lead = _cells((k, r.get("display_name", "")))
        bucket = r["bucket"]
        rows.append(
            f"<tr>{lead}"
            + _cells(
                (
                    _fmt(r["auroc"]),
                    f"{ci[0]:.3f}-{ci[1]:.3f}" if ci else "n/a",
                    _fmt(r["visit"]["auroc"]),
                    _fmt(r["auprc"]),
                    f"{_pct(r, 'prevalence')} ({r['n_pos']}/{r['n']})",
                    f"{r.get('n_pos_visits', 'n/a')} / {r.get('n_neg_visits', 'n/a')}",
                    _fmt(r.get("ece")),
                    _fmt(r.get("brier")),
                    "not calibrated" if thr is None else f"{thr:.3f}",
                    _pct(r, "sensitivity"),
                    _pct(r, "specificity"),
                    _pct(r, "ppv"),
                    _pct(r, "npv"),
                )
            )
            + _cells((bucket,), f' style="background:{_COLOURS[bucket]};color:#fff"')
            + "</tr>"
        )
    if not rows:
        return "<p>No lab could be evaluated on this split.</p>"
    return (
        "<table><tr><th>lab</th><th>name</th><th>AUROC</th><th>95 % CI</th>"
        "<th>AUROC per visit</th><th>AUPRC</th><th>prevalence (abnormal/windows)</th>"
        "<th>visits abnormal / normal</th><th>ECE</th><th>Brier</th><th>threshold</th>"
        "<th>sensitivity</th><th>specificity</th><th>PPV</th><th>NPV</th><th>bucket</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _insufficient_table(labs: dict[str, Any], scored: list[str]) -> str:
    """The labs not scored, with their visit and window counts and why."""
    rows = [
        "<tr>"
        + _cells(
            (
                k,
                labs[k].get("display_name", ""),
                labs[k].get("n_pos_visits", "n/a"),
                labs[k].get("n_neg_visits", "n/a"),
                labs[k]["n_pos"],
                labs[k]["n_neg"],
                labs[k].get("reason", ""),
            )
        )
        + "</tr>"
        for k in sorted(k for k in labs if k not in scored)
    ]
    if not rows:
        return "<p>None: every lab had enough visits of both classes.</p>"
    return (
        "<table><tr><th>lab</th><th>name</th><th>abnormal visits</th><th>normal visits</th>"
        "<th>abnormal windows</th><th>normal windows</th><th>why</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)
