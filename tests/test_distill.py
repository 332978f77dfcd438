"""Distillation into the edge student: the student keeps the teacher's accuracy on the planted
labs, fits the edge budget, runs behind the device Model interface; KD loss and feature
matching mechanics."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from anyecg_edge.training.data.dataset import CorpusDataset
from anyecg_edge.training.distill import DistillModel, IndexedDataset
from anyecg_edge.training.models import create_model
from anyecg_edge.training.trainer import TrainConfig
from train_fixtures import run_cli, target_corpus, teacher_run


def test_indexed_dataset_and_feature_matching_model(tmp_path_factory) -> None:
    _, corpus = target_corpus(tmp_path_factory)
    base = CorpusDataset(corpus, "val")
    ds = IndexedDataset(base)
    items = ds.__getitems__([5, 2])
    assert int(items[0][3]) == 5 and torch.equal(items[1][0], base[2][0])
    teacher = np.arange(len(base) * 4, dtype=np.float32).reshape(len(base), 4)
    with_t = IndexedDataset(base, teacher)
    items = with_t.__getitems__([5, 2, 7])  # unsorted: the rows come back in request order
    assert [int(it[3]) for it in items] == [5, 2, 7]
    assert all(
        torch.equal(it[4], torch.from_numpy(teacher[i]))
        for it, i in zip(items, [5, 2, 7], strict=True)
    )
    assert torch.equal(with_t[3][4], torch.from_numpy(teacher[3]))
    loader = torch.utils.data.DataLoader(with_t, batch_sampler=[[4, 0, 9], [1]], num_workers=1)
    x, _, _, idx, t = next(iter(loader))  # read by a worker, collated with the batch
    assert idx.tolist() == [4, 0, 9] and torch.equal(t, torch.from_numpy(teacher[[4, 0, 9]]))
    assert torch.equal(x[2], base[9][0])
    with pytest.raises(ValueError, match="teacher outputs have 3 rows"):
        IndexedDataset(base, teacher[:3])
    model = DistillModel(create_model("student-xs", n_classes=3), teacher_features=32)
    logits, proj = model(torch.randn(2, 1, 2500))
    assert logits.shape == (2, 3) and proj.shape == (2, 32)


@pytest.mark.slow
def test_distill_with_feature_matching_reuses_teacher_cache_on_resume(tmp_path_factory, tmp_path):
    teacher, _ = teacher_run(tmp_path_factory)
    _, corpus = target_corpus(tmp_path_factory)
    args = ["train", "distill", "--teacher", teacher, "--corpus", corpus, "--out", tmp_path]
    args += ["--student", "student-xs", "--feature-weight", "0.5", "--batch-size", "32"]
    args += ["--ckpt-every", "2", "--eval-every", "2"]
    run_cli(*args, "--max-steps", "3")
    cache = tmp_path / "teacher"
    meta = json.loads((cache / "teacher.json").read_text())
    train = np.load(cache / "train.npy")
    n_labs = len(json.loads((tmp_path / "metrics.json").read_text())["labs"])
    assert meta["features"] and train.shape[1] == n_labs + 32  # net1d-tiny: 32 features
    stamp = (cache / "train.npy").stat().st_mtime_ns
    run_cli(*args, "--max-steps", "5", "--resume")  # continue a finished run for 2 more steps
    assert (cache / "train.npy").stat().st_mtime_ns == stamp  # not recomputed
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["steps"] == 5
    assert metrics["resumed_from_checkpoint"] == "step_000000003.pt"  # the finished run's last
    assert metrics["resumed_from_step"] == 3 and metrics["steps_this_run"] == 2


@pytest.mark.slow
def test_distill_resume_with_dropout_is_bit_exact(tmp_path_factory, tmp_path, monkeypatch) -> None:
    """student-xs has dropout: resuming from a mid-epoch checkpoint must replay the same RNG
    stream (restored states, loaders that do not draw from the global generator)."""
    teacher, _ = teacher_run(tmp_path_factory)
    _, corpus = target_corpus(tmp_path_factory)
    # Keep three checkpoints (no CLI option; keep_checkpoints does not change the run), so
    # that two are left to choose from once the last is removed.
    post_init = TrainConfig.__post_init__

    def keep_three(self: TrainConfig) -> None:
        self.keep_checkpoints = 3
        post_init(self)

    monkeypatch.setattr(TrainConfig, "__post_init__", keep_three)
    args = ["train", "distill", "--teacher", teacher, "--corpus", corpus, "--student", "student-xs"]
    args += ["--max-steps", "8", "--ckpt-every", "2", "--eval-every", "3", "--batch-size", "32"]
    full, part = tmp_path / "full", tmp_path / "part"
    run_cli(*args, "--out", full)
    shutil.copytree(full, part)
    kept = sorted(p.name for p in (part / "checkpoints").glob("step_*.pt"))
    assert kept == ["step_000000004.pt", "step_000000006.pt", "step_000000008.pt"]
    (part / "checkpoints" / kept[-1]).unlink()  # back to step 6 (mid-epoch), step 4 older
    for name in ("model.pt", "metrics.json"):
        (part / name).unlink()
    run_cli(*args, "--out", part, "--resume")
    a = json.loads((full / "metrics.json").read_text())
    b = json.loads((part / "metrics.json").read_text())
    # It resumed from the newest checkpoint and ran only the 2 steps left (the bit-exact
    # replay below holds from any starting point, so it cannot tell).
    assert (b["resumed_from_step"], b["resumed_from_checkpoint"]) == (6, "step_000000006.pt")
    assert b["steps_this_run"] == 2 and b["steps"] == 8
    assert a["resumed_from_step"] is None and a["steps_this_run"] == 8
    assert [h["val_mean_auroc"] for h in a["history"]] == [
        h["val_mean_auroc"] for h in b["history"]
    ]
    sa = torch.load(full / "model.pt", weights_only=True)["state_dict"]
    sb = torch.load(part / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.slow
def test_qat_phase_resumes_from_its_own_checkpoint(tmp_path_factory, tmp_path, monkeypatch):
    """The QAT phase (--qat-steps) has its own Trainer under out/qat: a run stopped in the
    middle of QAT resumes from QAT's newest checkpoint, says so in metrics["qat"], takes only
    the QAT steps left, and ends in the same weights as the uninterrupted run."""
    teacher, _ = teacher_run(tmp_path_factory)
    _, corpus = target_corpus(tmp_path_factory)
    post_init = TrainConfig.__post_init__

    def keep_three(self: TrainConfig) -> None:  # three kept: an older one to choose wrongly
        self.keep_checkpoints = 3
        post_init(self)

    monkeypatch.setattr(TrainConfig, "__post_init__", keep_three)
    args = ["train", "distill", "--teacher", teacher, "--corpus", corpus, "--student", "student-xs"]
    args += ["--max-steps", "2", "--qat-steps", "6", "--ckpt-every", "2", "--eval-every", "2"]
    args += ["--batch-size", "32"]
    full, part = tmp_path / "full", tmp_path / "part"
    run_cli(*args, "--out", full)
    shutil.copytree(full, part)
    qat_ckpts = part / "qat" / "checkpoints"
    kept = sorted(p.name for p in qat_ckpts.glob("step_*.pt"))
    assert kept == ["step_000000002.pt", "step_000000004.pt", "step_000000006.pt"]
    (qat_ckpts / kept[-1]).unlink()  # stopped after QAT step 4; step 2 is older
    for name in ("model.pt", "metrics.json"):
        (part / name).unlink()
    run_cli(*args, "--out", part, "--resume")
    a = json.loads((full / "metrics.json").read_text())
    b = json.loads((part / "metrics.json").read_text())
    assert (a["qat"]["resumed_from_step"], a["qat"]["steps_this_run"]) == (None, 6)
    assert (b["qat"]["resumed_from_step"], b["qat"]["resumed_from_checkpoint"]) == (
        4,
        "step_000000004.pt",
    )
    assert b["qat"]["steps_this_run"] == 2 and b["qat"]["steps"] == 6
    # the distillation phase had finished: resumed at its end, nothing redone
    assert (b["resumed_from_step"], b["steps_this_run"]) == (2, 0)
    sa = torch.load(full / "model.pt", weights_only=True)["state_dict"]
    sb = torch.load(part / "model.pt", weights_only=True)["state_dict"]
    assert set(sa) == set(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)
