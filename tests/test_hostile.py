"""Hostile input (issue 14): what a careless or hostile user does to the CLI, and what the
CLI must do back: one line ``Error: ...`` with the documented exit status (no traceback),
or valid output (strict JSON: no NaN/Infinity); never a hang (every subprocess and every
wait runs under a timeout); the inputs unchanged.

A table of named cases (the issue's examples, in-process through click's CliRunner), a few
subprocess cases where only a process shows it (signals, a full stdout), engine-level
checks that a dead sink or a dead worker cannot block, and hypothesis properties over CLI
option values and record / manifest / frame mutations. ``test_zz_outcome_counts`` prints
how every case ended (run with -s to see it) and fails on any traceback, hang or silent
wrong result.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from anyecg_edge.benchmarks.bench_stream import write_tiny_onnx
from anyecg_edge.firmware_bridge.encoders import FrameEncoder
from anyecg_edge.firmware_bridge.profiles import get_profile
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anyecg_edge.cli import cli
from anyecg_edge.commands._group import EXIT_CODES
from anyecg_edge.io import RecordError, read_record
from anyecg_edge.jsonsafe import dumps
from anyecg_edge.runtime import ModelError, load_model
from anyecg_edge.stream.engine import SinkFailedError, StreamEngine, StreamError
from anyecg_edge.stream.sources import BlePipeline, file_blocks

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "anyecg_edge"]
LABS = ["potassium", "sodium", "glucose"]
FS = 250

#: How each case ended. "traceback", "hang" and "silent_wrong" must stay at 0.
OUTCOMES: Counter[str] = Counter()


# --------------------------------------------------------------------------- inputs
def ecg_mv(seconds: float, fs: float = FS, seed: int = 0) -> np.ndarray:
    """A plain synthetic sinus rhythm in mV (P/QRS/T Gaussians, wander, noise)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * fs))) / fs
    x = 0.1 * np.sin(2 * np.pi * 0.25 * t) + 0.02 * rng.standard_normal(t.size)
    for beat in np.arange(0.3, seconds, 60 / 72):
        for dt, w, a in (
            (-0.2, 0.025, 0.12),
            (0.0, 0.012, 1.1),
            (0.03, 0.01, -0.25),
            (0.25, 0.045, 0.3),
        ):
            x += a * np.exp(-0.5 * ((t - beat - dt) / w) ** 2)
    return x.astype(np.float64)


def write_wfdb(folder: Path, name: str, seconds: float) -> Path:
    import wfdb

    wfdb.wrsamp(
        name, fs=FS, units=["mV"], sig_name=["II"], p_signal=ecg_mv(seconds)[:, None],
        fmt=["16"], write_dir=str(folder),
    )  # fmt: skip
    return folder / f"{name}.hea"


def write_edf(path: Path, *, spr: int = FS, record_s: str = "1", n_rec: int = 12) -> Path:
    """A one-signal EDF written by hand (the fields a hostile file would bend)."""
    head = b"0".ljust(8) + b"x".ljust(80) + b"x".ljust(80) + b"01.01.01" + b"00.00.00"
    head += b"512".ljust(8) + b"".ljust(44) + str(n_rec).encode().ljust(8)
    head += record_s.encode().ljust(8) + b"1".ljust(4)
    sig = b"II".ljust(16) + b"".ljust(80) + b"mV".ljust(8) + b"-5".ljust(8) + b"5".ljust(8)
    sig += b"-32768".ljust(8) + b"32767".ljust(8) + b"".ljust(80) + str(spr).encode().ljust(8)
    sig += b"".ljust(32)
    data = (ecg_mv(n_rec * max(spr, 1) / FS) * 6553).astype("<i2").tobytes()
    path.write_bytes(head + sig + data)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("hostile")
    model = write_tiny_onnx(d / "tiny.onnx", LABS, 0, thresholds={"glucose": 0.6})
    return {
        "dir": d,
        "model": model,
        "manifest": Path(f"{model}.manifest.json"),
        "rec": write_wfdb(d, "rec", 12.0),
        "long": write_wfdb(d, "long", 30.0),
        "short": write_wfdb(d, "short", 2.0),
        "edf": write_edf(d / "ok.edf"),
    }


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# --------------------------------------------------------------------------- checks
def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, ["-q", *map(str, args)])


def _has_traceback(text: str) -> bool:
    return "Traceback" in text


def expect_error(res: Result, code: int, *needles: str) -> str:
    """Exit ``code``, exactly one stderr line 'Error: ...' holding ``needles``, no
    traceback; returns the line."""
    text = res.output + (res.stderr or "")
    if _has_traceback(text) or (res.exception and not isinstance(res.exception, SystemExit)):
        OUTCOMES["traceback"] += 1
        raise AssertionError(f"traceback / uncaught {res.exception!r}:\n{text}")
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    if res.exit_code == 0:
        OUTCOMES["silent_wrong"] += 1
    assert res.exit_code == code, (res.exit_code, text)
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    OUTCOMES["one_line_error"] += 1
    return lines[0]


def strict_json_lines(text: str) -> list[dict]:
    """Every line parses as JSON without NaN/Infinity tokens (strict parsers reject them)."""

    def refuse(token: str) -> None:
        raise ValueError(f"non-standard JSON token {token}")

    return [json.loads(ln, parse_constant=refuse) for ln in text.splitlines() if ln.strip()]


def expect_valid(res: Result, codes: tuple[int, ...] = (0,)) -> None:
    text = res.output + (res.stderr or "")
    if _has_traceback(text) or (res.exception and not isinstance(res.exception, SystemExit)):
        OUTCOMES["traceback"] += 1
        raise AssertionError(f"traceback / uncaught {res.exception!r}:\n{text}")
    assert res.exit_code in codes, (res.exit_code, text)
    OUTCOMES["valid_output"] += 1


