"""LoRA on Net1D/ECGFounder with peft: the adapter wraps an unchanged base model.

Targets by default the 1x1 convolutions (`conv1`, `conv3` of every block) and the
squeeze-excitation linears; the new lab head (`dense`) is trained in full
(`modules_to_save`). The k16 grouped convolutions are not targeted: peft cannot merge
LoRA into grouped convs.

`fused=True` (the default when dropout is 0) computes each adapted layer as one conv with
the effective weight W + s*B@A instead of base(x) + B(A(x)). That is the same function
(same parameters, same gradients) at a fraction of the memory traffic: the low-rank path
costs two extra activation-sized passes per layer, the fused weight costs a tiny
(C_out x C_in) matmul. The adapter still saves/loads/merges through peft unchanged.
"""

from __future__ import annotations

import copy
import logging
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from anyecg_edge.training.trainer import TrainConfig, TrainError
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import layer as lora_layer
from torch import nn

log = logging.getLogger("anyecg_edge.training")

# 1x1 convs of every block and the SE linears (regex matched against full module names).
DEFAULT_TARGET_MODULES = r".*\.(conv1|conv3)\.conv|.*\.se_fc[12]"
HEAD_MODULES = ["dense"]


@dataclass
class LoraSettings:
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: str | list[str] = field(default=DEFAULT_TARGET_MODULES)
    fused: bool = True

    def __post_init__(self) -> None:
        if not (isinstance(self.rank, int) and self.rank >= 1):
            raise LoraError(f"LoRA rank: expected an integer >= 1, got {self.rank!r}")
        if not self.alpha > 0:
            raise LoraError(f"LoRA alpha: expected > 0, got {self.alpha!r}")
        if not 0 <= self.dropout < 1:
            raise LoraError(f"LoRA dropout: expected in [0, 1), got {self.dropout!r}")
        if isinstance(self.target_modules, str):
            try:
                re.compile(self.target_modules)
            except re.error as exc:
                raise LoraError(
                    f"LoRA target modules: {self.target_modules!r} is not a valid regex ({exc})"
                ) from None

    def peft_config(self) -> LoraConfig:
        return LoraConfig(
            r=self.rank,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=self.target_modules,
            modules_to_save=list(HEAD_MODULES),
            bias="none",
        )


class LoraError(TrainError):
    """LoRA cannot be applied/loaded as asked (bad targets, missing base, foreign adapter)."""


def parse_target_modules(text: str) -> str | list[str]:
    """CLI form: a regex matched against full module names, or comma-separated names
    (a module matches when its name ends with one of them, as in peft)."""
    text = text.strip()
    if not text:
        raise LoraError("--target-modules is empty")
    if re.search(r"[\\^$*+?()\[\]{}|]", text):
        return text
    return [t.strip() for t in text.split(",") if t.strip()]


class FusedLoraConv1d(lora_layer.Conv1d):
    """peft's LoRA Conv1d computed as one conv with W + delta (see module docstring)."""

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if not _fusable(self):
            return super().forward(x, *args, **kwargs)
        base = self.get_base_layer()
        weight = base.weight + _delta(self).to(base.weight.dtype)
        return F.conv1d(x, weight, base.bias, base.stride, base.padding, base.dilation, base.groups)


class FusedLoraLinear(lora_layer.Linear):
    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if not _fusable(self):
            return super().forward(x, *args, **kwargs)
        base = self.get_base_layer()
        return F.linear(x, base.weight + _delta(self).to(base.weight.dtype), base.bias)


def _fusable(layer: lora_layer.LoraLayer) -> bool:
    active = layer.active_adapters
    return (
        not layer.disable_adapters
        and not layer.merged
        and len(active) == 1
        and active[0] in layer.lora_A
        and isinstance(layer.lora_dropout[active[0]], torch.nn.Identity)
        and active[0] not in layer.lora_variant
    )


def _delta(layer: lora_layer.LoraLayer) -> torch.Tensor:
    name = layer.active_adapters[0]
    a = layer.lora_A[name].weight
    b = layer.lora_B[name].weight
    scaling = layer.scaling[name]
    if a.dim() == 3:  # Conv1d 1x1 (and any kernel: A is (r, in, k), B is (out, r, 1))
        if a.shape[-1] != 1:
            return layer.get_delta_weight(name)
        return (b[..., 0] @ a[..., 0]).unsqueeze(-1) * scaling
    return (b @ a) * scaling


def _matches(name: str, targets: str | list[str]) -> bool:
    # peft's rule: a str is a regex fully matching the module name, a list matches suffixes.
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    return any(name == t or name.endswith("." + t) for t in targets)


