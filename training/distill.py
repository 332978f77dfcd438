"""Knowledge distillation of a trained teacher (e.g. the LoRA-tuned ECGFounder) into an edge
student (``student-s`` by default: depthwise-separable 1-D convs, ReLU, BN folded at export).

The teacher runs once over the train and val windows and its logits are cached in
``out/teacher/`` (the teacher-labelling pass; ~0.2-0.4 h over 20 M windows on an H100,
DESIGN.md section 7), then the student trains on

    alpha * masked BCE(student, labels, pos_weight)
    + (1 - alpha) * T^2 * BCE(sigmoid(student / T), sigmoid(teacher / T))   [every lab]
    + feature_weight * MSE(proj(student features), standardised teacher features)

The KD term covers every lab of every window, measured or not: the teacher's opinion is
the extra supervision that makes a small model catch up. Early stopping, checkpoints,
exact resume and DDP come from :class:`~anyecg_edge.training.trainer.Trainer`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from anyecg_edge.training.trainer import TrainConfig, TrainError
from torch import nn
from torch.utils.data import Dataset

log = logging.getLogger("anyecg_edge.training")

__all__ = ["DistillModel", "DistillRun", "IndexedDataset", "train_distill"]


@dataclass
class DistillRun:
    teacher: str  # a run folder with model.pt, or a model.pt file
    corpus: str
    out: str
    student: str = "student-s"
    labs: list[str] | None = None
    temperature: float = 2.0
    alpha: float = 0.5
    feature_weight: float = 0.0
    # Quantization-aware fine-tuning after distillation (training/qat.py): steps, lr
    # (None: a tenth of the distillation lr). 0 steps: off.
    qat_steps: int = 0
    qat_lr: float | None = None

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise TrainError(f"distill temperature: expected > 0, got {self.temperature!r}")
        if not 0 <= self.alpha <= 1:
            raise TrainError(f"distill alpha: expected in [0, 1], got {self.alpha!r}")
        if self.feature_weight < 0:
            raise TrainError(f"distill feature weight: expected >= 0, got {self.feature_weight!r}")
        if self.qat_steps < 0:
            raise TrainError(f"distill QAT steps: expected >= 0, got {self.qat_steps!r}")
        if self.qat_lr is not None and not self.qat_lr > 0:
            raise TrainError(f"distill QAT lr: expected > 0, got {self.qat_lr!r}")


class IndexedDataset(Dataset):
    """A CorpusDataset whose items also carry their row index and, given ``teacher`` (one row
    of cached teacher outputs per dataset row), that row: the loader's workers read it with
    the batch (pinned on CUDA), so the training step does no host work for the teacher."""

    def __init__(self, dataset: Any, teacher: np.ndarray | None = None) -> None:
        if teacher is not None and len(teacher) != len(dataset):
            raise TrainError(
                f"teacher outputs have {len(teacher)} rows, the dataset has {len(dataset)}"
            )
        self.dataset = dataset
        self.teacher = teacher

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        item = (*self.dataset[i], torch.tensor(int(i)))
        if self.teacher is None:
            return item
        return (*item, torch.from_numpy(np.array(self.teacher[int(i)])))

    def __getitems__(self, indices):
        items = self.dataset.__getitems__(indices)
        items = [(*it, torch.tensor(int(i))) for it, i in zip(items, indices, strict=True)]
        if self.teacher is None:
            return items
        idx = np.asarray(indices, dtype=np.int64)
        rows = np.sort(idx)  # sorted reads from the (memory-mapped) cache
        t = torch.from_numpy(np.asarray(self.teacher[rows])[np.argsort(np.argsort(idx))])
        return [(*it, row) for it, row in zip(items, t, strict=True)]

    @property
    def targets(self) -> np.ndarray:
        return self.dataset.targets


class DistillModel(nn.Module):
    """The student plus, for feature matching, a linear map into the teacher's feature space."""

    def __init__(self, student: nn.Module, teacher_features: int = 0) -> None:
        super().__init__()
        self.student = student
        self.proj = nn.Linear(student.num_features, teacher_features) if teacher_features else None

    def forward(self, x: torch.Tensor):
        if self.proj is None:
            return self.student(x)
        feats = self.student.forward_features(x)
        return self.student.forward_head(feats), self.proj(feats)


