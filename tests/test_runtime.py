"""Device runtimes (no torch): load_model by file type, manifests, int8 I/O, threads, errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import export_fixtures as ef
import numpy as np
import pytest

from anyecg_edge.runtime import (
    ModelError,
    ModelMetadata,
    dequantize,
    load_model,
    manifest_path,
    quantize,
)


@pytest.fixture(scope="module")
def windows(art) -> np.ndarray:
    return np.load(art.heldout_npy)[:, None, :]


def _copy(model: Path, dst: Path) -> Path:
    shutil.copy(model, dst / model.name)
    shutil.copy(manifest_path(model), manifest_path(dst / model.name))
    return dst / model.name


def test_load_model_picks_the_backend_by_file_type(art, windows) -> None:
    onnx_m = load_model(art.onnx_int8, threads=1)
    tfl_m = load_model(art.tflite_int8, threads=1)
    assert onnx_m.backend == "onnxruntime" and tfl_m.backend == "ai-edge-litert"
    assert onnx_m.precision == tfl_m.precision == "int8"
    for m in (onnx_m, tfl_m):
        assert len(m.labs) == 108 and m.metadata.window_samples == 5000
        p = m.predict(windows)
        assert p.shape == (len(windows), 108) and p.dtype == np.float32
        assert np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()
    # Both int8 files approximate the same torch model: their logits agree closely.
    a, b = onnx_m.predict_logits(windows), tfl_m.predict_logits(windows)
    ref_std = a.std(axis=0).mean()
    assert np.abs(a - b).mean() < 0.1 * ref_std


def test_batch_and_window_by_window_agree(art, windows) -> None:
    for path in (art.onnx_int8, art.tflite_int8):
        m = load_model(path, threads=1)
        batch = m.predict_logits(windows[:5])
        single = np.concatenate([m.predict_logits(windows[i : i + 1]) for i in range(5)])
        np.testing.assert_allclose(batch, single, rtol=0, atol=1e-5)
        # 2-D input (n, samples) is accepted as single-lead windows.
        np.testing.assert_allclose(m.predict(windows[:2, 0]), m.predict(windows[:2]), atol=0)


def test_tflite_int8_io_uses_the_manifest_params(art, windows) -> None:
    """The runtime's int8 path equals quantize -> invoke -> dequantize done by hand."""
    from ai_edge_litert.interpreter import Interpreter

    meta = load_model(art.tflite_int8).metadata
    interp = Interpreter(model_path=str(art.tflite_int8))
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    x = windows[:1]
    q = np.clip(np.rint(x / meta.input_quant["scale"]) + meta.input_quant["zero_point"], -128, 127)
    interp.set_tensor(inp["index"], q.astype(np.int8))
    interp.invoke()
    raw = interp.get_tensor(out["index"]).astype(np.float32)
    expected = (raw - meta.output_quant["zero_point"]) * meta.output_quant["scale"]
    got = load_model(art.tflite_int8).predict_logits(x)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_threads_setting(art, windows) -> None:
    one = load_model(art.onnx_int8, threads=1)
    two = load_model(art.onnx_int8, threads=2)
    assert one.threads == 1 and two.threads == 2
    np.testing.assert_allclose(one.predict(windows[:3]), two.predict(windows[:3]), atol=1e-6)
    with pytest.raises(ModelError, match="threads must be >= 1"):
        load_model(art.onnx_int8, threads=0)
    with pytest.raises(ModelError, match="threads must be >= 1"):
        load_model(art.tflite_int8, threads=0)


@pytest.mark.device
def test_quantize_dequantize_round_trip() -> None:
    q = {"scale": 0.05, "zero_point": -3, "dtype": "int8"}
    x = np.array([-100.0, -6.25, 0.0, 0.024, 0.026, 6.2, 100.0], dtype=np.float32)
    v = quantize(x, q)
    assert v.dtype == np.int8 and v[0] == -128 and v[-1] == 127  # saturates
    inside = np.abs(x) < 6
    assert np.abs(dequantize(v, q)[inside] - x[inside]).max() <= 0.025 + 1e-7


def test_errors_name_the_file_and_what_was_expected(art, tmp_path) -> None:
    with pytest.raises(ModelError, match=r"unknown model type '\.bin'"):
        load_model(tmp_path / "m.bin")
    with pytest.raises(ModelError, match="model file not found"):
        load_model(tmp_path / "missing.onnx")
    lone = tmp_path / "lone.onnx"
    shutil.copy(art.onnx_int8, lone)
    with pytest.raises(ModelError, match=r"manifest lone\.onnx\.manifest\.json is missing"):
        load_model(lone)
    # A model file swapped after export is refused (sha256 in the manifest).
    d = tmp_path / "swap"
    d.mkdir()
    swapped = _copy(art.onnx_int8, d)
    with open(swapped, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ModelError, match="model file was replaced after export"):
        load_model(swapped)
    garbage = tmp_path / "g.tflite"
    garbage.write_bytes(b"not a flatbuffer at all")
    (tmp_path / "g.tflite.manifest.json").write_text(json.dumps({"labs": ["a"]}))
    with pytest.raises(ModelError, match=r"g\.tflite: ai-edge-litert cannot load it"):
        load_model(garbage)


