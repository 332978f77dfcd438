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
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Sampler

from anyecg_edge.fileio import file_sha256, write_json
from anyecg_edge.progress import report as progress_report

log = logging.getLogger("anyecg_edge.training")

__all__ = [
    "DistInfo",
    "EpochBatchSampler",
    "TrainConfig",
    "Trainer",
    "TrainError",
    "file_sha256",  # re-exported from anyecg_edge.fileio (lora/distill/tests import it here)
    "masked_bce_terms",
    "mean_auroc",
    "pos_weight_from_targets",
    "predict_logits",
    "slice_loader",
    "setup_distributed",
    "write_json",  # anyecg_edge.fileio's: atomic, strict JSON (NaN -> null + reason)
]

STATE_FORMAT = "anyecg-edge/train-state/1"
_CKPT_RE = re.compile(r"^step_(\d{9})\.pt$")
# Config fields that may differ on resume without changing what the run computes.
_RESUME_FREE = {
    "workers",
    "log_every",
    "keep_checkpoints",
    "epochs",
    "max_steps",
    "patience",
    "device",
    "compile",
}


class TrainError(ValueError):
    """Training cannot start or continue as asked (bad option, incompatible resume state)."""


@dataclass
class TrainConfig:
    """Hyper-parameters of one run (saved in every checkpoint and in train_config.json)."""

    epochs: int = 10
    max_steps: int | None = None  # stop after this many optimizer steps (with epochs: the min)
    batch_size: int = 256  # global, over all ranks
    lr: float = 1e-3
    weight_decay: float = 1e-5
    warmup: float = 0.05  # < 1: fraction of the total steps; >= 1: steps
    min_lr_ratio: float = 0.0  # cosine floor as a fraction of lr
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    seed: int = 0
    device: str = "cpu"
    precision: str = "fp32"  # fp32 | bf16 | fp16
    compile: bool = False
    workers: int = 0
    pos_weight: bool = True  # class-imbalance weighting of the positive term, per lab
    pos_weight_max: float = 100.0
    eval_every: int = 0  # steps; 0: at every epoch end
    ckpt_every: int = 0  # steps; 0: after every evaluation
    patience: int = 5  # evaluations without improvement before stopping; 0: never stop
    log_every: int = 20
    keep_checkpoints: int = 2

    def __post_init__(self) -> None:
        checks = [
            ("epochs", self.epochs >= 1),
            ("batch_size", self.batch_size >= 1),
            ("lr", self.lr > 0),
            ("weight_decay", self.weight_decay >= 0),
            ("warmup", self.warmup >= 0),
            ("min_lr_ratio", 0 <= self.min_lr_ratio <= 1),
            ("grad_clip", self.grad_clip >= 0),
            ("workers", self.workers >= 0),
            ("pos_weight_max", self.pos_weight_max >= 1),
            ("eval_every", self.eval_every >= 0),
            ("ckpt_every", self.ckpt_every >= 0),
            ("patience", self.patience >= 0),
            ("log_every", self.log_every >= 1),
            ("keep_checkpoints", self.keep_checkpoints >= 1),
        ]
        for name, ok in checks:
            if not ok:
                raise TrainError(f"training option {name}: invalid value {getattr(self, name)!r}")
        if self.max_steps is not None and self.max_steps < 1:
            raise TrainError(f"training option max_steps: expected >= 1, got {self.max_steps!r}")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise TrainError(
                f"training option precision: expected fp32, bf16 or fp16, got {self.precision!r}"
            )
        if self.device not in ("cpu", "cuda"):
            raise TrainError(f"training option device: expected cpu or cuda, got {self.device!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------- distributed


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str = "cpu") -> DistInfo:
    """Join the torchrun process group when launched by torchrun (gloo on CPU, NCCL on CUDA)."""
    if device == "cuda" and not torch.cuda.is_available():
        raise TrainError("device cuda requested but torch sees no CUDA GPU")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(device=torch.device("cuda" if device == "cuda" else "cpu"))
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
        # torchrun already sets OMP_NUM_THREADS=1; share the cores when it was overridden.
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def _barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def _gather_objects(info: DistInfo, obj: Any) -> list[Any]:
    if not info.distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


# ----------------------------------------------------------------------------- data order


