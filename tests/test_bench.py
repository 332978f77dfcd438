"""`anyecg-edge bench`: a quick smoke run of the real bench (so it never rots), the JSON
schema, the report files, `--compare` regressions, device-style file rows, bad input."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
from anyecg_edge.benchmarks.bench import (
    FORMAT,
    BenchError,
    load_stream_jsonl,
    match_variants,
    parse_model_spec,
    read_evaluation,
)
from anyecg_edge.benchmarks.compare import compare_results
from click.testing import CliRunner

from anyecg_edge.cli import cli
from anyecg_edge.runtime import available_runtimes

ROW_KEYS = {"model", "runtime", "precision", "p50_ms", "p95_ms", "p99_ms", "iterations"}
ROW_KEYS |= {"throughput_wps", "peak_rss_mb", "size_bytes", "params", "macs", "samples_ms"}


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, shared_data: Path) -> dict:
    """One quick bench: ECGFounder fp32 (torch) vs student-xs fp32 (torch) and int8 (ONNX
    Runtime), a 20 s simulated Polar H10 stream, JSON + report. (LiteRT rows: test_demo.)"""
    out = tmp_path_factory.mktemp("bench")
    eval_json = out / "evaluation.json"
    # The schema `anyecg-edge evaluate --json` writes (only the fields bench reads).
    eval_json.write_text(json.dumps({"split": "test", "summary": {"mean_auroc": 0.61}}))
    code, text = run(
        "bench", "--quick", "--threads", "1",
        "--models", "ecgfounder@torch",
        "--models", "student-xs@torch+onnxruntime-int8",
        "--accuracy", f"student-xs={eval_json}",
        "--json", str(out / "bench.json"), "--report", str(out / "report"),
        "--work-dir", str(out / "work"), "--data-dir", str(shared_data),
    )  # fmt: skip
    assert code == 0, text
    return {"dir": out, "text": text, "res": json.loads((out / "bench.json").read_text())}


def test_smoke_rows_and_machine_info(smoke: dict) -> None:
    res = smoke["res"]
    assert res["format"] == FORMAT
    for key in ("cpu", "cores_logical", "cores_available", "memory_gb", "os", "python", "versions"):
        assert key in res["machine"]
    assert res["machine"]["versions"]["onnxruntime"]
    rows = {(r["model"], r["runtime"], r["precision"]): r for r in res["rows"]}
    assert set(rows) == {
        ("ecgfounder", "torch", "fp32"),
        ("student-xs", "torch", "fp32"),
        ("student-xs", "onnxruntime", "int8"),
    }
    for r in rows.values():
        assert set(r) >= ROW_KEYS, sorted(ROW_KEYS - set(r))
        assert 0 < r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"]
        assert r["iterations"] == len(r["samples_ms"]) == 10
        assert r["throughput_wps"] > 0 and r["preprocess_p50_ms"] > 0
    founder = rows[("ecgfounder", "torch", "fp32")]
    assert (
        founder["params"] > 30_000_000 and founder["macs"] > 1e9 and founder["role"] == "foundation"
    )
    assert founder["size_bytes"] > 100 * 2**20
    int8 = rows[("student-xs", "onnxruntime", "int8")]
    # Random-init rows have no thresholds, so parity has no calls to agree on: AUROC delta only.
    assert int8["size_bytes"] < 2**20 and int8["parity_mean_auroc_delta"] is not None
    # Each row is its own process: the ONNX Runtime row carries no torch in its peak RSS.
    assert int8["peak_rss_mb"] < founder["peak_rss_mb"] / 2
    # Accuracy columns come from the evaluation file given for that model only.
    assert int8["auroc_mean"] == 0.61 and "auroc_mean" not in founder


def test_smoke_prints_the_int8_speedup_over_ecgfounder(smoke: dict) -> None:
    h = smoke["res"]["headline"]
    best = min(
        (r for r in smoke["res"]["rows"] if r["precision"] == "int8"), key=lambda r: r["p50_ms"]
    )
    assert h["student_p50_ms"] == best["p50_ms"]
    assert h["speedup_p50"] == pytest.approx(h["reference_p50_ms"] / best["p50_ms"], rel=0.01)
    assert "x faster" in smoke["text"] and f"{h['speedup_p50']:,.0f}x" in smoke["text"]
    assert "Goal >= 100x" in smoke["text"]


def test_smoke_report_has_png_plots(smoke: dict) -> None:
    rep = smoke["dir"] / "report"
    names = {
        "latency_distribution.png",
        "size_latency_auroc.png",
        "speedup.png",
        "stream_latency.png",
    }
    for name in names:
        data = (rep / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", data[16:24])
        assert width > 400 and height > 150
    md = (rep / "report.md").read_text()
    assert all(f"]({n})" in md for n in names) and "| ecgfounder |" in md
    html = (rep / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(names)
    stream = smoke["res"]["stream"]
    assert stream["summary"]["source"].startswith("sim-polar:")
    assert len(stream["series"]["t"]) >= 5 and all(v > 0 for v in stream["series"]["latency_ms"])


def test_compare_flags_regressions(smoke: dict, tmp_path: Path) -> None:
    new = smoke["res"]
    same = compare_results(new, new)
    assert not same["regressions"] and {e["status"] for e in same["rows"]} == {"same"}
    old = json.loads(json.dumps(new))
    target = next(r for r in old["rows"] if r["runtime"] == "onnxruntime")
    target["p50_ms"] /= 3  # the old run was 3x faster on this row
    target["p95_ms"] /= 3
    old["rows"] = [r for r in old["rows"] if r["runtime"] != "torch" or r["model"] != "student-xs"]
    cmp = compare_results(new, old, tolerance=0.2)
    # A NaN tolerance compares false everywhere: "no regressions" for any slow-down.
    for bad in (float("nan"), float("inf"), 0.0, -1.0):
        with pytest.raises(BenchError, match="tolerance must be a finite number > 0"):
            compare_results(new, old, tolerance=bad)
    status = {(e["model"], e["runtime"]): e for e in cmp["rows"]}
    assert status[("student-xs", "onnxruntime")]["status"] == "regression"
    assert "p50_ms" in status[("student-xs", "onnxruntime")]["regressed"]
    assert status[("student-xs", "torch")]["status"] == "new"
    assert len(cmp["regressions"]) == 1 and "student-xs onnxruntime int8" in cmp["regressions"][0]

    # Through the CLI, on the exported file alone (the way a device runs it: no torch).
    onnx = Path(next(r for r in new["rows"] if r["runtime"] == "onnxruntime")["file"])
    old_path = tmp_path / "old.json"
    for r in old["rows"]:
        r["model"] = "xs-int8" if r["runtime"] == "onnxruntime" else r["model"]
    old_path.write_text(json.dumps(old))
    code, text = run(
        "bench", "--quick", "--models", f"xs-int8={onnx}", "--stream-s", "0",
        "--compare", str(old_path), "--tolerance", "0.2", "--fail-on-regression",
        "--json", str(tmp_path / "new.json"),
    )  # fmt: skip
    assert code == 1, text
    assert "regression" in text and "xs-int8" in text
    again = json.loads((tmp_path / "new.json").read_text())
    assert again["rows"][0]["runtime"] == "onnxruntime" and again["rows"][0]["precision"] == "int8"
    assert again["comparison"]["regressions"] and again["stream"] is None


def test_stream_jsonl_is_read_back(smoke: dict) -> None:
    jsonl = smoke["dir"] / "work" / "stream.jsonl"
    doc = load_stream_jsonl(jsonl)
    assert doc["summary"]["windows"] == len(doc["series"]["t"])
    assert any(e["event"] == "connected" for e in doc["events"])
    # The session of `anyecg-edge stream` (stream.session): its start line, t_utc everywhere.
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert lines[0]["start"]["t_utc"].endswith("+00:00") and "end_utc" in lines[-1]["summary"]
    assert all("t_utc" in x for x in lines[1:-1])


def test_bench_tool_runs_the_stage_benchmarks(smoke: dict) -> None:
    """The argparse benchmarks under benchmarks/ are reachable from the one CLI."""
    code, text = run("bench-tool", "--help")
    assert code == 0 and "runtime" in text and "gpu-lora" in text, text
    bench_json = str(smoke["dir"] / "bench.json")
    code, text = run("bench-tool", "compare", bench_json, bench_json)
    assert code == 0 and "regression" in text.lower(), text
    code, text = run("bench-tool", "nope")
    assert code == 2 and "expected one of runtime" in text, text


def test_model_specs_and_variants(tmp_path: Path) -> None:
    assert parse_model_spec("student-s").kind == "arch"
    t = parse_model_spec("teacher@torch")
    assert (t.kind, t.key, t.variants) == ("teacher", "ecgfounder+lora", ["torch"])
    assert parse_model_spec("fast=student-xs@int8").key == "fast"
    variants = ("torch-fp32", "onnxruntime-fp32", "onnxruntime-int8", "litert-int8")
    assert match_variants(["int8"], variants, "x") == ["onnxruntime-int8", "litert-int8"]
    assert match_variants(["onnxruntime"], variants, "x") == [
        "onnxruntime-fp32",
        "onnxruntime-int8",
    ]
    assert match_variants(["tflite"], variants, "x") == ["litert-int8"]
    with pytest.raises(BenchError, match="unknown runtime"):
        match_variants(["tensorrt"], variants, "--runtimes")
    with pytest.raises(BenchError, match="not a registry model"):
        parse_model_spec("resnet50")
    with pytest.raises(BenchError, match="file not found"):
        parse_model_spec(str(tmp_path / "absent.onnx"))
    bad = tmp_path / "x.txt"
    bad.write_text("x")
    with pytest.raises(BenchError, match="expected a .onnx/.tflite"):
        parse_model_spec(str(bad))
    not_eval = tmp_path / "metrics.json"
    not_eval.write_text("{}")
    with pytest.raises(BenchError, match="no summary.mean_auroc"):
        read_evaluation(not_eval)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--models", "resnet50"], "not a registry model"),
        (["--models", "student-xs@tensorrt"], "unknown runtime"),
        (["--models", "teacher@onnxruntime"], "not available for this model"),
        (["--models", "student-xs", "--accuracy", "other=x.json"], "evaluation JSON not found"),
        (["--models", "student-xs", "--threads", "0"], "Invalid value for '--threads'"),
        (["--compare", "absent.json"], "bench JSON not found"),
        pytest.param(
            ["--models", "student-xs", "--runtimes", "tflite-runtime"],
            "tflite-runtime is not",
            marks=pytest.mark.skipif(
                "tflite-runtime" in available_runtimes(), reason="tflite-runtime is installed"
            ),
        ),
    ],
)
def test_bad_options_get_one_line_errors(args: list[str], expected: str) -> None:
    code, out = run("bench", "--quick", *args)
    assert code == (2 if "Invalid value" in expected else 1), out  # usage errors: exit 2
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0] and "Traceback" not in out


@pytest.mark.venv
def test_bench_runs_on_a_device_install_without_torch(
    smoke: dict, edge_venv: Path, tmp_path: Path
) -> None:
    """The documented device method: `pip install ".[edge]"`, copy the exports, bench them."""
    import subprocess

    py = str(edge_venv)
    no_torch = subprocess.run([py, "-c", "import torch"], capture_output=True)
    assert no_torch.returncode != 0
    onnx = next(r for r in smoke["res"]["rows"] if r["runtime"] == "onnxruntime")["file"]
    models = tmp_path / "models"
    models.mkdir()
    for suffix in ("", ".manifest.json"):
        (models / f"student_int8.onnx{suffix}").write_bytes(Path(onnx + suffix).read_bytes())
    out = tmp_path / "device"
    proc = subprocess.run(
        [
            str(Path(py).parent / "anyecg-edge"), "bench", "--quick", "--stream-s", "0",
            "--models", f"student={models / 'student_int8.onnx'}",
            "--json", str(out / "bench.json"), "--report", str(out),
        ],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    res = json.loads((out / "bench.json").read_text())
    (row,) = res["rows"]
    assert (row["model"], row["runtime"], row["precision"]) == ("student", "onnxruntime", "int8")
    assert row["p50_ms"] > 0 and row.get("params") is None  # params need torch: none here
    assert res["machine"]["versions"]["torch"] is None
    assert "synthetic" in res["settings"]["windows"]  # no recordings next to this install
    assert (out / "report.html").is_file()


# --------------------------------------------------------------------------- --corpus


def _independent_eval(model: Any, corpus: Path, truth: dict) -> dict:
    """Mean AUROCs of one model file on the corpus test split, computed here without bench:
    the test rows read straight from index.parquet + the shards, logits from the model's own
    runtime, scored by `evaluate`'s evaluate_predictions."""
    import numpy as np
    import pandas as pd
    from anyecg_edge.training.evaluate import evaluate_predictions

    idx = pd.read_parquet(corpus / "index.parquet")
    rows = idx[(idx["split"] == "test") & idx["quality_ok"].astype(bool)]
    x = np.stack(
        [
            np.load(corpus / "shards" / shard, mmap_mode="r")[offset]
            for shard, offset in zip(rows["shard"], rows["offset"], strict=True)
        ]
    ).astype(np.float32)[:, None, :]
    labs = [k for k in model.labs if k in idx.columns]
    values = rows[labs].to_numpy(dtype=np.float64)
    targets = np.where(np.isfinite(values), (values > 0.5).astype(np.int8), -1).astype(np.int8)
    cols = [model.labs.index(k) for k in labs]
    res = evaluate_predictions(
        model.predict_logits(x)[:, cols],
        targets,
        rows["csn"].to_numpy(dtype=object),
        labs,
        calibration=model.metadata.calibration,
        thresholds=model.metadata.thresholds,
        n_boot=0,
        truth=truth,
    )
    return res["summary"]


