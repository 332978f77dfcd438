"""anyecg_edge.fileio: result files are written whole or not at all, JSON is strict JSON
(non-finite -> null plus the reason), and the writers that used their own copies (evaluate
--json, the bench report, `data synth`) now go through it."""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from anyecg_edge.fileio import (
    atomic_open,
    atomic_path,
    file_sha256,
    temp_name,
    write_bytes_atomic,
    write_json,
    write_text_atomic,
)

REPO = Path(__file__).resolve().parents[1]


def strict_loads(text: str):
    """json.loads that refuses NaN / Infinity / -Infinity tokens (as other languages do)."""

    def refuse(token: str):
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# --------------------------------------------------------------------------- the NaN rule
def test_non_finite_numbers_are_null_with_the_reason(tmp_path: Path) -> None:
    doc = {
        "auroc": float("nan"),
        "labs": {"k": {"sqnr_db": float("inf"), "ok": 0.5}},
        "series": [1.0, float("-inf")],
        "np32": np.float32("nan"),
        "arr": np.array([0.25, np.nan]),
        "n": np.int64(3),
        "where": tmp_path,
        np.int64(7): "numpy key",
    }
    path = write_json(tmp_path / "r.json", doc)
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text and text.endswith("}\n")
    got = strict_loads(text)
    assert got["auroc"] is None and got["labs"]["k"] == {"sqnr_db": None, "ok": 0.5}
    assert got["series"] == [1.0, None] and got["np32"] is None and got["arr"] == [0.25, None]
    assert got["n"] == 3 and got["where"] == str(tmp_path) and got["7"] == "numpy key"
    assert got["non_finite"] == {
        "auroc": "nan",
        "labs.k.sqnr_db": "inf",
        "series[1]": "-inf",
        "np32": "nan",
        "arr[1]": "nan",
    }
    # A finite document is written exactly as json.dumps would (no reasons key).
    clean = {"a": [1, 2.5], "b": "x"}
    assert write_json(tmp_path / "c.json", clean).read_text() == json.dumps(clean, indent=2) + "\n"
    # A top-level value that is not an object is wrapped to carry its reason.
    assert strict_loads(write_json(tmp_path / "v.json", float("nan")).read_text()) == {
        "value": None,
        "non_finite": {"$": "nan"},
    }


# --------------------------------------------------------------------------- atomicity
def test_an_exception_mid_write_leaves_the_old_file(tmp_path: Path) -> None:
    path = write_json(tmp_path / "bench.json", {"run": 1})
    old = path.read_bytes()
    with pytest.raises(RuntimeError, match="disk gone"), atomic_open(path, "w") as fh:
        fh.write('{"run": 2, "rows": [')
        raise RuntimeError("disk gone")
    assert path.read_bytes() == old and leftovers(tmp_path) == []
    # An object json cannot write: refused before the file is touched.
    with pytest.raises(TypeError):
        write_json(path, {"run": 3, "bad": object()})
    assert path.read_bytes() == old and leftovers(tmp_path) == []
    # No file before: none after.
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "new.npy") as tmp:
        with open(tmp, "wb") as fh:  # np.save(str) would add ".npy" to the temp name
            np.save(fh, np.arange(3))
        raise RuntimeError("killed")
    assert not (tmp_path / "new.npy").exists() and leftovers(tmp_path) == []


