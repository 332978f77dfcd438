"""The preprocessing oracles are independent of the fast path they check.

``tests/reference/preprocess_oracle.py`` is the authors' chain written from DESIGN.md alone;
``anyecg_edge.signal.reference.authors_preprocess`` is the package's own literal copy. Neither
may import the fast path's kernels or constants: a wrong kernel size in the fast path
(0.3*fs instead of 0.4*fs) passed every comparison while the kernel was shared.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from recordings import CINC, needs_data
from scipy.signal import butter, filtfilt, iirnotch, medfilt

import anyecg_edge.signal.reference as package_reference
from anyecg_edge.signal import authors_preprocess, preprocess

HERE = Path(__file__).resolve().parent
ORACLE_PATH = HERE / "reference" / "preprocess_oracle.py"
FS = 500


def _load_oracle():
    spec = importlib.util.spec_from_file_location("preprocess_oracle", ORACLE_PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


oracle = _load_oracle()


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add(node.module or "")
    return names


@pytest.mark.parametrize("path", [ORACLE_PATH, Path(package_reference.__file__)])
def test_oracles_import_only_numpy_and_scipy(path: Path) -> None:
    roots = {m.split(".")[0] for m in _imported_modules(path)}
    assert roots <= {"__future__", "numpy", "scipy"}, roots


def test_the_package_oracle_does_not_call_the_fast_paths_kernel() -> None:
    src = ast.parse(Path(package_reference.__file__).read_text())
    fn = next(
        n for n in src.body if isinstance(n, ast.FunctionDef) and n.name == "authors_preprocess"
    )
    called = {
        n.func.id for n in ast.walk(fn) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
    }
    assert "baseline_kernel" not in called


def test_oracle_kernel_is_the_authors_rule() -> None:
    assert oracle.median_kernel(500) == 201  # DESIGN.md's number
    assert oracle.median_kernel(250) == 101 and oracle.median_kernel(360) == 145


def _signals() -> dict[str, np.ndarray]:
    """Synthetic 500 Hz leads where the baseline step matters: a quantised random walk
    with spikes (ties in the running median, sharp edges) and beats on a wandering baseline."""
    out = {}
    for n in (1000, 5000, 7777):
        rng = np.random.default_rng(n)
        out[f"walk{n}"] = np.round(
            np.cumsum(rng.normal(0, 0.02, n)) + (rng.random(n) > 0.99) * 1.5, 2
        )
    t = np.arange(5000) / FS
    beats = sum(np.exp(-0.5 * ((t - r) / 0.012) ** 2) for r in np.arange(0.3, 10, 0.8))
    wander = 0.8 * np.sin(2 * np.pi * 0.3 * t) + 0.3 * np.sin(2 * np.pi * 50 * t)
    out["beats"] = beats + wander + np.random.default_rng(0).normal(0, 0.01, t.size)
    return out


SIGNALS = _signals()


@pytest.mark.parametrize("name", sorted(SIGNALS))
@pytest.mark.parametrize("mains_hz", [50.0, 60.0, None])
def test_fast_path_matches_the_independent_oracle(name: str, mains_hz) -> None:
    x = SIGNALS[name]
    ref = oracle.authors_chain(x, FS, mains_hz=mains_hz)
    err = float(np.max(np.abs(preprocess(x, FS, mains_hz=mains_hz) - ref)))
    assert err < 1e-4, f"{name}: max |fast - oracle| = {err:.2e} z"
    # The package's literal copy is the same chain, call for call.
    np.testing.assert_array_equal(authors_preprocess(x, FS, mains_hz=mains_hz), ref)


def test_the_comparison_sees_a_wrong_kernel() -> None:
    # What the comparison above must catch: the chain with a 0.3*fs kernel (151 samples)
    # differs from the authors' by far more than the tolerance, on every signal.
    for name, x in SIGNALS.items():
        ref = oracle.authors_chain(x, FS)
        y = np.asarray(x, dtype=np.float64)
        y = filtfilt(*iirnotch(50.0, 30.0, fs=FS), y)
        y = filtfilt(*butter(4, [0.67, 40.0], btype="bandpass", fs=FS), y)
        y = y - medfilt(y, kernel_size=151)
        y = (y - y.mean()) / (y.std() + 1e-8)
        assert np.max(np.abs(y - ref)) > 1e-2, name


@needs_data
def test_fast_path_matches_the_independent_oracle_on_real_leads() -> None:
    wfdb = pytest.importorskip("wfdb")
    worst = 0.0
    for hea in sorted(CINC.glob("*.hea")):
        rec = wfdb.rdrecord(str(hea.with_suffix("")))
        for j in range(rec.p_signal.shape[1]):
            x = rec.p_signal[:, j]
            worst = max(
                worst, float(np.max(np.abs(preprocess(x, FS) - oracle.authors_chain(x, FS))))
            )
    assert worst < 1e-4, worst
