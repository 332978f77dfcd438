"""Full-size ECGFounder LoRA training throughput on one GPU (DESIGN.md §7 has the bar).

Runs several configurations side by side in one process on the same GPU, each a real
training step (bf16 autocast forward, masked multi-label BCE, backward, fused AdamW),
and prints segments/s, GPU memory and the projected hours per 20 M-segment epoch:

    python -m anyecg_edge.benchmarks.gpu_lora_throughput --json gpu_lora.json

`--data` adds an end-to-end row where batches come from float16 memory-mapped shards
through a DataLoader (pinned memory, non-blocking copies), as in real training.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from anyecg_edge.training.lora import LoraSettings, apply_lora, parameter_counts
from anyecg_edge.training.models import create_model

from anyecg_edge.fileio import write_json

EPOCH_SEGMENTS = 20_000_000
WINDOW = 5000


def masked_bce(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    loss = torch.nn.functional.binary_cross_entropy_with_logits(
        logits.float(), target, reduction="none"
    )
    return (loss * mask).sum() / mask.sum().clamp_min(1.0)


def build(arch: str, n_labs: int, lora: str, rank: int, device: str) -> torch.nn.Module:
    model = create_model(arch, n_classes=n_labs, in_channels=1)
    if lora == "full":
        for p in model.parameters():
            p.requires_grad_(True)
    else:
        model = apply_lora(model, LoraSettings(rank=rank, alpha=2 * rank, fused=lora == "fused"))
    return model.to(device).train()


def run_config(
    name: str,
    *,
    arch: str,
    n_labs: int,
    lora: str,
    rank: int,
    batch: int,
    compile_model: bool,
    steps: int,
    warmup: int,
    device: str,
    loader: Any = None,
) -> dict[str, Any]:
    torch.manual_seed(0)
    model = build(arch, n_labs, lora, rank, device)
    trainable, total = parameter_counts(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-5, fused=device == "cuda")
    fwd = torch.compile(model) if compile_model else model
    use_cuda = device == "cuda"
    amp = torch.autocast(device_type=device, dtype=torch.bfloat16)

    x_fixed = torch.randn(batch, 1, WINDOW, device=device)
    y_fixed = (torch.rand(batch, n_labs, device=device) > 0.8).float()
    m_fixed = (torch.rand(batch, n_labs, device=device) > 0.3).float()

    def batches():
        if loader is None:
            while True:
                yield x_fixed, y_fixed, m_fixed
        else:
            while True:
                for xb, yb in loader:
                    xb = xb.to(device, non_blocking=True).float()
                    yb = yb.to(device, non_blocking=True)
                    mb = (~torch.isnan(yb)).float()
                    yield xb, torch.nan_to_num(yb), mb

    it = batches()

    def step() -> torch.Tensor:
        xb, yb, mb = next(it)
        with amp:
            logits = fwd(xb)
        loss = masked_bce(logits, yb, mb)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    t_compile = time.perf_counter()
    for _ in range(warmup):
        step()
    if use_cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    warm_s = time.perf_counter() - t_compile
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    if use_cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    seg_s = steps * batch / elapsed
    row = {
        "name": name,
        "arch": arch,
        "lora": lora,
        "rank": rank,
        "batch": batch,
        "compile": compile_model,
        "data": "dataloader-memmap-fp16" if loader is not None else "on-gpu-random",
        "segments_per_s": round(seg_s, 1),
        "hours_per_20M_epoch": round(EPOCH_SEGMENTS / seg_s / 3600, 3),
        "step_ms": round(1000 * elapsed / steps, 2),
        "warmup_s": round(warm_s, 1),
        "peak_gpu_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)
        if use_cuda
        else None,
        "trainable_params": trainable,
        "total_params": total,
        "trainable_pct": round(100 * trainable / total, 2),
        "final_loss": round(float(loss.detach()), 4),
    }
    model = fwd = opt = None  # free GPU memory before the next configuration
    if use_cuda:
        torch.cuda.empty_cache()
    return row


class ShardBatches(torch.utils.data.Dataset):
    """Whole batches sliced from float16 memmapped shards (one Python call per batch)."""

    def __init__(self, shard_paths: list[Path], label_paths: list[Path], batch: int) -> None:
        self.shards = shard_paths
        self.labels = label_paths
        self.batch = batch
        self._mm: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        n = np.load(shard_paths[0], mmap_mode="r").shape[0]
        self.per_shard = n // batch

    def __len__(self) -> int:
        return len(self.shards) * self.per_shard

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        s, b = divmod(i, self.per_shard)
        if s not in self._mm:  # opened lazily in each worker process
            self._mm[s] = (
                np.load(self.shards[s], mmap_mode="r"),
                np.load(self.labels[s], mmap_mode="r"),
            )
        x, y = self._mm[s]
        sl = slice(b * self.batch, (b + 1) * self.batch)
        return torch.from_numpy(np.array(x[sl])), torch.from_numpy(np.array(y[sl]))


def make_shards(
    root: Path, n_shards: int, per_shard: int, n_labs: int
) -> tuple[list[Path], list[Path]]:
    rng = np.random.default_rng(0)
    xs, ys = [], []
    for s in range(n_shards):
        x = rng.standard_normal((per_shard, 1, WINDOW), dtype=np.float32).astype(np.float16)
        y = (rng.random((per_shard, n_labs)) > 0.8).astype(np.float32)
        y[rng.random(y.shape) > 0.7] = np.nan
        xs.append(root / f"shard_{s:05d}.npy")
        ys.append(root / f"labels_{s:05d}.npy")
        np.save(xs[-1], x)
        np.save(ys[-1], y)
    return xs, ys


def machine_info(device: str) -> dict[str, Any]:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "device": device,
    }
    try:
        import peft

        info["peft"] = peft.__version__
    except ImportError:
        pass
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--arch", default="ecgfounder")
    ap.add_argument("--labs", type=int, default=108)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument(
        "--configs",
        default="fused-compile-1024,data-fused-compile-1024,peft-compile-1024,peft-eager-512,fused-compile-2048",
        help="comma list of {fused|peft|full}-{compile|eager}-BATCH, prefix data- for DataLoader input",
    )
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument(
        "--time-budget-s",
        type=float,
        default=float("inf"),
        help="skip remaining configs once this much time has passed",
    )
    args = ap.parse_args(argv)

    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    info = machine_info(args.device)
    print(json.dumps({"machine": info}), flush=True)
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    tmp = None
    for spec in [c for c in args.configs.split(",") if c]:
        if time.perf_counter() - start > args.time_budget_s:
            print(json.dumps({"skipped": spec, "reason": "time budget"}), flush=True)
            continue
        data = spec.startswith("data-")
        lora, mode, batch = spec.removeprefix("data-").split("-")
        batch = int(batch)
        loader = None
        if data:
            root = args.data_dir
            if root is None:
                tmp = tmp or tempfile.TemporaryDirectory()
                root = Path(tmp.name)
            per_shard = batch * 4
            xs, ys = make_shards(root, 8, per_shard, args.labs)
            loader = torch.utils.data.DataLoader(
                ShardBatches(xs, ys, batch),
                batch_size=None,
                shuffle=True,
                num_workers=args.workers,
                pin_memory=args.device == "cuda",
                persistent_workers=args.workers > 0,
                prefetch_factor=4 if args.workers else None,
            )
        try:
            row = run_config(
                spec,
                arch=args.arch,
                n_labs=args.labs,
                lora=lora,
                rank=args.rank,
                batch=batch,
                compile_model=mode == "compile",
                steps=args.steps,
                warmup=args.warmup,
                device=args.device,
                loader=loader,
            )
        except torch.cuda.OutOfMemoryError:
            row = {"name": spec, "error": "out of memory"}
            torch.cuda.empty_cache()
        rows.append(row)
        print(json.dumps(row), flush=True)
    ok = [r for r in rows if "segments_per_s" in r]
    if ok:
        best = max(ok, key=lambda r: r["segments_per_s"])
        print(
            f"best: {best['name']} {best['segments_per_s']:.0f} segments/s, "
            f"{best['hours_per_20M_epoch']:.2f} h per 20 M-segment epoch "
            f"(DESIGN.md §7 bar: 11,000/s, 0.5 h)",
            flush=True,
        )
    if args.json:
        write_json(args.json, {"machine": info, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