@pytest.fixture(scope="module")
def corpus_bench(tmp_path_factory) -> dict:
    """A bench with --corpus: an fp32 student checkpoint (torch), its int8 ONNX and LiteRT
    exports, a 2-step LoRA teacher run and a random-init architecture, on a small corpus."""
    import torch
    from anyecg_edge.quantization.export import export_model
    from anyecg_edge.training.data import build_corpus, synth_cohort
    from anyecg_edge.training.models import create_model
    from anyecg_edge.training.torch_model import save_model_checkpoint

    from anyecg_edge.labs import load_catalog
    from anyecg_edge.runtime import ModelMetadata

    root = tmp_path_factory.mktemp("bench_corpus")
    cohort, corpus = root / "cohort", root / "corpus"
    synth_cohort(cohort, 250, seed=3, segments_per_visit=(1, 1), segment_s=(20.0, 40.0))
    build_corpus(cohort, corpus, visits_per_unit=128, workers=1, progress=False)
    labs = list(load_catalog().keys)  # more outputs than the corpus has labs: the overlap counts
    torch.manual_seed(0)
    module = create_model("student-xs", n_classes=len(labs)).eval()
    ckpt = save_model_checkpoint(
        root / "student" / "model.pt", module, arch="student-xs",
        model_kwargs={"n_classes": len(labs)}, metadata=ModelMetadata(labs=labs),
    )  # fmt: skip
    files = {}
    for fmt in ("onnx", "tflite"):
        files[fmt] = export_model(
            ckpt, fmt=fmt, out=root / f"student_int8.{fmt}", int8=True, calib=[str(corpus)],
            calib_size=128, heldout_size=64, allow_degraded=True,
        ).path  # fmt: skip
    teacher = root / "teacher"
    code, text = run(
        "-q", "train", "lora", "--arch", "net1d-tiny", "--corpus", str(corpus), "--out",
        str(teacher), "--max-steps", "2", "--batch-size", "16", "--threads", "1",
    )  # fmt: skip
    assert code == 0, text
    out = root / "bench"
    code, text = run(
        "bench", "--quick", "--threads", "1", "--stream-s", "0",
        "--models", f"student={ckpt.parent}@torch",
        "--models", f"student={files['onnx']}", "--models", f"student={files['tflite']}",
        "--models", f"teacher={teacher}", "--models", "student-xs@torch",
        "--corpus", str(corpus), "--truth", str(cohort / "truth.json"),
        "--json", str(out / "bench.json"), "--report", str(out / "report"),
        "--work-dir", str(out / "work"),
    )  # fmt: skip
    assert code == 0, text
    return {
        "res": json.loads((out / "bench.json").read_text()),
        "text": text,
        "dir": out,
        "corpus": corpus,
        "truth": json.loads((cohort / "truth.json").read_text()),
        "files": {"torch": ckpt, "onnxruntime": files["onnx"], "litert": files["tflite"]},
        "teacher": teacher,
    }