def stream_args(
    world: dict[str, Path],
    *extra: object,
    source: str | None = None,
    speed: str = "0",
    model: Path | None = None,
) -> list[str]:
    src = source or f"file:{world['rec']}"
    return ["stream", "--source", src, "--model", str(model or world["model"]), "--no-live",
            "--speed", speed, *map(str, extra)]  # fmt: skip


# --------------------------------------------------------------------------- named cases
def _manifest_case(world: dict[str, Path], tmp: Path, name: str, edit: Callable) -> Path:
    model = tmp / f"m_{name}.onnx"
    shutil.copy(world["model"], model)
    m = json.loads(world["manifest"].read_text())
    raw = edit(m)
    path = Path(f"{model}.manifest.json")
    if isinstance(raw, bytes):
        path.write_bytes(raw)
    else:
        path.write_text(json.dumps(m))
    return model


MANIFEST_CASES: dict[str, tuple[Callable, str]] = {
    "not_utf8": (lambda m: b'{"labs": ["\xff\xfe"]}', "not UTF-8"),
    "sha_number": (lambda m: m.update(model_sha256=12345), "model_sha256"),
    "sha_short": (lambda m: m.update(model_sha256="abc"), "model_sha256"),
    "calibration_strings": (lambda m: m.update(calibration={"sodium": ["a", "b"]}), "[a, b]"),
    "calibration_list": (lambda m: m.update(calibration=["a", "b"]), "'calibration'"),
    "duplicate_labs": (lambda m: m.update(labs=["sodium", "sodium", "glucose"]), "more than once"),
    "fs_infinite": (lambda m: m.update(fs=float("inf")), "'fs'"),
    "fs_negative": (lambda m: m.update(fs=-500), "'fs'"),
    "window_nan": (lambda m: m.update(window_s=float("nan")), "'window_s'"),
    "threshold_one": (lambda m: m.update(thresholds={"glucose": 1.0}), "thresholds"),
    "mains_string": (lambda m: m.update(mains_hz="fifty"), "'mains_hz'"),
    "labs_empty_name": (lambda m: m.update(labs=["", "b", "c"]), "empty lab name"),
}


@pytest.mark.parametrize("name", sorted(MANIFEST_CASES))
def test_malformed_manifest_is_one_line_model_error(world, tmp_path, name) -> None:
    edit, needle = MANIFEST_CASES[name]
    model = _manifest_case(world, tmp_path, name, edit)
    before = snapshot(world["dir"])
    for cmd in (
        ["predict", "--model", model, "--input", world["rec"]],
        stream_args(world, "--jsonl", tmp_path / "o.jsonl", model=model),
    ):
        expect_error(invoke(*cmd), 5, needle)
    assert snapshot(world["dir"]) == before


def _header_case(world: dict[str, Path], tmp: Path, field: int, value: str, line: int) -> Path:
    """A copy of rec.hea/.dat with token ``field`` of header line ``line`` replaced."""
    for suffix in (".hea", ".dat"):
        shutil.copy(world["rec"].with_suffix(suffix), tmp / f"rec{suffix}")
    hea = tmp / "rec.hea"
    lines = hea.read_text().splitlines()
    tokens = lines[line].split()
    tokens[field] = value
    lines[line] = " ".join(tokens)
    hea.write_text("\n".join(lines) + "\n")
    return hea


RECORD_CASES = {
    # (header line, token, value) -> message
    "wfdb_fs_negative": ((0, 2, "-500"), "sampling frequency '-500'"),
    "wfdb_fs_nan": ((0, 2, "nan"), "sampling frequency 'nan'"),
    "wfdb_fs_zero": ((0, 2, "0"), "sampling frequency '0'"),
    "wfdb_fs_text": ((0, 2, "fast"), "sampling frequency 'fast'"),
    "wfdb_nsamp_negative": ((0, 3, "-3"), "number of samples '-3'"),
    "wfdb_gain_zero": ((1, 2, "0(0)/mV"), "ADC gain"),
    "wfdb_gain_inf": ((1, 2, "inf(0)/mV"), "ADC gain"),
}


@pytest.mark.parametrize("name", sorted(RECORD_CASES))
def test_broken_record_header_is_one_line_input_error(world, tmp_path, name) -> None:
    (line, field, value), needle = RECORD_CASES[name]
    hea = _header_case(world, tmp_path, field, value, line)
    before = snapshot(tmp_path)
    expect_error(invoke("predict", "--model", world["model"], "--input", hea), 1, needle)
    expect_error(invoke(*stream_args(world, source=f"file:{hea}")), 1, needle)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"spr": 0}, "samples per data record"),
        ({"record_s": "nan"}, "duration is nan"),
        ({"record_s": "-1"}, "duration is -1"),
    ],
)
def test_broken_edf_is_one_line_input_error(world, tmp_path, kwargs, needle) -> None:
    edf = write_edf(tmp_path / "bad.edf", **kwargs)
    expect_error(invoke("predict", "--model", world["model"], "--input", edf), 1, needle)


# (id, args after the command's fixed part, exit status, text the line must hold)
OPTION_CASES = [
    ("hop_inf", ["--hop", "inf"], 2, "'--hop'"),
    ("hop_zero", ["--hop", "0"], 2, "'--hop'"),
    ("duration_nan", ["--duration", "nan"], 2, "'--duration'"),
    ("duration_under_window", ["--duration", "2"], 2, "'--duration'"),
    ("smooth_nan", ["--smooth", "nan"], 2, "'--smooth'"),
    ("smooth_negative", ["--smooth", "-1"], 2, "'--smooth'"),
    ("speed_negative", ["--speed", "-1"], 2, "'--speed'"),
    ("queue_zero", ["--queue", "0"], 2, "'--queue'"),
    ("threads_zero", ["--threads", "0"], 2, "'--threads'"),
    ("fs_nan", ["--fs", "nan"], 2, "'--fs'"),
    ("silence_inf", ["--silence", "inf"], 2, "'--silence'"),
    ("faults_drift_nan", ["--faults", "drift=nan"], 2, "drift=nan"),
    ("faults_jump_s_inf", ["--faults", "jump_s=inf"], 2, "jump_s=inf"),
    ("faults_jump_s_huge", ["--faults", "jump_s=1e9"], 2, "jump_s=1e9"),
    ("faults_stall_tiny", ["--faults", "stall=1e-9"], 2, "stall=1e-9"),
    ("faults_corrupt_2", ["--faults", "corrupt=2"], 2, "corrupt=2"),
    ("faults_unknown", ["--faults", "bogus=1"], 2, "bogus=1"),
    ("faults_on_file", ["--faults", "drop=0.1"], 1, "simulated sources"),
    ("hci_on_file", ["--hci", "usb:0"], 1, "--hci"),
]