class EpochBatchSampler(Sampler[list[int]]):
    """This rank's part of every global batch of an epoch; resumable at a global batch index.

    ``order_fn(epoch)`` returns the epoch's global order of dataset indices. Global batch
    ``b`` is ``order[b*B:(b+1)*B]``; rank ``r`` takes its contiguous ``np.array_split``
    part. A last global batch smaller than the world size is dropped (a rank would get
    nothing to step on). ``drop_last`` drops any partial last batch when there is at least
    one full batch: under torch.compile a new batch shape costs a recompilation (measured
    ~30 s for ECGFounder on an H200) and may leave dynamic-shape kernels behind; the order is
    reshuffled every epoch, so every window is still used.
    """

    def __init__(
        self,
        order_fn: Callable[[int], np.ndarray],
        n_items: int,
        batch_size: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
    ) -> None:
        if batch_size < world_size:
            raise TrainError(
                f"batch_size {batch_size} is smaller than the number of processes {world_size}"
            )
        self.order_fn = order_fn
        self.n_items = int(n_items)
        self.batch_size = int(batch_size)
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.epoch = 0
        self.start_batch = 0

    @property
    def num_batches(self) -> int:
        full, rest = divmod(self.n_items, self.batch_size)
        if self.drop_last and full:
            return full
        return full + (1 if rest >= self.world_size else 0)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch = int(epoch)
        self.start_batch = int(start_batch)

    def __len__(self) -> int:
        return max(0, self.num_batches - self.start_batch)

    def __iter__(self) -> Iterator[list[int]]:
        order = np.asarray(self.order_fn(self.epoch), dtype=np.int64)
        for b in range(self.start_batch, self.num_batches):
            batch = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield np.array_split(batch, self.world_size)[self.rank].tolist()


def shard_aware_order(dataset: Any, seed: int) -> Callable[[int], np.ndarray]:
    """The corpus' shard-aware shuffle (shards in random order, rows shuffled within)."""
    from anyecg_edge.training.data.dataset import ShardAwareSampler

    base = getattr(dataset, "dataset", dataset)  # unwrap index-returning wrappers
    sampler = ShardAwareSampler(base, shuffle=True, seed=seed)

    def order(epoch: int) -> np.ndarray:
        sampler.set_epoch(epoch)
        return np.fromiter(iter(sampler), dtype=np.int64, count=len(sampler))

    return order


# ----------------------------------------------------------------------------- losses, metrics


def pos_weight_from_targets(targets: np.ndarray, max_weight: float = 100.0) -> np.ndarray:
    """Per-lab n_negative / n_positive over measured windows, clipped to [1/max, max]."""
    t = np.asarray(targets)
    pos = (t == 1).sum(0).astype(np.float64)
    neg = (t == 0).sum(0).astype(np.float64)
    w = np.where(pos > 0, neg / np.maximum(pos, 1.0), 1.0)
    w = np.where(neg > 0, w, 1.0)
    return np.clip(w, 1.0 / max_weight, max_weight).astype(np.float32)


def masked_bce_terms(
    logits: torch.Tensor,
    y: torch.Tensor,
    mask: torch.Tensor,
    pos_weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of BCE over measured lab targets, number of measured targets)."""
    bce = nn.functional.binary_cross_entropy_with_logits(
        logits.float(), y, pos_weight=pos_weight, reduction="none"
    )
    return (bce * mask).sum(), mask.sum()


def _auroc(y: np.ndarray, s: np.ndarray) -> float:
    from anyecg_edge.training.evaluate import auroc

    return auroc(y, s)


def mean_auroc(logits: np.ndarray, targets: np.ndarray) -> tuple[float, list[float | None]]:
    """Mean AUROC over labs with both classes measured, and the per-lab values (None: n/a).

    The training-time selection metric: a lab counts with one window of each class. It has
    no visit ids (evaluate's ``MIN_VISITS_PER_CLASS`` rule needs them), and it only ranks
    the states of one run on one fixed val split, so noise in a small lab is shared by all
    states. NaN when no lab qualifies (the Trainer then selects nothing).
    """
    per_lab: list[float | None] = []
    for j in range(targets.shape[1]):
        m = targets[:, j] >= 0
        y = targets[m, j] == 1
        if y.all() or not y.any():
            per_lab.append(None)
            continue
        per_lab.append(_auroc(y, logits[m, j]))
    vals = [v for v in per_lab if v is not None]
    return (float(np.mean(vals)) if vals else float("nan")), per_lab


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def slice_loader(
    dataset: Any,
    *,
    batch_size: int,
    info: DistInfo,
    workers: int = 0,
    persistent: bool = False,
) -> DataLoader:
    """In-order loader over this rank's contiguous slice of ``dataset`` (for inference)."""
    n = len(dataset)
    lo, hi = (n * info.rank) // info.world_size, (n * (info.rank + 1)) // info.world_size
    idx = list(range(lo, hi))
    batches = [idx[i : i + batch_size] for i in range(0, len(idx), batch_size)]
    return DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=workers,
        pin_memory=info.device.type == "cuda",
        persistent_workers=persistent and workers > 0,
        generator=torch.Generator().manual_seed(0),  # keep the global RNG stream untouched
    )