def test_corpus_rows_carry_their_own_files_auroc(corpus_bench: dict) -> None:
    from anyecg_edge.training.torch_model import TorchModel

    from anyecg_edge.runtime import load_model

    res = corpus_bench["res"]
    rows = {(r["model"], r["runtime"]): r for r in res["rows"]}
    assert set(rows) == {
        ("student", "torch"),
        ("student", "onnxruntime"),
        ("student", "litert"),
        ("teacher", "torch"),
        ("student-xs", "torch"),
    }
    seen = {}
    for runtime, path in corpus_bench["files"].items():
        row = rows[("student", runtime)]
        model = TorchModel.load(path) if runtime == "torch" else load_model(path, threads=1)
        ref = _independent_eval(model, corpus_bench["corpus"], corpus_bench["truth"])
        assert row["auroc_from"] == "this file" and row["eval_split"] == "test"
        assert ref["mean_auroc"] is not None and ref["truth"]["planted_mean_auroc"] is not None
        assert row["auroc_mean"] == pytest.approx(ref["mean_auroc"], abs=1e-9), runtime
        assert row["auroc_planted_mean"] == pytest.approx(ref["truth"]["planted_mean_auroc"])
        assert row["auroc_unplanted_mean"] == pytest.approx(ref["truth"]["unplanted_mean_auroc"])
        seen[runtime] = row["auroc_mean"]
    # The int8 rows show their own numbers, not the fp32 checkpoint's (the old behaviour).
    assert seen["onnxruntime"] != seen["torch"] and seen["litert"] != seen["torch"], seen
    print("mean test AUROC per row:", seen)