class _WithFeatures(nn.Module):
    """Teacher wrapper returning [logits | pooled features] in one tensor."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.model.forward_features(x)
        return torch.cat([self.model.forward_head(feats), feats], dim=1)


def fidelity_report(
    student_logits: np.ndarray,
    teacher_logits: np.ndarray,
    student_meta: Any,
    teacher_meta: Any,
    *,
    split: str,
) -> dict[str, Any]:
    """How well the student reproduces its teacher on held-out windows (n, n_labs each,
    columns = ``student_meta.labs``).

    * ``mean_abs_dp``: mean |p_student - p_teacher| of the calibrated probabilities each
      model reports (its own calibration; identity for uncalibrated labs);
    * per lab, the AUROC of the student's score against the teacher's abnormal calls
      (teacher probability >= its threshold; the teacher's median split where the teacher
      has no threshold or its calls are all one class) - 1.0 means the student orders every
      teacher-abnormal window above every teacher-normal one;
    * ``call_agreement``: share of (window, lab) calls the student makes like the teacher,
      over labs both models calibrated;
    * ``spearman``: mean per-lab rank correlation of the two logits.
    """
    from anyecg_edge.training.evaluate import auroc
    from scipy.stats import spearmanr

    zs = np.asarray(student_logits, dtype=np.float64)
    zt = np.asarray(teacher_logits, dtype=np.float64)
    labs = list(student_meta.labs)

    # The teacher's metadata lists its labs in its own order: view it over the student's.
    teacher_view = replace(teacher_meta, labs=labs)
    ps, pt = student_meta.probabilities(zs), teacher_view.probabilities(zt)
    ts, tt = student_meta.threshold_array(), teacher_view.threshold_array()
    per_lab: dict[str, Any] = {}
    aurocs, rhos, agree = [], [], []
    for j, lab in enumerate(labs):
        ref, kind = pt[:, j] >= tt[j], "teacher calls"
        if not np.isfinite(tt[j]) or ref.all() or not ref.any():
            ref, kind = zt[:, j] > np.median(zt[:, j]), "teacher median split"
        a = auroc(ref, zs[:, j]) if ref.any() and not ref.all() else float("nan")
        rho = float(spearmanr(zs[:, j], zt[:, j]).statistic) if zs.shape[0] > 2 else float("nan")
        entry = {
            "auroc_vs_teacher": None if not np.isfinite(a) else round(a, 4),
            "reference": kind,
            "mean_abs_dp": round(float(np.mean(np.abs(ps[:, j] - pt[:, j]))), 4),
            "spearman": None if not np.isfinite(rho) else round(rho, 4),
        }
        if np.isfinite(ts[j]) and np.isfinite(tt[j]):
            same = (ps[:, j] >= ts[j]) == (pt[:, j] >= tt[j])
            entry["call_agreement"] = round(float(same.mean()), 4)
            agree.append(same)
        per_lab[lab] = entry
        if np.isfinite(a):
            aurocs.append(a)
        if np.isfinite(rho):
            rhos.append(rho)
    return {
        "split": split,
        "n_windows": int(zs.shape[0]),
        "mean_abs_dp": round(float(np.mean(np.abs(ps - pt))), 4),
        "mean_auroc_vs_teacher": round(float(np.mean(aurocs)), 4) if aurocs else None,
        "min_auroc_vs_teacher": round(float(np.min(aurocs)), 4) if aurocs else None,
        "mean_spearman": round(float(np.mean(rhos)), 4) if rhos else None,
        "call_agreement": round(float(np.concatenate(agree).mean()), 4) if agree else None,
        "n_labs_called": len(agree),
        "per_lab": per_lab,
    }


def _qat_phase(
    model: DistillModel,
    make_trainer: Any,
    out: Path,
    run: DistillRun,
    config: TrainConfig,
    info: Any,
    resume: bool,
) -> dict[str, Any]:
    """Quantization-aware fine-tuning of the distilled student (same loss, fake int8 weights
    and activations; training/qat.py), its own Trainer in ``out/qat`` (checkpoints, exact
    resume, DDP). Leaves ``model.student`` finished: weights on the int8 grid, standard
    layout. ``make_trainer(out_dir, config, phase)`` builds the distillation's Trainer."""
    import dataclasses

    from anyecg_edge.training.qat import finish_qat, prepare_qat

    prepare_qat(model.student)
    model.to(info.device)
    qat_config = dataclasses.replace(
        config,
        epochs=max(config.epochs, 1000),
        max_steps=run.qat_steps,
        lr=run.qat_lr or config.lr / 10,
        warmup=0.0,
        eval_every=run.qat_steps,
        patience=0,
    )
    summary = make_trainer(out / "qat", qat_config, "qat").fit(resume=resume)
    finish_qat(model.student)
    log.info(
        "QAT: %d steps at lr %.2e; val mean AUROC with fake int8 %s",
        summary["steps"],
        qat_config.lr,
        "n/a"
        if summary["best_val_mean_auroc"] is None
        else f"{summary['best_val_mean_auroc']:.4f}",
    )
    return {
        "steps": summary["steps"],
        # Where the QAT phase started: its own checkpoint under out/qat (None: from the
        # distilled weights), and how many QAT steps this run took.
        "resumed_from_step": summary["resumed_from_step"],
        "resumed_from_checkpoint": summary["resumed_from_checkpoint"],
        "steps_this_run": summary["steps_this_run"],
        "lr": qat_config.lr,
        "val_mean_auroc_fake_int8": summary["best_val_mean_auroc"],
        "selection": summary.get("selection"),
    }