@pytest.mark.parametrize(
    ("case", "args", "code", "needle"), OPTION_CASES, ids=[c[0] for c in OPTION_CASES]
)
def test_stream_option_values_are_refused_in_one_line(world, case, args, code, needle) -> None:
    before = snapshot(world["dir"])
    expect_error(invoke(*stream_args(world, *args)), code, needle)
    assert snapshot(world["dir"]) == before


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["--hop", "-1"], 2, "'--hop'"),
        (["--hop", "nan"], 2, "'--hop'"),
        (["--fs", "inf"], 2, "'--fs'"),
        (["--threads", "0"], 2, "'--threads'"),
        (["--bogus"], 2, "--bogus"),
    ],
)
def test_predict_option_values_are_refused_in_one_line(world, args, code, needle) -> None:
    expect_error(
        invoke("predict", "--model", world["model"], "--input", world["rec"], *args), code, needle
    )


def test_usage_and_value_errors_of_other_commands(world, tmp_path) -> None:
    d = world["dir"]
    existing_dir = tmp_path / "a_folder"
    existing_dir.mkdir()
    onnx_dir = tmp_path / "out.onnx"
    onnx_dir.mkdir()
    before = snapshot(d)
    cases = [
        (["data", "synth", "--out", tmp_path / "c", "--segment-s", "0", "0"], 2, "'--segment-s'"),
        (["data", "synth", "--out", tmp_path / "c", "--segment-s", "90", "20"], 2, "above high"),
        (
            ["data", "synth", "--out", tmp_path / "c", "--segments-per-visit", "0", "2"],
            2,
            "'--segments-per-visit'",
        ),
        (["data", "synth", "--out", world["rec"], "--visits", "2"], 2, "not a folder"),
        # A folder of other files (here the recordings and the model) is not a cohort to
        # replace: refused before anything is written, the folder untouched.
        (["data", "synth", "--out", d, "--visits", "2"], 1, "not part of a synthetic cohort"),
        (["data", "build", "--mcmed", d, "--out", d], 2, "is also an input"),
        (
            ["data", "build", "--mcmed", d, "--out", tmp_path / "k", "--window", "nan"],
            2,
            "'--window'",
        ),
        # --before/--after were parsed after the option line (an input error, exit 1).
        *(
            (
                ["data", "build", "--mcmed", d, "--out", tmp_path / "k", opt, bad],
                2,
                f"Invalid value for '{opt}': duration {bad!r} not understood",
            )
            for opt in ("--before", "--after")
            for bad in ("-5m", "soon", "nan", "1e400")
        ),  # fmt: skip
        (
            [
                "evaluate",
                "--model",
                world["model"],
                "--corpus",
                d,
                "--json",
                tmp_path / "e.json",
                "--batch-size",
                "0",
            ],
            2,
            "'--batch-size'",
        ),
        (
            ["evaluate", "--model", world["model"], "--corpus", d, "--json", existing_dir],
            2,
            "is a folder",
        ),
        (
            ["evaluate", "--model", world["model"], "--corpus", d, "--json", world["model"]],
            2,
            "is also an input",
        ),
        (["bench", "--quick", "--json", existing_dir], 2, "is a folder"),
        (["bench", "--quick", "--tolerance", "nan"], 2, "'--tolerance'"),
        (["bench", "--quick", "--stream-speed", "0"], 2, "'--stream-speed'"),
        (
            ["export", "--model", world["model"], "--format", "onnx", "--out", onnx_dir],
            2,
            "is a folder",
        ),
        (
            [
                "export",
                "--model",
                world["model"],
                "--format",
                "onnx",
                "--calib-size",
                "0",
                "--out",
                tmp_path / "x.onnx",
            ],
            2,
            "'--calib-size'",
        ),
        (
            ["train", "lora", "--corpus", d, "--out", tmp_path / "r", "--arch", "x", "--lr", "inf"],
            2,
            "'--lr'",
        ),
        (
            [
                "train",
                "lora",
                "--corpus",
                d,
                "--out",
                tmp_path / "r",
                "--arch",
                "x",
                "--dropout",
                "1",
            ],
            2,
            "'--dropout'",
        ),
        (
            [
                "train",
                "distill",
                "--teacher",
                d,
                "--corpus",
                d,
                "--out",
                tmp_path / "r",
                "--alpha",
                "2",
            ],
            2,
            "'--alpha'",
        ),
        (
            ["ble", "simulate", "--profile", "polar", "--record", world["rec"], "--speed", "inf"],
            2,
            "'--speed'",
        ),
        (
            [
                "ble",
                "simulate",
                "--profile",
                "polar",
                "--record",
                world["rec"],
                "--faults",
                "drift=inf",
            ],
            2,
            "drift=inf",
        ),
        (["ble", "scan", "--timeout", "nan"], 2, "'--timeout'"),
        (["--no-such-option"], 2, "--no-such-option"),
    ]
    for args, code, needle in cases:
        expect_error(invoke(*args), code, needle)
    assert snapshot(d) == before


