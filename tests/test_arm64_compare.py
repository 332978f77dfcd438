"""benchmarks/arm64/compare.py's verdicts (make test-arm64), on small made-up outputs."""

import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.device

_HERE = Path(__file__).resolve().parents[1] / "benchmarks" / "arm64"


@pytest.fixture(scope="module")
def cmp():
    spec = importlib.util.spec_from_file_location("arm64_compare", _HERE / "compare.py")
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(_HERE))
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(_HERE))
    return mod


def _lab(p: float, thr: float = 0.5) -> dict:
    return {"probability": p, "abnormal": p >= thr, "status": "abnormal" if p >= thr else "normal"}


def test_probabilities_within_the_tolerance_are_equal_beyond_are_not(cmp) -> None:
    d, worst = cmp.diff({"labs": {"k": _lab(0.70)}}, {"labs": {"k": _lab(0.73)}}, tol=0.05)
    assert d == [] and worst == pytest.approx(0.03)
    d, _ = cmp.diff({"labs": {"k": _lab(0.70)}}, {"labs": {"k": _lab(0.76)}}, tol=0.05)
    assert d == ["/labs/k/probability: 0.7 vs 0.76"]


def test_a_call_on_its_threshold_is_reported_not_failed(cmp) -> None:
    flips: list[str] = []
    d, _ = cmp.diff({"k": _lab(0.49)}, {"k": _lab(0.51)}, tol=0.05, flips=flips)
    assert d == [] and flips == ["/k (0.49 vs 0.51)"]
    # the same flip with |dp| over the tolerance is a difference in the call too
    flips = []
    d, _ = cmp.diff({"k": _lab(0.40)}, {"k": _lab(0.51)}, tol=0.05, flips=flips)
    assert flips == [] and {x.split(":")[0] for x in d} == {
        "/k/abnormal", "/k/probability", "/k/status"
    }  # fmt: skip


def test_volatile_fields_are_skipped(cmp) -> None:
    a = {"t_utc": "2026-12-07T00:00", "end_utc": "x", "p50_ms": 1.0, "windows": 3}
    b = {"t_utc": "2026-12-07T01:00", "end_utc": "y", "p50_ms": 9.0, "windows": 3}
    assert cmp.diff(a, b) == ([], 0.0)
    assert cmp.diff(a, {**b, "windows": 4})[0] == ["/windows: 3 vs 4"]


def test_bench_rows_keep_what_the_runtime_found_only(cmp) -> None:
    row = {"model": "tflite", "runtime": "litert", "precision": "int8", "size_bytes": 10,
           "params": 5, "macs": 7, "parity_agreement": 0.99, "p50_ms": 3.0}  # fmt: skip
    assert cmp._bench_rows({"rows": [row]}) == [
        {"runtime": "litert", "precision": "int8", "size_bytes": 10}
    ]


def test_simulated_stream_is_compared_by_structure(cmp) -> None:
    def stream(t_disc: float, reconnects: int) -> list[dict]:
        rows = [{"event": "connected", "t": 0.0}, {"event": "disconnect", "t": t_disc}]
        rows += [{"event": "reconnect", "t": t_disc}] * reconnects
        rows += [{"event": "gap", "t": t_disc}]
        # different signal at equal t: values differ by far more than the tolerance
        rows += [{"t": 10.0 + i, "labs": {"k": _lab(0.1 + 0.2 * (t_disc > 35))}} for i in range(4)]
        return rows

    d, _, info = cmp._stream_diff(stream(39.9, 1), stream(32.6, 1), exact=False, tol=0.05)
    assert d == [] and info["first_disconnect_t"] == [39.9, 32.6]
    d, _, _ = cmp._stream_diff(stream(39.9, 1), stream(32.6, 0), exact=False, tol=0.05)
    assert d == [": 1 reconnect events on host, 0 on device"]
    # a file: stream is compared window for window
    d, _, _ = cmp._stream_diff(stream(39.9, 1), stream(32.6, 1), exact=True, tol=0.05)
    assert any("probability" in x for x in d)


def test_the_result_is_written_as_json_with_its_markdown_beside_it(cmp, tmp_path) -> None:
    """compare.py and armhf_compare.py write their verdict through this one helper."""
    import json

    out = tmp_path / "new" / "arm64.json"
    cmp.write_result(out, {"passed": True, "dp": 1e-5}, "# arm64 PASSED\n")
    assert json.loads(out.read_text()) == {"passed": True, "dp": 1e-5}
    assert out.read_text().endswith("}\n") and "\n  " in out.read_text()  # indented, one newline
    assert out.with_suffix(".md").read_text() == "# arm64 PASSED\n"