def test_a_write_failing_mid_file_leaves_the_old_file(tmp_path: Path) -> None:
    """A real kernel write error: RLIMIT_FSIZE makes a write past 4 KiB fail with EFBIG
    in a child (SIGXFSZ ignored), the path a full disk (ENOSPC) takes too."""
    path = write_text_atomic(tmp_path / "report.md", "old report\n")
    code = textwrap.dedent(f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        from anyecg_edge.fileio import write_text_atomic
        try:
            write_text_atomic({str(path)!r}, "x" * 100_000)
        except OSError as exc:
            sys.exit(f"OSError {{exc.errno}}")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "OSError 27" in proc.stderr, proc.stderr  # EFBIG
    assert path.read_text() == "old report\n" and leftovers(tmp_path) == []


def test_a_killed_writer_leaves_the_old_file_and_the_next_write_consumes_its_temp(
    tmp_path: Path,
) -> None:
    path = write_json(tmp_path / "manifest.json", {"version": 1})
    old = path.read_bytes()
    code = textwrap.dedent(f"""
        import sys, time
        from anyecg_edge.fileio import atomic_open
        with atomic_open({str(path)!r}, "w") as fh:
            fh.write('{{"version": 2, "rows": [')
            fh.flush()
            print("writing", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    try:
        assert proc.stdout.readline().strip() == "writing"
        assert temp_name(path).is_file()  # mid-write: the temp file exists, the target is old
        assert path.read_bytes() == old
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert path.read_bytes() == old and json.loads(old) == {"version": 1}
    assert leftovers(tmp_path) == [temp_name(path).name]  # what a kill leaves behind...
    write_json(path, {"version": 3})
    assert json.loads(path.read_text()) == {"version": 3}
    assert leftovers(tmp_path) == []  # ...is taken by the next write of that file


def test_a_second_live_writer_does_not_share_the_first_ones_temp(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    with atomic_open(path, "w") as first:
        first.write('{"from": "first"}\n')
        # The first writer holds .result.json.tmp (locked): this one takes a unique name.
        write_bytes_atomic(path, b'{"from": "second"}\n')
        assert json.loads(path.read_text()) == {"from": "second"}
    assert json.loads(path.read_text()) == {"from": "first"}  # the last to finish wins, whole
    assert leftovers(tmp_path) == []


def test_permissions_are_those_of_a_plain_write(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_text("x")
    assert (write_text_atomic(tmp_path / "a", "x").stat().st_mode & 0o777) == (
        plain.stat().st_mode & 0o777
    )
    kept = tmp_path / "kept"
    kept.write_text("x")
    kept.chmod(0o640)
    assert (write_text_atomic(kept, "y").stat().st_mode & 0o777) == 0o640


def test_file_sha256(tmp_path: Path) -> None:
    data = os.urandom(3 * (1 << 20) + 17)  # over the 1 MiB read chunk
    p = write_bytes_atomic(tmp_path / "m.onnx", data)
    assert file_sha256(p) == hashlib.sha256(data).hexdigest()
    from anyecg_edge.runtime.manifest import file_sha256 as runtime_sha256

    assert runtime_sha256 is file_sha256  # one implementation


# --------------------------------------------------------------------------- the writers
def test_evaluate_json_writes_undefined_auroc_as_null(tmp_path: Path) -> None:
    """`evaluate --json` used to refuse a NaN (ValueError from allow_nan=False) after the
    whole evaluation had run; now the file holds null and names it."""
    from anyecg_edge.training.evaluate import write_json as write_evaluation

    result = {
        "split": "test",
        "summary": {"mean_auroc": float("nan"), "n_labs_evaluated": 0},
        "labs": {"potassium": {"auroc": np.float64("nan"), "n_pos_visits": 2}},
        "_logits": np.zeros((2, 2)),  # in-memory only: not written
    }
    path = write_evaluation(result, tmp_path / "eval.json")
    got = strict_loads(path.read_text())
    assert got["summary"]["mean_auroc"] is None and got["labs"]["potassium"]["auroc"] is None
    assert "_logits" not in got
    assert got["non_finite"] == {"summary.mean_auroc": "nan", "labs.potassium.auroc": "nan"}


def _bench_result() -> dict:
    src = REPO / "benchmarks" / "results" / "cpu_bench_2core_2026-11-26_a.json"
    return json.loads(src.read_text())


def test_bench_report_is_not_half_replaced(tmp_path: Path) -> None:
    """A result the report cannot render leaves the previous report, bench.json included,
    exactly as it was (it used to write the new bench.json first, then fail)."""
    pytest.importorskip("matplotlib")
    from anyecg_edge.benchmarks.report import write_report

    res = _bench_result()
    files = write_report(res, tmp_path)
    assert strict_loads(files["json"].read_text())["rows"]
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert {"bench.json", "report.md", "report.html"} <= set(before)
    broken = {**res, "rows": [{**res["rows"][0], "p50_ms": "fast"}, *res["rows"][1:]]}
    broken["created_utc"] = "later"
    with pytest.raises((TypeError, ValueError)):
        write_report(broken, tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_bench_json_nan_is_null(tmp_path: Path) -> None:
    from anyecg_edge.benchmarks.bench import write_json as write_bench_json

    res = {"rows": [{"p50_ms": 1.5, "auroc_mean": float("nan")}]}
    got = strict_loads(write_bench_json(res, tmp_path / "b.json").read_text())
    assert got["rows"][0]["auroc_mean"] is None and math.isclose(got["rows"][0]["p50_ms"], 1.5)


# --------------------------------------------------------------------------- data synth
SYNTH = "segments_per_visit=(1, 1), segment_s=(20.0, 20.0), defects=False"


def _synth_proc(out: Path, visits: int, seed: int) -> subprocess.Popen:
    code = (
        "from anyecg_edge.training.data.synth import synth_cohort\n"
        f"synth_cohort({str(out)!r}, {visits}, seed={seed}, {SYNTH})\n"
    )
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO)


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _kill_while_staging(proc: subprocess.Popen, parent: Path, name: str) -> None:
    """SIGKILL once the writer has put records into its staging folder."""
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if any(parent.glob(f".{name}.synth-*/waveforms/*/*/II/*.dat")):
                break
            assert proc.poll() is None, "synth finished before it could be killed"
            time.sleep(0.05)
        else:
            raise AssertionError("no staged waveform within 120 s")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL


def test_killed_synth_leaves_no_cohort_or_the_old_one(tmp_path: Path) -> None:
    from anyecg_edge.training.data.synth import synth_cohort

    # 1. No cohort before: a killed synth leaves none (no half cohort to build from).
    out = tmp_path / "cohort"
    _kill_while_staging(_synth_proc(out, 400, 1), tmp_path, "cohort")
    assert not out.exists()
    # 2. A finished cohort, then a killed synth over it: the old cohort, byte for byte.
    synth_cohort(out, 6, seed=2, segments_per_visit=(1, 1), segment_s=(20.0, 20.0), defects=False)
    old = _tree(out)
    assert "truth.json" in old
    _kill_while_staging(_synth_proc(out, 400, 3), tmp_path, "cohort")
    assert _tree(out) == old
    # 3. The next synth sweeps what the killed ones left and replaces the cohort whole.
    truth = synth_cohort(out, 5, seed=4, segments_per_visit=(1, 1), segment_s=(20.0, 20.0))
    assert json.loads((out / "truth.json").read_text()) == truth and truth["n_visits"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cohort"]


def test_synth_refuses_a_folder_holding_other_files(tmp_path: Path) -> None:
    from anyecg_edge.training.data.synth import SynthError, synth_cohort

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SynthError, match=r"notes\.txt.*new or empty folder"):
        synth_cohort(tmp_path, 3, seed=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_sigterm_during_synth_leaves_nothing_behind(tmp_path: Path) -> None:
    """SIGTERM (the CLI's boundary turns it into one line, exit 143) removes the staging
    folder as well: no cohort, no leftover to sweep."""
    out = tmp_path / "cohort"
    args = ["data", "synth", "--out", out, "--visits", "400", "--segments-per-visit", "1", "1",
            "--segment-s", "20", "20", "--no-defects"]  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "anyecg_edge", "-q", *map(str, args)],
                            cwd=REPO, text=True, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not any(tmp_path.glob(".cohort.synth-*/waveforms/*/*/II/*.dat")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.returncode
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143 and err.strip() == "Error: stopped by SIGTERM", err
    assert list(tmp_path.iterdir()) == []


def test_train_log_of_a_diverged_run_is_strict_json(tmp_path: Path) -> None:
    """train_log.jsonl: a NaN loss (a diverged run) is logged as null with its reason - the
    line used to hold a bare NaN token that strict JSONL readers reject."""
    torch = pytest.importorskip("torch")
    from anyecg_edge.training.trainer import DistInfo, TrainConfig, Trainer, masked_bce_terms
    from torch.utils.data import TensorDataset

    x = torch.full((16, 4), float("nan"))  # every output, and so every loss, is NaN
    y = torch.zeros(16, 1)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)

    def loss_fn(m, batch):
        s, c = masked_bce_terms(m(batch[0]), batch[1], batch[2])
        return {"bce": (s, c, 1.0)}

    trainer = Trainer(
        model,
        loss_fn=loss_fn,
        train_set=TensorDataset(x, y, torch.ones_like(y)),
        val_set=TensorDataset(torch.randn(4, 4)),
        val_targets=np.array([[0], [1], [0], [1]], np.int8),
        out_dir=tmp_path,
        config=TrainConfig(batch_size=8, lr=0.01, warmup=0, log_every=1, epochs=1),
        info=DistInfo(),
        labs=["a"],
        order_fn=lambda epoch: np.arange(16),
    )
    trainer.fit()
    lines = [strict_loads(ln) for ln in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and all(ln["loss"] is None for ln in lines)
    assert all(ln["non_finite"]["loss"] == "nan" for ln in lines)