def _teacher_path(teacher: str | os.PathLike) -> Path:
    path = Path(teacher)
    path = path / "model.pt" if path.is_dir() else path
    if not path.is_file():
        raise TrainError(f"{path}: teacher model not found (expected a run folder with model.pt)")
    return path


def _teacher_outputs(
    teacher: nn.Module,
    teacher_sha256: str,
    datasets: dict[str, Any],
    cols: list[int],
    *,
    features: bool,
    cache: Path,
    config: TrainConfig,
    info,
) -> dict[str, np.ndarray]:
    """Teacher logits (and features) per split, cached in ``cache`` and reused on resume."""
    from anyecg_edge.training.trainer import predict_logits, write_json

    key = {
        "teacher_sha256": teacher_sha256,
        "cols": cols,
        "features": features,
        "rows": {k: len(v) for k, v in datasets.items()},
    }
    meta_path = cache / "teacher.json"
    files = {k: cache / f"{k}.npy" for k in datasets}
    if (
        meta_path.is_file()
        and json.loads(meta_path.read_text()) == key
        and all(f.is_file() for f in files.values())
    ):
        return {k: np.load(f, mmap_mode="r") for k, f in files.items()}
    module = _WithFeatures(teacher) if features else teacher
    module.to(info.device)
    out = {}
    for split, ds in datasets.items():
        out[split] = predict_logits(
            module,
            ds,
            batch_size=config.batch_size * 2,
            device=info.device,
            precision=config.precision,
            info=info,
            workers=config.workers,
        )
    n_out = out[next(iter(out))].shape[1]
    n_feat = int(teacher.num_features) if features else 0
    keep = cols + list(range(n_out - n_feat, n_out))
    out = {k: np.ascontiguousarray(v[:, keep], dtype=np.float32) for k, v in out.items()}
    if info.is_main:
        cache.mkdir(parents=True, exist_ok=True)
        for k, arr in out.items():
            tmp = files[k].with_suffix(".tmp.npy")
            np.save(tmp, arr)
            os.replace(tmp, files[k])
        write_json(meta_path, key)
    return out