def test_outputs_never_clobber_inputs(world) -> None:
    before = snapshot(world["dir"])
    rec = world["rec"]
    for target in (rec, rec.with_suffix(".dat"), world["model"], world["manifest"]):
        expect_error(invoke(*stream_args(world, "--jsonl", target)), 2, "is also an input")
    # Through a symlink: resolves to the input, refused alike.
    link = world["dir"] / "link.jsonl"
    link.symlink_to(rec.with_suffix(".dat"))
    try:
        expect_error(invoke(*stream_args(world, "--jsonl", link)), 2, "is also an input")
    finally:
        link.unlink()
    assert snapshot(world["dir"]) == before


def test_special_and_unwritable_outputs(world, tmp_path) -> None:
    # /proc/version: refused when parsed (not writable) or, as root, when written.
    res = invoke(*stream_args(world, "--jsonl", "/proc/version"))
    expect_error(res, res.exit_code, "/proc/version")
    assert res.exit_code in (2, 7)
    csv = tmp_path / "inf.csv"
    csv.write_text("II\n" + "\n".join(["0.1"] * 3000 + ["inf"]) + "\n")
    res = invoke("predict", "--model", world["model"], "--input", csv, "--fs", "250")
    expect_error(res, 1, "infinite")


def test_no_code_runs_from_untrusted_files(world, tmp_path) -> None:
    """A pickle whose loading would run a command, as a .pt checkpoint and inside a .npy:
    refused in one line, and the command never ran."""
    import pickle

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    pt = tmp_path / "evil.pt"
    pt.write_bytes(pickle.dumps(Evil()))
    npy = tmp_path / "evil.npy"
    np.save(npy, np.array([Evil()], dtype=object), allow_pickle=True)
    pytest.importorskip("torch")
    expect_error(invoke("predict", "--model", pt, "--input", world["rec"]), 5, "evil.pt")
    res = invoke("predict", "--model", world["model"], "--input", npy, "--fs", "250")
    expect_error(res, 1, "evil.npy")
    assert not marker.exists()


def test_stream_on_a_record_shorter_than_a_window_errors_like_predict(world) -> None:
    short = world["short"]
    p = expect_error(invoke("predict", "--model", world["model"], "--input", short), 1)
    s = expect_error(invoke(*stream_args(world, source=f"file:{short}")), 1)
    assert p == s and "one window needs 10.00 s" in s


def test_torch_checkpoint_with_an_unknown_arch_is_a_model_error(world, tmp_path) -> None:
    torch = pytest.importorskip("torch")
    from anyecg_edge.training.torch_model import CHECKPOINT_FORMAT

    path = tmp_path / "odd.pt"
    meta = {"labs": LABS}
    torch.save(
        {"format": CHECKPOINT_FORMAT, "arch": "no-such-net", "model_kwargs": {}, "state_dict": {},
         "metadata": meta}, path,
    )  # fmt: skip
    expect_error(invoke("predict", "--model", path, "--input", world["rec"]), 5, "odd.pt")
    expect_error(invoke(*stream_args(world, "--threads", "0", model=path)), 2, "'--threads'")


def test_concurrent_data_build_into_one_folder_is_refused(world, tmp_path) -> None:
    out = tmp_path / "corpus"
    out.mkdir()
    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running build holds it
        res = invoke("data", "build", "--mcmed", world["dir"], "--out", out, "--no-progress")
        expect_error(res, 1, "another `anyecg-edge data build`")
    finally:
        os.close(fd)
    assert list(out.iterdir()) == []


def test_stream_jsonl_on_a_full_disk_ends_in_one_line(world) -> None:
    """The issue's hang: the sink fails, the worker's error report fails on the same sink,
    close() blocked on a full queue. Now: one line, exit 7, within 5 s (in-process: the
    time is the stream's, not Python's start-up)."""
    for speed in ("0", "20"):
        t0 = time.perf_counter()
        res = invoke(*stream_args(world, "--jsonl", "/dev/full", speed=speed))
        elapsed = time.perf_counter() - t0
        expect_error(res, 7, "--jsonl /dev/full", "No space left")
        assert elapsed < 5, elapsed
        print(f"stream --speed {speed} --jsonl /dev/full: exit 7 in {elapsed:.2f} s")


def test_stream_jsonl_strict_json_even_with_smoothing_off(world, tmp_path) -> None:
    out = tmp_path / "s.jsonl"
    res = invoke(*stream_args(world, "--jsonl", out, "--smooth", "0", "--hop", "0.5"))
    expect_valid(res)
    lines = strict_json_lines(out.read_text())
    # the start line (source, model, UTC start), one line per window, the summary
    assert "start" in lines[0] and lines[0]["start"]["t_utc"].endswith("+00:00")
    assert "summary" in lines[-1] and lines[-1]["summary"]["windows"] == len(lines) - 2


def test_jsonsafe_never_writes_nan() -> None:
    doc = {"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": np.float32("-inf")}}
    out = strict_json_lines(dumps(doc))[0]
    assert out["a"] is None and out["b"] == [1.0, None] and out["c"]["d"] is None
    assert out["non_finite"] == {"a": "nan", "b[1]": "inf", "c.d": "-inf"}


# --------------------------------------------------------------------------- engine: no hang
class _Raising:
    def __init__(self, after: int, exc: BaseException) -> None:
        self.after, self.exc, self.n = after, exc, 0

    def __call__(self, item: dict) -> None:
        self.n += 1
        if self.n > self.after:
            raise self.exc