@torch.no_grad()
def predict_logits(
    module: nn.Module,
    dataset: Any,
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    info: DistInfo | None = None,
    workers: int = 0,
    loader: DataLoader | None = None,
) -> np.ndarray:
    """Logits (n, n_out) float32 for every item of ``dataset`` (items start with x).

    Under DDP each rank runs a contiguous slice and every rank gets the whole array back.
    ``loader`` is a ready loader from :func:`slice_loader` over the same dataset (a trainer
    keeps one with persistent workers instead of starting workers at every evaluation).
    """
    info = info or DistInfo(device=torch.device(device))
    device = torch.device(device)
    if loader is None:
        loader = slice_loader(dataset, batch_size=batch_size, info=info, workers=workers)
    was_training = module.training
    module.eval()
    parts = []
    try:
        for batch in loader:
            x = batch[0].to(device, non_blocking=True)
            with _autocast(device, precision):
                out = module(x)
            parts.append(out.float().cpu())
    finally:
        module.train(was_training)
    local = torch.cat(parts) if parts else None
    if not info.distributed:
        return local.numpy() if local is not None else np.zeros((0, 0), np.float32)
    # each rank's (rows, width) as its loader produced them, so the slice bounds live only in
    # slice_loader; a rank with an empty slice has no width to report
    shapes = _gather_objects(info, None if local is None else tuple(local.shape))
    n_out = next(s[1] for s in shapes if s is not None)
    local = local if local is not None else torch.zeros((0, n_out))
    sizes = [0 if s is None else int(s[0]) for s in shapes]
    padded = torch.zeros((max(sizes), n_out))
    padded[: local.shape[0]] = local
    if info.device.type == "cuda":
        padded = padded.to(info.device)
    gathered = [torch.zeros_like(padded) for _ in range(info.world_size)]
    dist.all_gather(gathered, padded)
    return torch.cat([g[:s].cpu() for g, s in zip(gathered, sizes, strict=True)]).numpy()


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


# ----------------------------------------------------------------------------- RNG state


