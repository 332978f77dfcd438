"""torchrun DDP on CPU (gloo): two processes train the same global batches as one process
and end with the same weights and validation metrics (within float summation tolerance)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from anyecg_edge.training.trainer import EpochBatchSampler
from click.testing import CliRunner
from train_fixtures import cli_exe, subprocess_env, target_corpus

from anyecg_edge.cli import cli

ARGS = [
    "--arch",
    "net1d-tiny",
    "--max-steps",
    "6",
    "--batch-size",
    "16",
    "--lr",
    "3e-3",
    "--eval-every",
    "3",
    "--log-every",
    "3",
    "--seed",
    "4",
    "--threads",
    "1",
]


def test_global_batches_do_not_depend_on_world_size() -> None:
    order = np.random.default_rng(0).permutation(37)
    single = list(EpochBatchSampler(lambda e: order, 37, 8))
    parts = [
        list(EpochBatchSampler(lambda e: order, 37, 8, rank=r, world_size=3)) for r in range(3)
    ]
    assert len(single) == 5 and all(len(p) == 5 for p in parts)
    for b, batch in enumerate(single):
        assert sorted(sum((p[b] for p in parts), [])) == sorted(batch)
    # A last global batch smaller than the world size is dropped on every world size.
    assert len(list(EpochBatchSampler(lambda e: order, 33, 8, world_size=2))) == 4
    resumed = EpochBatchSampler(lambda e: order, 37, 8)
    resumed.set_epoch(0, start_batch=3)
    assert list(resumed) == single[3:]
    # Training drops a partial last batch (one batch shape under torch.compile) unless the
    # split holds less than one batch.
    dropped = EpochBatchSampler(lambda e: order, 37, 8, drop_last=True)
    assert list(dropped) == single[:4]
    assert [len(b) for b in EpochBatchSampler(lambda e: order[:5], 5, 8, drop_last=True)] == [5]


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("torchrun") is None and not Path(cli_exe()).with_name("torchrun").exists(),
    reason="torchrun not installed",
)
def test_torchrun_two_processes_match_single_process(tmp_path_factory, tmp_path) -> None:
    _, corpus = target_corpus(tmp_path_factory)
    torchrun = str(Path(cli_exe()).with_name("torchrun"))
    one, two = tmp_path / "single", tmp_path / "ddp"
    common = ["train", "lora", "--corpus", str(corpus), *ARGS]
    single = CliRunner().invoke(cli, [*common, "--out", str(one)])
    assert single.exit_code == 0, single.output
    ddp = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node", "2", cli_exe(), *common, "--out", str(two)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=300,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    m1 = json.loads((one / "metrics.json").read_text())
    m2 = json.loads((two / "metrics.json").read_text())
    assert m1["world_size"] == 1 and m2["world_size"] == 2
    assert m1["steps"] == m2["steps"] == 6
    h1 = [h["val_mean_auroc"] for h in m1["history"]]
    h2 = [h["val_mean_auroc"] for h in m2["history"]]
    print("val mean AUROC single", h1, "ddp", h2)
    assert np.allclose(h1, h2, atol=2e-3)
    assert [h["train_loss"] for h in m1["history"]] == pytest.approx(
        [h["train_loss"] for h in m2["history"]], rel=1e-3
    )
    s1 = torch.load(one / "model.pt", weights_only=True)["state_dict"]
    s2 = torch.load(two / "model.pt", weights_only=True)["state_dict"]
    worst = max(float((s1[k] - s2[k]).abs().max() / s1[k].abs().max().clamp(min=1e-8)) for k in s1)
    print(f"max relative weight difference single vs DDP: {worst:.2e}")
    assert worst < 1e-3