def check_targets(model: nn.Module, settings: LoraSettings) -> list[str]:
    """Names of the layers LoRA will adapt; refuses grouped convs and unsupported layers.

    peft can train LoRA on a grouped conv but cannot merge it, so a merged export would
    silently differ from the trained model: such targets are refused up front.
    """
    hits = []
    for name, module in model.named_modules():
        if not name or not _matches(name, settings.target_modules):
            continue
        if name.split(".")[0] in HEAD_MODULES:
            continue  # the head is trained in full (modules_to_save)
        if isinstance(module, nn.Conv1d):
            if module.groups > 1:
                raise LoraError(
                    f"LoRA target {name} is a grouped conv (groups={module.groups}): LoRA cannot "
                    "be merged into grouped convs; leave it out of --target-modules"
                )
        elif not isinstance(module, nn.Linear):
            raise LoraError(
                f"LoRA target {name} is a {type(module).__name__}, not a Conv1d/Linear "
                f"(for Net1D's convs name the inner layer, e.g. {name}.conv)"
            )
        hits.append(name)
    if not hits:
        raise LoraError(f"LoRA target modules {settings.target_modules!r} match no layer")
    return hits


def _fuse_layers(peft_model: PeftModel) -> None:
    for module in peft_model.modules():
        if type(module) is lora_layer.Conv1d:
            module.__class__ = FusedLoraConv1d
        elif type(module) is lora_layer.Linear:
            module.__class__ = FusedLoraLinear


def apply_lora(model: torch.nn.Module, settings: LoraSettings | None = None) -> PeftModel:
    """Wrap `model` (left unchanged apart from peft's injection) with LoRA adapters."""
    settings = settings or LoraSettings()
    check_targets(model, settings)
    peft_model = get_peft_model(model, settings.peft_config())
    if settings.fused and settings.dropout == 0:
        _fuse_layers(peft_model)
    return peft_model


