"""Checkpoints of a training run with *exact* resume (see :mod:`.trainer`): the trainable
weights and buffers, optimizer, scheduler, grad scaler, every rank's RNG states, the
position inside the epoch, the early-stopping state and the loss accumulators, written
atomically every N steps and the newest one loaded on resume (after checking that it
belongs to this run: options, labs, model / corpus setup).

:class:`CheckpointMixin` is the :class:`~anyecg_edge.training.trainer.Trainer`'s state
side; it reads and sets the trainer's attributes declared below.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from anyecg_edge.training.distributed import DistInfo, barrier, gather_objects
from anyecg_edge.training.train_config import TrainConfig, TrainError
from torch import nn

log = logging.getLogger("anyecg_edge.training")

__all__ = ["STATE_FORMAT", "CheckpointMixin"]

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


class CheckpointMixin:
    """Save, list and resume the checkpoints of ``out/checkpoints`` (``step_{n:09d}.pt``)."""

    # Set by the trainer's __init__.
    cfg: TrainConfig
    info: DistInfo
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any
    ckpt_dir: Path
    run_meta: dict[str, Any]
    labs: list[str]
    total_steps: int
    step: int
    epoch: int
    batch_in_epoch: int
    best_metric: float | None
    best_step: int | None
    best_state: dict[str, torch.Tensor] | None
    bad_evals: int
    stopped_early: bool
    done: bool
    history: list[dict[str, Any]]
    loss_acc: dict[str, Any]
    last_eval_step: int
    resumed_from: tuple[int, str] | None

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
        rngs = gather_objects(self.info, _rng_state(self.info.device))
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
        barrier(self.info)
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
