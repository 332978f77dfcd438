"""bench: the rows to measure -- checkpoints built, exports made, files found."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anyecg_edge.benchmarks.bench_spec import (
    FOUNDATION_VARIANTS,
    VARIANTS,
    BenchError,
    BenchOptions,
    ModelSpec,
    _is_foundation,
    match_variants,
    role_of,
)


@dataclass
class Candidate:
    model: str
    runtime: str
    precision: str
    role: str
    load: dict[str, Any]  # what the worker loads
    info: dict[str, Any] = field(default_factory=dict)  # size, params, parity, source ...
    error: str | None = None

    @property
    def variant(self) -> str:
        return f"{self.runtime}-{self.precision}"


def _variant_choice(
    spec: ModelSpec,
    defaults: Sequence[str],
    supported: Sequence[str],
    global_filter: list[str] | None,
) -> list[str]:
    """The variants to measure for one model: its defaults, or what ``@...`` asks for among
    those it supports; then the global ``--runtimes`` filter."""
    chosen = [v for v in defaults if v in supported]
    if spec.variants is not None:
        chosen = match_variants(spec.variants, supported, f"--models {spec.key}")
        if not chosen:
            raise BenchError(
                f"--models {spec.key}@{'+'.join(spec.variants)}: not available for this model "
                f"(available here: {', '.join(supported)})"
            )
    if global_filter:
        chosen = match_variants(global_filter, chosen, "--runtimes")
    return chosen


def _tflite_runtime_available() -> bool:
    from anyecg_edge.runtime import available_runtimes

    return "tflite-runtime" in available_runtimes()


def _catalog_labs() -> list[str]:
    from anyecg_edge.labs import load_catalog

    return list(load_catalog().keys)


def _count(module: Any, window_samples: int) -> dict[str, Any]:
    from anyecg_edge.training.models import count_macs, count_params

    return {"params": count_params(module), "macs": count_macs(module, (1, 1, window_samples))}


def _parity_info(report: dict[str, Any]) -> dict[str, Any]:
    """Parity columns from a full parity report or from a manifest's flat parity summary."""
    calls, auroc, logits = (report.get(k) or {} for k in ("calls", "auroc", "logits"))
    return {
        "parity_passed": report.get("passed"),
        "parity_agreement": calls.get("agreement", report.get("agreement")),
        "parity_mean_auroc_delta": auroc.get("mean_delta", report.get("mean_auroc_delta")),
        "parity_max_abs_logit_error": logits.get(
            "max_abs_error", report.get("max_abs_logit_error")
        ),
    }


class _Quiet:
    """Parity warnings of random-init exports are expected; the rows carry the numbers."""

    def __enter__(self) -> None:
        self._loggers = [logging.getLogger(n) for n in ("anyecg_edge.quantization", "onnxruntime")]
        self._levels = [lg.level for lg in self._loggers]
        for lg in self._loggers:
            lg.setLevel(logging.ERROR)

    def __exit__(self, *exc: object) -> None:
        for lg, level in zip(self._loggers, self._levels, strict=True):
            lg.setLevel(level)


