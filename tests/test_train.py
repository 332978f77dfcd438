"""The training loop: losses, schedule, options, exact resume after a SIGKILL mid-epoch, a
LoRA run's trainable part. (LoRA learning the planted labs with a leakage check: test_demo.)"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import time

import numpy as np
import pytest
import torch
from anyecg_edge.training.trainer import (
    TrainConfig,
    TrainError,
    _lr_lambda,
    masked_bce_terms,
    pos_weight_from_targets,
)
from click.testing import CliRunner
from train_fixtures import cli_exe, run_cli, subprocess_env, target_corpus, teacher_run

from anyecg_edge.cli import cli

# ----------------------------------------------------------------------------- units


def test_masked_bce_ignores_unmeasured_labs() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    y = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    mask = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    pw = torch.tensor([2.0, 1.0, 5.0])
    s, c = masked_bce_terms(logits, y, mask, pw)

    def bce(z: float, t: float, w: float) -> float:
        p = 1 / (1 + math.exp(-z))
        return -(w * t * math.log(p) + (1 - t) * math.log(1 - p))

    expected = bce(2.0, 1, 2.0) + bce(0.5, 0, 5.0) + bce(0.0, 0, 2.0) + bce(3.0, 1, 1.0)
    assert float(c) == 4.0
    assert float(s) == pytest.approx(expected, rel=1e-6)
    # Whatever the unmeasured entries hold, the loss is the same.
    y2 = y.clone()
    y2[0, 1], y2[1, 2] = 1.0, 1.0
    assert float(masked_bce_terms(logits, y2, mask, pw)[0]) == pytest.approx(float(s))


def test_pos_weight_from_targets() -> None:
    t = np.array([[1, 0, -1], [0, 0, -1], [0, 0, 1], [0, -1, 1]], np.int8)
    w = pos_weight_from_targets(t, max_weight=100.0)
    assert w.tolist() == pytest.approx([3.0, 1.0, 1.0])  # no positives / no negatives -> 1
    assert pos_weight_from_targets(np.array([[1]] + [[0]] * 500, np.int8), 10.0)[0] == 10.0


def test_warmup_then_cosine_schedule() -> None:
    f = _lr_lambda(100, 0.1, 0.0)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(55) == pytest.approx(0.5, abs=1e-9)
    assert f(99) < 0.01 and f(150) == pytest.approx(0.0)
    assert _lr_lambda(100, 5, 0.2)(100) == pytest.approx(0.2)  # floor, warmup in steps


@pytest.mark.parametrize(
    ("field", "value"),
    [("batch_size", 0), ("lr", -1.0), ("precision", "fp8"), ("device", "tpu"), ("max_steps", 0)],
)
def test_bad_training_options_are_named(field, value) -> None:
    with pytest.raises(TrainError, match=field):
        TrainConfig(**{field: value})


def test_early_stopping_keeps_the_best_state(tmp_path_factory, tmp_path) -> None:
    """A learning rate too small to change the val AUROC: no evaluation after the first
    improves, so the run stops after `patience` more evaluations and keeps step 2's weights."""
    _, corpus = target_corpus(tmp_path_factory)
    args = ["train", "lora", "--arch", "net1d-tiny", "--corpus", corpus, "--out", tmp_path]
    args += ["--max-steps", "20", "--batch-size", "16", "--lr", "1e-12", "--warmup", "0"]
    args += ["--eval-every", "2", "--patience", "2"]
    run_cli(*args)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["stopped_early"] and metrics["steps"] == 6
    assert metrics["best_step"] == 2 and [h["step"] for h in metrics["history"]] == [2, 4, 6]


