"""Corpora and trained runs shared by test_train / test_ddp / test_distill (built once per
pytest process: a plain module-level cache, because the files are session-wide anyway).

The learning chain mirrors the real setup at CPU-test scale:

1. a *pretraining* synthetic cohort (its own patients, seed PRETRAIN_SEED) stands in for
   ECGFounder's pretraining data: ``train lora --full --arch net1d-tiny --merge`` trains
   every weight of net1d-tiny and writes ``merged.pth`` in the authors' format;
2. the *target* cohort (other patients, seed TARGET_SEED) stands in for MC-MED:
   ``train lora --init merged.pth`` freezes that base, trains LoRA adapters and a new head;
3. the distillation tests train student-s from that teacher on the target cohort (the
   student's quality against the teacher is asserted on the demo's chain, tests/test_demo.py).

Windows are 5 s (the corpus option), half the compute of 10 s at the same beat content
per second; the models are length-agnostic.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from anyecg_edge.training.data import build_corpus, synth_cohort
from click.testing import CliRunner

from anyecg_edge.cli import cli

PRETRAIN_SEED = 5
TARGET_SEED = 3
WINDOW_S = 5.0
_CACHE: dict[str, object] = {}


def cli_exe() -> str:
    """The installed console script (for subprocess runs and torchrun)."""
    return str(Path(sys.executable).with_name("anyecg-edge"))


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("PYTHONWARNINGS", "ignore")
    return env


def _cohort(
    tmp_path_factory, name: str, n_visits: int, seed: int, segment_s: tuple
) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp(f"{name}_cohort")
    synth_cohort(
        root, n_visits, seed=seed, segments_per_visit=(1, 1), segment_s=segment_s, defects=False
    )
    out = tmp_path_factory.mktemp(f"{name}_corpus")
    build_corpus(root, out, window_s=WINDOW_S, visits_per_unit=64, workers=1, progress=False)
    return root, out


def pretrain_corpus(tmp_path_factory) -> tuple[Path, Path]:
    if "pretrain" not in _CACHE:
        _CACHE["pretrain"] = _cohort(
            tmp_path_factory, "pretrain", 1200, PRETRAIN_SEED, (15.0, 30.0)
        )
    return _CACHE["pretrain"]  # type: ignore[return-value]


def target_corpus(tmp_path_factory) -> tuple[Path, Path]:
    """The cohort LoRA, distillation, DDP and resume run on (~2400 train windows of 5 s)."""
    if "target" not in _CACHE:
        _CACHE["target"] = _cohort(tmp_path_factory, "target", 900, TARGET_SEED, (15.0, 30.0))
    return _CACHE["target"]  # type: ignore[return-value]


# One torch thread: on a shared 2-core machine two OpenMP threads per process thrash (measured
# 2.5-40x slower per step under load); on a quiet machine one thread costs ~1.5x.
THREADS = ["--threads", "1"]


def run_cli(*args: str) -> str:
    """Run a training/evaluation command in-process (one torch thread) and return its output."""
    args = [str(a) for a in args]
    if "--threads" not in args:
        args += THREADS
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    return result.output


# The recipes: the demo's (anyecg_edge/demo.py DemoConfig), by steps. lr 1e-2 with pooled
# shuffling learns the planted labs in a few hundred steps of batch 32.
PRETRAIN_ARGS = [
    "--epochs", "1000", "--max-steps", "600", "--batch-size", "32", "--lr", "1e-2",
    "--patience", "0", "--log-every", "100",
]  # fmt: skip
LORA_ARGS = [
    "--epochs", "1000", "--max-steps", "400", "--batch-size", "32", "--lr", "1e-2",
    "--patience", "0", "--log-every", "100",
]  # fmt: skip


def pretrained_base(tmp_path_factory) -> Path:
    """net1d-tiny fully trained on the pretraining cohort, in the authors' format."""
    if "base" not in _CACHE:
        _, corpus = pretrain_corpus(tmp_path_factory)
        out = tmp_path_factory.mktemp("pretrain_run")
        run_cli(
            "train",
            "lora",
            "--full",
            "--arch",
            "net1d-tiny",
            "--merge",
            "--corpus",
            corpus,
            "--out",
            out,
            *PRETRAIN_ARGS,
        )
        _CACHE["base"] = out / "merged.pth"
    return _CACHE["base"]  # type: ignore[return-value]


def evaluate_run(run: Path, corpus: Path, truth: Path) -> dict:
    out = run / "eval_test.json"
    run_cli(
        "evaluate",
        "--model",
        run,
        "--corpus",
        corpus,
        "--split",
        "test",
        "--json",
        out,
        "--truth",
        truth,
        "--bootstrap",
        "200",
    )
    return json.loads(out.read_text())


def teacher_run(tmp_path_factory) -> tuple[Path, dict, str]:
    """LoRA on the target cohort from the pretrained base: (run dir, test eval, CLI output)."""
    if "teacher" not in _CACHE:
        base = pretrained_base(tmp_path_factory)
        cohort, corpus = target_corpus(tmp_path_factory)
        out = tmp_path_factory.mktemp("lora_run")
        text = run_cli(
            "train", "lora", "--init", base, "--corpus", corpus, "--out", out, *LORA_ARGS
        )
        _CACHE["teacher"] = (out, evaluate_run(out, corpus, cohort / "truth.json"), text)
    return _CACHE["teacher"]  # type: ignore[return-value]
