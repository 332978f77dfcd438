from __future__ import annotations

import os
import shutil
import subprocess
import venv
from pathlib import Path

import demo_background
import pytest
from data_skips import (  # noqa: F401  (hooks: a run that skipped data tests fails)
    pytest_collection_modifyitems,
    pytest_runtest_logreport,
    pytest_sessionfinish,
    pytest_terminal_summary,
)
from recordings import DATA

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = DATA


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the demo run of tests/test_demo.py now, in the background (demo_background.py),
    when that file's tests are to run and the recordings are here."""
    if session.config.option.collectonly or not SHARED_DATA.is_dir():
        return
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # Under pytest-xdist every worker collects every test but only one runs
        # test_demo.py: its fixture starts the demo there (the other worker is the overlap).
        return
    if any("quick_demo" in getattr(item, "fixturenames", ()) for item in session.items):
        demo_background.start(session.config._tmp_path_factory.mktemp("demo"), background=True)
        session.config.add_cleanup(demo_background.stop)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real recordings folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def edge_venv(tmp_path_factory, repo_root: Path) -> Path:
    """Python of a clean venv holding only the device install `pip install ".[edge]"`
    (no torch), built once per session from a copy of the sources (~25 s)."""
    root = tmp_path_factory.mktemp("edge-venv")
    src = root / "src"
    shutil.copytree(
        repo_root,
        src,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "build", "*.egg-info", "__pycache__", "demo_out", "runs"
        ),
    )
    env_dir = root / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    # --no-compile, then compileall without the packages' own test folders (a third of the
    # files: scipy's, pandas', numpy's test suites, never imported on a device), on every
    # core: 42 s of CPU (pip compiles all, one file at a time) -> 32 s, ~15 s less wall.
    proc = subprocess.run(
        [str(py), "-m", "pip", "install", "--quiet", "--no-compile", f"{src}[edge]"],
        capture_output=True,
        text=True,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    site = next((env_dir / "lib").glob("python3*/site-packages"))
    # (a file that does not compile is left as pip leaves it: not an install failure)
    subprocess.run(
        [str(py), "-m", "compileall", "-q", "-j", "0", "-x", "/tests?/", str(site)],
        capture_output=True,
    )
    return py


@pytest.fixture(scope="session")
def art(tmp_path_factory, shared_data):
    """The exported models of tests/export_fixtures.py (built once per session)."""
    import export_fixtures

    return export_fixtures.artifacts(tmp_path_factory.getbasetemp())