def test_loader_workers_do_not_change_the_run(tmp_path_factory, tmp_path) -> None:
    """Two persistent loader workers over three epochs (with evaluations between) give the
    same weights and metrics as loading in the main process."""
    _, corpus = target_corpus(tmp_path_factory)
    args = ["train", "lora", "--arch", "net1d-tiny", "--corpus", corpus, "--threads", "1"]
    args += ["--epochs", "3", "--batch-size", "256", "--eval-every", "3", "--patience", "99"]
    args += ["--log-every", "4"]
    run_cli(*args, "--out", tmp_path / "w0", "--workers", "0")
    run_cli(*args, "--out", tmp_path / "w2", "--workers", "2")
    a = json.loads((tmp_path / "w0" / "metrics.json").read_text())
    b = json.loads((tmp_path / "w2" / "metrics.json").read_text())
    assert a["steps"] == b["steps"] and b["epochs_completed"] == 3
    # Logged training throughput leaves the interval's evaluations out; the wall rate has them.
    log = [json.loads(x) for x in (tmp_path / "w2" / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 3 and all(r["eval_ckpt_s"] > 0 for r in log)
    assert all(r["segments_per_s"] > r["segments_per_s_wall"] > 0 for r in log)
    assert b["segments_per_s_overall"] > 0 and b["fit_wall_s"] > 0
    assert [h["val_mean_auroc"] for h in a["history"]] == [
        h["val_mean_auroc"] for h in b["history"]
    ]


# ----------------------------------------------------------------------------- resume

RESUME_ARGS = [
    "--arch",
    "net1d-tiny",
    "--batch-size",
    "64",
    "--max-steps",
    "60",
    "--lr",
    "3e-3",
    "--eval-every",
    "7",
    "--ckpt-every",
    "4",
    "--patience",
    "0",
    "--log-every",
    "4",
    "--seed",
    "1",
    "--threads",
    "1",
]


def _final_state(run) -> tuple[dict, dict]:
    metrics = json.loads((run / "metrics.json").read_text())
    state = torch.load(run / "model.pt", weights_only=True)["state_dict"]
    return metrics, state


def _kill_right_after(proc: subprocess.Popen, target, timeout_s: float = 300) -> None:
    """SIGKILL the run as soon as it has written ``target``. It runs in 5 ms slices, stopped
    (SIGSTOP) while the test looks for the file, so the kill lands within one slice of the
    checkpoint: far less than the --ckpt-every steps to the next one."""
    deadline = time.monotonic() + timeout_s
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            proc.send_signal(signal.SIGCONT)
            time.sleep(0.005)
            proc.send_signal(signal.SIGSTOP)
            if target.exists():
                break
    finally:
        proc.send_signal(signal.SIGKILL)  # (a stopped process is killed all the same)
        proc.wait()


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result(tmp_path_factory, tmp_path) -> None:
    _, corpus = target_corpus(tmp_path_factory)
    common = ["train", "lora", "--corpus", str(corpus), *RESUME_ARGS]
    ref = tmp_path / "reference"
    r = CliRunner().invoke(cli, [*common, "--out", str(ref)])
    assert r.exit_code == 0, r.output
    ref_metrics, ref_state = _final_state(ref)
    steps_per_epoch = ref_metrics["steps_per_epoch"]
    kill_at = steps_per_epoch + 4 - (steps_per_epoch % 4)  # first checkpoint past epoch 1
    assert kill_at + 12 <= 60  # the kill lands mid-epoch 2 with steps left to run

    run = tmp_path / "killed"
    proc = subprocess.Popen(
        [cli_exe(), *common, "--out", str(run)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=subprocess_env(),
    )
    target = run / "checkpoints" / f"step_{kill_at:09d}.pt"
    _kill_right_after(proc, target)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (run / "model.pt").exists()
    steps = sorted(int(p.stem.split("_")[1]) for p in (run / "checkpoints").glob("step_*.pt"))
    # Killed at the known step: its checkpoint is the newest, the one before it kept too.
    assert steps == [kill_at - 4, kill_at] and kill_at % steps_per_epoch != 0

    r = CliRunner().invoke(cli, [*common, "--out", str(run), "--resume"])
    assert r.exit_code == 0, r.output
    metrics, state = _final_state(run)
    # Where it resumed: the step it was killed at (the newest of the two kept checkpoints;
    # not the older one, not from scratch), and it took only the steps left (none redone).
    # The exact replay below cannot tell: training is deterministic, so any starting point
    # ends in the same weights.
    assert (metrics["resumed_from_step"], metrics["resumed_from_checkpoint"]) == (
        kill_at,
        f"step_{kill_at:09d}.pt",
    )
    assert metrics["steps_this_run"] == 60 - kill_at and metrics["steps"] == 60
    assert ref_metrics["resumed_from_step"] is None and ref_metrics["steps_this_run"] == 60
    assert [h["step"] for h in metrics["history"]] == [h["step"] for h in ref_metrics["history"]]
    for a, b in zip(metrics["history"], ref_metrics["history"], strict=True):
        assert a["val_mean_auroc"] == pytest.approx(b["val_mean_auroc"], abs=1e-9)
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-9)
    assert set(state) == set(ref_state)
    for k in state:
        assert torch.equal(state[k], ref_state[k]), k

    # A resume with other hyper-parameters is refused, naming the option.
    r = CliRunner().invoke(cli, [*common[:-2], "--seed", "2", "--out", str(run), "--resume"])
    assert r.exit_code == 1 and "seed" in r.output and "Traceback" not in r.output


# ----------------------------------------------------------------------------- learning


def test_lora_run_trains_adapters_and_head_only(tmp_path_factory) -> None:
    """`train lora` on net1d-tiny: a LoRA run (adapters + new head, the rest frozen), said
    on the console. That LoRA on a pretrained base learns the planted labs and not the
    unplanted ones (the leakage check) is asserted on the demo's teacher, tests/test_demo.py:
    the same recipe, run once per suite."""
    run, text = teacher_run(tmp_path_factory)
    metrics = json.loads((run / "metrics.json").read_text())
    config = json.loads((run / "train_config.json").read_text())
    assert config["task"] == "lora" and config["arch"] == "net1d-tiny"
    assert "trainable parameters:" in text and 0 < metrics["trainable_pct"] < 100
    assert (run / "adapter" / "adapter_config.json").is_file() and metrics["steps"] == 2