def prepare_candidates(
    specs: list[ModelSpec],
    opts: BenchOptions,
    work: Path,
    windows_npy: Path,
    say: Callable[[str], None],
) -> list[Candidate]:
    """Build checkpoints and exports as needed; one Candidate per row to measure."""
    out: list[Candidate] = []
    tflite_rt = None
    for spec in specs:
        if spec.kind == "file":
            out += _file_candidates(spec, opts)
            continue
        if spec.kind in ("teacher", "lora-run"):
            if not _variant_choice(spec, ("torch-fp32",), ("torch-fp32",), opts.runtimes):
                continue
            say(f"{spec.key}: building the LoRA teacher")
            out.append(_teacher_candidate(spec, work))
            continue
        # arch or checkpoint
        ckpt, arch, info = _checkpoint(spec, work, say)
        if tflite_rt is None:
            tflite_rt = _tflite_runtime_available()
        supported = [v for v in VARIANTS if tflite_rt or not v.startswith("tflite-runtime")]
        defaults = FOUNDATION_VARIANTS if _is_foundation(arch) else VARIANTS
        variants = _variant_choice(spec, defaults, supported, opts.runtimes)
        role = role_of(spec.kind, arch)
        exported: dict[str, tuple[Path | None, dict[str, Any], str | None]] = {}
        for variant in variants:
            runtime, precision = variant.rsplit("-", 1)
            if variant == "torch-fp32":
                out.append(
                    Candidate(
                        spec.key, "torch", "fp32", role,
                        {"kind": "torch-checkpoint", "path": str(ckpt)},
                        {**info, "file": str(ckpt), "size_bytes": ckpt.stat().st_size},
                    )
                )  # fmt: skip
                continue
            fmt = "onnx" if runtime == "onnxruntime" else "tflite"
            key = f"{fmt}-{precision}"
            if key not in exported:
                exported[key] = _export(
                    spec, ckpt, fmt, precision == "int8", work, windows_npy, say
                )
            path, extra, err = exported[key]
            load = {"kind": "runtime", "path": str(path), "runtime": runtime}
            size = path.stat().st_size if path is not None else None
            cand = Candidate(
                spec.key,
                runtime,
                precision,
                role,
                load,
                {**info, **extra, "file": str(path), "size_bytes": size},
            )
            cand.error = err
            out.append(cand)
    return out


def _checkpoint(
    spec: ModelSpec, work: Path, say: Callable[[str], None]
) -> tuple[Path, str, dict[str, Any]]:
    import torch
    from anyecg_edge.quantization.export import resolve_checkpoint
    from anyecg_edge.training.models import create_model
    from anyecg_edge.training.torch_model import load_model_checkpoint, save_model_checkpoint

    from anyecg_edge.runtime import ModelMetadata

    if spec.kind == "arch":
        labs = _catalog_labs()
        say(f"{spec.key}: random-init {spec.target} ({len(labs)} labs)")
        torch.manual_seed(0)
        module = create_model(spec.target, n_classes=len(labs)).eval()
        ckpt = save_model_checkpoint(
            work / f"{_safe(spec.key)}.pt", module, arch=spec.target,
            model_kwargs={"n_classes": len(labs)},
            metadata=ModelMetadata(labs=labs, extra={"bench": "random init (latency does not depend on weights)"}),
        )  # fmt: skip
        return (
            ckpt,
            spec.target,
            {"arch": spec.target, "weights": "random-init", **_count(module, 5000)},
        )
    ckpt = resolve_checkpoint(spec.target)
    module, meta = load_model_checkpoint(ckpt)
    return (
        ckpt,
        meta.arch or "?",
        {"arch": meta.arch, "weights": str(ckpt), **_count(module, meta.window_samples)},
    )


def _export(
    spec: ModelSpec,
    ckpt: Path,
    fmt: str,
    int8: bool,
    work: Path,
    windows_npy: Path,
    say: Callable[[str], None],
) -> tuple[Path | None, dict[str, Any], str | None]:
    from anyecg_edge.quantization.export import export_model

    prec = "int8" if int8 else "fp32"
    out = work / f"{_safe(spec.key)}_{prec}.{fmt}"
    say(f"{spec.key}: exporting {fmt} {prec}")
    t0 = time.perf_counter()
    try:
        with _Quiet():
            res = export_model(
                ckpt, fmt=fmt, out=out, int8=int8, calib=[str(windows_npy)],
                calib_size=512, heldout_size=64, allow_degraded=True,
            )  # fmt: skip
    except Exception as exc:  # one failing export must not hide the other rows
        return None, {}, f"export failed: {type(exc).__name__}: {exc}"
    return (
        res.path,
        {**_parity_info(res.report), "export_s": round(time.perf_counter() - t0, 1)},
        None,
    )


