"""SIGTERM on the long-running commands that are not streams (issue 14): `data build` and
`train lora` end with one line saying what was kept and how to continue, exit 128 + 15, and
leave state the same command resumes from. (Streams: test_hostile's signal test, every
source kind.) Before, SIGTERM killed them silently (exit -15, no word of what was kept)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from anyecg_edge.training.data import build_corpus, synth_cohort

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "anyecg_edge", "-q"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sigterm_cohort")
    synth_cohort(root, 40, seed=5, segments_per_visit=(1, 1), segment_s=(30.0, 40.0), defects=False)
    return root


def _terminate_when(
    args: list[str],
    ready: Callable[[], bool],
    limit_s: float = 180,
    on_start: Callable[[int], None] | None = None,
    sig: int = signal.SIGTERM,
) -> subprocess.CompletedProcess:
    """Run the CLI, send ``sig`` once ``ready()``, return how it ended (never hangs)."""
    proc = subprocess.Popen([*CLI, *map(str, args)], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    if on_start is not None:
        on_start(proc.pid)
    try:
        deadline = time.monotonic() + limit_s
        while not ready():
            assert proc.poll() is None, f"ended before the signal: {proc.communicate()}"
            assert time.monotonic() < deadline, f"not ready within {limit_s} s"
            time.sleep(0.05)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def _one_line(done: subprocess.CompletedProcess, *needles: str) -> str:
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert done.returncode == 128 + signal.SIGTERM, (done.returncode, done.stderr)
    assert len(lines) == 1 and lines[0].startswith("Error: stopped by SIGTERM"), done.stderr
    assert "Traceback" not in done.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def test_sigterm_during_data_build_keeps_the_finished_units(cohort: Path, tmp_path: Path) -> None:
    out = tmp_path / "corpus"
    args = ["data", "build", "--mcmed", cohort, "--out", out, "--workers", "1",
            "--visits-per-unit", "2", "--window", "5", "--no-progress"]  # fmt: skip
    done = _terminate_when(args, lambda: len(list((out / "done").glob("*.json"))) >= 2)
    line = _one_line(done, str(out), "run the same command again to resume")
    print(line)
    n_done = len(list((out / "done").glob("*.json")))
    assert not (out / "manifest.json").exists()  # not mistaken for a finished corpus
    # The same command resumes: the finished units are not redone, the rest is built.
    res = subprocess.run([*CLI, *map(str, args), "--json", "-"], cwd=REPO, text=True,
                         capture_output=True, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    run = manifest["run"]
    assert run["units_resumed"] == n_done >= 2
    assert run["units_built"] == run["units_total"] - n_done > 0
    assert not list(out.rglob("*.tmp"))


def _endless_train(cohort: Path, tmp_path: Path) -> tuple[Path, list]:
    """A tiny corpus and a `train lora` line that runs until stopped: (run folder, args)."""
    corpus = tmp_path / "corpus"
    build_corpus(cohort, corpus, window_s=5.0, visits_per_unit=64, workers=1, progress=False)
    run = tmp_path / "run"
    args = ["train", "lora", "--arch", "net1d-tiny", "--corpus", corpus, "--out", run,
            "--epochs", "1000", "--batch-size", "8", "--lr", "1e-3", "--patience", "0",
            "--eval-every", "3", "--ckpt-every", "3", "--log-every", "1", "--threads", "1",
            "--no-progress"]  # fmt: skip
    return run, args


def test_sigterm_during_train_lora_keeps_its_checkpoints(cohort: Path, tmp_path: Path) -> None:
    run, args = _endless_train(cohort, tmp_path)
    ckpts = run / "checkpoints"
    done = _terminate_when(args, lambda: any(ckpts.glob("step_*.pt")))
    line = _one_line(done, str(run), "with --resume to continue")
    print(line)
    steps = sorted(int(p.stem.split("_")[1]) for p in ckpts.glob("step_*.pt"))
    assert steps and not list(ckpts.glob("*.tmp"))
    # --resume continues from the newest checkpoint to a few steps past it.
    target = steps[-1] + 3
    res = subprocess.run(
        [*CLI, *map(str, args), "--resume", "--max-steps", str(target)],
        cwd=REPO, text=True, capture_output=True, timeout=600,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["resumed_from_step"] == steps[-1] and metrics["steps"] == target


def test_ctrl_c_during_train_says_what_was_kept(cohort: Path, tmp_path: Path) -> None:
    """Ctrl-C gives the same hint SIGTERM gives (it said only "interrupted")."""
    run, args = _endless_train(cohort, tmp_path)
    ckpts = run / "checkpoints"
    done = _terminate_when(args, lambda: any(ckpts.glob("step_*.pt")), sig=signal.SIGINT)
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert done.returncode == 130 and "Traceback" not in done.stderr, done.stderr
    assert lines == [
        f"Error: interrupted; the checkpoints in {run} are kept: run the same command with "
        "--resume to continue"
    ], done.stderr


def _pool_workers(pid: int) -> list[int]:
    """The spawn workers of process ``pid`` (its children other than the resource tracker)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmd = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and b"spawn_main" in cmd:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:  # a zombie (exited, not yet reaped by whoever adopted it) is not alive
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _parallel_build(cohort: Path, out: Path, visits_per_unit: int = 2) -> list[str]:
    return ["data", "build", "--mcmed", cohort, "--out", out, "--workers", "2",
            "--visits-per-unit", str(visits_per_unit), "--window", "5", "--no-progress"]  # fmt: skip