def parameter_counts(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    from anyecg_edge.training.models import count_params

    return count_params(model, trainable_only=True), count_params(model)


def merged_copy(peft_model: PeftModel) -> nn.Module:
    """A plain model with every adapter merged into its base weight (the input is untouched)."""
    return copy.deepcopy(peft_model).merge_and_unload()


def max_rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |a| (the scale of the outputs)."""
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / a.abs().max().clamp(min=1e-12))


# ----------------------------------------------------------------------------- base models


def detect_net1d_arch(path: str | os.PathLike) -> str:
    """The registry entry (Net1D family) whose backbone shapes match a checkpoint."""
    from anyecg_edge.training.ecgfounder import read_state_dict
    from anyecg_edge.training.models import create_model, list_models, model_config

    state, _ = read_state_dict(path)
    if "first_conv.conv.weight" not in state:
        raise LoraError(f"{path}: no first_conv.conv.weight; not a Net1D/ECGFounder checkpoint")
    in_ch = int(state["first_conv.conv.weight"].shape[1])
    for name in list_models():
        if model_config(name)["arch"] != "net1d":
            continue
        with torch.device("meta"):
            ref = create_model(name, n_classes=1, in_channels=in_ch).state_dict()
        body = {k: v.shape for k, v in ref.items() if not k.startswith("dense.")}
        if body == {k: v.shape for k, v in state.items() if not k.startswith("dense.")}:
            return name
    raise LoraError(f"{path}: matches no Net1D model in the registry; pass --arch")


def build_base(
    labs: list[str],
    *,
    init: str | os.PathLike | None,
    arch: str | None,
    keep_head: bool = False,
) -> tuple[nn.Module, str]:
    """The base model with a ``len(labs)``-output head: pretrained (``init``) or random."""
    from anyecg_edge.training.ecgfounder import load_ecgfounder
    from anyecg_edge.training.models import create_model

    n = len(labs)
    if init is None:
        arch = arch or "ecgfounder"
        return create_model(arch, n_classes=n), arch
    arch = arch or detect_net1d_arch(init)
    model = load_ecgfounder(init, n_classes=n, arch=arch)
    if not keep_head:
        # A checkpoint whose head already has n outputs keeps it in load_ecgfounder; the
        # lab head is new by design (trained in full), so re-initialise it.
        model.reset_head(n)
    return model.train(), arch


# ----------------------------------------------------------------------------- train


@dataclass
class LoraRun:
    """What `train_lora` needs besides the training config."""

    corpus: str
    out: str
    init: str | None = None
    arch: str | None = None
    labs: list[str] | None = None
    settings: LoraSettings = field(default_factory=LoraSettings)
    full: bool = False  # train every weight (no adapter): pretraining / baseline
    keep_head: bool = False
    merge: bool = False


def resolve_labs(corpus: str | os.PathLike, labs: list[str] | None) -> list[str]:
    """Requested labs (catalog keys, checked against the corpus) or all measured ones."""
    from anyecg_edge.training.data.dataset import corpus_lab_keys

    measured = corpus_lab_keys(corpus)
    if not labs:
        if not measured:
            raise TrainError(f"{corpus}: no lab is measured in this corpus")
        return measured
    present = set(corpus_lab_keys(corpus, measured_only=False))
    unknown = [k for k in labs if k not in present]
    if unknown:
        raise TrainError(f"{corpus}: lab(s) {', '.join(unknown)} are not in this corpus")
    unmeasured = [k for k in labs if k not in measured]
    if unmeasured:
        raise TrainError(f"{corpus}: lab(s) {', '.join(unmeasured)} are never measured here")
    return list(dict.fromkeys(labs))


def train_lora(run: LoraRun, config: TrainConfig, *, resume: bool = False) -> dict[str, Any]:
    """LoRA (or, with ``run.full``, full) fine-tuning on a corpus; writes ``run.out``.

    Outputs: ``adapter/`` (peft: adapter_config.json + adapter_model.safetensors, the head
    included as modules_to_save), ``head.safetensors``, ``model.pt`` (merged weights with
    the device metadata: labs, units, val-fitted calibration and thresholds),
    ``train_config.json``, ``metrics.json``, ``train_log.jsonl``, ``checkpoints/``;
    ``base.pth`` when the base is random; ``merged.pth`` (authors' format) with ``merge``.
    """
    from anyecg_edge.training.data.dataset import CorpusDataset
    from anyecg_edge.training.ecgfounder import save_authors_format
    from anyecg_edge.training.torch_model import save_model_checkpoint
    from anyecg_edge.training.trainer import (
        Trainer,
        file_sha256,
        masked_bce_terms,
        model_metadata,
        pos_weight_from_targets,
        predict_logits,
        setup_distributed,
        write_json,
    )
    from safetensors.torch import save_file

    info = setup_distributed(config.device)
    out = Path(run.out)
    labs = resolve_labs(run.corpus, run.labs)
    torch.manual_seed(config.seed)
    base_file = out / "base.pth"
    # A random base is rebuilt from the seed on resume (the seed is part of the checked
    # config); it is also written out, because the adapter is useless without it.
    base, arch = build_base(labs, init=run.init, arch=run.arch, keep_head=run.keep_head)
    if run.init is None and not run.full and info.is_main and not (resume and base_file.is_file()):
        out.mkdir(parents=True, exist_ok=True)
        save_authors_format(base, base_file)
    init_meta = None
    if run.init is not None:
        init_meta = {"path": str(Path(run.init).resolve()), "sha256": file_sha256(run.init)}
    model: nn.Module = base if run.full else apply_lora(base, run.settings)
    model.to(info.device)
    trainable, total = parameter_counts(model)
    pct = 100.0 * trainable / total
    if info.is_main:
        log.info(
            "%s on %s: %s of %s parameters trainable (%.2f %%)",
            "full fine-tuning" if run.full else f"LoRA r{run.settings.rank}",
            arch,
            f"{trainable:,}",
            f"{total:,}",
            pct,
        )

    train_set = CorpusDataset(run.corpus, "train", labs=labs)
    val_set = CorpusDataset(run.corpus, "val", labs=labs)
    if len(val_set) == 0:
        raise TrainError(
            f"{run.corpus}: the val split has no windows (needed to stop and calibrate)"
        )
    pw = (
        torch.from_numpy(pos_weight_from_targets(train_set.targets, config.pos_weight_max)).to(
            info.device
        )
        if config.pos_weight
        else None
    )

    def loss_fn(m: nn.Module, batch):
        x, y, mask = batch[:3]
        s, c = masked_bce_terms(m(x), y, mask, pw)
        return {"bce": (s, c, 1.0)}

    run_meta = {
        "task": "full" if run.full else "lora",
        "arch": arch,
        "init_sha256": init_meta["sha256"] if init_meta else None,
        "lora": None if run.full else asdict(run.settings),
        "corpus": str(Path(run.corpus).resolve()),
    }
    trainer = Trainer(
        model,
        loss_fn=loss_fn,
        train_set=train_set,
        val_set=val_set,
        val_targets=val_set.targets,
        out_dir=out,
        config=config,
        info=info,
        labs=labs,
        run_meta=run_meta,
    )
    summary = trainer.fit(resume=resume)

    # Best weights are loaded; fit calibration on val and write the outputs.
    model.eval()
    plain = model if run.full else merged_copy(model)
    val_logits = trainer.best_val_logits
    if val_logits is None:  # resumed after the best evaluation
        val_logits = predict_logits(
            plain, val_set, batch_size=config.batch_size, device=info.device, info=info
        )
    result = {
        **summary,
        "labs": labs,
        "arch": arch,
        "trainable_params": trainable,
        "total_params": total,
        "trainable_pct": pct,
    }
    if not run.full:
        x = torch.stack([val_set[i][0] for i in range(min(len(val_set), 2))]).to(info.device)
        with torch.no_grad():
            result["merge_max_rel_error"] = max_rel_error(model(x).float(), plain(x).float())
    if info.is_main:
        plain_cpu = plain.to("cpu")
        from anyecg_edge.training.evaluate import window_visits

        meta = model_metadata(
            run.corpus,
            labs,
            val_logits,
            val_set.targets,
            val_groups=window_visits(val_set),
            arch=arch,
            extra={"trained_by": "anyecg-edge train lora", "task": run_meta["task"]},
        )
        save_model_checkpoint(
            out / "model.pt",
            plain_cpu,
            arch=arch,
            model_kwargs={"n_classes": len(labs), "in_channels": plain_cpu.in_channels},
            metadata=meta,
        )
        save_file(
            {k: v.detach().contiguous() for k, v in plain_cpu.dense.state_dict().items()},
            str(out / "head.safetensors"),
        )
        if not run.full:
            model.save_pretrained(str(out / "adapter"))
            _set_base_path(
                out / "adapter", init_meta["path"] if init_meta else str(base_file.resolve())
            )
        if run.merge:
            save_authors_format(
                plain_cpu,
                out / "merged.pth",
                step=summary["steps"],
                val_auroc=summary["best_val_mean_auroc"] or 0.0,
            )
        write_json(
            out / "train_config.json",
            {
                **run_meta,
                "labs": labs,
                "init": init_meta,
                "base": None if run.init is not None or run.full else base_file.name,
                "model_config": {"n_classes": len(labs), "in_channels": plain_cpu.in_channels},
                "keep_head": run.keep_head,
                "train": config.to_dict(),
            },
        )
        write_json(out / "metrics.json", result)
    if info.distributed:
        import torch.distributed as dist

        dist.barrier()
    return result


def _set_base_path(adapter_dir: Path, base: str) -> None:
    # peft records the base model's hub id here; ours is a checkpoint file.
    import json

    from anyecg_edge.fileio import write_json

    cfg_path = adapter_dir / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = base
    write_json(cfg_path, cfg, sort_keys=True)  # rewritten in place: a kill must not halve it


def load_lora_model(run_dir: str | os.PathLike, base: str | os.PathLike | None = None) -> PeftModel:
    """Rebuild a trained LoRA model from its run folder (adapter + base checkpoint).

    ``base`` defaults to the run's recorded ``--init`` file (its sha256 is checked) or the
    run's own ``base.pth`` when the base was random.
    """
    import json

    from anyecg_edge.training.ecgfounder import load_ecgfounder
    from anyecg_edge.training.trainer import file_sha256

    run_dir = Path(run_dir)
    cfg_path = run_dir / "train_config.json"
    if not cfg_path.is_file() or not (run_dir / "adapter" / "adapter_config.json").is_file():
        raise LoraError(f"{run_dir}: not a LoRA run folder (train_config.json, adapter/ missing)")
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("task") != "lora":
        raise LoraError(f"{cfg_path}: task is {cfg.get('task')!r}, not a LoRA run")
    if base is None:
        if cfg.get("init"):
            base = Path(cfg["init"]["path"])
            if not base.is_file():
                raise LoraError(f"{cfg_path}: base checkpoint {base} not found; pass it explicitly")
            if file_sha256(base) != cfg["init"]["sha256"]:
                raise LoraError(f"{base}: differs from the checkpoint this adapter was trained on")
        else:
            base = run_dir / (cfg.get("base") or "base.pth")
    model = load_ecgfounder(base, n_classes=len(cfg["labs"]), arch=cfg["arch"])
    peft_model = PeftModel.from_pretrained(model, str(run_dir / "adapter"))
    _fuse_layers(peft_model)
    return peft_model.eval()


__all__ = [
    "DEFAULT_TARGET_MODULES",
    "FusedLoraConv1d",
    "FusedLoraLinear",
    "LoraError",
    "LoraRun",
    "LoraSettings",
    "apply_lora",
    "build_base",
    "check_targets",
    "detect_net1d_arch",
    "load_lora_model",
    "max_rel_error",
    "merged_copy",
    "parameter_counts",
    "parse_target_modules",
    "resolve_labs",
    "train_lora",
]
