"""Model zoo: ECGFounder's Net1D (exact), CPU-test configs and the edge students."""

from .net1d import Net1D, Net1DConfig
from .profile import count_flops, count_macs, count_params
from .registry import (
    create_model,
    create_model_from_config,
    list_models,
    model_config,
    register_model,
)
from .student import StudentConfig, StudentNet, fuse_bn

__all__ = [
    "Net1D",
    "Net1DConfig",
    "StudentConfig",
    "StudentNet",
    "count_flops",
    "count_macs",
    "count_params",
    "create_model",
    "create_model_from_config",
    "fuse_bn",
    "list_models",
    "model_config",
    "register_model",
]
