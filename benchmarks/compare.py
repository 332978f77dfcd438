"""Compare two `anyecg-edge bench` results: regressions, improvements, new and gone rows.

    python -m anyecg_edge.benchmarks.compare NEW.json OLD.json [--tolerance 0.15]

Rows are matched on (model, runtime, precision). A row regresses when a latency
percentile (p50, p95) grows by more than ``tolerance`` (p99, the noisiest, by more than
twice that), peak RSS or the model file grows by more than ``tolerance``, or batch
throughput falls by more than it. Results from different machines are compared too, but
flagged: the ratios then mean little.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from anyecg_edge.benchmarks.bench import FORMAT, BenchError

# metric -> (better direction, tolerance multiplier)
METRICS: dict[str, tuple[str, float]] = {
    "p50_ms": ("lower", 1.0),
    "p95_ms": ("lower", 1.0),
    "p99_ms": ("lower", 2.0),
    "throughput_wps": ("higher", 1.0),
    "peak_rss_mb": ("lower", 1.0),
    "size_bytes": ("lower", 1.0),
}


def load_result(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise BenchError(f"{path}: bench JSON not found") from None
    except json.JSONDecodeError as exc:
        raise BenchError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if (
        not isinstance(doc, dict)
        or doc.get("format") != FORMAT
        or not isinstance(doc.get("rows"), list)
    ):
        raise BenchError(f"{path}: not a bench result (expected 'format': {FORMAT!r} and 'rows')")
    return doc


def _key(row: dict[str, Any]) -> tuple[str, str, str]:
    return (str(row.get("model")), str(row.get("runtime")), str(row.get("precision")))


def compare_results(
    new: dict[str, Any], old: dict[str, Any], *, tolerance: float = 0.15
) -> dict[str, Any]:
    """Row-by-row changes of ``new`` against ``old``; see the module docstring."""
    if not (math.isfinite(tolerance) and tolerance > 0):  # NaN compares false: no regressions
        raise BenchError(f"tolerance must be a finite number > 0, got {tolerance}")
    old_rows = {_key(r): r for r in old["rows"]}
    new_keys = {_key(r) for r in new["rows"]}
    rows: list[dict[str, Any]] = []
    for r in new["rows"]:
        k = _key(r)
        o = old_rows.get(k)
        entry: dict[str, Any] = {
            "model": k[0],
            "runtime": k[1],
            "precision": k[2],
            "changes": {},
            "regressed": [],
            "improved": [],
        }
        if r.get("error"):
            entry["status"] = "error"
        elif o is None:
            entry["status"] = "new"
        elif o.get("error"):
            entry["status"] = "fixed"
        else:
            for metric, (better, mult) in METRICS.items():
                a, b = o.get(metric), r.get(metric)
                if (
                    not isinstance(a, int | float)
                    or not isinstance(b, int | float)
                    or a <= 0
                    or b <= 0
                ):
                    continue
                ratio = b / a
                entry["changes"][metric] = {"old": a, "new": b, "ratio": round(ratio, 3)}
                worse = ratio if better == "lower" else 1.0 / ratio
                if worse > 1.0 + tolerance * mult:
                    entry["regressed"].append(metric)
                elif worse < 1.0 / (1.0 + tolerance * mult):
                    entry["improved"].append(metric)
            entry["status"] = (
                "regression"
                if entry["regressed"]
                else ("improved" if entry["improved"] else "same")
            )
        rows.append(entry)
    for k in old_rows:
        if k not in new_keys:
            rows.append(
                {
                    "model": k[0],
                    "runtime": k[1],
                    "precision": k[2],
                    "status": "gone",
                    "changes": {},
                    "regressed": [],
                    "improved": [],
                }
            )
    om, nm = old.get("machine") or {}, new.get("machine") or {}
    same_machine = (om.get("cpu"), om.get("cores_available")) == (
        nm.get("cpu"),
        nm.get("cores_available"),
    )
    notes = []
    if not same_machine:
        notes.append(
            f"different machines ({om.get('cpu')} x{om.get('cores_available')} then "
            f"{nm.get('cpu')} x{nm.get('cores_available')}): ratios compare hardware, not code"
        )
    busy = [
        f"{which} run: load average {m.get('load_avg_1m')} on {m.get('cores_available')} cores"
        for which, m in (("old", om), ("new", nm))
        if isinstance(m.get("load_avg_1m"), int | float)
        and m.get("cores_available")
        and m["load_avg_1m"] > m["cores_available"]
    ]
    if busy:
        notes.append("busy machine (" + "; ".join(busy) + "): other jobs slow every row")
    if (old.get("settings") or {}).get("threads") != (new.get("settings") or {}).get("threads"):
        notes.append("different --threads")
    if (old.get("settings") or {}).get("quick") or (new.get("settings") or {}).get("quick"):
        notes.append("a --quick run is involved: its percentiles rest on few calls")
    return {
        "old": {"created_utc": old.get("created_utc"), "cpu": om.get("cpu")},
        "tolerance": tolerance,
        "same_machine": same_machine,
        "notes": notes,
        "rows": rows,
        "regressions": [
            f"{e['model']} {e['runtime']} {e['precision']}: "
            + ", ".join(
                f"{m} {e['changes'][m]['old']:g} -> {e['changes'][m]['new']:g} (x{e['changes'][m]['ratio']:.2f})"
                for m in e["regressed"]
            )
            for e in rows
            if e["status"] == "regression"
        ],
    }


COMPARE_COLUMNS = (
    "model",
    "runtime",
    "prec",
    "status",
    "p50 old → new",
    "x p50",
    "p99 old → new",
    "x p99",
    "peak RSS x",
    "size x",
)


def comparison_rows(cmp: dict[str, Any]) -> list[list[str]]:
    out = []
    for e in cmp["rows"]:
        c = e["changes"]

        def pair(m: str, c: dict = c) -> str:
            return f"{c[m]['old']:.3f} → {c[m]['new']:.3f}" if m in c else "-"

        def ratio(m: str, c: dict = c) -> str:
            return f"{c[m]['ratio']:.2f}" if m in c else "-"

        status = e["status"] + (f" ({', '.join(e['regressed'])})" if e["regressed"] else "")
        out.append(
            [
                e["model"],
                e["runtime"],
                e["precision"],
                status,
                pair("p50_ms"),
                ratio("p50_ms"),
                pair("p99_ms"),
                ratio("p99_ms"),
                ratio("peak_rss_mb"),
                ratio("size_bytes"),
            ]
        )
    return out


def print_comparison(cmp: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    table = Table(
        title=f"Against {cmp['old']['created_utc']} ({cmp['old']['cpu']}), tolerance {cmp['tolerance']:.0%}"
    )
    for col in COMPARE_COLUMNS:
        table.add_column(col)
    colours = {
        "regression": "red",
        "improved": "green",
        "error": "red",
        "gone": "yellow",
        "new": "cyan",
    }
    for row in comparison_rows(cmp):
        status = row[3].split(" ")[0]
        colour = colours.get(status)
        row[3] = f"[{colour}]{row[3]}[/]" if colour else row[3]
        table.add_row(*row)
    console.print(table)
    for note in cmp["notes"]:
        console.print(f"[yellow]note: {note}[/]")
    if cmp["regressions"]:
        console.print(f"[bold red]{len(cmp['regressions'])} regression(s):[/]")
        for line in cmp["regressions"]:
            console.print(f"  [red]{line}[/]")
    else:
        console.print("[green]no regressions[/]")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="compare", description=__doc__.splitlines()[0])
    ap.add_argument("new", type=Path)
    ap.add_argument("old", type=Path)
    ap.add_argument("--tolerance", type=float, default=0.15)
    args = ap.parse_args(argv)
    from rich.console import Console

    try:
        cmp = compare_results(
            load_result(args.new), load_result(args.old), tolerance=args.tolerance
        )
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_comparison(cmp, Console(width=None if sys.stdout.isatty() else 160))
    return 1 if cmp["regressions"] else 0


if __name__ == "__main__":
    sys.exit(main())