@pytest.mark.parametrize("lossless", [True, False])
def test_engine_with_a_failing_sink_never_blocks(world, lossless) -> None:
    model = load_model(world["model"], threads=1)
    sink = _Raising(1, OSError(errno.ENOSPC, "No space left on device"))
    engine = StreamEngine(model, hop_s=0.05, queue_size=1, lossless=lossless, sink=sink)
    engine.start()
    t0 = time.perf_counter()
    record = read_record(world["long"])
    for block in file_blocks(record):
        block.arrival_ns = time.perf_counter_ns()
        try:
            engine.push(block)  # after the failure: returns at once, never waits for room
        except SinkFailedError:
            break
    summary = engine.close(timeout_s=5)
    elapsed = time.perf_counter() - t0
    assert isinstance(engine.sink_error, OSError) and elapsed < 5, elapsed
    assert sink.n == 2  # the failing call, then never again
    assert summary["windows"] <= 2  # nothing scored after the output failed
    OUTCOMES["valid_output"] += 1


def test_engine_with_a_dead_worker_never_blocks(world) -> None:
    class Dying:
        def __init__(self, inner):
            self.metadata, self.source, self.labs = inner.metadata, inner.source, inner.labs
            self.inner = inner

        def thresholds(self):
            return self.inner.thresholds()

        def logits(self, x):
            raise SystemExit("worker gone")  # not an Exception: the worker thread dies

    model = Dying(load_model(world["model"], threads=1))
    engine = StreamEngine(model, hop_s=0.05, queue_size=1, lossless=True).start()  # type: ignore[arg-type]
    t0 = time.perf_counter()
    with pytest.raises(StreamError, match="worker stopped"):
        for block in file_blocks(read_record(world["long"])):
            engine.push(block)
    engine.close(timeout_s=2)
    assert time.perf_counter() - t0 < 10
    OUTCOMES["one_line_error"] += 1


