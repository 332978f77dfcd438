"""The skip accounting of tests/data_skips.py: a run that skipped tests for missing real
recordings says so (a partial suite), fails with ANYECG_REQUIRE_DATA=1, and says how many
needed them and ran."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

SUITE = """
import pytest

@pytest.fixture
def shared_data(tmp_path):
    if {absent}:
        pytest.skip("real recordings folder /nowhere/shared/data is absent")
    return tmp_path

@pytest.mark.skipif({absent}, reason="real recordings not found under /nowhere/shared/data")
def test_marked():
    pass

def test_fixture(shared_data):
    pass

@pytest.mark.skipif(True, reason="no C compiler")
def test_other_skip():
    pass

def test_plain():
    pass
"""


def _run(tmp_path: Path, absent: bool, require: str | None) -> subprocess.CompletedProcess:
    (tmp_path / "test_suite.py").write_text(SUITE.format(absent=absent))
    env = {k: v for k, v in os.environ.items() if k != "ANYECG_REQUIRE_DATA"}
    env["PYTHONPATH"] = str(HERE)
    if require is not None:
        env["ANYECG_REQUIRE_DATA"] = require
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "data_skips", "-p", "no:cacheprovider", "-q",
         "-c", os.devnull, "--rootdir", str(tmp_path), str(tmp_path / "test_suite.py")],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip


def test_a_run_with_the_recordings_passes_and_counts_them(tmp_path: Path) -> None:
    proc = _run(tmp_path, absent=False, require="1")
    assert proc.returncode == 0, proc.stdout
    assert "real recordings (../shared/data): 2 tests needed them and ran\n" in proc.stdout


def test_a_run_that_skipped_data_tests_fails_when_they_are_required(tmp_path: Path) -> None:
    proc = _run(tmp_path, absent=True, require="1")
    assert proc.returncode == 1, proc.stdout
    assert "0 tests needed them and ran, 2 skipped because they are absent: the run FAILS" in (
        proc.stdout
    )
    assert "1 passed, 3 skipped" in proc.stdout  # the other skip is not a data skip


@pytest.mark.parametrize("require", [None, "0"])
def test_without_the_requirement_a_partial_run_is_said_so(
    tmp_path: Path, require: str | None
) -> None:
    proc = _run(tmp_path, absent=True, require=require)
    assert proc.returncode == 0, proc.stdout
    assert "2 skipped because they are absent: a PARTIAL suite" in proc.stdout