def train_distill(run: DistillRun, config: TrainConfig, *, resume: bool = False) -> dict[str, Any]:
    """Train ``run.student`` from ``run.teacher`` on ``run.corpus``; writes ``run.out``.

    Outputs: ``model.pt`` (student, device metadata with val-fitted calibration),
    ``train_config.json``, ``metrics.json``, ``teacher/`` (cached teacher outputs),
    ``train_log.jsonl``, ``checkpoints/``.
    """
    from anyecg_edge.training.data.dataset import CorpusDataset, corpus_lab_keys
    from anyecg_edge.training.lora import parameter_counts, resolve_labs
    from anyecg_edge.training.models import count_macs, count_params, create_model
    from anyecg_edge.training.torch_model import load_model_checkpoint, save_model_checkpoint
    from anyecg_edge.training.trainer import (
        Trainer,
        file_sha256,
        masked_bce_terms,
        mean_auroc,
        model_metadata,
        pos_weight_from_targets,
        predict_logits,
        setup_distributed,
        write_json,
    )

    info = setup_distributed(config.device)
    out = Path(run.out)
    teacher_file = _teacher_path(run.teacher)
    teacher_sha256 = file_sha256(teacher_file)
    teacher, tmeta = load_model_checkpoint(teacher_file)
    measured = set(corpus_lab_keys(run.corpus))
    labs = resolve_labs(run.corpus, run.labs or [k for k in tmeta.labs if k in measured])
    missing = [k for k in labs if k not in tmeta.labs]
    if missing:
        raise TrainError(
            f"{teacher_file}: the teacher has no output for lab(s) {', '.join(missing)}"
        )
    cols = [tmeta.labs.index(k) for k in labs]

    train_base = CorpusDataset(run.corpus, "train", labs=labs)
    val_base = CorpusDataset(run.corpus, "val", labs=labs)
    if len(val_base) == 0:
        raise TrainError(
            f"{run.corpus}: the val split has no windows (needed to stop and calibrate)"
        )
    win = int(round(tmeta.fs * tmeta.window_s))
    if train_base.window_samples != win:
        raise TrainError(
            f"{run.corpus}: windows have {train_base.window_samples} samples, the teacher "
            f"expects {win}"
        )
    want_feat = run.feature_weight > 0
    # Fidelity (student vs teacher) is measured on windows neither saw in training: the
    # test split, or val when the corpus has no test windows.
    test_base = CorpusDataset(run.corpus, "test", labs=labs)
    held_name, held_base = ("test", test_base) if len(test_base) else ("val", val_base)
    t_out = _teacher_outputs(
        teacher,
        teacher_sha256,
        {"train": train_base, "val": val_base, **({"test": test_base} if len(test_base) else {})},
        cols,
        features=want_feat,
        cache=out / "teacher",
        config=config,
        info=info,
    )
    n_labs = len(labs)
    teacher_train = t_out["train"]
    teacher_val_logits = np.asarray(t_out["val"][:, :n_labs])
    feat_mean = feat_std = None
    if want_feat:
        f = np.asarray(teacher_train[:, n_labs:], dtype=np.float64)
        feat_mean = torch.from_numpy(f.mean(0).astype(np.float32)).to(info.device)
        feat_std = torch.from_numpy((f.std(0) + 1e-6).astype(np.float32)).to(info.device)
    del teacher

    torch.manual_seed(config.seed)
    student = create_model(run.student, n_classes=n_labs)
    n_teacher_feat = teacher_train.shape[1] - n_labs if want_feat else 0
    model = DistillModel(student, n_teacher_feat).to(info.device)
    pw = (
        torch.from_numpy(pos_weight_from_targets(train_base.targets, config.pos_weight_max)).to(
            info.device
        )
        if config.pos_weight
        else None
    )
    temp, alpha = run.temperature, run.alpha

    def loss_fn(m: nn.Module, batch):
        x, y, mask, _, t = batch  # t: the teacher's rows, read by IndexedDataset
        out_ = m(x)
        logits, proj = out_ if isinstance(out_, tuple) else (out_, None)
        logits = logits.float()
        terms = {}
        if alpha > 0:
            s, c = masked_bce_terms(logits, y, mask, pw)
            terms["bce"] = (s, c, alpha)
        if alpha < 1:
            soft = torch.sigmoid(t[:, :n_labs] / temp)
            kd = nn.functional.binary_cross_entropy_with_logits(
                logits / temp, soft, reduction="sum"
            )
            terms["kd"] = (
                kd * temp * temp,
                torch.tensor(float(soft.numel()), device=x.device),
                1 - alpha,
            )
        if proj is not None:
            target = (t[:, n_labs:] - feat_mean) / feat_std
            mse = ((proj.float() - target) ** 2).sum()
            terms["feat"] = (
                mse,
                torch.tensor(float(target.numel()), device=x.device),
                run.feature_weight,
            )
        return terms

    train_set = IndexedDataset(train_base, teacher_train)
    run_meta = {
        "task": "distill",
        "student": run.student,
        "teacher_sha256": teacher_sha256,
        "temperature": temp,
        "alpha": alpha,
        "feature_weight": run.feature_weight,
        "qat_steps": run.qat_steps,
        "corpus": str(Path(run.corpus).resolve()),
    }

    def make_trainer(out_dir: Path, cfg: TrainConfig, phase: str | None = None) -> Trainer:
        return Trainer(
            model,
            loss_fn=loss_fn,
            train_set=train_set,
            val_set=val_base,
            val_targets=val_base.targets,
            out_dir=out_dir,
            config=cfg,
            info=info,
            labs=labs,
            val_module=model.student,
            run_meta=run_meta if phase is None else {**run_meta, "phase": phase},
        )

    trainer = make_trainer(out, config)
    summary = trainer.fit(resume=resume)
    val_logits = trainer.best_val_logits
    if run.qat_steps:
        summary["qat"] = _qat_phase(model, make_trainer, out, run, config, info, resume)
        val_logits = None  # calibrate on the finished (int8-grid) model

    student.eval()
    if val_logits is None:  # resumed after the best evaluation, or after QAT
        val_logits = predict_logits(
            student, val_base, batch_size=config.batch_size, device=info.device, info=info
        )
    teacher_val_auroc, _ = mean_auroc(teacher_val_logits, val_base.targets)
    held_student = (
        val_logits
        if held_name == "val"
        else predict_logits(
            student, held_base, batch_size=config.batch_size, device=info.device, info=info
        )
    )
    window = train_base.window_samples
    student_cpu = student.to("cpu")
    trainable, total = parameter_counts(model)
    result = {
        **summary,
        "labs": labs,
        "student": run.student,
        "student_params": count_params(student_cpu),
        "student_macs": count_macs(student_cpu, (1, 1, window)),
        "trainable_params": trainable,
        "total_params": total,
        "teacher_val_mean_auroc": None if np.isnan(teacher_val_auroc) else teacher_val_auroc,
        "loss_weights": {
            "labels": alpha,
            "teacher_soft_targets": 1 - alpha,
            "features": run.feature_weight,
            "temperature": temp,
        },
    }
    result["trainable_pct"] = 100.0 * result["trainable_params"] / result["total_params"]
    if info.is_main:
        from anyecg_edge.training.evaluate import window_visits

        meta = model_metadata(
            run.corpus,
            labs,
            val_logits,
            val_base.targets,
            val_groups=window_visits(val_base),
            arch=run.student,
            extra={"trained_by": "anyecg-edge train distill", "teacher": str(teacher_file)},
        )
        result["fidelity"] = fidelity_report(
            held_student,
            np.asarray(t_out[held_name][:, :n_labs]),
            meta,
            tmeta,
            split=held_name,
        )
        save_model_checkpoint(
            out / "model.pt",
            student_cpu,
            arch=run.student,
            model_kwargs={"n_classes": n_labs, "in_channels": student_cpu.in_channels},
            metadata=meta,
        )
        write_json(
            out / "train_config.json",
            {
                **run_meta,
                "run": {k: v for k, v in asdict(run).items()},
                "labs": labs,
                "model_config": {"n_classes": n_labs, "in_channels": student_cpu.in_channels},
                "train": config.to_dict(),
            },
        )
        write_json(out / "metrics.json", result)
    if info.distributed:
        import torch.distributed as dist

        dist.barrier()
    return result
