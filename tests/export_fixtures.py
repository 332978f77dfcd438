"""Shared, built-once artefacts for the export / runtime / edge-predict tests.

Not a test module. Each test file loads it by path under one sys.modules name, and its
`artifacts()` is memoised per pytest session (per base temp dir), so the stand-in student is trained and
exported once however many test files ask for it:

* real CinC 2021 windows (every lead of the 50 records, preprocessed like the device);
* a stand-in student-s (quantization/standin.py) saved as ``<tmp>/standin/model.pt``, i.e.
  a training output folder;
* ``student_s_int8.onnx`` via ``anyecg-edge export --format onnx --int8``;
* ``student_s_int8.tflite`` (+ ``.cc``/``.h``) via ``anyecg-edge export --format c-array``,
  which exports the full-int8 .tflite and its C array in one run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from recordings import CINC

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Artifacts:
    root: Path
    checkpoint_dir: Path
    checkpoint: Path
    windows_npy: Path  # all CinC windows (n, 5000), preprocessed
    heldout_npy: Path  # a 120-window subset for quick parity runs
    onnx_int8: Path
    tflite_int8: Path
    c_array: Path
    cli_output: dict[str, str]


_CACHE: dict[Path, Artifacts] = {}


def run_cli(*args: str):
    """Run `anyecg-edge ARGS` in-process; the click Result (exit_code, stdout, stderr)."""
    from click.testing import CliRunner

    from anyecg_edge.cli import cli

    return CliRunner().invoke(cli, list(args))


def artifacts(base: Path) -> Artifacts:
    if base in _CACHE:
        return _CACHE[base]
    import numpy as np
    from anyecg_edge.quantization.standin import save_standin
    from anyecg_edge.quantization.windows import record_windows

    from anyecg_edge.runtime import ModelMetadata

    root = base / "export-artifacts"
    root.mkdir(parents=True, exist_ok=True)
    meta = ModelMetadata(labs=["x"])  # 500 Hz, 10 s, 50 Hz mains: the defaults
    ws = record_windows([CINC], meta)
    windows = root / "cinc_windows.npy"
    np.save(windows, ws.x)
    heldout = root / "heldout.npy"
    np.save(heldout, ws.x[np.random.default_rng(1).choice(len(ws), 120, replace=False)])
    ckpt_dir = root / "standin"
    ckpt = save_standin(ckpt_dir / "model.pt", ws.x)
    out = {}
    onnx_path = root / "student_s_int8.onnx"
    res = run_cli(
        "-q", "export", "--model", str(ckpt_dir), "--format", "onnx", "--int8",
        "--calib", str(CINC), "--out", str(onnx_path), "--json",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    out["onnx"] = res.stdout
    c_path = root / "student_s_int8.cc"
    res = run_cli(
        "-q", "export", "--model", str(ckpt), "--format", "c-array",
        "--calib", str(CINC), "--out", str(c_path), "--json",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    out["c-array"] = res.stdout
    art = Artifacts(
        root=root,
        checkpoint_dir=ckpt_dir,
        checkpoint=ckpt,
        windows_npy=windows,
        heldout_npy=heldout,
        onnx_int8=onnx_path,
        tflite_int8=c_path.with_suffix(".tflite"),
        c_array=c_path,
        cli_output=out,
    )
    _CACHE[base] = art
    return art
