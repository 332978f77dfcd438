"""The options `train lora` and `train distill` share, and `--config`: a run's
train_config.json read back as those options (the line overrides the file) and the
command's own options recorded in it after the run."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from anyecg_edge.commands._types import (
    Number,
    OutputPath,
    count,
    json_option,
    positive,
    threads_option,
)

DIR = OutputPath(folder=True)
EXISTING_DIR = click.Path(path_type=Path, exists=True, file_okay=False)
TORCH_THREADS = threads_option(1024, "CPU threads for torch (under torchrun: its OMP_NUM_THREADS)")


def training_options(defaults: dict[str, Any]) -> Callable:
    """The options every training command shares (defaults per command)."""

    opts = [
        click.option(
            "--config",
            "config_path",
            type=click.Path(path_type=Path, dir_okay=False, exists=True),
            default=None,
            help="Re-run with the settings of a run: its train_config.json (options given "
            "on the line override the file's values; --out is always given anew).",
        ),
        click.option(
            "--corpus",
            type=EXISTING_DIR,
            default=None,
            help="Corpus folder (data build). Required unless --config gives it.",
        ),
        click.option("--out", type=DIR, required=True, help="Run folder (created)."),
        click.option(
            "--labs",
            default=None,
            help="Comma-separated catalog keys (default: every lab measured in the corpus).",
        ),
        click.option(
            "--epochs",
            type=count(1),
            default=defaults["epochs"],
            show_default=True,
            help="Passes over the training split (--max-steps may stop earlier).",
        ),
        click.option(
            "--max-steps", type=count(1), default=None, help="Stop after N optimizer steps."
        ),
        click.option(
            "--batch-size",
            type=count(1, 1 << 20),
            default=defaults["batch_size"],
            show_default=True,
            help="Global batch (split over torchrun processes).",
        ),
        click.option(
            "--lr",
            type=positive(),
            default=defaults["lr"],
            show_default=True,
            help="Peak learning rate (AdamW).",
        ),
        click.option(
            "--weight-decay",
            type=Number(0.0),
            default=1e-5,
            show_default=True,
            help="AdamW weight decay.",
        ),
        click.option(
            "--warmup",
            type=Number(0.0),
            default=0.05,
            show_default=True,
            help="Linear warmup: fraction of the steps (<1) or steps (>=1); then cosine.",
        ),
        click.option(
            "--min-lr-ratio",
            type=Number(0.0, 1.0),
            default=0.0,
            show_default=True,
            help="Cosine floor as a fraction of --lr.",
        ),
        click.option(
            "--grad-clip", type=Number(0.0), default=1.0, show_default=True, help="0: off."
        ),
        click.option(
            "--pos-weight/--no-pos-weight",
            default=True,
            show_default=True,
            help="Weight positives by n_neg/n_pos per lab (class imbalance).",
        ),
        click.option(
            "--patience",
            type=count(0),
            default=5,
            show_default=True,
            help="Evaluations without val mean AUROC gain before stopping (0: never).",
        ),
        click.option(
            "--eval-every",
            type=count(0),
            default=0,
            help="Steps between evaluations (0: each epoch).",
        ),
        click.option(
            "--ckpt-every",
            type=count(0),
            default=0,
            help="Steps between checkpoints (0: at each evaluation).",
        ),
        click.option(
            "--log-every",
            type=count(1),
            default=20,
            show_default=True,
            help="Steps between log lines (and train_log.jsonl rows).",
        ),
        click.option(
            "--seed",
            type=count(0),
            default=0,
            show_default=True,
            help="Seed of the weights, the shuffling and the adapters.",
        ),
        click.option(
            "--device",
            type=click.Choice(["cpu", "cuda"]),
            default="cpu",
            show_default=True,
            help="Where to train (cuda: NCCL under torchrun; cpu: gloo).",
        ),
        click.option(
            "--precision",
            type=click.Choice(["fp32", "bf16", "fp16"]),
            default="fp32",
            show_default=True,
            help="Autocast precision of the forward pass (bf16/fp16: GPU).",
        ),
        click.option("--compile", "compile_", is_flag=True, help="torch.compile the model (GPU)."),
        click.option(
            "--workers",
            type=count(0, 256),
            default=0,
            show_default=True,
            help="DataLoader worker processes per training process (0: load in the "
            "training process itself).",
        ),
        TORCH_THREADS,
        click.option(
            "--resume", is_flag=True, help="Continue from the newest checkpoint in --out (exact)."
        ),
        click.option(
            "--no-progress",
            is_flag=True,
            help="No progress bar (also off with -q and when stderr is not a terminal).",
        ),
        json_option("the run's result (metrics.json's content)"),
    ]

    def decorator(fn: Callable) -> Callable:
        for opt in reversed(opts):
            fn = opt(fn)
        return fn

    return decorator


def train_config(kw: dict[str, Any]) -> Any:
    """The trainer's TrainConfig from the parsed shared options (torch-side: imported here)."""
    from anyecg_edge.training.trainer import TrainConfig

    return TrainConfig(
        epochs=kw["epochs"],
        max_steps=kw["max_steps"],
        batch_size=kw["batch_size"],
        lr=kw["lr"],
        weight_decay=kw["weight_decay"],
        warmup=kw["warmup"],
        min_lr_ratio=kw["min_lr_ratio"],
        grad_clip=kw["grad_clip"],
        seed=kw["seed"],
        device=kw["device"],
        precision=kw["precision"],
        compile=kw["compile_"],
        workers=kw["workers"],
        pos_weight=kw["pos_weight"],
        eval_every=kw["eval_every"],
        ckpt_every=kw["ckpt_every"],
        patience=kw["patience"],
        log_every=kw["log_every"],
    )


