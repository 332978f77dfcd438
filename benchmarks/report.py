"""Bench report: Markdown + a self-contained HTML page + PNG plots (matplotlib, Agg).

    python -m anyecg_edge.benchmarks.report BENCH.json --out DIR

Plots: latency distribution per model (batch 1, every timed call), size vs latency
coloured by evaluation AUROC, speed-up over ECGFounder fp32, and per-window latency over
time of a streaming session (arrival of a window's last sample -> its result). Everything
shown is measured in the run that wrote the JSON; nothing is projected here (projections
for other hardware live in benchmarks/target_hardware.md, labelled as such).
"""

from __future__ import annotations

import argparse
import base64
import html
import sys
from pathlib import Path
from typing import Any

from anyecg_edge.benchmarks.bench import (
    _model_label,
    headline_text,
    table_columns,
    table_rows,
    write_json,
)
from anyecg_edge.benchmarks.compare import COMPARE_COLUMNS, comparison_rows, load_result

from anyecg_edge.fileio import atomic_open, write_text_atomic

PLOTS = {
    "latency_distribution.png": "Latency per 10 s window at batch 1, every timed call",
    "size_latency_auroc.png": "Model size vs latency, coloured by evaluation AUROC",
    "speedup.png": "Speed-up over ECGFounder fp32 (p50)",
    "stream_latency.png": "Streaming: per-window latency over stream time",
}
_RUNTIME_MARKERS = {"torch": "o", "onnxruntime": "s", "litert": "^", "tflite-runtime": "v"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    try:
        with atomic_open(path, "wb") as fh:  # a killed run leaves the old plot, not half a PNG
            fig.savefig(fh, dpi=110, format="png")
    finally:
        plt.close(fig)
    return path


def plot_latency_distribution(res: dict[str, Any], path: Path) -> Path | None:
    rows = [r for r in res["rows"] if r.get("samples_ms")]
    if not rows:
        return None
    plt = _plt()
    rows = sorted(rows, key=lambda r: r["p50_ms"])
    fig, ax = plt.subplots(figsize=(10, 1.0 + 0.55 * len(rows)))
    data = [r["samples_ms"] for r in rows]
    ax.boxplot(
        data,
        orientation="horizontal",
        whis=(1, 99),
        widths=0.6,
        showfliers=True,
        flierprops={"markersize": 2, "alpha": 0.4},
    )
    for i, r in enumerate(rows, 1):
        ax.text(
            r["p99_ms"] * 1.15,
            i,
            f"p50 {r['p50_ms']:.3g} · p99 {r['p99_ms']:.3g} ms",
            va="center",
            fontsize=8,
        )
    ax.set_yticks(range(1, len(rows) + 1), [_model_label(r) for r in rows], fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("ms per 10 s window (log scale); box: p25-p75, whiskers: p1-p99")
    s = res["settings"]
    ax.set_title(
        f"{res['machine']['cpu']}, {s['threads']} thread(s): {PLOTS['latency_distribution.png']}",
        fontsize=10,
    )
    hi = max(r["max_ms"] if r.get("max_ms") else r["p99_ms"] for r in rows)
    ax.set_xlim(right=hi * 12)
    ax.grid(axis="x", which="both", alpha=0.3)
    return _save(plt, fig, path)


def plot_size_latency_auroc(res: dict[str, Any], path: Path) -> Path | None:
    rows = [r for r in res["rows"] if r.get("p50_ms") and r.get("size_bytes")]
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 6))
    have = [r for r in rows if r.get("auroc_mean") is not None]
    sc = None
    for r in rows:
        marker = _RUNTIME_MARKERS.get(r["runtime"], "o")
        x, y = r["size_bytes"] / 2**20, r["p50_ms"]
        if r.get("auroc_mean") is None:
            ax.scatter(x, y, marker=marker, s=80, facecolors="none", edgecolors="grey")
        else:
            sc = ax.scatter(
                x,
                y,
                marker=marker,
                s=110,
                c=[r["auroc_mean"]],
                cmap="viridis",
                vmin=0.5,
                vmax=1.0,
                edgecolors="black",
            )
        ax.annotate(_model_label(r), (x, y), textcoords="offset points", xytext=(6, 4), fontsize=7)
    if sc is not None:
        this_file = (res.get("settings") or {}).get("accuracy_from") == "this file"
        fig.colorbar(
            sc,
            ax=ax,
            label="mean test AUROC of this file, its own runtime"
            if this_file
            else "mean test AUROC (checkpoint's evaluate --json)",
        )
    for rt, m in _RUNTIME_MARKERS.items():
        if any(r["runtime"] == rt for r in rows):
            ax.scatter([], [], marker=m, facecolors="none", edgecolors="black", label=rt)
    ax.legend(title="runtime (hollow grey: not evaluated)", fontsize=8, loc="upper left")
    ax.set_xscale("log")
    ax.set_yscale("log")
    sizes = [r["size_bytes"] / 2**20 for r in rows]
    ax.set_xlim(min(sizes) / 2, max(sizes) * 8)  # room for the labels
    ax.set_xlabel("model file size (MB, log)")
    ax.set_ylabel("p50 ms per 10 s window (log)")
    title = PLOTS["size_latency_auroc.png"]
    if not have:
        title += " (no evaluation given: all hollow)"
    ax.set_title(title, fontsize=10)
    ax.grid(which="both", alpha=0.3)
    return _save(plt, fig, path)