def test_corpus_teacher_row_matches_evaluate(corpus_bench: dict) -> None:
    """The LoRA run row (timed as the peft model) scores what `anyecg-edge evaluate` does."""
    from anyecg_edge.training.evaluate import evaluate_model

    row = next(r for r in corpus_bench["res"]["rows"] if r["model"] == "teacher")
    ref = evaluate_model(
        corpus_bench["teacher"], corpus_bench["corpus"], "test", n_boot=0,
        truth=corpus_bench["truth"],
    )  # fmt: skip
    assert row["auroc_from"] == "this file"
    assert row["auroc_mean"] == pytest.approx(ref["summary"]["mean_auroc"], abs=1e-6)
    assert row["auroc_planted_mean"] == pytest.approx(
        ref["summary"]["truth"]["planted_mean_auroc"], abs=1e-6
    )


def test_corpus_table_says_where_auroc_comes_from(corpus_bench: dict) -> None:
    res, text = corpus_bench["res"], corpus_bench["text"]
    random_row = next(r for r in res["rows"] if r["model"] == "student-xs")
    assert "auroc_mean" not in random_row and "random-init" in random_row["eval_note"]
    s = res["settings"]
    assert s["accuracy_from"] == "this file" and s["eval"]["split"] == "test"
    assert s["eval"]["windows"] > 0 and s["eval"]["truth"].endswith("truth.json")
    assert "own runtime" in s["accuracy"]
    for header in ("AUROC this file (test)", "planted", "unplanted"):
        assert header in text
    for r in res["rows"]:
        if r.get("auroc_mean") is not None:
            assert f"{r['auroc_mean']:.3f}" in text
    md = (corpus_bench["dir"] / "report" / "report.md").read_text()
    assert "AUROC this file (test)" in md and "own runtime" in md


