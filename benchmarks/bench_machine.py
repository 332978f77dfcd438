"""bench: the machine a run measured (CPU, cores, memory, versions) and RSS probes."""

from __future__ import annotations

import os
import platform
import resource
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

_VERSIONS = (
    "anyecg-edge",
    "numpy",
    "scipy",
    "torch",
    "peft",
    "onnxruntime",
    "ai-edge-litert",
    "tflite-runtime",
    "onnx",
    "litert-torch",
    "ai-edge-quantizer",
)


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def cpu_name() -> str:
    info = _read("/proc/cpuinfo")
    for key in ("model name", "Model", "Hardware", "cpu model"):
        for line in info.splitlines():
            if line.split(":")[0].strip() == key and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """CPU, cores, memory, OS and the versions of everything that runs a model."""
    mem = None
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            mem = round(int(line.split()[1]) / 2**20, 1)
    versions: dict[str, str | None] = {}
    for name in _VERSIONS:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        available = os.cpu_count()
    return {
        "cpu": cpu_name(),
        "arch": platform.machine(),
        "cores_logical": os.cpu_count(),
        "cores_available": available,
        "memory_gb": mem,
        "os": platform.platform(),
        "python": platform.python_version(),
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "versions": versions,
    }


def rss_mb() -> float:
    """Current resident set size of this process (MB)."""
    statm = _read("/proc/self/statm").split()
    if len(statm) > 1:
        return int(statm[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    return peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak RSS of this process image. VmHWM, not ru_maxrss: Linux carries ru_maxrss over
    fork+exec, so a worker would report its parent's peak."""
    for line in _read("/proc/self/status").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB else