def plot_speedup(res: dict[str, Any], path: Path) -> Path | None:
    rows = [r for r in res["rows"] if r.get("speedup_vs_foundation_p50")]
    if not rows:
        return None
    plt = _plt()
    rows = sorted(rows, key=lambda r: r["speedup_vs_foundation_p50"])
    fig, ax = plt.subplots(figsize=(9, 1.0 + 0.45 * len(rows)))
    vals = [r["speedup_vs_foundation_p50"] for r in rows]
    colours = ["tab:green" if r["precision"] == "int8" else "tab:blue" for r in rows]
    ax.barh(range(len(rows)), vals, color=colours)
    for i, v in enumerate(vals):
        ax.text(v * 1.05, i, f"{v:,.1f}x", va="center", fontsize=8)
    ax.axvline(100, color="red", linestyle="--", linewidth=1, label="goal: int8 student >= 100x")
    ax.set_yticks(range(len(rows)), [_model_label(r) for r in rows], fontsize=8)
    ax.set_xscale("log")
    ax.set_xlim(right=max(vals) * 4)
    ax.set_xlabel("x faster than ECGFounder fp32 torch (p50, log)")
    ax.set_title(PLOTS["speedup.png"], fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    return _save(plt, fig, path)


def plot_stream_latency(res: dict[str, Any], path: Path) -> Path | None:
    st = res.get("stream")
    if not st or st.get("error") or not st.get("series", {}).get("t"):
        return None
    plt = _plt()
    import numpy as np

    t = np.asarray(st["series"]["t"])
    lat = np.asarray(st["series"]["latency_ms"])
    ok = np.asarray(st["series"]["quality_ok"], dtype=bool)
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.plot(t[ok], lat[ok], ".", markersize=4, label="window scored")
    if (~ok).any():
        ax.plot(
            t[~ok],
            lat[~ok],
            "x",
            markersize=4,
            color="tab:orange",
            label="rejected by the quality gate",
        )
    for q, style in ((50, "-"), (99, "--")):
        v = float(np.percentile(lat, q))
        ax.axhline(v, color="grey", linestyle=style, linewidth=1, label=f"p{q} {v:.2f} ms")
    seen: set[str] = set()
    for ev in st.get("events", []):
        if ev.get("t") is None or ev["event"] in ("connected",):
            continue
        colour = {
            "gap": "red",
            "reconnect": "purple",
            "disconnect": "purple",
            "drop": "orange",
        }.get(ev["event"], "black")
        ax.axvline(
            ev["t"],
            color=colour,
            alpha=0.35,
            linewidth=1,
            label=None if ev["event"] in seen else ev["event"],
        )
        seen.add(ev["event"])
    log_y = float(lat.max()) > 20 * max(float(lat.min()), 1e-6)
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel("stream time (s): end of the 10 s window")
    ax.set_ylabel("latency ms: last sample in -> result" + (" (log)" if log_y else ""))
    src = st.get("summary", {}).get("source", "")
    model = st.get("model", "")
    ax.set_title(
        f"{PLOTS['stream_latency.png']}\n{src} {('· ' + model) if model else ''}", fontsize=9
    )
    ax.legend(fontsize=8, loc="best", framealpha=0.6)
    ax.grid(alpha=0.3)
    return _save(plt, fig, path)


# --------------------------------------------------------------------------- text


def _md_table(headers: list[str] | tuple[str, ...], rows: list[list[str]]) -> str:
    def cell(v: str) -> str:
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _html_table(headers: list[str] | tuple[str, ...], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _sections(res: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """(title, kind, content) with kind in text | table | list; rendered to MD and HTML."""
    m, s = res["machine"], res["settings"]
    v = m.get("versions") or {}
    out: list[tuple[str, str, Any]] = []
    out.append(("Headline", "text", headline_text(res.get("headline"), s["threads"])))
    out.append(
        (
            "Machine",
            "list",
            [
                f"CPU: {m['cpu']} ({m['arch']}), {m['cores_available']} of {m['cores_logical']} logical cores available, {m['memory_gb']} GB RAM",
                f"OS: {m['os']}; Python {m['python']}",
                "versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val),
                f"1-min load average: {m.get('load_avg_1m')} at the start, {m.get('load_avg_1m_end')} at the end (a shared machine adds noise)",
            ],
        )
    )
    out.append(
        (
            "Settings",
            "list",
            [
                f"threads per model: {s['threads']}; timed calls per row: {s['iterations']}; warm-up calls: {s['warmup']}; throughput batch: {s['batch']}",
                f"input: {s['window']}; windows: {s['windows']}",
                "each row runs in its own fresh process (peak RSS = that process: runtime + model + numpy)",
                "params/MACs: torch module of the same architecture (MACs of convs and linears per window)",
                f"run wall time: {res.get('wall_s')} s"
                + (" — QUICK smoke run: indicative numbers only" if s.get("quick") else ""),
            ],
        )
    )
    out.append(("Results (measured)", "table", (table_columns(res), table_rows(res))))
    if s.get("accuracy"):
        notes = [s["accuracy"]]
        notes += [
            f"{_model_label(r)}: not evaluated ({r['eval_note']})"
            for r in res["rows"]
            if r.get("eval_note")
        ]
        out.append(("Where the AUROC column comes from", "list", notes))
    p = res["preprocess"]
    out.append(
        (
            "Before the model (same for every row)",
            "table",
            (
                ("step", "p50 ms", "p95 ms", "p99 ms"),
                [
                    [k, f"{val['p50_ms']:.3f}", f"{val['p95_ms']:.3f}", f"{val['p99_ms']:.3f}"]
                    for k, val in p.items()
                ],
            ),
        )
    )
    st = res.get("stream")
    if st and not st.get("error"):
        sm = st.get("summary", {})
        lat = sm.get("latency_ms") or {}
        comp = sm.get("compute_ms") or {}
        out.append(
            (
                "Streaming session",
                "list",
                [
                    f"source: {sm.get('source', '?')}; model: {st.get('model', sm.get('model', '?'))}",
                    f"{sm.get('stream_s', '?')} s of signal in {sm.get('wall_s', '?')} s wall; windows {sm.get('windows', len(st['series']['t']))} "
                    f"({sm.get('accepted', '?')} scored, {sm.get('rejected', '?')} rejected by the gate, {sm.get('dropped', '?')} dropped, "
                    f"{sm.get('skipped_gap', '?')} skipped at gaps)",
                    f"latency (window's last sample in -> result): p50 {lat.get('p50')} ms, p95 {lat.get('p95')} ms, p99 {lat.get('p99')} ms, max {lat.get('max')} ms; compute p50 {comp.get('p50')} ms",
                    f"events: {sm.get('events', {})}",
                    f"JSONL: {st.get('jsonl')}",
                ],
            )
        )
    elif st and st.get("error"):
        out.append(("Streaming session", "text", f"failed: {st['error']}"))
    cmp = res.get("comparison")
    if cmp:
        title = f"Comparison with {cmp['old']['created_utc']} ({cmp['old']['cpu']}), tolerance {cmp['tolerance']:.0%}"
        out.append((title, "table", (COMPARE_COLUMNS, comparison_rows(cmp))))
        notes = list(cmp["notes"]) + (
            [f"REGRESSION: {line}" for line in cmp["regressions"]] or ["no regressions"]
        )
        out.append(("Comparison notes", "list", notes))
    out.append(
        (
            "Other hardware",
            "text",
            "Everything above was measured on the machine named here. To measure a Raspberry Pi "
            "or an Android phone, run the same bench there (benchmarks/target_hardware.md, "
            "benchmarks/run_on_device.sh); projections are labelled as such in that file.",
        )
    )
    return out


def write_report(res: dict[str, Any], out_dir: str | Path) -> dict[str, Any]:
    """Write bench.json, the PNG plots, report.md and report.html into ``out_dir``.

    Every file is written whole or not at all (:mod:`anyecg_edge.fileio`), and the text of
    the report is made before any file is touched: a result the report cannot render leaves
    the previous report as it was, not a new bench.json beside an old report.md."""
    out = Path(out_dir)
    title = f"AnyECG-Edge bench — {res['machine']['cpu']} — {res['created_utc']}"
    sections = _sections(res)
    out.mkdir(parents=True, exist_ok=True)
    makers = {
        "latency_distribution.png": plot_latency_distribution,
        "size_latency_auroc.png": plot_size_latency_auroc,
        "speedup.png": plot_speedup,
        "stream_latency.png": plot_stream_latency,
    }
    pngs: list[Path] = []
    try:
        import matplotlib  # noqa: F401
    except ImportError:  # a lean device install: tables only
        makers = {}
    for name, fn in makers.items():
        made = fn(res, out / name)
        if made is not None:
            pngs.append(made)
        else:  # no data for this plot now: an older run's plot must not pass for this one's
            (out / name).unlink(missing_ok=True)

    md = [f"# {title}", ""]
    for head, kind, content in sections:
        md += [f"## {head}", ""]
        if kind == "text":
            md.append(content)
        elif kind == "list":
            md += [f"- {line}" for line in content]
        else:
            md.append(_md_table(*content))
        md.append("")
    md += ["## Plots", ""]
    if not pngs:
        md += ["(no plots: matplotlib is not installed here; `pip install matplotlib`)", ""]
    for p in pngs:
        md += [f"### {PLOTS[p.name]}", "", f"![{PLOTS[p.name]}]({p.name})", ""]
    md_text = "\n".join(md)

    css = (
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}"
        "table{border-collapse:collapse;font-size:13px;margin:0.5em 0}"
        "td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}th{background:#eee}"
        "img{max-width:100%;border:1px solid #ddd;margin:0.5em 0}"
    )
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{css}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for head, kind, content in sections:
        parts.append(f"<h2>{html.escape(head)}</h2>")
        if kind == "text":
            parts.append(f"<p>{html.escape(content)}</p>")
        elif kind == "list":
            parts.append(
                "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in content) + "</ul>"
            )
        else:
            parts.append(_html_table(*content))
    parts.append("<h2>Plots</h2>")
    for p in pngs:
        data = base64.b64encode(p.read_bytes()).decode()
        parts.append(
            f"<h3>{html.escape(PLOTS[p.name])}</h3><img alt='{html.escape(p.name)}' src='data:image/png;base64,{data}'>"
        )
    parts.append("</body></html>")
    write_json(res, out / "bench.json")
    write_text_atomic(out / "report.md", md_text)
    write_text_atomic(out / "report.html", "\n".join(parts))
    return {
        "md": out / "report.md",
        "html": out / "report.html",
        "png": pngs,
        "json": out / "bench.json",
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="report", description=__doc__.splitlines()[0])
    ap.add_argument("bench_json", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    files = write_report(load_result(args.bench_json), args.out)
    print(f"{files['html']} ({len(files['png'])} PNG)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
