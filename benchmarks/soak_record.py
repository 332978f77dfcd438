"""Accelerated soak of ``stream --record`` (issue 16): a simulated Polar H10 (real bumble GATT
link, faults on) streams for SIMULATED hours at ``--speed`` into a recording folder while the
stream process's resident memory (VmRSS) is sampled at intervals. At the end the recording is
checked as a user would open it: the raw log reads to its end with no torn tail and holds
every record the session counted, session.json says complete, wfdb reads the signal (device
rate, mV, the session's device-time length) and its gap annotations (one per gap event, each
at the start of a run of invalid samples), and the log replays through the pipeline
(``--source replay:DIR --speed 0``).

Memory is called flat when the RSS after the warm-up (the first 10 % of stream time: model,
bumble and numpy arenas settle) grows by less than ``--max-growth-mb`` to the end; the
least-squares slope (MB per simulated hour) is reported beside it.

    python -m anyecg_edge.benchmarks.soak_record --hours 24 --speed 200 \
        --out benchmarks/results/soak_record

Result: ``OUT.json`` and ``OUT.md`` (the RSS series in the JSON). The recording itself goes
to a temporary folder (``--keep DIR`` keeps it). Exit 3 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["check_recording", "main", "run_soak"]

LABS = ["potassium", "sodium", "hemoglobin", "glucose"]
DEFAULT_FAULTS = "drop=0.005,reorder=0.005,disconnect=3600,seed=7"
WARMUP_FRACTION = 0.10


def _default_record() -> Path:
    base = Path(os.environ.get("ANYECG_DATA", Path(__file__).resolve().parents[2] / "shared/data"))
    return base / "mitdb" / "100"


def _rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def _last_t(jsonl: Path) -> float | None:
    """Stream time of the JSONL's last whole line (read from the file's end only)."""
    try:
        with open(jsonl, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 16384))
            lines = fh.read().splitlines()
    except OSError:
        return None
    for raw in reversed(lines[1:] if len(lines) > 1 else lines):
        try:
            t = json.loads(raw).get("t")
        except ValueError:
            continue
        if isinstance(t, int | float):
            return float(t)
    return None


def check_recording(folder: Path, summary: dict[str, Any], *, replay_model: Path | None) -> dict:
    """Open a finished recording as a user would; returns what was found (and ``ok``)."""
    import wfdb

    from anyecg_edge.stream.recording import LOG_NAME, SESSION_NAME, LogReader

    checks: dict[str, Any] = {}
    reader = LogReader(folder / LOG_NAME)
    kinds: dict[int, int] = {}
    for rec in reader:
        kinds[rec.kind] = kinds.get(rec.kind, 0) + 1
    n_records = sum(kinds.values())
    rec_info = summary.get("source_info", {}).get("recording") or {}
    checks["log"] = {
        "bytes": (folder / LOG_NAME).stat().st_size, "records": n_records,
        "notifications": kinds.get(1, 0), "link_down": kinds.get(2, 0),
        "events": kinds.get(3, 0), "end": kinds.get(4, 0), "torn_bytes": reader.torn_bytes,
        "records_counted_by_session": rec_info.get("records"),
    }  # fmt: skip
    meta = json.loads((folder / SESSION_NAME).read_text())
    checks["session_json_complete"] = bool(meta.get("complete"))
    rec = wfdb.rdrecord(str(folder / "signal"))
    ann = wfdb.rdann(str(folder / "signal"), "gap")
    x = rec.p_signal[:, 0]
    gaps = summary["events"].get("gap", 0)
    at_gap_start = [bool(np.isfinite(x[s - 1]) and np.isnan(x[s])) for s in ann.sample]
    src = summary.get("source_info", {})
    checks["wfdb"] = {
        "dat_bytes": (folder / "signal.dat").stat().st_size, "fs_hz": rec.fs,
        "units": rec.units, "sig_name": rec.sig_name, "samples": int(rec.sig_len),
        "duration_s": round(rec.sig_len / rec.fs, 1), "valid_fraction": round(
            float(np.isfinite(x).mean()), 4), "gap_annotations": len(ann.sample),
        "gap_events": gaps, "annotations_at_gap_start": int(sum(at_gap_start)),
        "decoded_samples": src.get("decoder", {}).get("samples"),
        "valid_samples": int(np.isfinite(x).sum()),
    }  # fmt: skip
    ok = (
        reader.torn_bytes == 0
        and n_records == rec_info.get("records")
        and kinds.get(4, 0) == 1
        and checks["session_json_complete"]
        and rec.units == ["mV"]
        and len(ann.sample) == gaps
        and all(at_gap_start)
        # every decoded sample is in the signal, minus the ones the sequencer dropped as
        # duplicate/late (none expected without dup faults)
        and checks["wfdb"]["valid_samples"] <= (checks["wfdb"]["decoded_samples"] or 0)
        and checks["wfdb"]["valid_samples"] >= 0.99 * (checks["wfdb"]["decoded_samples"] or 0)
    )
    if replay_model is not None:
        out = folder.parent / "replay.jsonl"
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "anyecg_edge", "-q", "stream", "--no-live", "--source",
             f"replay:{folder}", "--model", str(replay_model), "--speed", "0", "--threads", "1",
             "--hop", str(summary.get("hop_s", 1.0)), "--jsonl", str(out)],
            capture_output=True, text=True,
        )  # fmt: skip
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            checks["replay"] = {"exit": proc.returncode, "error": proc.stderr.strip()[-500:]}
            ok = False
        else:
            rs = json.loads(out.read_text().splitlines()[-1])["summary"]
            info = rs["source_info"]
            checks["replay"] = {
                "wall_s": round(wall, 1), "windows": rs["windows"],
                "notifications": info["notifications"], "torn_bytes": info["torn_bytes"],
                "complete": info["complete"], "gap_events": rs["events"].get("gap", 0),
            }  # fmt: skip
            ok = ok and info["notifications"] == kinds.get(1, 0) and info["torn_bytes"] == 0
            ok = ok and rs["events"].get("gap", 0) == gaps
        out.unlink(missing_ok=True)
    checks["ok"] = bool(ok)
    return checks


def _memory(samples: list[dict[str, Any]], stream_s: float) -> dict[str, Any]:
    after = [s for s in samples if s["t"] is not None and s["t"] >= WARMUP_FRACTION * stream_s]
    if len(after) < 3:
        return {"samples_after_warmup": len(after)}
    t_h = np.array([s["t"] for s in after]) / 3600.0
    rss = np.array([s["rss_mb"] for s in after])
    slope = float(np.polyfit(t_h, rss, 1)[0]) if np.ptp(t_h) > 0 else 0.0
    return {
        "samples_after_warmup": len(after),
        "rss_at_warmup_mb": round(float(rss[0]), 1),
        "rss_end_mb": round(float(rss[-1]), 1),
        "rss_max_mb": round(float(max(s["rss_mb"] for s in samples)), 1),
        "growth_after_warmup_mb": round(float(rss.max() - rss[0]), 1),
        "slope_mb_per_sim_hour": round(slope, 3),
    }


def run_soak(
    *,
    hours: float,
    speed: float,
    record: Path,
    model: Path | None = None,
    hop_s: float = 5.0,
    faults: str = DEFAULT_FAULTS,
    sample_s: float = 2.0,
    keep: Path | None = None,
    replay: bool = True,
    max_growth_mb: float = 25.0,
) -> dict[str, Any]:
    """Run the soak (see the module doc); returns the result dict (``ok`` included)."""
    from anyecg_edge.benchmarks.bench_machine import machine_info
    from anyecg_edge.benchmarks.bench_stream import write_tiny_onnx

    work = Path(tempfile.mkdtemp(prefix="soak_record_"))
    try:
        if model is None:
            model = write_tiny_onnx(work / "tiny.onnx", LABS, 0)
        folder = (keep or work) / "recording"
        if folder.exists():
            shutil.rmtree(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        jsonl, summary_path = work / "stream.jsonl", work / "summary.json"
        duration_s = hours * 3600.0
        cmd = [
            sys.executable, "-m", "anyecg_edge", "-q", "stream", "--no-live", "--source",
            f"sim-polar:{record}", "--model", str(model), "--speed", f"{speed:g}", "--loop",
            "--duration", f"{duration_s:g}", "--hop", f"{hop_s:g}", "--faults", faults,
            "--threads", "1", "--record", str(folder), "--jsonl", str(jsonl),
            "--json", str(summary_path),
        ]  # fmt: skip
        samples: list[dict[str, Any]] = []
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        while proc.poll() is None:
            rss = _rss_mb(proc.pid)
            if rss is not None:
                samples.append({"wall_s": round(time.perf_counter() - t0, 2),
                                "t": _last_t(jsonl), "rss_mb": round(rss, 1)})  # fmt: skip
            time.sleep(sample_s)
        wall_s = time.perf_counter() - t0
        stderr = proc.stderr.read() if proc.stderr else ""
        result: dict[str, Any] = {
            "benchmark": "soak_record", "command": " ".join(cmd[1:]).replace(str(work), "TMP"),
            "hours_simulated": hours, "speed_requested": speed, "hop_s": hop_s,
            "faults": faults, "record": str(record), "exit": proc.returncode,
            "wall_s": round(wall_s, 1), "machine": machine_info(),
        }  # fmt: skip
        if proc.returncode != 0 or not summary_path.exists():
            result.update(ok=False, error=stderr.strip()[-1000:])
            return result
        summary = json.loads(summary_path.read_text())
        src = summary.get("source_info", {})
        result["stream"] = {
            "stream_s": summary["stream_s"], "speed_achieved": summary.get("speed"),
            "windows": summary["windows"], "dropped_windows": summary["dropped"],
            "events": summary["events"], "sequencer": src.get("sequencer"),
            "injected": src.get("injected"), "client": src.get("client"),
            "recording": src.get("recording"),
        }  # fmt: skip
        result["memory"] = _memory(samples, float(summary["stream_s"]))
        result["rss_samples"] = samples
        result["files"] = check_recording(folder, summary, replay_model=model if replay else None)
        growth = result["memory"].get("growth_after_warmup_mb")
        result["memory"]["flat"] = growth is not None and growth < max_growth_mb
        result["memory"]["max_growth_mb"] = max_growth_mb
        result["ok"] = bool(result["files"]["ok"] and result["memory"]["flat"])
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _markdown(r: dict[str, Any]) -> str:
    m, s, f = r.get("memory", {}), r.get("stream", {}), r.get("files", {})
    log, w = f.get("log", {}), f.get("wfdb", {})
    lines = [
        f"# stream --record soak: {r['hours_simulated']:g} simulated hours",
        "",
        f"`{r['command']}` on {r['machine'].get('cpu', '?')} ({r['machine'].get('cores_available')} "
        f"cores, shared; load {r['machine'].get('load_avg_1m')}); exit {r['exit']}, ok = **{r.get('ok')}**.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| wall time | {r['wall_s']} s (speed achieved {s.get('speed_achieved')}x) |",
        f"| stream time | {s.get('stream_s')} s, {s.get('windows')} windows "
        f"({s.get('dropped_windows')} dropped by the live queue) |",
        f"| faults injected | {s.get('injected')} |",
        f"| link events | {s.get('client')} |",
        f"| raw log | {log.get('bytes')} B, {log.get('records')} records "
        f"({log.get('notifications')} notifications), torn tail {log.get('torn_bytes')} B, "
        f"session counted {log.get('records_counted_by_session')} |",
        f"| WFDB | {w.get('samples')} samples at {w.get('fs_hz')} Hz = {w.get('duration_s')} s, "
        f"{w.get('valid_fraction')} valid, units {w.get('units')}, "
        f"{w.get('gap_annotations')} gap annotations for {w.get('gap_events')} gap events "
        f"({w.get('annotations_at_gap_start')} at the start of an invalid run) |",
        f"| replay (speed 0) | {f.get('replay')} |",
        f"| RSS after warm-up | {m.get('rss_at_warmup_mb')} MB -> {m.get('rss_end_mb')} MB at the "
        f"end (max {m.get('rss_max_mb')} MB); growth {m.get('growth_after_warmup_mb')} MB "
        f"(limit {m.get('max_growth_mb')}), slope {m.get('slope_mb_per_sim_hour')} MB per "
        f"simulated hour, {m.get('samples_after_warmup')} samples |",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hours", type=float, default=24.0, help="simulated hours")
    ap.add_argument("--speed", type=float, default=200.0, help="x real time")
    ap.add_argument("--record", type=Path, default=None, help="record the simulator plays")
    ap.add_argument("--hop", type=float, default=5.0, help="seconds between windows")
    ap.add_argument("--faults", default=DEFAULT_FAULTS)
    ap.add_argument("--sample-s", type=float, default=2.0, help="RSS sampling interval")
    ap.add_argument("--max-growth-mb", type=float, default=25.0)
    ap.add_argument("--no-replay", action="store_true", help="skip the replay check")
    ap.add_argument("--keep", type=Path, default=None, help="keep the recording in this folder")
    ap.add_argument("--out", type=Path, default=None, help="write OUT.json and OUT.md")
    args = ap.parse_args(argv)
    record = args.record or _default_record()
    if not Path(f"{record}.hea").exists() and not record.exists():
        print(f"Error: --record {record}: no such record (expected a WFDB record path)")
        return 1
    result = run_soak(
        hours=args.hours, speed=args.speed, record=record, hop_s=args.hop, faults=args.faults,
        sample_s=args.sample_s, keep=args.keep, replay=not args.no_replay,
        max_growth_mb=args.max_growth_mb,
    )  # fmt: skip
    if args.out is not None:
        from anyecg_edge.fileio import write_json, write_text_atomic

        write_json(args.out.with_suffix(".json"), result)
        write_text_atomic(args.out.with_suffix(".md"), _markdown(result))
    print(_markdown(result) if "machine" in result else json.dumps(result))
    return 0 if result.get("ok") else 3


if __name__ == "__main__":
    raise SystemExit(main())