def _edit_manifest(src: Path, dst_dir: Path, **changes) -> Path:
    path = _copy(src, dst_dir)
    m = json.loads(manifest_path(path).read_text())
    m.update(changes)
    manifest_path(path).write_text(json.dumps(m))
    return path


def test_manifest_inconsistent_with_the_model_is_refused(art, tmp_path) -> None:
    labs = json.loads(manifest_path(art.onnx_int8).read_text())["labs"]
    for i, (src, changes, message) in enumerate(
        [
            (art.onnx_int8, {"labs": labs[:5]}, "does not match the manifest's 5 labs"),
            (art.tflite_int8, {"labs": labs[:5]}, "does not match the manifest's 5 labs"),
            (art.onnx_int8, {"window_s": 5.0}, "does not match the manifest's window"),
            (
                art.tflite_int8,
                {"input_quant": {"scale": 0.5, "zero_point": 0, "dtype": "int8"}},
                "input_quant .* does not match the model file's int8",
            ),
            (art.tflite_int8, {"output_quant": None}, "no output_quant"),
            (art.tflite_int8, {"thresholds": {labs[0]: 1.5}}, r"thresholds\['sodium'\]"),
            (
                art.tflite_int8,
                {"input_quant": {"scale": -1, "zero_point": 0, "dtype": "int8"}},
                "'scale' must be a positive number",
            ),
        ]
    ):
        d = tmp_path / str(i)
        d.mkdir()
        with pytest.raises(ModelError, match=message):
            load_model(_edit_manifest(src, d, **changes))


@pytest.mark.device
def test_metadata_round_trip_keeps_extra_and_quant() -> None:
    meta = ModelMetadata(
        labs=["a", "b"],
        thresholds={"a": 0.3},
        input_quant={"scale": 0.1, "zero_point": 2, "dtype": "int8"},
        extra={"source": {"sha256": "x"}},
    )
    back = ModelMetadata.from_dict(json.loads(json.dumps(meta.to_dict())))
    assert back == meta
    sha = "ab" * 32  # a sha256 in hex (the manifest schema checks its form)
    flat = ModelMetadata.from_dict({"labs": ["a"], "model_sha256": sha})
    assert flat.extra == {"model_sha256": sha}


def test_cli_predict_runs_exports_with_threads(art, shared_data) -> None:
    for model in (art.onnx_int8, art.tflite_int8):
        res = ef.run_cli(
            "-q", "predict", "--model", str(model), "--input", str(shared_data / "cinc2021" / "E07500"),
            "--lead", "II", "--threads", "1", "--json",
        )  # fmt: skip
        assert res.exit_code == 0, res.output
        out = json.loads(res.stdout)
        assert out["model"]["precision"] == "int8" and len(out["labs"]) == 108
    res = ef.run_cli("predict", "--model", str(art.onnx_int8), "--input", "x", "--threads", "0")
    assert res.exit_code == 2 and "--threads" in res.output


# --- tflite-runtime fallback (numpy<2 devices), in its own small venv -----------------


