"""`anyecg-edge stream`: rolling-window inference on a live or replayed stream (issue 7)."""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
from pathlib import Path
from typing import IO, Any

import click

from anyecg_edge import RESEARCH_USE_NOTE
from anyecg_edge.commands._types import (
    Number,
    OutputPath,
    all_cores,
    count,
    emit_json,
    json_option,
    json_to_stdout,
    positive,
    record_files,
    sim_source_options,
    threads_option,
)

log = logging.getLogger(__name__)

SOURCE_HELP = (
    "file:PATH (WFDB/CSV/EDF replay), sim-polar:PATH / sim-movesense:PATH / sim-anyecg:PATH "
    "(simulated wearable over an in-process GATT link), polar:ADDR / movesense:ADDR / "
    "anyecg:ADDR (real device), replay:DIR (a `stream --record DIR` session, replayed as "
    "recorded)"
)


@click.command("stream")
@click.option("--source", required=True, help=SOURCE_HELP)
@click.option(
    "--model", "model_path", type=click.Path(path_type=Path), required=True,
    help="Exported model (.onnx/.tflite with its manifest, or a .pt checkpoint).",
)  # fmt: skip
@click.option(
    "--hop", "hop_s", type=Number(0.0, 3600.0, min_open=True), default=1.0, show_default=True,
    help="Seconds between windows.",
)  # fmt: skip
@click.option(
    "--duration", "duration_s", type=positive(), default=None,
    help="Seconds of stream to process (file/sim: of signal; real device: wall time). Default: all / until Ctrl-C.",
)  # fmt: skip
@sim_source_options(
    lead="Lead to replay from a record (default: II/MLII, the lab models' training lead, then I).",
    fs="Sampling rate of a CSV / .npy record (file and sim sources); a real Movesense: the "
    "rate to ask it for (a simulated wearable streams at its own rate).",
    speed="Replay speed x real time for file and sim sources; 0 = as fast as possible (file "
    "only, lossless).",
    faults='Sim sources: fault injection, e.g. "drop=0.02,disconnect=45" (keys: drop, dup, '
    "reorder, corrupt, cut, disconnect, vanish, stall, jump, jump_s, drift, seed).",
    speed_type=Number(0.0, 1e6),
)
@click.option(
    "--jsonl", "jsonl_path", type=OutputPath(allow_dash=True), default=None,
    help="Write one JSON line per window and per event ('-' = stdout).",
)  # fmt: skip
@click.option(
    "--live/--no-live", default=None,
    help="Live terminal view (default: on when stdout is a terminal).",
)  # fmt: skip
@click.option(
    "--units",
    type=click.Choice(["mV", "uV", "V", "auto"], case_sensitive=False),
    default=None,
    help="file: sources: unit of a CSV column or .npy array that does not state one "
    "(default mV; as for predict). auto: inferred from the amplitude, refused when ambiguous.",
)
@click.option(
    "--loop", is_flag=True,
    help="file and sim sources: repeat the record end to end (with --duration); without it "
    "a replay stops at the record's end.",
)  # fmt: skip
@click.option("--smooth", "smooth_s", type=Number(0.0), default=30.0, show_default=True, help="Smoothing time constant of the lab estimates in s (0: none).")  # fmt: skip
@click.option("--queue", "queue_size", type=count(1, 10_000), default=2, show_default=True, help="Windows waiting for inference before the oldest is dropped.")  # fmt: skip
@threads_option(64, "Inference threads")
@click.option(
    "--hci", default=None,
    help="Real devices: use bumble on this HCI transport (usb:0, hci-socket:0, "
    "tcp-client:HOST:PORT from `ble simulate`) instead of the OS Bluetooth stack.",
)  # fmt: skip
@click.option("--silence", "silence_s", type=positive(), default=5.0, show_default=True, help="Force a reconnect after this many seconds without data.")  # fmt: skip
@click.option(
    "--connect-timeout", "connect_timeout_s", type=Number(0.5), default=20.0,
    show_default=True,
    help="Real devices: give up (one line, non-zero exit) if the device is not found "
    "and connected within this many seconds.",
)  # fmt: skip
@click.option(
    "--max-reconnects", type=click.IntRange(min=0), default=None,
    help="After a device that was streaming is lost: give up after this many failed "
    "reconnect attempts in a row (backoff 0.5 s doubling to 30 s). Default: keep trying; "
    "0: never reconnect.",
)  # fmt: skip
@click.option(
    "--serve", "serve_at", metavar="[HOST:]PORT", default=None,
    help="Live dashboard page of the stream at http://HOST:PORT/ (HOST default 127.0.0.1; "
    "PORT 0: any free port, printed).",
)  # fmt: skip
@click.option(
    "--serve-public", is_flag=True,
    help="Allow --serve on a host other machines reach (0.0.0.0 when only PORT is given); "
    "the page has no password.",
)  # fmt: skip
@click.option(
    "--record", "record_dir", type=OutputPath(folder=True), default=None, metavar="DIR",
    help="BLE sources: record the session into DIR - the raw notifications with their host "
    "arrival times and the link events (framed, crash-safe: replay with --source replay:DIR) "
    "and the sequenced signal as WFDB with gap annotations. With replay:DIR: the recording "
    "again (a killed session's WFDB files regenerated from its log).",
)  # fmt: skip
@json_option("the final summary")
def stream(
    source: str,
    model_path: Path,
    hop_s: float,
    duration_s: float | None,
    speed: float,
    faults: Any,
    jsonl_path: Path | None,
    live: bool | None,
    lead: str | None,
    fs: float | None,
    units: str | None,
    loop: bool,
    smooth_s: float,
    queue_size: int,
    threads: int | None,
    hci: str | None,
    silence_s: float,
    connect_timeout_s: float,
    max_reconnects: int | None,
    serve_at: str | None,
    serve_public: bool,
    record_dir: Path | None,
    json_out: Path | None,
) -> None:
    """Rolling-window lab estimates on a live or replayed single-lead stream.

    Every HOP seconds the last 10 s are gated for quality, preprocessed (resampled to
    500 Hz) and scored; estimates are smoothed over time. Gaps (lost packets, reconnects)
    are detected from device timestamps / sequence numbers: windows that would span one
    are skipped. Ctrl-C stops cleanly and prints the summary. No usable Bluetooth (no
    adapter, adapter off, permission denied, HCI transport refused or missing) or a device
    not found within --connect-timeout ends the command with one line and a non-zero exit.
    """
    from anyecg_edge.commands._types import refuse_clobber
    from anyecg_edge.commands.predict import load_model
    from anyecg_edge.firmware_bridge.faults import FaultSpec
    from anyecg_edge.io import RecordError
    from anyecg_edge.runtime import manifest_path
    from anyecg_edge.signal import SignalError, extract_windows
    from anyecg_edge.stream.session import StreamSession, open_jsonl
    from anyecg_edge.stream.sources import SourceError, SourceSpec, load_record

    spec = SourceSpec.parse(source)
    if json_to_stdout(json_out) and jsonl_path is not None and str(jsonl_path) == "-":
        raise click.UsageError(
            "--jsonl - and --json - both write to stdout, which would then be neither JSON "
            "lines nor one JSON document; send one of them to a file"
        )
    fault_spec = faults if faults is not None else FaultSpec()
    if fault_spec.any and spec.kind != "sim":
        raise SourceError("--faults applies to simulated sources (sim-polar:..., sim-anyecg:...)")
    if spec.kind != "device" and hci:
        raise SourceError("--hci applies to real-device sources (polar:ADDR, ...)")
    if spec.kind in ("file", "sim"):
        refuse_clobber(jsonl_path, record_files(spec.target), "--jsonl")
    refuse_clobber(jsonl_path, [model_path, manifest_path(model_path)], "--jsonl")
    if spec.kind in ("file", "sim"):
        refuse_clobber(json_out, record_files(spec.target), "--json")
    refuse_clobber(json_out, [model_path, manifest_path(model_path), jsonl_path], "--json")
    if spec.kind == "replay":
        from anyecg_edge.stream.recording import recording_files

        replayed = recording_files(spec.target)  # (checks the folder first: one-line error)
        for path, what in ((jsonl_path, "--jsonl"), (json_out, "--json"), (record_dir, "--record")):
            refuse_clobber(path, replayed, what)
    if record_dir is not None:
        if spec.kind == "file":
            # (no notifications to keep: a file is a recording already)
            raise SourceError(
                "--record applies to BLE sources (sim-polar:PATH, polar:ADDR, ...) and "
                "replay:DIR (regenerates a recording); a file: source is a recording already"
            )
        from anyecg_edge.stream.recording import check_record_dir

        check_record_dir(record_dir)
    if units is not None and spec.kind != "file":
        raise SourceError("--units applies to file: sources (a wearable states its unit)")
    from anyecg_edge.stream.serve import serve_option

    serve = serve_option(serve_at, serve_public)
    record = None
    if spec.kind in ("file", "sim"):
        # (read here, its errors come before any setup; a sim source is handed this one)
        # --fs is the rate of a record that states none (CSV, .npy); beside a WFDB/EDF
        # record on a sim-movesense source it is the Movesense rate of the real-device line.
        from anyecg_edge.io import record_has_fs

        record_fs = None if spec.kind == "sim" and record_has_fs(spec.target) else fs
        record = load_record(spec.target, lead=lead, fs=record_fs, units=units)
    model = load_model(model_path, threads=threads or all_cores())
    if record is not None:
        # As `predict` does (same check, same words): a record shorter than one window
        # gives no estimate, and "0 windows, exit 0" would pass for a result.
        try:
            head = record.signal_mv[: int(record.fs * model.metadata.window_s) + 2]
            extract_windows(head, record.fs, model.metadata.window_s, None)
        except SignalError as exc:
            raise RecordError(f"{record.source} (lead {record.lead}): {exc}") from None
    if duration_s is not None and spec.kind != "device" and duration_s < model.metadata.window_s:
        raise click.BadParameter(
            f"{duration_s:g} s of signal is shorter than one {model.metadata.window_s:g} s "
            "window: no estimate could be made",
            param_hint="'--duration'",
        )
    sim_record = record if spec.kind == "sim" else None  # the simulated wearable samples it
    if spec.kind != "file":
        record = None

    use_live = sys.stdout.isatty() if live is None else live
    jsonl: IO[str] | None = None
    to_stdout = jsonl_path is not None and str(jsonl_path) == "-"
    if to_stdout:
        jsonl, use_live = sys.stdout, False
    elif jsonl_path is not None:
        jsonl = open_jsonl(jsonl_path)
    quiet = click.get_current_context().find_root().obj.get("quiet", False)
    if not click.get_current_context().find_root().obj.get("verbose"):
        # link-loss chatter from the sim; bleak's BlueZ-version guess before its own error
        for name in ("bumble", "bleak"):
            logging.getLogger(name).setLevel(logging.ERROR)

    session = StreamSession(
        model, spec, str(model_path), hop_s=hop_s, smooth_s=smooth_s, queue_size=queue_size,
        # A replay waits for inference at any speed (its sequencer works on the recorded
        # arrival times, so waiting changes nothing): every window of the session is scored.
        lossless=spec.kind == "replay" or (spec.kind == "file" and speed == 0), jsonl=jsonl,
        jsonl_name="-" if to_stdout else str(jsonl_path), close_jsonl=not to_stdout,
        live=use_live, serve=serve, record_dir=record_dir, exit_after_signal=True,
    )  # fmt: skip
    ble = {} if record is not None else {
        "faults": fault_spec, "lead": lead, "fs": fs, "hci": hci, "silence_timeout_s": silence_s,
        "find_timeout_s": connect_timeout_s, "max_reconnects": max_reconnects,
        "sim_record": sim_record,
    }  # fmt: skip
    try:
        result = session.run(record, speed=speed, duration_s=duration_s, loop=loop, **ble)
    except Exception as exc:
        # A source that gave up still has a summary (what streamed, and why it ended).
        summary = getattr(exc, "session_summary", None)
        if summary is not None and json_out is not None:
            with contextlib.suppress(Exception):
                emit_json(summary, json_out)
        raise
    summary = result.summary
    emit_json(summary, json_out)
    if not json_to_stdout(json_out) and not quiet and not to_stdout:
        _print_summary(summary)
    if result.interrupted:
        # 128 + the signal, as a shell reports it (SIGINT 130, SIGTERM 143, SIGHUP 129).
        sys.exit(128 + (result.signum or signal.SIGINT))