def main_process() -> bool:
    """False in torchrun's other processes: only rank 0 writes and reports."""
    return int(os.environ.get("RANK", "0")) == 0


# Options a train_config.json never sets: where this run goes and how this machine runs it.
_NOT_FROM_CONFIG = {"config_path", "out", "resume", "threads", "json_out", "no_progress"}


# TrainConfig fields that are `train` options (the rest are set by the code).
_TRAIN_OPTIONS = {
    "epochs", "max_steps", "batch_size", "lr", "weight_decay", "warmup", "min_lr_ratio",
    "grad_clip", "seed", "device", "precision", "compile", "workers", "pos_weight",
    "eval_every", "ckpt_every", "patience", "log_every",
}  # fmt: skip


class TrainConfigError(ValueError):
    """A --config file that cannot be used (one line naming the file and the key)."""


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        # Absolute: `--config RUN/train_config.json` reruns from any directory (a path as
        # typed, "k1", named another folder or none once the shell was elsewhere).
        return os.path.abspath(value)
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


def cli_options(kw: dict[str, Any]) -> dict[str, Any]:
    return {k: _jsonable(v) for k, v in kw.items() if k not in _NOT_FROM_CONFIG}


def _options_from_legacy(data: dict[str, Any], command: str, path: Path) -> dict[str, Any]:
    """Options from a train_config.json written before the "cli" section existed."""
    opts: dict[str, Any] = {}
    train_section = data.get("train")
    if not isinstance(train_section, dict):
        raise TrainConfigError(f"{path}: no 'cli' or 'train' section (not a train_config.json)")
    import dataclasses

    from anyecg_edge.training.trainer import TrainConfig

    # TrainConfig fields without an option (set by the code, not the user) are not settings
    # to carry over; any other key is unknown (and refused by _apply_config).
    internal = {f.name for f in dataclasses.fields(TrainConfig)} - _TRAIN_OPTIONS
    for key, value in train_section.items():
        if key not in internal:
            opts["compile_" if key == "compile" else key] = value
    if command == "lora":
        opts["arch"] = data.get("arch")
        opts["corpus"] = data.get("corpus")
        opts["labs"] = ",".join(data["labs"]) if data.get("labs") else None
        opts["full"] = data.get("task") == "full"
        opts["keep_head"] = bool(data.get("keep_head"))
        if isinstance(data.get("init"), dict):
            opts["init"] = data["init"].get("path")
        lora = data.get("lora") or {}
        for key in ("rank", "alpha", "dropout"):
            if key in lora:
                opts[key] = lora[key]
        if lora.get("target_modules"):
            tm = lora["target_modules"]
            opts["target_modules"] = tm if isinstance(tm, str) else ",".join(tm)
    else:
        run = data.get("run") or {}
        for key, value in run.items():
            opts[key] = ",".join(value) if key == "labs" and value else value
        opts.pop("out", None)
    return opts


def apply_config(ctx: click.Context, kw: dict[str, Any], command: str) -> None:
    """Fill ``kw`` from ``--config`` where the line did not give the option; unknown keys
    and values the option refuses end in one line naming the file and the key."""
    path = kw.pop("config_path")
    if path is not None:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise TrainConfigError(f"{path}: not readable JSON ({exc})") from None
        if not isinstance(data, dict):
            raise TrainConfigError(f"{path}: expected a JSON object (a run's train_config.json)")
        cli_section = data.get("cli")
        if isinstance(cli_section, dict):
            written_by = cli_section.get("command")
            if written_by != command:
                raise TrainConfigError(
                    f"{path}: written by `train {written_by}`, not `train {command}`"
                )
            options = cli_section.get("options")
            if not isinstance(options, dict):
                raise TrainConfigError(f"{path}: cli.options: expected an object")
        else:
            options = _options_from_legacy(data, command, path)
        params = {p.name: p for p in ctx.command.params}
        for key, value in options.items():
            param = params.get(key)
            if param is None or key in _NOT_FROM_CONFIG:
                known = ", ".join(sorted(n for n in params if n not in _NOT_FROM_CONFIG))
                raise TrainConfigError(
                    f"{path}: unknown key {key!r} (not a `train {command}` option; known: {known})"
                )
            source = ctx.get_parameter_source(key)
            if source in (click.core.ParameterSource.COMMANDLINE,
                          click.core.ParameterSource.ENVIRONMENT):  # fmt: skip
                continue  # the line overrides the file
            if value is None:
                kw[key] = None
                continue
            try:
                kw[key] = param.type_cast_value(ctx, value)
            except click.BadParameter as exc:
                raise TrainConfigError(f"{path}: {key}: {exc.format_message()}") from None
    if kw.get("corpus") is None:
        raise click.UsageError("Missing option '--corpus' (or --config RUN/train_config.json)")


def record_cli(out: Path, command: str, options: dict[str, Any]) -> None:
    """Add the command's own options to the run's train_config.json ("cli"), so that
    `train COMMAND --config OUT/train_config.json --out NEW` reruns it."""
    if not main_process():
        return
    from anyecg_edge.fileio import write_json

    path = out / "train_config.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return  # nothing to extend (the trainer reports its own failures)
    data["cli"] = {"command": command, "options": options}
    write_json(path, data)