# --------------------------------------------------------------------------- subprocesses
def _run(args: list, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            [*CLI, "-q", *map(str, args)], cwd=REPO, text=True, timeout=timeout,
            stdout=kw.pop("stdout", subprocess.PIPE), stderr=subprocess.PIPE, **kw,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        OUTCOMES["hang"] += 1
        raise


def _one_line(proc: subprocess.CompletedProcess, code: int, needle: str) -> str:
    if _has_traceback(proc.stderr):
        OUTCOMES["traceback"] += 1
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("Error: ") and needle in lines[0], proc.stderr
    OUTCOMES["one_line_error"] += 1
    return lines[0]


def test_full_stdout_is_one_line_io_error(world) -> None:
    """`predict ... > /dev/full` and `stream --jsonl - > /dev/full` (both at once: the
    time is mostly Python's start-up, run side by side)."""
    runs = [
        ["predict", "--model", world["model"], "--input", world["rec"], "--json"],
        stream_args(world, "--jsonl", "-"),
    ]
    t0 = time.perf_counter()
    with open("/dev/full", "w") as full:
        procs = [
            subprocess.Popen([*CLI, "-q", *map(str, args)], cwd=REPO, stdout=full,
                             stderr=subprocess.PIPE, text=True)
            for args in runs
        ]  # fmt: skip
        for args, proc in zip(runs, procs, strict=True):
            try:
                _, stderr = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                OUTCOMES["hang"] += 1
                raise
            done = subprocess.CompletedProcess(args, proc.returncode, "", stderr)
            _one_line(done, 7, "No space left on device")
            took = time.perf_counter() - t0
            print(f"{args[0]} > /dev/full: exit 7 in {took:.2f} s (start-up included)")


def _signal_and_check(proc: subprocess.Popen, out: Path, sig: int) -> None:
    proc.send_signal(sig)
    try:
        _, stderr = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        OUTCOMES["hang"] += 1
        raise
    assert not _has_traceback(stderr), stderr
    assert proc.returncode == 128 + sig, (proc.returncode, stderr)
    lines = strict_json_lines(out.read_text())
    assert lines[-1]["summary"]["interrupted"] is True and lines[-1]["summary"]["windows"] >= 1
    assert all("summary" not in ln for ln in lines[:-1])
    OUTCOMES["valid_output"] += 1


def test_signals_end_every_source_kind_with_the_summary_written(world, tmp_path) -> None:
    """SIGINT, SIGTERM and SIGHUP on a file replay, SIGTERM on each simulated wearable
    (Polar H10 and Movesense through the BLE pipeline, the AnyECG device through the
    BleakClient backend): each run ends with 128 + signal and a complete JSONL whose last
    line is the summary."""
    runs: list[tuple[subprocess.Popen, Path, int]] = []
    sources = [
        (f"file:{world['long']}", sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    ]
    try:
        import bumble  # noqa: F401

        sources += [
            (f"sim-{kind}:{world['long']}", signal.SIGTERM)
            for kind in ("polar", "movesense", "anyecg")
        ]
    except ImportError:
        pass
    for k, (source, sig) in enumerate(sources):
        out = tmp_path / f"s{k}.jsonl"
        # --loop: a run never ends on its own before its signal (6 processes on 2 cores:
        # one reached its record's end, and its SIG_DFL exit, while the others were checked)
        args = stream_args(world, "--jsonl", out, "--loop", "--duration", "600", source=source,
                           speed="2")  # fmt: skip
        proc = subprocess.Popen([*CLI, "-q", *map(str, args)], cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
        runs.append((proc, out, sig))
    try:
        # Each run is signalled as soon as it has a window (start-up under load varies).
        pending, deadline = list(runs), time.monotonic() + 120
        while pending:
            for run in list(pending):
                proc, out, sig = run
                if out.is_file() and '"window_labs"' in out.read_text():
                    _signal_and_check(proc, out, sig)
                    pending.remove(run)
                elif proc.poll() is not None:
                    raise AssertionError(f"{out}: the stream ended before it was signalled")
            if time.monotonic() > deadline:
                OUTCOMES["hang"] += 1
                raise AssertionError(f"no window within 120 s in {[r[1].name for r in pending]}")
            time.sleep(0.1)
    finally:
        for proc, _, _ in runs:
            if proc.poll() is None:
                proc.kill()


@pytest.mark.parametrize("serve", [False, True], ids=["plain", "serve"])
def test_ctrl_c_pressed_again_while_stopping_gives_no_traceback(world, tmp_path, serve) -> None:
    """A user who presses Ctrl-C again while the stream stops (summary being written, the
    dashboard closing, the interpreter tearing down): SIGINT every 5 ms from the first one
    until the process is gone. Still 130, the summary line and table written, no traceback
    (CI once saw a KeyboardInterrupt traceback out of a weakref callback at teardown)."""
    out = tmp_path / "s.jsonl"
    extra = ["--serve", "127.0.0.1:0"] if serve else []
    args = stream_args(world, "--jsonl", out, "--loop", "--duration", "600", *extra, speed="2")
    proc = subprocess.Popen([*CLI, *map(str, args)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (out.is_file() and '"window_labs"' in out.read_text()):
            assert proc.poll() is None, "the stream ended before it was signalled"
            assert time.monotonic() < deadline, "no window within 120 s"
            time.sleep(0.05)
        sent, stop_at = 0, time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < stop_at:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
                sent += 1
            time.sleep(0.005)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    if _has_traceback(stderr) or "Exception ignored" in stderr:
        OUTCOMES["traceback"] += 1
        raise AssertionError(f"after {sent} SIGINTs:\n{stderr}")
    # -2: a SIGINT in the interpreter's very last step, after it restored the default
    # handlers; a shell reports that as 130 too.
    assert proc.returncode in (130, -signal.SIGINT), (proc.returncode, stderr)
    assert sent >= 2, sent  # the test pressed again while it stopped
    lines = strict_json_lines(out.read_text())
    assert lines[-1]["summary"]["interrupted"] is True
    assert "windows" in stdout, stdout  # the summary table


# --------------------------------------------------------------------------- properties
NUMBER_TEXT = st.one_of(
    st.sampled_from(["nan", "NaN", "inf", "-inf", "1e309", "-0", "0", "-1", "1e-320", "abc", "",
                     " ", "0x10", "1_0", "½", "1e3", "3600", "3600.0001", "65", "64"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(10**12), 10**12).map(str),
    st.text(max_size=6),
)  # fmt: skip
PROPERTY_SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@PROPERTY_SETTINGS
@given(
    option=st.sampled_from(
        ["--hop", "--duration", "--smooth", "--queue", "--threads", "--fs", "--silence"]
    ),
    value=NUMBER_TEXT,
)
def test_property_stream_options(world, tmp_path, option, value) -> None:
    out = tmp_path / "p.jsonl"
    out.unlink(missing_ok=True)
    res = invoke(*stream_args(world, "--jsonl", out, f"{option}={value}"))
    if res.exit_code == 0:
        expect_valid(res)
        lines = strict_json_lines(out.read_text())
        if lines[-1]["summary"]["windows"] == 0:
            OUTCOMES["silent_wrong"] += 1
            raise AssertionError(f"{option}={value!r}: exit 0 with no window")
    else:
        line = expect_error(res, res.exit_code)
        assert res.exit_code in (1, 2), line
        if res.exit_code == 2:
            assert option in line, line


@PROPERTY_SETTINGS
@given(option=st.sampled_from(["--hop", "--fs", "--threads"]), value=NUMBER_TEXT)
def test_property_predict_options(world, option, value) -> None:
    res = invoke(
        "predict", "--model", world["model"], "--input", world["rec"], "--json", f"{option}={value}"
    )
    if res.exit_code in (0, 3):
        expect_valid(res, (0, 3))
        strict_json_lines(res.stdout.replace("\n", " "))  # (one pretty-printed document)
    else:
        line = expect_error(res, res.exit_code)
        assert res.exit_code in (1, 2), line


@settings(max_examples=60, deadline=None)
@given(
    where=st.sampled_from([(0, 2), (0, 3), (1, 2)]),
    value=st.one_of(
        NUMBER_TEXT.filter(lambda v: v.strip() and " " not in v), st.floats(0.5, 5000).map(str)
    ),
)
def test_property_wfdb_header_numbers(tmp_path_factory, where, value) -> None:
    """A header number either reads back exactly as written (fs) or is a one-line
    RecordError: never a default silently put in its place."""
    folder = tmp_path_factory.mktemp("hea")
    write_wfdb(folder, "rec", 12.0)
    line, field = where
    hea = folder / "rec.hea"
    lines = hea.read_text().splitlines()
    tokens = lines[line].split()
    tokens[field] = value
    lines[line] = " ".join(tokens)
    hea.write_text("\n".join(lines) + "\n")
    try:
        rec = read_record(hea)
    except RecordError as exc:
        assert "\n" not in str(exc) and str(hea.with_suffix("")) in str(exc)
        OUTCOMES["one_line_error"] += 1
        return
    if (line, field) == (0, 2):
        written = float(value.split("/")[0])
        if not (np.isfinite(written) and rec.fs == written):
            OUTCOMES["silent_wrong"] += 1
            raise AssertionError(f"fs {value!r} read as {rec.fs}")
    assert np.isfinite(rec.signal_mv).any()
    OUTCOMES["valid_output"] += 1


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)  # fmt: skip
MANIFEST_KEYS = ["labs", "fs", "window_s", "mains_hz", "units", "thresholds", "calibration",
                 "calibrated", "calibration_bootstrap", "uncertainty", "arch", "input_quant",
                 "output_quant", "extra", "model_sha256"]  # fmt: skip


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(key=st.sampled_from(MANIFEST_KEYS), value=JSON_VALUES)
def test_property_manifest_mutations(world, tmp_path_factory, key, value) -> None:
    """Any value in any manifest field: the model loads and scores finite probabilities
    for its distinct labs, or one line of ModelError."""
    folder = tmp_path_factory.mktemp("man")
    model = folder / "m.onnx"
    shutil.copy(world["model"], model)
    m = json.loads(world["manifest"].read_text())
    m[key] = value
    Path(f"{model}.manifest.json").write_text(json.dumps(m))  # (NaN written as the token)
    try:
        loaded = load_model(model, threads=1)
        x = np.random.default_rng(0).standard_normal((2, 1, loaded.metadata.window_samples))
        p = loaded.predict(x.astype(np.float32))
    except ModelError as exc:
        assert "\n" not in str(exc)
        OUTCOMES["one_line_error"] += 1
        return
    if not (np.isfinite(p).all() and len(set(loaded.labs)) == len(loaded.labs) == p.shape[1]):
        OUTCOMES["silent_wrong"] += 1
        raise AssertionError(f"{key}={value!r}: loaded with p={p}")
    OUTCOMES["valid_output"] += 1


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    profile=st.sampled_from(["polar", "movesense", "anyecg"]),
    edits=st.lists(
        st.tuples(st.integers(0, 40), st.integers(0, 300), st.integers(0, 255)), max_size=12
    ),
    cuts=st.lists(st.tuples(st.integers(0, 40), st.integers(0, 300)), max_size=4),
)
def test_property_frame_mutations(world, profile, edits, cuts) -> None:
    """Bytes flipped and frames cut anywhere in a notification stream: decoding, the
    sequencer and the engine never raise, and every item they emit is strict JSON."""
    fs = {"polar": 130.0, "movesense": 250.0, "anyecg": 250.0}[profile]
    enc = FrameEncoder(profile, fs)
    codes = (ecg_mv(12.0, fs) * 1000).astype(np.int64)
    frames = [
        bytearray(enc.encode(codes[i : i + enc.samples_per_frame], i))
        for i in range(0, codes.size - enc.samples_per_frame, enc.samples_per_frame)
    ][:41]
    for k, pos, byte in edits:
        if k < len(frames) and frames[k]:
            frames[k][pos % len(frames[k])] = byte
    for k, n in cuts:
        if k < len(frames):
            frames[k] = frames[k][: n % (len(frames[k]) + 1)]
    items: list[dict] = []
    engine = StreamEngine(load_model(world["model"], threads=1), hop_s=1.0, sink=items.append)
    engine.start()
    kwargs = {"fs_hz": fs} if profile == "movesense" else {}
    pipe = BlePipeline(get_profile(profile, **kwargs), engine)
    for k, frame in enumerate(frames):
        pipe.on_data(bytes(frame), 1_000_000_000 + k * 10_000_000)
    pipe.flush()
    summary = engine.close(timeout_s=10)
    for item in [*items, summary]:
        strict_json_lines(dumps(item, default=str))
    assert np.isfinite(engine.stream_t)
    OUTCOMES["valid_output"] += 1


# --------------------------------------------------------------------------- device time
def _movesense_frames(n_frames: int, fs: float = 128.0) -> tuple[list[bytes], int]:
    enc = FrameEncoder("movesense", fs)
    spf = enc.samples_per_frame
    return [enc.encode(np.arange(k * spf, (k + 1) * spf), k * spf) for k in range(n_frames)], spf


def _sequence(raws: list[bytes], arrivals_s: list[float], time_scale: float | None) -> tuple:
    from anyecg_edge.firmware_bridge.profiles import FrameDecoder
    from anyecg_edge.firmware_bridge.sequencer import Block, SeqEvent, Sequencer

    decoder = FrameDecoder(get_profile("movesense", fs_hz=128.0))
    seq = Sequencer(128.0, time_scale=time_scale)
    out: list = []
    for raw, t in zip(raws, arrivals_s, strict=True):
        frame = decoder.feed(raw)
        assert frame is not None
        out.extend(seq.push(frame, int(t * 1e9)))
    out.extend(seq.flush())
    blocks = [o for o in out if isinstance(o, Block)]
    events = [o.to_dict() for o in out if isinstance(o, SeqEvent)]
    return seq, blocks, events


def _corrupt_time(raw: bytes, add_ms: int) -> bytes:
    """A Movesense frame whose device timestamp (uint32 ms after the 2-byte header) is off."""
    b = bytearray(raw)
    t = int.from_bytes(b[2:6], "little")
    b[2:6] = ((t + add_ms) % (1 << 32)).to_bytes(4, "little")
    return bytes(b)


@pytest.mark.parametrize("persistent", [False, True])
def test_a_timestamp_beyond_the_host_clock_is_a_clock_jump_not_a_gap(persistent: bool) -> None:
    """One corrupted timestamp (+1000 s) or a clock that jumps 1000 s for good, arriving
    on time by the host clock: a clock_jump, no gap, every sample once and in order, and
    the stream's time stays the samples' time (not 1000 s more)."""
    raws, spf = _movesense_frames(120)
    k = 60
    if persistent:
        raws = raws[:k] + [_corrupt_time(r, 1_000_000) for r in raws[k:]]
    else:
        raws[k] = _corrupt_time(raws[k], 1_000_000)
    arrivals = [(i + 1) * spf / 128.0 for i in range(len(raws))]
    seq, blocks, events = _sequence(raws, arrivals, time_scale=1.0)
    codes = np.concatenate([b.codes for b in blocks])
    np.testing.assert_array_equal(codes, np.arange(120 * spf))
    assert seq.counts["gap"] == 0 and seq.counts["clock_jump"] == 1
    kinds = [e["event"] for e in events]
    assert kinds == (["clock_jump"] if persistent else ["clock_jump", "clock_jump_reverted"])
    end_s = blocks[-1].t_first_s + blocks[-1].n / blocks[-1].fs_hz
    assert end_s == pytest.approx(120 * spf / 128.0, rel=0.02)
    # Without a host clock (time_scale None) the old reading: a gap of 1000 s.
    _, _, old = _sequence(raws, arrivals, time_scale=None)
    assert any(e["event"] == "gap" and (e["duration_s"] or 0) > 900 for e in old)
    OUTCOMES["valid_output"] += 1


def test_lost_frames_within_the_host_clock_stay_a_gap_of_their_samples() -> None:
    raws, spf = _movesense_frames(120)
    keep = [i for i in range(120) if not 40 <= i < 90]  # 50 frames (6.25 s) lost
    arrivals = [(i + 1) * spf / 128.0 for i in keep]
    seq, blocks, events = _sequence([raws[i] for i in keep], arrivals, time_scale=1.0)
    gaps = [e for e in events if e["event"] == "gap"]
    assert [g["missing_samples"] for g in gaps] == [50 * spf] and seq.counts["clock_jump"] == 0
    OUTCOMES["valid_output"] += 1


def test_lost_frames_are_not_counted_as_reordered() -> None:
    """Frames lost, none reordered: every hole is a gap and `reordered` stays 0 (it counted
    the frames held behind each gap, 18 on a session with no reorder injected)."""
    raws, spf = _movesense_frames(200)
    keep = [i for i in range(200) if i % 17 != 5]  # 12 single frames lost
    arrivals = [(i + 1) * spf / 128.0 for i in keep]
    seq, _, _ = _sequence([raws[i] for i in keep], arrivals, time_scale=1.0)
    assert seq.counts["gap"] == 12 and seq.counts["reordered"] == 0
    # One frame swapped with its neighbour: exactly one reorder.
    order = list(range(200))
    order[50], order[51] = 51, 50
    seq, _, _ = _sequence(
        [raws[i] for i in order], [(k + 1) * spf / 128.0 for k in range(200)], 1.0
    )
    assert seq.counts["reordered"] == 1 and seq.counts["gap"] == 0
    OUTCOMES["valid_output"] += 1


def test_a_stall_at_the_end_of_a_session_is_reported() -> None:
    from anyecg_edge.firmware_bridge.profiles import FrameDecoder
    from anyecg_edge.firmware_bridge.sequencer import Sequencer

    raws, spf = _movesense_frames(40)
    decoder = FrameDecoder(get_profile("movesense", fs_hz=128.0))
    seq = Sequencer(128.0, time_scale=1.0)
    last = 0.0
    for i, raw in enumerate(raws):
        last = (i + 1) * spf / 128.0
        frame = decoder.feed(raw)
        assert frame is not None
        seq.push(frame, int(last * 1e9))
    assert seq.trailing_stall(int((last + 0.05) * 1e9)) is None  # the session's own end
    stall = seq.trailing_stall(int((last + 8.0) * 1e9))
    assert stall is not None and stall.to_dict()["duration_s"] == pytest.approx(8.0)
    assert Sequencer(128.0).trailing_stall(10**12) is None  # no host clock: no claim
    OUTCOMES["valid_output"] += 1


@pytest.mark.parametrize("profile", ["polar", "movesense", "anyecg"])
def test_corrupt_frames_keep_stream_time_to_the_record(world, tmp_path, profile) -> None:
    """--faults corrupt=0.1 on each simulated wearable: the session ends at the record's
    end by itself (no --loop); its stream time never exceeds what the host clock allows
    (wall time x speed) nor the record (+2 %); every notification the wearable sent reached
    the decoder (none lost in flight at the end); the stream's samples are exactly those
    decoded plus those reported missing in gap events; no gap is longer than a few frames.

    (The wearable samples from power-on, as a real one does: what it sampled before the
    central connected and started it is not sent. At speed 30 that is 30x the connect time,
    which a loaded machine stretches, so the record's coverage is not a fixed fraction.)"""
    pytest.importorskip("bumble")
    out = tmp_path / "c.jsonl"
    src = f"sim-{profile}:{world['long']}"
    speed = 30.0
    res = invoke(*stream_args(world, "--jsonl", out, "--faults", "corrupt=0.1,seed=3",
                              source=src, speed=f"{speed:g}"))  # fmt: skip
    expect_valid(res)
    lines = strict_json_lines(out.read_text())
    summary = lines[-1]["summary"]
    info = summary["source_info"]
    decoder, sim = info["decoder"], info["simulator"]
    record_s = read_record(world["long"]).duration_s
    host_s = summary["wall_s"] * speed
    gap_events = [ln for ln in lines if ln.get("event") == "gap"]
    gaps = [ln.get("duration_s") or 0 for ln in gap_events]
    missing = sum(ln.get("missing_samples") or 0 for ln in gap_events)
    stream_samples = round(summary["stream_s"] * info["fs_true_hz"])
    ok = (
        summary["stream_s"] <= 1.02 * min(record_s, host_s)
        and decoder["frames"] + decoder["malformed"] == sim["notifications"] > 0
        and stream_samples == decoder["samples"] + missing
        and max(gaps, default=0) < 2.0
    )
    if not ok:
        OUTCOMES["silent_wrong"] += 1
        raise AssertionError((summary["stream_s"], record_s, host_s, gaps, decoder, sim, missing))
    OUTCOMES["valid_output"] += 1
    print(f"sim-{profile} corrupt=0.1: {summary['stream_s']} s of stream from a {record_s:g} s "
          f"record in {summary['wall_s']} s x {speed:g} = {host_s:.1f} s of host clock, "
          f"{len(gaps)} gaps (longest {max(gaps, default=0)} s), sequencer "
          f"{info['sequencer']}")  # fmt: skip


# --------------------------------------------------------------------------- the tally
def test_exit_codes_are_documented_in_help() -> None:
    res = CliRunner().invoke(cli, ["--help"])
    for code in EXIT_CODES:
        assert f"{code:>3}  " in res.output


def test_zz_outcome_counts() -> None:
    """How every case above ended; any traceback, hang or silent wrong result fails."""
    print("hostile-input outcomes:", dict(sorted(OUTCOMES.items())))
    assert OUTCOMES["traceback"] == 0 and OUTCOMES["hang"] == 0
    assert OUTCOMES["silent_wrong"] == 0
