"""The options of one training run (`TrainConfig`) and the error a run raises when it
cannot start or continue as asked (`TrainError`); no torch."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["TrainConfig", "TrainError"]


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