def _teacher_candidate(spec: ModelSpec, work: Path) -> Candidate:
    import torch
    from anyecg_edge.training.lora import LoraSettings, apply_lora, parameter_counts
    from anyecg_edge.training.models import create_model

    if spec.kind == "lora-run":
        run = Path(spec.target)
        cfg = json.loads((run / "train_config.json").read_text())
        n_labs = len(cfg.get("labs") or [])
        arch = cfg.get("arch") or "?"
        files = [p for p in (run / "adapter").glob("*") if p.is_file()]
        base = run / (cfg.get("base") or "base.pth")
        if cfg.get("init"):
            base = Path(cfg["init"]["path"])
        size = sum(p.stat().st_size for p in [*files, base] if p.is_file())
        counts = {}
        with contextlib.suppress(Exception):  # counts are informative; the timing is the row
            from anyecg_edge.training.lora import load_lora_model

            m = load_lora_model(run)
            trainable = sum(
                p.numel()
                for n, p in m.named_parameters()
                if "lora_" in n or ".modules_to_save." in n
            )
            counts = {
                "params": sum(p.numel() for p in m.parameters()),
                "trainable_params": trainable,
            }
            with contextlib.suppress(Exception):
                counts["macs"] = _count(m.get_base_model(), 5000)["macs"]
        info = {
            "arch": f"{arch}+LoRA",
            "weights": str(run),
            "file": str(run),
            "size_bytes": size,
            "labs": n_labs,
            **counts,
        }
        return Candidate(
            spec.key, "torch", "fp32", "teacher", {"kind": "torch-lora-run", "path": str(run)}, info
        )
    n_labs = len(_catalog_labs())
    torch.manual_seed(0)
    base = create_model("ecgfounder", n_classes=n_labs).eval()
    counts = _count(base, 5000)
    model = apply_lora(base, LoraSettings()).eval()
    trainable, total = parameter_counts(model)
    path = work / f"{_safe(spec.key)}_state.pt"
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)
    info = {
        "arch": "ecgfounder+LoRA r8 (1x1 convs, SE linears; head trained)",
        "weights": "random-init",
        "file": str(path),
        "size_bytes": path.stat().st_size,
        "params": total,
        "trainable_params": trainable,
        "macs": counts["macs"],
    }
    return Candidate(
        spec.key, "torch", "fp32", "teacher",
        {"kind": "torch-lora", "n_classes": n_labs, "state": str(path)}, info,
    )  # fmt: skip


def _file_candidates(spec: ModelSpec, opts: BenchOptions) -> list[Candidate]:
    from anyecg_edge.runtime import manifest_path

    path = Path(spec.target)
    man_path = manifest_path(path)
    if not man_path.is_file():
        raise BenchError(
            f"--models {path}: manifest {man_path.name} not found next to it (made by `anyecg-edge export`)"
        )
    try:
        man = json.loads(man_path.read_text())
    except json.JSONDecodeError as exc:
        raise BenchError(f"{man_path}: not valid JSON ({exc.msg})") from None
    precision = str(man.get("precision") or "fp32")
    if path.suffix.lower() == ".onnx":
        candidates = [f"onnxruntime-{precision}"]
    else:
        candidates = [f"litert-{precision}"]
        if _tflite_runtime_available():
            candidates.append(f"tflite-runtime-{precision}")
    variants = candidates[:1]
    if spec.variants is not None:
        variants = match_variants(spec.variants, candidates, f"--models {spec.key}")
        if not variants:
            raise BenchError(
                f"--models {spec.key}: {'+'.join(spec.variants)} does not apply to {path.name} ({', '.join(candidates)})"
            )
    if opts.runtimes:
        variants = match_variants(opts.runtimes, variants, "--runtimes")
    arch = man.get("arch")
    info: dict[str, Any] = {
        "arch": arch,
        "weights": str((man.get("source") or {}).get("checkpoint") or path),
        "file": str(path),
        "size_bytes": path.stat().st_size,
        **_parity_info(man.get("parity") or {}),
    }
    with contextlib.suppress(Exception):  # params/MACs need torch; a device has none
        from anyecg_edge.training.models import create_model

        kwargs = (man.get("source") or {}).get("model_kwargs") or {"n_classes": len(man["labs"])}
        info.update(
            _count(create_model(arch, **kwargs).eval(), int(round(man["fs"] * man["window_s"])))
        )
    role = role_of("file", arch)
    return [
        Candidate(
            spec.key,
            v.rsplit("-", 1)[0],
            precision,
            role,
            {"kind": "runtime", "path": str(path), "runtime": v.rsplit("-", 1)[0]},
            dict(info),
        )
        for v in variants
    ]


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
