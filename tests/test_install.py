"""The device install: `pip install ".[edge]"` in a clean venv pulls no torch/peft/onnx and
the device modules import and run there."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

FORBIDDEN = {"torch", "peft", "onnx", "onnxscript", "litert-torch", "ai-edge-quantizer", "jax"}


@pytest.mark.venv
def test_edge_install_pulls_no_torch(edge_venv: Path) -> None:
    out = subprocess.run(
        [str(edge_venv), "-m", "pip", "list", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    installed = {p["name"].lower().replace("_", "-") for p in json.loads(out)}
    assert not (installed & FORBIDDEN), f"device install pulled {sorted(installed & FORBIDDEN)}"
    assert {"onnxruntime", "ai-edge-litert", "wfdb", "numpy", "scipy", "click"} <= installed


@pytest.mark.venv
def test_edge_install_imports_device_modules(edge_venv: Path) -> None:
    code = (
        "import sys, anyecg_edge.signal, anyecg_edge.runtime, anyecg_edge.io, anyecg_edge.labs, "
        "anyecg_edge.predict, anyecg_edge.cli\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print(anyecg_edge.runtime.available_runtimes())"
    )
    proc = subprocess.run([str(edge_venv), "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "onnxruntime" in proc.stdout
    cli = edge_venv.parent / "anyecg-edge"
    help_out = subprocess.run(
        [str(cli), "--help"], capture_output=True, text=True, check=True
    ).stdout
    for command in (
        "data",
        "train",
        "evaluate",
        "export",
        "predict",
        "stream",
        "ble",
        "bench",
        "demo",
    ):
        assert command in help_out


@pytest.mark.venv
def test_wheel_has_no_generic_top_level_names(edge_venv: Path) -> None:
    code = (
        "import importlib.util as u\n"
        "print([n for n in ('training','quantization','firmware_bridge','benchmarks') if u.find_spec(n)])\n"
        "import anyecg_edge.training, anyecg_edge.quantization, anyecg_edge.firmware_bridge\n"
        "assert u.find_spec('anyecg_edge.training.models') is not None"
    )
    proc = subprocess.run([str(edge_venv), "-c", code], capture_output=True, text=True, cwd="/")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_every_source_package_is_declared(repo_root: Path) -> None:
    """pyproject lists packages explicitly (the folders are mapped into one namespace):
    a sub-package missing from that list would be absent from the wheel."""
    import tomllib

    tool = tomllib.loads((repo_root / "pyproject.toml").read_text())["tool"]["setuptools"]
    declared = set(tool["packages"])
    found = set()
    for name, folder in tool["package-dir"].items():
        for init in (repo_root / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(repo_root / folder)
            found.add(".".join([name, *rel.parts]) if rel.parts else name)
    # Nested mapped folders are listed under their own mapping too; tests/ is not shipped.
    assert found - declared == set(), f"add to pyproject packages: {sorted(found - declared)}"
    assert declared - found == set(), f"declared but absent: {sorted(declared - found)}"


@pytest.mark.venv
def test_wheel_ships_package_data(edge_venv: Path) -> None:
    code = (
        "from importlib.resources import files\n"
        "fb = files('anyecg_edge.firmware_bridge')\n"
        "assert (fb / 'PROFILE.md').is_file() and (fb / 'c' / 'anyecg_encoder.c').is_file()\n"
        "assert (files('anyecg_edge.labs') / 'catalog.csv').is_file()"
    )
    proc = subprocess.run([str(edge_venv), "-c", code], capture_output=True, text=True, cwd="/")
    assert proc.returncode == 0, proc.stderr
