"""The training loop shared by LoRA fine-tuning and distillation.

What it owns: masked multi-label losses reduced exactly across DDP ranks, AdamW with a
warmup + cosine schedule, gradient clipping, bf16/fp16 autocast, optional
``torch.compile``, early stopping on the validation mean AUROC, checkpoints every N steps
with *exact* resume (trainable weights and buffers, optimizer, scheduler, grad scaler,
every rank's RNG states, the position inside the epoch, the early-stopping state and the
loss accumulators), and throughput logging (segments/s, loader wait, GPU memory).

Data order is defined by *global* batches: epoch ``e``'s order is the shard-aware
shuffle of ``(seed, e)`` (:class:`ShardAwareSampler`), cut into global batches of
``batch_size``; with ``torchrun`` each rank takes a contiguous slice of every global
batch. Loss terms are sums divided by the *global* count of their elements (the counts
are all-reduced before the division), so a DDP step computes the same gradient as one
process with the whole batch, up to float summation order. The same global batch index
is the resume position, whatever the world size.

The parts around the loop live beside it: options (`train_config`), process group
(`distributed`), data order (`sampling`), checkpoints and exact resume (`checkpoint`, the
Trainer's state side), losses and the selection metric (`metrics`), batch inference
(`inference`), the trained model's manifest (`metadata`); their names are re-exported here
for the callers that import them from the trainer.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from anyecg_edge.training.checkpoint import CheckpointMixin
from anyecg_edge.training.distributed import DistInfo, setup_distributed
from anyecg_edge.training.inference import autocast, predict_logits, slice_loader
from anyecg_edge.training.metadata import corpus_manifest, model_metadata
from anyecg_edge.training.metrics import masked_bce_terms, mean_auroc, pos_weight_from_targets
from anyecg_edge.training.sampling import EpochBatchSampler, shard_aware_order
from anyecg_edge.training.train_config import TrainConfig, TrainError
from torch import nn
from torch.utils.data import DataLoader

from anyecg_edge.fileio import file_sha256, write_json
from anyecg_edge.jsonsafe import dumps
from anyecg_edge.progress import report as progress_report

log = logging.getLogger("anyecg_edge.training")

__all__ = [
    "DistInfo",
    "EpochBatchSampler",
    "TrainConfig",
    "Trainer",
    "TrainError",
    "file_sha256",  # re-exported from anyecg_edge.fileio (lora/distill/tests import it here)
    "corpus_manifest",
    "masked_bce_terms",
    "mean_auroc",
    "model_metadata",
    "pos_weight_from_targets",
    "predict_logits",
    "slice_loader",
    "setup_distributed",
    "write_json",  # anyecg_edge.fileio's: atomic, strict JSON (NaN -> null + reason)
]

# ----------------------------------------------------------------------------- schedule


def _lr_lambda(total: int, warmup: float, floor: float) -> Callable[[int], float]:
    warm = int(round(warmup * total)) if warmup < 1 else int(warmup)
    warm = min(warm, max(total - 1, 0))

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        span = max(total - warm, 1)
        progress = min(max(step - warm, 0) / span, 1.0)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return f


# ----------------------------------------------------------------------------- trainer

LossFn = Callable[
    [nn.Module, Sequence[torch.Tensor]], dict[str, tuple[torch.Tensor, torch.Tensor, float]]
]


class Trainer(CheckpointMixin):
    """Runs one training job; ``fit()`` returns the run summary (history, best, throughput).

    ``model``: the module whose trainable parameters are optimised (e.g. a PeftModel).
    ``loss_fn(model, batch)``: ``{name: (sum, count, weight)}`` loss terms on the batch
    (already on the device); the loss is ``sum(weight * sum / global_count)``.
    ``val_set`` items start with x; ``val_targets`` int8 (n_val, n_labs) with -1 for
    unmeasured; ``val_module`` produces the logits evaluated (default: ``model``).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        loss_fn: LossFn,
        train_set: Any,
        val_set: Any,
        val_targets: np.ndarray,
        out_dir: str | os.PathLike,
        config: TrainConfig,
        info: DistInfo,
        labs: Sequence[str],
        val_module: nn.Module | None = None,
        order_fn: Callable[[int], np.ndarray] | None = None,
        run_meta: dict[str, Any] | None = None,
    ) -> None:
        self.cfg = config
        self.info = info
        self.model = model
        self.val_module = val_module if val_module is not None else model
        self.loss_fn = loss_fn
        self.train_set = train_set
        self.val_set = val_set
        self.val_loader: DataLoader | None = None  # built at the first evaluation
        self.val_targets = np.asarray(val_targets)
        self.labs = list(labs)
        self.out = Path(out_dir)
        self.ckpt_dir = self.out / "checkpoints"
        self.run_meta = dict(run_meta or {})
        if len(train_set) == 0:
            raise TrainError("the training split has no windows")
        self.sampler = EpochBatchSampler(
            order_fn or shard_aware_order(train_set, config.seed),
            len(train_set),
            config.batch_size,
            rank=info.rank,
            world_size=info.world_size,
            drop_last=True,
        )
        steps_per_epoch = self.sampler.num_batches
        total = config.epochs * steps_per_epoch
        self.total_steps = min(total, config.max_steps) if config.max_steps else total
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise TrainError("the model has no trainable parameters")
        decay = [p for p in self.params if p.dim() >= 2]
        no_decay = [p for p in self.params if p.dim() < 2]
        self.optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": config.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=config.lr,
            # One multi-tensor kernel per step on the GPU (the throughput benchmark's setting).
            fused=info.device.type == "cuda",
        )
        if info.device.type == "cuda":
            # Every batch has the same shape (fixed windows, drop_last): autotuned conv
            # algorithms pay off from the second step.
            torch.backends.cudnn.benchmark = True
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, _lr_lambda(self.total_steps, config.warmup, config.min_lr_ratio)
        )
        self.scaler = torch.amp.GradScaler(info.device.type, enabled=config.precision == "fp16")
        self.step_model: nn.Module = model
        if info.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.step_model = DDP(
                model, device_ids=[info.local_rank] if info.device.type == "cuda" else None
            )
        if config.compile:
            self.step_model = torch.compile(self.step_model)
        self.loader = DataLoader(
            train_set,
            batch_sampler=self.sampler,
            num_workers=config.workers,
            pin_memory=info.device.type == "cuda",
            # Workers live across epochs: restarting them each epoch (re-opening every memmap)
            # dominated short epochs in the H100 run. The batch sampler runs in this process,
            # so set_epoch() still takes effect on the next iteration.
            persistent_workers=config.workers > 0,
            prefetch_factor=4 if config.workers else None,
            # Each loader iterator draws a worker seed; from its own generator it leaves the
            # global RNG stream (dropout) alone, which keeps resumed runs bit-exact.
            generator=torch.Generator().manual_seed(config.seed),
        )
        # Progress and early-stopping state (all of it is checkpointed).
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.best_metric: float | None = None
        self.best_step: int | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        # Val logits of the best state (not checkpointed: val may be large); the runs reuse
        # them for calibration and recompute them after a resume.
        self.best_val_logits: np.ndarray | None = None
        self._warned_no_selection = False
        self.bad_evals = 0
        self.stopped_early = False
        self.done = False
        self.history: list[dict[str, Any]] = []
        self.loss_acc = {"sum": 0.0, "n": 0}
        self.last_eval_step = -1
        self.resumed_from: tuple[int, str] | None = None  # (step, checkpoint file) loaded

    # -- loop ---------------------------------------------------------------------------

    def _loss(self, batch: Sequence[torch.Tensor]) -> torch.Tensor:
        with autocast(self.info.device, self.cfg.precision):
            terms = self.loss_fn(self.step_model, batch)
        counts = torch.stack([c.detach().float() for _, c, _ in terms.values()])
        if self.info.distributed:
            dist.all_reduce(counts)
        scale = float(self.info.world_size)  # DDP averages gradients over ranks
        loss = 0.0
        for (s, _, w), c in zip(terms.values(), counts, strict=True):
            loss = loss + w * s.float() * scale / c.clamp(min=1.0)
        return loss

    def _train_step(self, batch: Sequence[torch.Tensor]) -> float:
        batch = [t.to(self.info.device, non_blocking=True) for t in batch]
        loss = self._loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        # Every rank's loss is its share of the global mean: the sum over ranks is the mean.
        value = loss.detach().float() / self.info.world_size
        if self.info.distributed:
            dist.all_reduce(value)
        return float(value)

    def evaluate(self) -> dict[str, Any]:
        if self.val_loader is None:
            self.val_loader = slice_loader(
                self.val_set,
                batch_size=max(self.cfg.batch_size // self.info.world_size, 1) * 2,
                info=self.info,
                workers=self.cfg.workers,
                persistent=True,
            )
        logits = predict_logits(
            self.val_module,
            self.val_set,
            device=self.info.device,
            precision=self.cfg.precision,
            info=self.info,
            loader=self.val_loader,
        )
        metric, per_lab = mean_auroc(logits, self.val_targets)
        entry = {
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "train_loss": self.loss_acc["sum"] / max(self.loss_acc["n"], 1),
            "lr": self.scheduler.get_last_lr()[0],
            "val_mean_auroc": None if math.isnan(metric) else metric,
            "val_auroc": dict(zip(self.labs, per_lab, strict=True)),
        }
        self.loss_acc = {"sum": 0.0, "n": 0}
        if math.isnan(metric):
            # Nothing to select on (no val lab with both classes, or non-finite logits): no
            # "best" is taken and no evaluation counts toward early stopping. Without a best
            # state the run ends on its latest one, and these logits are that state's (lora
            # and distill calibrate on them).
            if self.best_state is None:
                self.best_val_logits = logits
            if self.info.is_main and not self._warned_no_selection:
                y = self.val_targets
                if ((y == 1).any(0) & (y == 0).any(0)).any():
                    log.warning("val mean AUROC is undefined (non-finite logits?): not selected")
                else:
                    log.warning(
                        "val split has no lab with both classes: no model selection; "
                        "keeping the last state"
                    )
                self._warned_no_selection = True
        elif self.best_metric is None or metric > self.best_metric:
            self.best_metric = metric
            self.best_step = self.step
            self.best_state = self.trainable_state()
            self.best_val_logits = logits
            self.bad_evals = 0
        else:
            self.bad_evals += 1
        entry["best_step"] = self.best_step
        self.history.append(entry)
        self.last_eval_step = self.step
        if self.cfg.patience and self.bad_evals >= self.cfg.patience:
            self.stopped_early = True
        if self.info.is_main:
            log.info(
                "eval step %d epoch %d: val mean AUROC %s (%s)",
                self.step,
                self.epoch,
                "undefined" if math.isnan(metric) else f"{metric:.4f}",
                "no selection"
                if self.best_metric is None
                else f"best {self.best_metric:.4f} at step {self.best_step}",
            )
        return entry

    def fit(self, *, resume: bool = False) -> dict[str, Any]:
        cfg, info = self.cfg, self.info
        if resume and not self.resume() and info.is_main:
            log.info("--resume: no checkpoint in %s, starting from scratch", self.ckpt_dir)
        if info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        log_path = self.out / "train_log.jsonl"
        steps_per_epoch = self.sampler.num_batches
        throughput: list[float] = []
        t_log = time.perf_counter()
        wait_s = 0.0
        pause_s = 0.0  # evaluation + checkpoint time inside the current log interval
        seen = 0
        seen_total = 0
        steps_run = 0  # optimizer steps taken by this fit() (a resume must not redo any)
        t_fit = time.perf_counter()
        if info.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(info.device)
        self.model.train()
        while not self.done and self.step < self.total_steps and not self.stopped_early:
            self.sampler.set_epoch(self.epoch, self.batch_in_epoch)
            t_wait = time.perf_counter()
            for batch in self.loader:
                wait_s += time.perf_counter() - t_wait
                loss = self._train_step(batch)
                seen += len(batch[0]) * info.world_size  # approximate for an uneven last batch
                seen_total += len(batch[0]) * info.world_size
                steps_run += 1
                self.loss_acc["sum"] += loss
                self.loss_acc["n"] += 1
                self.step += 1
                self.batch_in_epoch += 1
                if info.is_main:  # a bar with ETA when the command opened one (stderr, a tty)
                    progress_report("train steps", self.step, self.total_steps)
                epoch_end = self.batch_in_epoch >= steps_per_epoch
                if epoch_end:
                    self.epoch += 1
                    self.batch_in_epoch = 0
                if self.step % cfg.log_every == 0 or self.step == self.total_steps:
                    now = time.perf_counter()
                    # Training throughput excludes the evaluations and checkpoints of the
                    # interval (logged apart): it is the number an epoch's length scales with.
                    rate = seen / max(now - t_log - pause_s, 1e-9)
                    throughput.append(rate)
                    rec = {
                        "step": self.step,
                        "epoch": self.epoch,
                        "loss": loss,
                        "lr": self.scheduler.get_last_lr()[0],
                        "segments_per_s": rate,
                        "segments_per_s_wall": seen / max(now - t_log, 1e-9),
                        "eval_ckpt_s": pause_s,
                        "loader_wait_frac": wait_s / max(now - t_log - pause_s, 1e-9),
                    }
                    if info.device.type == "cuda":
                        rec["gpu_mem_max_mib"] = (
                            torch.cuda.max_memory_allocated(info.device) / 2**20
                        )
                    if info.is_main:
                        with open(log_path, "a") as fh:  # a diverged loss: null, not NaN
                            fh.write(dumps(rec) + "\n")
                        log.info(
                            "step %d/%d epoch %d loss %.4f lr %.2e %.1f segments/s "
                            "(%.1f/s with eval+ckpt)%s",
                            self.step,
                            self.total_steps,
                            self.epoch,
                            loss,
                            rec["lr"],
                            rate,
                            rec["segments_per_s_wall"],
                            f" gpu {rec['gpu_mem_max_mib']:.0f} MiB"
                            if "gpu_mem_max_mib" in rec
                            else "",
                        )
                    t_log, wait_s, pause_s, seen = now, 0.0, 0.0, 0
                do_eval = (cfg.eval_every and self.step % cfg.eval_every == 0) or (
                    not cfg.eval_every and epoch_end
                )
                finished = self.step >= self.total_steps
                t_pause = time.perf_counter()
                if do_eval or (finished and self.last_eval_step != self.step):
                    self.evaluate()
                finished = finished or self.stopped_early
                if finished:
                    self.done = True
                do_ckpt = (cfg.ckpt_every and self.step % cfg.ckpt_every == 0) or (
                    not cfg.ckpt_every and do_eval
                )
                if do_ckpt or finished:
                    self.save_checkpoint()
                pause_s += time.perf_counter() - t_pause
                if finished or epoch_end:
                    break
                t_wait = time.perf_counter()
        fit_wall_s = time.perf_counter() - t_fit
        if self.best_state is not None:
            self.load_trainable_state(self.best_state, "best state")
        summary = {
            "steps": self.step,
            "total_steps": self.total_steps,
            # Where this run started: the checkpoint --resume loaded (None: from scratch).
            "resumed_from_step": None if self.resumed_from is None else self.resumed_from[0],
            "resumed_from_checkpoint": None if self.resumed_from is None else self.resumed_from[1],
            "steps_this_run": steps_run,
            "steps_per_epoch": steps_per_epoch,
            "epochs_completed": self.epoch,
            "stopped_early": self.stopped_early,
            # "best": the weights are the best evaluation's; "last": no evaluation had a
            # defined metric, so none was selected and the weights are the final step's.
            "selection": "best val mean AUROC"
            if self.best_state is not None
            else "last (val metric undefined)",
            "selected_step": self.best_step if self.best_state is not None else self.step,
            "best_step": self.best_step,
            "best_val_mean_auroc": self.best_metric,
            "history": self.history,
            "world_size": info.world_size,
            "segments_per_s_median": float(np.median(throughput)) if throughput else None,
            # This process's whole loop, evaluations and checkpoints included.
            "fit_wall_s": fit_wall_s,
            "segments_per_s_overall": seen_total / max(fit_wall_s, 1e-9),
        }
        if info.device.type == "cuda":
            summary["gpu_mem_max_mib"] = torch.cuda.max_memory_allocated(info.device) / 2**20
        return summary
