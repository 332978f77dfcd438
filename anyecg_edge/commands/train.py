"""`anyecg-edge train ...` and `evaluate`: the GPU stage (issue 5)."""

from __future__ import annotations

import click

from anyecg_edge.cli import Group, not_built


@click.group(cls=Group)
def train() -> None:
    """GPU stage: LoRA fine-tuning of ECGFounder and distillation into a student."""


@train.command("lora")
def train_lora() -> None:
    """LoRA fine-tune ECGFounder (peft) on the lab catalog."""
    not_built("train lora")


@train.command("distill")
def train_distill() -> None:
    """Distill a LoRA teacher into a small edge student."""
    not_built("train distill")


@click.command("evaluate")
def evaluate() -> None:
    """Per-lab AUROC with bootstrap CIs, calibration and the paper's buckets."""
    not_built("evaluate")


COMMANDS = [train, evaluate]
