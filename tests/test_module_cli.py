"""The multi-GPU line README and the demo print (`torchrun ... -m anyecg_edge.cli train lora
...`) must run, not exit 0 having done nothing (issue 13: cli.py had no __main__ guard).

Each test runs the printed *form* at CPU-test scale: the module path comes from the printed
line itself, so a line that names a module which does not run fails here.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from anyecg_edge.training.data import build_corpus, synth_cohort
from train_fixtures import subprocess_env

REPO_ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).with_name("torchrun")
# Tiny but real training options: two optimizer steps on one torch thread.
TINY = ["--arch", "net1d-tiny", "--max-steps", "2", "--batch-size", "8", "--threads", "1"]
TINY += ["--log-every", "1", "--eval-every", "2"]


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory) -> Path:
    cohort = tmp_path_factory.mktemp("module_cli_cohort")
    synth_cohort(cohort, 60, seed=3, segments_per_visit=(1, 1), segment_s=(15.0, 30.0))
    out = tmp_path_factory.mktemp("module_cli_corpus")
    build_corpus(cohort, out, window_s=5.0, visits_per_unit=64, workers=1, progress=False)
    return out


def _shell_lines(text: str) -> list[str]:
    """Commands of every ```bash block, backslash continuations joined, comments dropped."""
    lines: list[str] = []
    for block in re.findall(r"```(?:bash|sh|shell)\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        lines += [ln.strip() for ln in joined.splitlines() if ln.strip() and ln[0] != "#"]
    return lines


def printed_torchrun_lines() -> list[tuple[str, str]]:
    """(where, line) of every `torchrun ... train lora` line a user is shown."""
    from anyecg_edge.demo import GPU_LINE

    found = [("demo GPU_LINE", GPU_LINE)]
    found += [
        ("README.md", ln)
        for ln in _shell_lines((REPO_ROOT / "README.md").read_text())
        if ln.startswith("torchrun ")
    ]
    train_doc = (REPO_ROOT / "anyecg_edge" / "commands" / "train.py").read_text()
    found += [("commands/train.py", m) for m in re.findall(r"``(torchrun [^`]*)``", train_doc)]
    return found


def _module_and_command(line: str) -> tuple[str, list[str]]:
    """The module after `-m` and the subcommand words after it (`train lora`)."""
    words = shlex.split(line)
    assert "-m" in words, f"{line!r}: no -m MODULE (torchrun would need a script path)"
    i = words.index("-m")
    module, rest = words[i + 1], words[i + 2 :]
    command = []
    for w in rest:
        if w.startswith("-") or w == "...":
            break
        command.append(w)
    return module, command


def _run(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, capture_output=True, text=True, env=subprocess_env(), timeout=timeout
    )


def test_every_printed_torchrun_line_is_found() -> None:
    where = {w for w, line in printed_torchrun_lines() if "train lora" in line}
    # README's multi-GPU recipe, the demo's GPU line and the train module's docstring.
    assert where == {"demo GPU_LINE", "README.md", "commands/train.py"}


@pytest.mark.parametrize(("where", "line"), printed_torchrun_lines())
def test_printed_torchrun_line_names_a_module_that_runs(where: str, line: str) -> None:
    module, command = _module_and_command(line)
    assert command[:1] == ["train"], f"{where}: {line}"
    proc = _run([sys.executable, "-m", module, *command, "--help"], timeout=120)
    # Before the __main__ guard this exited 0 and printed nothing.
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"Usage: anyecg-edge {' '.join(command)} [OPTIONS]" in proc.stdout, (
        f"{where}: `python -m {module} {' '.join(command)} --help` printed no usage:\n"
        + proc.stdout[-1000:]
        + proc.stderr[-1000:]
    )


def test_python_m_cli_train_lora_writes_a_run(tiny_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = _run(
        [sys.executable, "-m", "anyecg_edge.cli", "train", "lora", "--corpus", str(tiny_corpus),
         "--out", str(out), *TINY]
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (out / "model.pt").is_file() and (out / "train_config.json").is_file()
    assert "wrote" in proc.stdout and str(out) in proc.stdout


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed in this venv")
def test_torchrun_module_form_writes_a_run(tiny_corpus: Path, tmp_path: Path) -> None:
    """The README's own `-m MODULE` under torchrun (one process here; test_ddp runs two)."""
    readme = next(line for where, line in printed_torchrun_lines() if where == "README.md")
    module, command = _module_and_command(readme)
    out = tmp_path / "run"
    proc = _run(
        [str(TORCHRUN), "--standalone", "--nproc_per_node", "1", "-m", module, *command,
         "--corpus", str(tiny_corpus), "--out", str(out), *TINY]
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (out / "model.pt").is_file() and (out / "metrics.json").is_file()


def test_quiet_train_lora_prints_nothing_on_stderr(tiny_corpus: Path, tmp_path: Path) -> None:
    """`-q train lora` is silent on stderr unless it fails (torchao / torch pytree import
    warnings used to print), with a user's environment (no PYTHONWARNINGS)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    proc = subprocess.run(
        [sys.executable, "-m", "anyecg_edge.cli", "-q", "train", "lora", "--corpus",
         str(tiny_corpus), "--out", str(tmp_path / "run"), *TINY],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr == ""