@pytest.mark.venv
@pytest.mark.slow
def test_tflite_runtime_fallback_in_numpy1_venv(art, tmp_path_factory, windows) -> None:
    """tflite-runtime 2.14 (last release, needs numpy<2) runs the same int8 file through
    LiteRTModel with the manifest's I/O params. Skips when pip cannot fetch the wheels."""
    if sys.version_info[:2] > (3, 11):
        pytest.skip("tflite-runtime 2.14 has wheels for Python <= 3.11 only")
    env_dir = tmp_path_factory.mktemp("tflite-runtime-venv") / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    proc = subprocess.run(
        [str(py), "-m", "pip", "install", "--quiet", "tflite-runtime==2.14.0", "numpy==1.26.4"],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    if proc.returncode != 0:
        pytest.skip(f"pip could not install tflite-runtime 2.14 + numpy 1.26: {proc.stderr[-300:]}")
    np.save(tmp_path_factory.getbasetemp() / "tfl_windows.npy", windows[:4])
    code = (
        "import sys, numpy as np\n"
        f"sys.path.insert(0, {str(ef.REPO_ROOT)!r})\n"
        "from anyecg_edge.runtime import load_model\n"
        f"m = load_model({str(art.tflite_int8)!r}, threads=1)\n"
        "assert m.backend == 'tflite-runtime', m.backend\n"
        f"x = np.load({str(tmp_path_factory.getbasetemp() / 'tfl_windows.npy')!r})\n"
        "np.save(sys.argv[1], m.predict_logits(x))\n"
        "print(np.__version__)\n"
    )
    out = tmp_path_factory.getbasetemp() / "tfl_logits.npy"
    proc = subprocess.run([str(py), "-c", code, str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().startswith("1.26")
    ref = load_model(art.tflite_int8, threads=1)
    expected = ref.predict_logits(windows[:4])
    # Different int8 kernels (TFLite 2.14 built-ins vs XNNPACK in ai-edge-litert) round
    # requantization differently: outputs agree to one output step (measured: 29 % of
    # them differ by exactly one step); a one-step difference in a hidden layer can carry to
    # two output steps (seen once in a fresh-clone run), so: <= 2 steps, >= 95 % within one.
    step = ref.metadata.output_quant["scale"]
    diff = np.abs(np.load(out) - expected)
    assert diff.max() <= 2 * step * 1.001
    assert np.mean(diff <= step * 1.001) >= 0.95
    assert diff.mean() < 0.5 * step


def test_bench_runtime_reports_latency_percentiles_and_ratios(art, capsys) -> None:
    from anyecg_edge.benchmarks.bench_runtime import main

    args = ["--model", str(art.checkpoint_dir), "--iterations", "20", "--warmup", "2"]
    assert main([*args, "--only", "onnx-int8", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    rows = {r["name"]: r for r in res["results"]}
    assert set(rows) == {"torch fp32", "onnxruntime int8"} and res["threads"] == 1
    for r in rows.values():
        assert 0 < r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"]
        assert r["speedup_vs_torch_p50"] > 0
    int8 = rows["onnxruntime int8"]
    assert int8["precision"] == "int8" and int8["parity_passed"] is True
    assert int8["bytes"] <= 1_000_000


@pytest.mark.device
def test_onnx_fixed_batch_other_than_one_is_run_in_padded_chunks(tmp_path) -> None:
    """An export with a fixed batch of 2 takes any number of windows (the last chunk padded),
    and gives what the same weights with a dynamic batch give."""
    onnx = pytest.importorskip("onnx")
    from anyecg_edge.benchmarks.bench_stream import write_tiny_onnx

    dynamic = write_tiny_onnx(tmp_path / "dynamic.onnx")
    graph = onnx.load(str(dynamic))
    for value in (graph.graph.input[0], graph.graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_value = 2  # replaces the symbolic "n"
    onnx.checker.check_model(graph)
    fixed = tmp_path / "fixed2.onnx"
    onnx.save(graph, str(fixed))
    shutil.copy(manifest_path(dynamic), manifest_path(fixed))
    a, b = load_model(dynamic, threads=1), load_model(fixed, threads=1)
    x = np.random.default_rng(0).normal(size=(5, 1, 5000)).astype(np.float32)
    for n in (1, 2, 3, 5):
        got = b.predict_logits(x[:n])
        assert got.shape == (n, len(b.labs)) and got.dtype == np.float32
        np.testing.assert_allclose(got, a.predict_logits(x[:n]), rtol=0, atol=1e-5)


def test_quiet_export_and_predict_print_nothing_on_stderr(art, shared_data, tmp_path) -> None:
    """`-q export` (ONNX and LiteRT int8) and `-q predict` with a .tflite: nothing on stderr
    (absl / oneDNN / XNNPACK lines from C++ go to the debug log), in separate processes."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    cli = [sys.executable, "-m", "anyecg_edge.cli", "-q"]
    for ext in ("onnx", "tflite"):
        proc = subprocess.run(
            [*cli, "export", "--model", str(art.checkpoint), "--format", ext, "--int8",
             "--calib", str(art.windows_npy), "--heldout", str(art.heldout_npy),
             "--calib-size", "64", "--out", str(tmp_path / f"q.{ext}"), "--allow-degraded"],
            capture_output=True, text=True, env=env, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stderr == "", ext
    proc = subprocess.run(
        [*cli, "predict", "--model", str(tmp_path / "q.tflite"), "--input",
         str(shared_data / "cinc2021" / "E07500"), "--lead", "II", "--json"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr[-2000:]


def test_default_logging_shows_the_projects_info_not_other_libraries(art, tmp_path) -> None:
    """Without -q the user sees the project's INFO lines but not onnxruntime's ("Performing
    symbolic shape inference...") or other libraries' INFO; -v brings those back."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    args = ["export", "--model", str(art.checkpoint), "--format", "onnx", "--int8",
            "--calib", str(art.windows_npy), "--heldout", str(art.heldout_npy),
            "--calib-size", "64", "--allow-degraded"]  # fmt: skip
    runs = {}
    for flag in ("", "-v"):
        out = tmp_path / f"default{flag}.onnx"
        proc = subprocess.run(
            [sys.executable, "-m", "anyecg_edge.cli", *([flag] if flag else []), *args,
             "--out", str(out)],
            capture_output=True, text=True, env=env, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
        runs[flag] = [x for x in proc.stderr.splitlines() if x.startswith("INFO ")]
    assert all(x.startswith("INFO anyecg_edge") for x in runs[""]), runs[""]
    assert any(x.startswith("INFO onnxruntime") for x in runs["-v"]), runs["-v"]
