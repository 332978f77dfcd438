"""Load ECGFounder checkpoints strictly (the authors' format or a bare state_dict).

The authors' own loader drops ``dense.*`` and calls ``load_state_dict(strict=False)``, which
silently ignores any other mismatch. Here every key and shape is compared explicitly and any
difference is refused with a one-line ``CheckpointError`` naming the file and the keys; only
the head may be replaced, and only on request (``n_classes`` different from the checkpoint).
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .models.registry import create_model, model_config

__all__ = [
    "CheckpointError",
    "HUB_FILES",
    "HUB_REPO",
    "download_ecgfounder",
    "load_ecgfounder",
    "read_state_dict",
    "save_authors_format",
]

log = logging.getLogger(__name__)

HUB_REPO = "PKUDigitalHealth/ECGFounder"
HUB_FILES = {1: "1_lead_ECGFounder.pth", 12: "12_lead_ECGFounder.pth"}
HEAD_PREFIX = "dense."
_AUTHORS_KEYS = ("epoch", "step", "state_dict", "optimizer", "scheduler", "val_auroc")
_STRIPPED_PREFIXES = ("module.", "_orig_mod.")  # DataParallel/DDP, torch.compile
_MAX_NAMED = 5


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, or does not match the model exactly."""


def _numpy_scalar_globals() -> list:
    """Allow-list for numpy *scalars* (e.g. a numpy ``val_auroc``) under ``weights_only=True``.

    Only scalar/dtype reconstruction is allowed, no arrays or arbitrary objects; the alias
    names cover files pickled with numpy 1.x (``numpy.core``) and 2.x (``numpy._core``).
    """
    import numpy as np

    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]
    allowed: list = [
        np.dtype,
        (scalar, "numpy.core.multiarray.scalar"),
        (scalar, "numpy._core.multiarray.scalar"),
    ]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        for name in (
            "Float64DType",
            "Float32DType",
            "Float16DType",
            "Int64DType",
            "Int32DType",
            "BoolDType",
        ):
            if hasattr(dtypes, name):
                allowed.append(getattr(dtypes, name))
    return allowed


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _named(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_NAMED])
    return f"[{shown}{', ...' if len(items) > _MAX_NAMED else ''}]"


def _shape(t: torch.Tensor) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ")"


def read_state_dict(
    path: str | Path, map_location: Any = "cpu"
) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a checkpoint safely; return (state_dict with prefixes stripped, other metadata).

    Accepts the authors' dict (``state_dict`` inside, plus epoch/step/optimizer/scheduler/
    val_auroc) or a bare state_dict. Raises ``CheckpointError`` on anything else.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "Weights only load failed" in first:
            raise CheckpointError(
                f"{path}: refused by torch.load(weights_only=True): the file holds pickled "
                "Python objects besides tensors; re-save it as a plain state_dict"
            ) from None
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({first})") from None
    except Exception as e:  # corrupt zip, wrong magic number, truncated file, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({first})") from None

    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{path}: expected a dict (authors' checkpoint or state_dict), got {type(obj).__name__}"
        )
    if "state_dict" in obj:
        state = obj["state_dict"]
        meta = {k: v for k, v in obj.items() if k != "state_dict"}
        if not isinstance(state, Mapping):
            raise CheckpointError(
                f"{path}: 'state_dict' entry is a {type(state).__name__}, expected a dict of tensors"
            )
    else:
        state, meta = obj, {}
    bad = [
        str(k)
        for k, v in state.items()
        if not isinstance(k, str) or not isinstance(v, torch.Tensor)
    ]
    if bad or not state:
        raise CheckpointError(
            f"{path}: not a state_dict of tensors "
            + (f"({_plural(len(bad), 'non-tensor entry')} {_named(bad)})" if bad else "(empty)")
        )
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for prefix in _STRIPPED_PREFIXES:
            while key.startswith(prefix):
                key = key[len(prefix) :]
        if key in out:
            raise CheckpointError(f"{path}: key {key!r} appears twice once prefixes are stripped")
        out[key] = value
    return out, meta


def _check_keys(
    path: Path,
    state: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Tensor],
    what: str,
) -> None:
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: checkpoint {_shape(state[k])} vs model {_shape(expected[k])}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"{_plural(len(missing), 'missing key')} {_named(missing)}")
    if unexpected:
        problems.append(f"{_plural(len(unexpected), 'unexpected key')} {_named(unexpected)}")
    if mismatched:
        problems.append(f"{_plural(len(mismatched), 'shape mismatch')} {_named(mismatched)}")
    if problems:
        raise CheckpointError(f"{path}: does not match {what}: " + "; ".join(problems))
    nonfinite = [
        k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())
    ]
    if nonfinite:
        raise CheckpointError(
            f"{path}: {_plural(len(nonfinite), 'tensor')} with NaN/inf values {_named(nonfinite)}"
        )