def _print_summary(s: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    info = s.get("source_info") or {}
    lat = s["latency_ms"]
    speed = f" ({s['speed']:.0f}x real time)" if s.get("speed") else ""
    console.print(
        f"[bold]{s['source']}[/]: {s['stream_s']:.1f} s of signal in {s['wall_s']:.1f} s{speed}"
        + (" [yellow](interrupted)[/]" if s["interrupted"] else "")
    )
    console.print(
        f"windows: {s['windows']} ({s['accepted']} used, {s['rejected']} rejected by the quality "
        f"gate, {s['dropped']} dropped under backpressure, {s['skipped_gap']} skipped at gaps)"
    )
    if lat["n"]:
        console.print(
            f"latency (window's last sample in -> result): p50 {lat['p50']:.2f} ms, "
            f"p95 {lat['p95']:.2f} ms, p99 {lat['p99']:.2f} ms, max {lat['max']:.2f} ms "
            f"(compute p50 {s['compute_ms']['p50']:.2f} ms per window, the rest is queueing)"
        )
    if s["events"]:
        console.print("events: " + ", ".join(f"{k} {v}" for k, v in s["events"].items()))
    dec = info.get("decoder")
    if dec:
        seq = info.get("sequencer", {})
        console.print(
            f"link: {dec['frames']} frames, {dec['malformed']} malformed"
            + (f" {dec['malformed_by_reason']}" if dec["malformed"] else "")
            + f"; duplicates {seq.get('duplicate', 0)}, reordered {seq.get('reordered', 0)}, "
            f"late {seq.get('late', 0)}; rate from timestamps {info.get('fs_estimated_hz')} Hz"
        )
    rec = info.get("recording")
    if rec:
        console.print(
            f"recording: {rec['dir']} ({rec.get('records', 0)} records"
            + (", WFDB signal" if rec.get("wfdb") else "")
            + (f"; [red]not completed: {rec['error']}[/]" if rec.get("error") else "")
            + f"; replay with --source replay:{rec['dir']})"
        )
    if info.get("torn_bytes"):
        console.print(f"[yellow]recording cut short: {info['torn_bytes']} torn bytes left[/]")
    if s["top_labs"]:
        table = Table(title="Smoothed lab estimates at the end (P(abnormal))")
        for col in ("lab", "P", "interval", "call"):
            table.add_column(col)
        for row in s["top_labs"]:
            iv = row["interval"]
            table.add_row(
                row["lab"],
                f"{row['probability']:.3f}",
                f"{iv[0]:.2f}–{iv[1]:.2f}" if iv else "-",
                row["status"],
            )
        console.print(table)
    console.print(f"[yellow]{RESEARCH_USE_NOTE}[/]")


COMMANDS = [stream]
