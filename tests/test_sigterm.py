"""SIGTERM on the long-running commands that are not streams (issue 14): `data build` and
`train lora` end with one line saying what was kept and how to continue, exit 128 + 15, and
leave state the same command resumes from. (Streams: test_hostile's signal test, every
source kind.) Before, SIGTERM killed them silently (exit -15, no word of what was kept)."""

from __future__ import annotations

import json
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
    args: list[str], ready: Callable[[], bool], limit_s: float = 180
) -> subprocess.CompletedProcess:
    """Run the CLI, SIGTERM it once ``ready()``, return how it ended (never hangs)."""
    proc = subprocess.Popen([*CLI, *map(str, args)], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + limit_s
        while not ready():
            assert proc.poll() is None, f"ended before the signal: {proc.communicate()}"
            assert time.monotonic() < deadline, f"not ready within {limit_s} s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
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


def test_sigterm_during_train_lora_keeps_its_checkpoints(cohort: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    build_corpus(cohort, corpus, window_s=5.0, visits_per_unit=64, workers=1, progress=False)
    run = tmp_path / "run"
    args = ["train", "lora", "--arch", "net1d-tiny", "--corpus", corpus, "--out", run,
            "--epochs", "1000", "--batch-size", "8", "--lr", "1e-3", "--patience", "0",
            "--eval-every", "3", "--ckpt-every", "3", "--log-every", "1", "--threads", "1",
            "--no-progress"]  # fmt: skip
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