def test_without_corpus_the_auroc_column_names_the_checkpoint_evaluation(smoke: dict) -> None:
    res = smoke["res"]
    int8 = next(r for r in res["rows"] if r["precision"] == "int8")
    assert int8["auroc_from"] == "evaluation JSON"
    assert res["settings"]["accuracy_from"] == "evaluation JSON"
    assert "AUROC fp32 ckpt evaluate" in smoke["text"] and "AUROC this file" not in smoke["text"]
    assert "not its own" in smoke["text"]


def test_corpus_option_errors(tmp_path: Path) -> None:
    truth = tmp_path / "truth.json"
    truth.write_text("{}")
    code, out = run("bench", "--quick", "--models", "student-xs", "--truth", str(truth))
    assert code == 1 and "--truth needs --corpus" in out, out
    code, out = run("bench", "--quick", "--models", "student-xs", "--corpus", str(tmp_path))
    assert code == 1 and "no index.parquet" in out, out


def test_corpus_evaluation_of_an_export_needs_no_torch(corpus_bench: dict) -> None:
    """An export row's worker reads the corpus windows with numpy memory maps: rerun its
    spec in a fresh process and check that neither torch nor pyarrow was imported."""
    import subprocess
    import sys

    work = corpus_bench["dir"] / "work"
    spec = next(
        p
        for p in sorted(work.glob("worker_??.json"))
        if json.loads(p.read_text())["load"].get("runtime") == "onnxruntime"
    )
    code = (
        "import json, sys\n"
        "from anyecg_edge.benchmarks.bench import measure\n"
        f"row = measure(json.loads(open({str(spec)!r}).read()))\n"
        "print(json.dumps([row['eval_labs'] is not None, 'torch' in sys.modules,"
        " 'pyarrow' in sys.modules]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [True, False, False]