def _rng_state(device: torch.device) -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(_tuplify(state["python"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _tuplify(x: Any) -> Any:
    return tuple(_tuplify(v) for v in x) if isinstance(x, (list, tuple)) else x


# ----------------------------------------------------------------------------- trainer

LossFn = Callable[
    [nn.Module, Sequence[torch.Tensor]], dict[str, tuple[torch.Tensor, torch.Tensor, float]]
]


class Trainer:
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

    # -- state --------------------------------------------------------------------------

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Trainable parameters and all buffers (what training changes), on CPU."""
        keep = {n for n, p in self.model.named_parameters() if p.requires_grad}
        keep |= {n for n, _ in self.model.named_buffers()}
        return {
            k: v.detach().cpu().clone() for k, v in self.model.state_dict().items() if k in keep
        }

    def load_trainable_state(self, state: dict[str, torch.Tensor], source: str) -> None:
        own = self.model.state_dict()
        missing = sorted(set(self.trainable_state()) - set(state))
        unknown = sorted(set(state) - set(own))
        if missing or unknown:
            raise TrainError(
                f"{source}: does not match the model (missing {missing[:3]}, unknown {unknown[:3]})"
            )
        self.model.load_state_dict(state, strict=False)

    def _state_dict(self) -> dict[str, Any]:
        rngs = _gather_objects(self.info, _rng_state(self.info.device))
        return {
            "format": STATE_FORMAT,
            "config": self.cfg.to_dict(),
            "run_meta": self.run_meta,
            "labs": self.labs,
            "world_size": self.info.world_size,
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "total_steps": self.total_steps,
            "model": self.trainable_state(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rngs,
            "best_metric": self.best_metric,
            "best_step": self.best_step,
            "best_state": self.best_state,
            "bad_evals": self.bad_evals,
            "stopped_early": self.stopped_early,
            "done": self.done,
            "history": json.dumps(self.history),
            "loss_acc": dict(self.loss_acc),
            "last_eval_step": self.last_eval_step,
        }

    def save_checkpoint(self) -> Path | None:
        state = self._state_dict()  # collective (RNG gather): every rank calls it
        path = self.ckpt_dir / f"step_{self.step:09d}.pt"
        if self.info.is_main:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            torch.save(state, tmp)
            os.replace(tmp, path)  # a kill never leaves a half-written checkpoint
            for old in self.checkpoints()[: -self.cfg.keep_checkpoints]:
                old.unlink(missing_ok=True)
        _barrier(self.info)
        return path

    def checkpoints(self) -> list[Path]:
        if not self.ckpt_dir.is_dir():
            return []
        return sorted(p for p in self.ckpt_dir.iterdir() if _CKPT_RE.match(p.name))

    def resume(self) -> bool:
        """Load the newest checkpoint in ``out/checkpoints``; False if there is none."""
        found = self.checkpoints()
        if not found:
            return False
        path = found[-1]
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise TrainError(
                f"{path}: unreadable training checkpoint ({type(exc).__name__})"
            ) from None
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise TrainError(f"{path}: not a training checkpoint of this program")
        diff = {
            k: (v, self.cfg.to_dict().get(k))
            for k, v in state["config"].items()
            if k not in _RESUME_FREE and self.cfg.to_dict().get(k) != v
        }
        if diff:
            shown = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(diff.items()))
            raise TrainError(f"{path}: was written with other training options ({shown})")
        if state["labs"] != self.labs:
            raise TrainError(f"{path}: was trained on other labs than this run's")
        if state.get("run_meta", {}) != self.run_meta:
            raise TrainError(f"{path}: belongs to another model/corpus setup ({self.run_meta})")
        if state["total_steps"] != self.total_steps:
            log.warning(
                "%s: total steps change %d -> %d: the schedule is stretched, not bit-exact",
                path,
                state["total_steps"],
                self.total_steps,
            )
        self.load_trainable_state(state["model"], str(path))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        rngs = state["rng"]
        if len(rngs) == self.info.world_size:
            _set_rng_state(rngs[self.info.rank], self.info.device)
        else:
            log.warning(
                "%s: written by %d process(es), resumed by %d: RNG streams are not restored",
                path,
                len(rngs),
                self.info.world_size,
            )
        self.step = int(state["step"])
        self.epoch = int(state["epoch"])
        self.batch_in_epoch = int(state["batch_in_epoch"])
        self.best_metric = state["best_metric"]
        self.best_step = state["best_step"]
        self.best_state = state["best_state"]
        self.bad_evals = int(state["bad_evals"])
        self.stopped_early = bool(state["stopped_early"])
        self.done = bool(state["done"])
        self.history = json.loads(state["history"])
        self.loss_acc = dict(state["loss_acc"])
        self.last_eval_step = int(state["last_eval_step"])
        self.resumed_from = (self.step, path.name)
        if self.done and not self.stopped_early and self.step < self.total_steps:
            self.done = False  # a finished run continued with more steps
        if self.info.is_main:
            log.info(
                "resumed from %s (step %d, epoch %d, batch %d)",
                path,
                self.step,
                self.epoch,
                self.batch_in_epoch,
            )
        return True

    # -- loop ---------------------------------------------------------------------------

    def _loss(self, batch: Sequence[torch.Tensor]) -> torch.Tensor:
        with _autocast(self.info.device, self.cfg.precision):
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
                        with open(log_path, "a") as fh:
                            fh.write(json.dumps(rec) + "\n")
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


# ----------------------------------------------------------------------------- outputs


def corpus_manifest(corpus: str | os.PathLike) -> dict[str, Any]:
    path = Path(corpus) / "manifest.json"
    if not path.is_file():
        raise TrainError(f"{path}: not found (expected a corpus built by `anyecg-edge data build`)")
    return json.loads(path.read_text())


def model_metadata(
    corpus: str | os.PathLike,
    labs: Sequence[str],
    val_logits: np.ndarray,
    val_targets: np.ndarray,
    *,
    arch: str,
    val_groups: Sequence[Any] | np.ndarray | None = None,
    extra: dict[str, Any] | None = None,
):
    """The device manifest of a trained model: signal settings of the corpus, lab units,
    and the calibration fitted on the val split (:mod:`~anyecg_edge.training.calibration`:
    monotone, shrunk toward identity, thresholds and bootstrap intervals only for labs with
    enough val visits; ``val_groups`` names each val window's visit)."""
    from anyecg_edge.training.calibration import fit_lab_calibration, manifest_fields

    from anyecg_edge.labs import load_catalog
    from anyecg_edge.runtime.base import ModelMetadata

    cfg = corpus_manifest(corpus)["config"]
    catalog = load_catalog()
    known = set(catalog.keys)
    fields = manifest_fields(fit_lab_calibration(val_logits, val_targets, labs, groups=val_groups))
    method = fields.pop("calibration_method")
    return ModelMetadata(
        labs=list(labs),
        fs=float(cfg["target_fs"]),
        window_s=float(cfg["window_s"]),
        mains_hz=None if cfg.get("mains_hz") is None else float(cfg["mains_hz"]),
        units={k: catalog.by_key(k).unit for k in labs if k in known},
        arch=arch,
        extra={"calibration_method": method, **(extra or {})},
        **fields,
    )