def load_ecgfounder(
    path: str | Path,
    n_classes: int | None = None,
    *,
    in_channels: int | None = None,
    arch: str = "ecgfounder",
    map_location: Any = "cpu",
) -> nn.Module:
    """Load an ECGFounder (Net1D) checkpoint strictly; returns the model in eval mode.

    ``in_channels`` / ``n_classes`` default to what the checkpoint holds (from
    ``first_conv.conv.weight`` and ``dense.weight``). A given ``in_channels`` must match the
    checkpoint. A ``n_classes`` different from the checkpoint's head replaces the head
    (``dense.*``, fresh init, logged); every other key must still match exactly.
    ``arch`` picks another Net1D-family registry entry (e.g. ``net1d-tiny``).
    """
    path = Path(path)
    if model_config(arch)["arch"] != "net1d":
        raise CheckpointError(f"{path}: arch {arch!r} is not a Net1D model")
    state, meta = read_state_dict(path, map_location=map_location)
    for key in ("first_conv.conv.weight", "dense.weight"):
        if key not in state or state[key].dim() < 2:
            raise CheckpointError(f"{path}: no {key!r} tensor; not a Net1D/ECGFounder checkpoint")
    ckpt_in = int(state["first_conv.conv.weight"].shape[1])
    ckpt_classes = int(state["dense.weight"].shape[0])
    in_channels = ckpt_in if in_channels is None else in_channels
    n_classes = ckpt_classes if n_classes is None else n_classes
    if not isinstance(n_classes, int) or n_classes < 1:
        raise CheckpointError(f"{path}: n_classes must be a positive int, got {n_classes!r}")

    model = create_model(arch, n_classes=n_classes, in_channels=in_channels)
    expected = model.state_dict()
    replace_head = n_classes != ckpt_classes
    if replace_head:
        state = {k: v for k, v in state.items() if not k.startswith(HEAD_PREFIX)}
        expected = {k: v for k, v in expected.items() if not k.startswith(HEAD_PREFIX)}
    _check_keys(path, state, expected, f"{arch} (in_channels={in_channels}, n_classes={n_classes})")

    result = model.load_state_dict(state, strict=not replace_head)
    if replace_head:  # the explicit check above already proved this; keep load_state_dict honest
        assert not result.unexpected_keys
        assert all(k.startswith(HEAD_PREFIX) for k in result.missing_keys)
        log.info(
            "%s: head replaced on purpose: checkpoint has %d classes, model has %d (dense.* freshly initialised)",
            path,
            ckpt_classes,
            n_classes,
        )
    model.checkpoint_meta = {k: meta[k] for k in ("epoch", "step", "val_auroc") if k in meta}
    return model.eval()


def save_authors_format(model: nn.Module, path: str | Path, **meta: Any) -> Path:
    """Write ``model`` as the authors' checkpoint dict: epoch, step, state_dict, optimizer,
    scheduler, val_auroc (meta may set any of those except state_dict)."""
    unknown = sorted(set(meta) - (set(_AUTHORS_KEYS) - {"state_dict"}))
    if unknown:
        raise ValueError(
            f"save_authors_format: unknown field(s) {unknown}; allowed: {list(_AUTHORS_KEYS)}"
        )
    model = getattr(model, "_orig_mod", model)  # torch.compile wrapper
    model = getattr(model, "module", model)  # DataParallel / DDP wrapper
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    ckpt = {
        "epoch": meta.get("epoch", 0),
        "step": meta.get("step", 0),
        "state_dict": state,
        "optimizer": meta.get("optimizer", {"state": {}, "param_groups": []}),
        "scheduler": meta.get("scheduler", {}),
        "val_auroc": meta.get("val_auroc", 0.0),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return path


def download_ecgfounder(leads: int = 1, cache_dir: str | Path | None = None) -> Path:
    """Fetch the released weights from the model hub (explicit opt-in; never used in tests)."""
    if leads not in HUB_FILES:
        raise ValueError(f"leads: expected 1 or 12, got {leads!r}")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise CheckpointError(
            'downloading ECGFounder needs huggingface_hub: pip install "anyecg-edge[train]"'
        ) from None
    try:
        local = hf_hub_download(
            repo_id=HUB_REPO,
            filename=HUB_FILES[leads],
            cache_dir=str(cache_dir) if cache_dir is not None else None,
        )
    except Exception as e:  # network, auth, missing file: one line, not a traceback
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{HUB_REPO}/{HUB_FILES[leads]}: download failed ({first})") from None
    return Path(local)
