"""The corpus and the tiny LoRA teacher shared by test_train / test_ddp / test_distill /
test_evaluate (built once per pytest process: a plain module-level cache, because the files
are session-wide anyway).

The *target* cohort (seed TARGET_SEED) stands in for MC-MED. The learning chain itself
(pretrained base -> LoRA teacher that learns the planted labs only -> student that keeps the
teacher) is asserted once, on the demo's run of it (tests/test_demo.py): the same recipe,
which here cost ~100 s a second time. The tests here use the chain's mechanics at 2-6 steps.

Windows are 5 s (the corpus option), half the compute of 10 s at the same beat content
per second; the models are length-agnostic.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from anyecg_edge.training.data import build_corpus, synth_cohort
from click.testing import CliRunner

from anyecg_edge.cli import cli

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


def target_corpus(tmp_path_factory) -> tuple[Path, Path]:
    """The cohort LoRA, distillation, DDP, resume and evaluate run on: 450 visits, ~900 train
    windows of 5 s and ~115 test windows where 12 of the 15 labs have >= 5 visits per class
    (900 visits, sized for the learning tests now on the demo's chain, doubled every epoch,
    evaluation and teacher cache of the tests here)."""
    if "target" not in _CACHE:
        _CACHE["target"] = _cohort(tmp_path_factory, "target", 450, TARGET_SEED, (15.0, 30.0))
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


def teacher_run(tmp_path_factory) -> tuple[Path, str]:
    """A LoRA teacher run folder for the distillation mechanics tests (run dir, CLI output):
    net1d-tiny + LoRA adapters + head, 2 steps on the target cohort. What distillation reads
    from it (adapter, head, 32 features) does not depend on how well it learned; that the
    LoRA teacher on a pretrained base learns the planted labs only is asserted on the demo's
    chain (tests/test_demo.py), where the recipe runs at its real size."""
    if "teacher" not in _CACHE:
        _, corpus = target_corpus(tmp_path_factory)
        out = tmp_path_factory.mktemp("lora_run")
        text = run_cli(
            "train", "lora", "--arch", "net1d-tiny", "--corpus", corpus, "--out", out,
            "--max-steps", "2", "--batch-size", "16", "--eval-every", "2", "--log-every", "1",
        )  # fmt: skip
        _CACHE["teacher"] = (out, text)
    return _CACHE["teacher"]  # type: ignore[return-value]