def _resumes(args: list[str], out: Path) -> None:
    n_done = len(list((out / "done").glob("*.json")))
    res = subprocess.run([*CLI, *map(str, args)], cwd=REPO, text=True, capture_output=True,
                         timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr
    run = json.loads((out / "manifest.json").read_text())["run"]
    assert run["units_resumed"] == n_done and run["units_built"] == run["units_total"] - n_done
    assert not list(out.rglob("*.tmp"))


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_a_dead_worker_ends_a_parallel_build_in_one_line(cohort: Path, tmp_path: Path) -> None:
    """A pool worker killed from outside (the OOM killer) ends the build at once with one
    line (was: 'internal error (BrokenProcessPool ...) report it', exit 70); resumable."""
    out = tmp_path / "corpus"
    args = _parallel_build(cohort, out)
    proc = subprocess.Popen([*CLI, *map(str, args)], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while not any((out / "done").glob("*.json")) or len(_pool_workers(proc.pid)) < 2:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no unit done within 180 s"
            time.sleep(0.05)
        os.kill(_pool_workers(proc.pid)[0], signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert proc.returncode == 1 and len(lines) == 1, (proc.returncode, err)
    assert "a worker process died" in lines[0] and "run the same command again" in lines[0]
    _resumes(args, out)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_sigterm_during_a_parallel_build_stops_its_workers(cohort: Path, tmp_path: Path) -> None:
    """The units in flight are abandoned, not finished (leaving the pool's ``with`` used to
    wait for every submitted unit, up to 2 x workers): at most the one unit that completes
    in the instant of the signal is added after it, and no worker outlives the build."""
    out = tmp_path / "corpus"
    args = _parallel_build(cohort, out, visits_per_unit=4)
    workers: list[int] = []
    proc_pid: list[int] = []
    n_at_signal = [0]

    def ready() -> bool:
        workers[:] = _pool_workers(proc_pid[0]) if proc_pid else []
        n_at_signal[0] = len(list((out / "done").glob("*.json")))
        return n_at_signal[0] >= 1 and len(workers) == 2

    done = _terminate_when(args, ready, on_start=proc_pid.append)
    _one_line(done, str(out), "run the same command again to resume")
    n_after = len(list((out / "done").glob("*.json")))
    assert n_after - n_at_signal[0] <= 1, (n_at_signal[0], n_after)
    time.sleep(0.5)
    assert not [w for w in workers if _alive(w)]
    # (Resuming after it is the same as after the other stops above.)
