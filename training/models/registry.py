"""A small timm-style model registry.

A registered entry is a zero-argument function returning the model's default config
(a frozen dataclass with ``build()`` and ``to_dict()``); ``create_model`` overrides fields
and builds. Configs round-trip through plain dicts (``model_config`` ->
``create_model_from_config``) so trainers can save them as JSON next to weights.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from .net1d import Net1DConfig
from .student import StudentConfig

__all__ = [
    "create_model",
    "create_model_from_config",
    "list_models",
    "model_config",
    "register_model",
]

# Config class per architecture family; the "arch" key in config dicts names one of these.
_ARCHES: dict[str, type] = {"net1d": Net1DConfig, "student": StudentConfig}
_REGISTRY: dict[str, Callable[[], Any]] = {}


def register_model(name: str) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
    """Decorator: register ``fn() -> config`` under ``name`` (names are unique)."""

    def decorator(fn: Callable[[], Any]) -> Callable[[], Any]:
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} is already registered")
        _REGISTRY[name] = fn
        return fn

    return decorator


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_REGISTRY)


def _default_config(name: str) -> Any:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return _REGISTRY[name]()


def _arch_of(cfg: Any) -> str:
    return next(arch for arch, cls in _ARCHES.items() if isinstance(cfg, cls))


def _replace(cfg: Any, overrides: Mapping[str, Any], what: str) -> Any:
    fields = {f.name for f in dataclasses.fields(cfg)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"{what}: unknown config field(s) {unknown}; valid: {sorted(fields)}")
    return dataclasses.replace(cfg, **overrides)


def model_config(name: str) -> dict:
    """The default config of a registered model as a plain dict, with an ``arch`` key."""
    cfg = _default_config(name)
    return {"arch": _arch_of(cfg), **cfg.to_dict()}


def create_model(name: str, *, n_classes: int, in_channels: int = 1, **overrides: Any) -> nn.Module:
    """Build a registered model with ``n_classes`` outputs; ``overrides`` replace config fields."""
    cfg = _replace(
        _default_config(name),
        {"n_classes": n_classes, "in_channels": in_channels, **overrides},
        f"create_model({name!r})",
    )
    return cfg.build()


def create_model_from_config(config: Mapping[str, Any]) -> nn.Module:
    """Build from a dict made by ``model_config`` (possibly edited, e.g. loaded from JSON)."""
    fields = dict(config)
    arch = fields.pop("arch", None)
    if arch not in _ARCHES:
        raise ValueError(f"model config: 'arch' must be one of {sorted(_ARCHES)}, got {arch!r}")
    return _replace(_ARCHES[arch](), fields, f"model config ({arch})").build()


@register_model("ecgfounder")
def ecgfounder() -> Net1DConfig:
    """The released ECGFounder (DESIGN.md §3): 30.8 M params, 1 or 12 leads, 150-class head."""
    return Net1DConfig(
        in_channels=1,
        base_filters=64,
        ratio=1,
        filter_list=(64, 160, 160, 400, 400, 1024, 1024),
        m_blocks_list=(2, 2, 2, 3, 3, 4, 4),
        kernel_size=16,
        stride=2,
        groups_width=16,
        use_bn=False,
        use_do=False,
        n_classes=150,
    )


@register_model("net1d-tiny")
def net1d_tiny() -> Net1DConfig:
    """Same Net1D code, CPU-test sized (~37 k params with 150 classes); 4 stages: 5000 -> 157."""
    return dataclasses.replace(
        ecgfounder(), base_filters=16, filter_list=(16, 16, 32, 32), m_blocks_list=(1, 1, 1, 1)
    )


@register_model("student-s")
def student_s() -> StudentConfig:
    """Edge student: ~65 k params, ~2.3 M MACs (4.6 MFLOPs) per 10 s x 500 Hz window."""
    return StudentConfig()


@register_model("student-xs")
def student_xs() -> StudentConfig:
    """Smallest edge student: ~15 k params, ~0.67 M MACs per window."""
    return StudentConfig(
        stem_channels=8,
        stem_kernel=11,
        stem_stride=5,
        blocks=((16, 9, 2), (24, 9, 2), (32, 9, 2), (48, 9, 2), (64, 5, 2)),
    )
