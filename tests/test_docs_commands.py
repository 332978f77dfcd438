"""Every documented shell command runs as written (issue 13 item 1).

The commands are parsed from the docs themselves (every ```bash / sh / shell / console block
of DOCS, backslash continuations joined, comments dropped), so editing a doc changes what
runs here. Each command must match exactly one row of RULES:

* ``run``: as written, in a work folder laid out like the docs assume (``runs/``,
  ``exports/``, ``corpus`` there; ``/data/mc-med`` and ``/data/mcmed_corpus`` mapped to a tiny
  synthetic cohort and its corpus, ``1_lead_ECGFounder.pth`` a tiny checkpoint in the
  authors' format);
* ``stand-in``: the same command line with the parts this machine cannot do replaced,
  each replacement said in the row (GPUs -> CPU and 2 gloo processes, sizes -> tiny, a
  real wearable -> the simulated one of the same family, a network install -> its check);
* ``skip``: hardware or network only, with the reason (printed in the tally).

A command that matches no row fails the test (a new block cannot go untested) and a row that
matches no command fails too (a removed block leaves no stale excuse). The Python block is
run by tests/test_api.py; untagged blocks that show an ``anyecg-edge`` synopsis are checked
option by option against the command's own parameters.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomllib

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCS = (
    "README.md",
    "benchmarks/README.md",
    "benchmarks/target_hardware.md",
    "firmware_bridge/PROFILE.md",
    "quantization/README.md",
)
BIN = Path(sys.executable).parent
TORCHRUN = BIN / "torchrun"


@dataclass(frozen=True)
class Command:
    doc: str
    line: int  # line of the block's opening fence
    text: str


def _blocks(doc: str) -> list[tuple[str, int, str]]:
    """(info string, line of the fence, body) of every fenced block of ``doc``."""
    text = (REPO_ROOT / doc).read_text()
    found = []
    for m in re.finditer(r"^```([\w+-]*)\n(.*?)^```", text, flags=re.S | re.M):
        found.append((m.group(1), text[: m.start()].count("\n") + 1, m.group(2)))
    return found


def _strip_comment(line: str) -> str:
    """Drop a ' # ...' tail outside quotes (the docs annotate commands that way)."""
    cut = line.find(" #")
    while cut != -1:
        if line[:cut].count('"') % 2 == 0 and line[:cut].count("'") % 2 == 0:
            return line[:cut].rstrip()
        cut = line.find(" #", cut + 1)
    return line.strip()


def shell_commands() -> list[Command]:
    out = []
    for doc in DOCS:
        for info, line, body in _blocks(doc):
            if info not in ("bash", "sh", "shell", "console"):
                continue
            joined = re.sub(r"\\\n\s*", " ", body)
            for raw in joined.splitlines():
                s = raw.strip()
                if s and not s.startswith("#"):
                    out.append(Command(doc, line, _strip_comment(s)))
    return out


def synopsis_blocks() -> list[tuple[str, int, str]]:
    """Untagged blocks that show an `anyecg-edge COMMAND` synopsis (not meant to run)."""
    return [
        (doc, line, re.sub(r"\s+", " ", body))
        for doc in DOCS
        for info, line, body in _blocks(doc)
        if info == "" and body.lstrip().startswith("anyecg-edge ")
    ]


# ------------------------------------------------------------------------------- the rules


def _sub(pairs: list[tuple]) -> Callable[[str], str]:
    """Apply (pattern, replacement[, optional]) rows; a non-optional row that no longer
    matches fails (the doc changed: the stand-in must be looked at again)."""

    def apply(text: str) -> str:
        for pattern, repl, *optional in pairs:
            new = re.sub(pattern, repl, text, count=1)
            assert new != text or optional, f"stand-in {pattern!r} no longer matches: {text}"
            text = new
        return text

    return apply


# GPU / size options of the full-scale lines -> the same options at CPU-test scale.
_TINY_TRAIN = [
    (r"--device cuda", "--device cpu"),
    (r"--precision bf16", "--precision fp32"),
    (r"$", " --max-steps 2 --batch-size 16 --eval-every 2 --log-every 1 --threads 1"),
]
_TORCHRUN = [(r"^torchrun --nproc_per_node 8 ", "torchrun --standalone --nproc_per_node 2 ")]
_LORA = (
    _TORCHRUN
    + [
        (r" --compile", ""),
        (r"--batch-size 8192 ", ""),
        (r"--workers 8 ", "--workers 0 "),
        (r"--epochs 10", "--epochs 1"),
    ]
    + _TINY_TRAIN
)
_DISTILL = _TORCHRUN + _TINY_TRAIN
_EVALUATE = [(r"--device cuda", "--device cpu --bootstrap 20 --threads 1 --min-visits 1")]
_SIM_STREAM = [
    (r"--source (polar|movesense):[0-9A-F:]{17}", r"--source sim-\1:RECORD"),
    (r"$", " --speed 50 --duration 12 --no-live --threads 1"),
]
_ON_DEVICE = [
    (r"^(THREADS=\d+ )?", "ITERATIONS=3 THREADS=1 "),
    (r"COMPARE=bench_pi5_old/", "COMPARE=bench_pi5_4threads/", "optional"),
]

#: (regex on the documented command, kind, stand-in (for "stand-in") or reason (for "skip")).
RULES: list[tuple[str, str, object]] = [
    (
        r"^make (demo|test)$",
        "stand-in",
        "make -n: the target exists and expands (running it installs .venv and runs the whole "
        "demo / suite; tests/test_demo.py runs `demo --quick`)",
    ),
    (
        r'^pip install "anyecg-edge\[[a-z,]+\]"$',
        "stand-in",
        "the extras named exist in pyproject.toml (installing needs the network; "
        "tests/test_install.py installs the device extras from this checkout)",
    ),
    (
        r"^anyecg-edge ble scan$",
        "skip",
        "needs a Bluetooth radio: no-adapter paths in tests/test_ble_failures.py, a scan over "
        "bumble's virtual link in tests/test_ble_sim.py",
    ),
    (r"^anyecg-edge stream --source (polar|movesense):\S+ (?!.*--hci)", "stand-in", _SIM_STREAM),
    (
        r"--hci usb:0",
        "skip",
        "needs a USB Bluetooth dongle (and the line elides its options with '...'); "
        "stream --hci over bumble is tests/test_ble_sim.py",
    ),
    (
        r"^anyecg-edge data build --mcmed /data/mc-med ",
        "stand-in",
        [(r"--workers 32", "--workers 1")],
    ),
    (r"^torchrun .* -m anyecg_edge\.cli train lora ", "stand-in", _LORA),
    (r"^torchrun .* -m anyecg_edge\.cli train distill ", "stand-in", _DISTILL),
    (r"^anyecg-edge evaluate ", "stand-in", _EVALUATE),
    # A 2-step student's logits hardly depend on its input, so the relative parity gate
    # measures noise; trained students pass the default gate in test_demo / test_export.
    (r"^anyecg-edge export --model runs/student ", "stand-in", [(r"$", " --allow-degraded")]),
    (
        r"^anyecg-edge bench --models teacher=",
        "stand-in",
        [(r"$", " --quick --iterations 3 --warmup 1 --threads 1 --stream-s 0")],
    ),
    (r"^scp ", "skip", "copies to a Raspberry Pi over the network"),
    (r"^cd anyecg$", "stand-in", "the folder scp made: run_on_device.sh and exports/ here"),
    (
        r"^INSTALL=1 ",
        "skip",
        "INSTALL=1 pip-installs anyecg-edge from PyPI (network); the same script without it "
        "runs in the next two lines",
    ),
    (r"^(THREADS|COMPARE)=\S+ \./run_on_device\.sh exports/", "stand-in", _ON_DEVICE),
    (r"^adb ", "skip", "needs an Android phone over adb"),
]

_KIND = {"run": "run", "stand-in": "stood in", "skip": "skipped"}


def classify(cmd: Command) -> tuple[str, object, int]:
    hits = [(i, kind, arg) for i, (pat, kind, arg) in enumerate(RULES) if re.search(pat, cmd.text)]
    assert len(hits) == 1, (
        f"{cmd.doc}:{cmd.line}: `{cmd.text}` matches {len(hits)} rows of RULES (expected one: "
        "add a row saying how this command runs here, or why it cannot)"
    )
    i, kind, arg = hits[0]
    return kind, arg, i


# ------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """The folder the docs' relative paths live in, plus the stand-ins for /data/..."""
    import torch
    from anyecg_edge.training.data import synth_cohort
    from anyecg_edge.training.ecgfounder import save_authors_format
    from anyecg_edge.training.models.registry import create_model

    root = tmp_path_factory.mktemp("docs")
    synth_cohort(
        root / "mc-med", 60, seed=3, segments_per_visit=(1, 1), segment_s=(20.0, 30.0),
        defects=False,
    )  # fmt: skip
    torch.manual_seed(0)
    save_authors_format(create_model("net1d-tiny", n_classes=150), root / "1_lead_ECGFounder.pth")
    (root / "corpus").symlink_to(root / "mcmed_corpus")  # target_hardware.md's `--calib corpus`
    shutil.copy(REPO_ROOT / "benchmarks" / "run_on_device.sh", root / "run_on_device.sh")
    return root


def _paths(text: str, work: Path) -> str:
    record = next(iter(sorted((work / "mc-med").rglob("*.hea")))).with_suffix("")
    return (
        text.replace("/data/mc-med", str(work / "mc-med"))
        .replace("/data/mcmed_corpus", str(work / "mcmed_corpus"))
        .replace("sim-polar:RECORD", f"sim-polar:{record}")
        .replace("sim-movesense:RECORD", f"sim-movesense:{record}")
    )


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # anyecg-edge, torchrun as a user has
    env.setdefault("PYTHONWARNINGS", "ignore")
    env["OMP_NUM_THREADS"] = "1"  # 2 shared cores: one thread per process
    return env


def _bash(script: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", "set -e\n" + script], cwd=cwd, env=_env(), capture_output=True,
        text=True, timeout=timeout,
    )  # fmt: skip


def _run(text: str, cwd: Path) -> subprocess.CompletedProcess:
    """A plain `anyecg-edge ARGS` line runs in this process (the console script's own entry,
    as the demo runs its stages: no fresh interpreter importing torch for every line); a line
    with a launcher, variables or a script runs in bash."""
    if not text.startswith("anyecg-edge ") or re.search(r"[|;&<>$`]", text):
        return _bash(text, cwd, timeout=600)
    from click.testing import CliRunner

    from anyecg_edge.cli import cli

    before = Path.cwd()
    os.chdir(cwd)
    try:
        res = CliRunner().invoke(cli, shlex.split(text)[1:], env={"OMP_NUM_THREADS": "1"})
    finally:
        os.chdir(before)
    return subprocess.CompletedProcess(text, res.exit_code, res.stdout, res.stderr)


# ------------------------------------------------------------------------------- the tests


def test_every_shell_command_has_exactly_one_rule_and_every_rule_a_command() -> None:
    commands = shell_commands()
    assert len(commands) >= 20, f"parsed only {len(commands)} commands: is the parser broken?"
    used = {classify(cmd)[2] for cmd in commands}
    stale = [RULES[i][0] for i in range(len(RULES)) if i not in used]
    assert not stale, f"RULES rows that match no documented command any more: {stale}"


def test_synopsis_blocks_name_only_real_options() -> None:
    """quantization/README.md's `anyecg-edge export ...` synopsis: every --option it shows is
    one of the command's own (a renamed option would leave the doc lying)."""
    from anyecg_edge.cli import cli

    blocks = synopsis_blocks()
    assert blocks, "no synopsis block found (quantization/README.md has one)"
    for doc, line, body in blocks:
        words = body.split()
        cmd = cli
        for w in words[1:]:
            if w.startswith("-") or not hasattr(cmd, "commands") or w not in cmd.commands:
                break
            cmd = cmd.commands[w]
        known = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
        shown = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", body))
        assert shown, f"{doc}:{line}: no options in the synopsis"
        assert shown <= known, f"{doc}:{line}: options that `{cmd.name}` lacks: {shown - known}"


@pytest.mark.slow
@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed in this venv")
def test_every_documented_shell_command_runs(work: Path) -> None:
    """Runs every command in dependency order (the MC-MED recipe first: its run folders and
    exports are what the streaming and on-device commands use) and prints the tally."""
    commands = shell_commands()
    first = r"^(anyecg-edge (data build|evaluate|export|bench) |torchrun )"
    recipe = [c for c in commands if re.search(first, c.text)]
    ordered = recipe + [c for c in commands if c not in recipe]
    tally: dict[str, list[str]] = {"run": [], "stood in": [], "skipped": []}
    seen: dict[str, str] = {}
    cwd = work
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    extras = set(pyproject["project"]["optional-dependencies"])
    for cmd in ordered:
        kind, arg, _ = classify(cmd)
        where = f"{cmd.doc}:{cmd.line} `{cmd.text[:90]}`"
        if kind == "skip":
            tally["skipped"].append(f"{where}: {arg}")
            continue
        if cmd.text.startswith("make "):
            proc = _bash(f"make -n {cmd.text.split()[1]}", REPO_ROOT, timeout=60)
            assert proc.returncode == 0, f"{where}: {proc.stderr[-1500:]}"
            tally["stood in"].append(f"{where}: {arg}")
            continue
        if cmd.text.startswith("pip install"):
            named = set(re.search(r"\[([a-z,]+)\]", cmd.text).group(1).split(","))
            assert named <= extras, f"{where}: extras {named - extras} not in pyproject.toml"
            tally["stood in"].append(f"{where}: {arg}")
            continue
        if cmd.text == "cd anyecg":
            cwd = work  # the folder holding run_on_device.sh and exports/ (see the fixture)
            tally["stood in"].append(f"{where}: {arg}")
            continue
        text = _sub(arg)(cmd.text) if isinstance(arg, list) else cmd.text
        text = _paths(text, work)
        # target_hardware.md's `--calib corpus` is the README's corpus (a link to it here).
        key = " ".join(text.replace(" corpus ", f" {work / 'mcmed_corpus'} ").split())
        if key in seen:  # target_hardware.md repeats README's export lines
            tally["run" if kind == "run" else "stood in"].append(
                f"{where}: same line as {seen[key]}"
            )
            continue
        seen[key] = where
        t0 = time.perf_counter()
        proc = _run(text, cwd)
        assert proc.returncode == 0, (
            f"{where} failed (exit {proc.returncode}) as run here:\n  {text}\n"
            f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        )
        note = f"{where} ({time.perf_counter() - t0:.1f} s)"
        tally["run" if kind == "run" else "stood in"].append(
            note + ("" if kind == "run" else f" as: {text[:160]}")
        )
        _check_outputs(cmd, work)
    counts = {k: len(v) for k, v in tally.items()}
    print(f"\ndocs shell commands: {json.dumps(counts)}")
    for k, rows in tally.items():
        for row in rows:
            print(f"  {k}: {row}")
    assert counts["run"] + counts["stood in"] >= 15 and counts["skipped"] <= 8


def _check_outputs(cmd: Command, work: Path) -> None:
    """What each documented step promises to leave behind (not only exit 0)."""
    t = cmd.text
    if "train lora" in t:
        run = work / "runs" / "lora_ecgfounder"
        assert (run / "model.pt").is_file() and (run / "merged.pth").is_file(), t
        assert (run / "train_config.json").is_file(), t
    elif "train distill" in t:
        assert (work / "runs" / "student" / "model.pt").is_file(), t
    elif t.startswith("anyecg-edge evaluate"):
        out = Path(re.search(r"--json (\S+)", t).group(1))
        assert "summary" in json.loads((work / out).read_text()), t
    elif t.startswith("anyecg-edge export"):
        out = work / re.search(r"--out (\S+)", t).group(1)
        assert out.is_file() and Path(f"{out}.manifest.json").is_file(), t
    elif "data build" in t:
        assert (work / "mcmed_corpus" / "index.parquet").is_file(), t
    elif t.startswith("anyecg-edge bench"):
        assert (work / "bench_out" / "report.html").is_file(), t


def test_demo_gpu_line_is_the_readme_line_that_runs() -> None:
    """The demo prints a torchrun line (`demo.GPU_LINE`); it must be the README's recipe (run
    above), option for option, so a line the demo shows is one that was run."""
    from anyecg_edge.demo import GPU_LINE

    readme = [c.text for c in shell_commands() if c.doc == "README.md" and "train lora" in c.text]
    assert len(readme) == 1
    assert set(shlex.split(GPU_LINE)) <= set(shlex.split(readme[0])), (GPU_LINE, readme[0])


def test_ble_simulate_advice_line_runs(tmp_path: Path, shared_data: Path) -> None:
    """`ble simulate` prints 'stream it with: anyecg-edge stream ... --model MODEL': that
    line, with MODEL filled in and a duration, streams from it."""
    import socket

    from test_stream import write_tiny_onnx

    model = write_tiny_onnx(tmp_path / "tiny.onnx")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sim = subprocess.Popen(
        [str(BIN / "anyecg-edge"), "ble", "simulate", "--profile", "polar", "--record",
         str(shared_data / "mitdb" / "100"), "--serve", f"tcp-server:_:{port}", "--speed", "5",
         "--duration", "300"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
    )  # fmt: skip
    try:
        ready = sim.stdout.readline()
        advice = ready.split("stream it with: ", 1)[1].strip()
        assert advice.startswith("anyecg-edge stream ") and advice.endswith("--model MODEL")
        line = advice.replace("MODEL", shlex.quote(str(model)))
        line += f" --duration 6 --no-live --threads 1 --jsonl {tmp_path / 's.jsonl'}"
        proc = _bash(line, tmp_path, timeout=120)
        assert proc.returncode == 0, f"{line}\n{proc.stderr[-2000:]}"
        summary = json.loads((tmp_path / "s.jsonl").read_text().splitlines()[-1])["summary"]
        assert summary["windows"] >= 1
    finally:
        sim.send_signal(2)
        sim.communicate(timeout=20)


def _table_commands(doc: str) -> list[str]:
    """The backticked commands of a Markdown table's last column ("run")."""
    rows = [ln for ln in (REPO_ROOT / doc).read_text().splitlines() if ln.startswith("| `")]
    found = []
    for row in rows:
        last = row.rstrip(" |").rsplit("|", 1)[-1]
        found += [c for c in re.findall(r"`([^`]+)`", last) if re.match(r"(python|bash|anyecg)", c)]
    return found


def test_benchmarks_table_commands_name_things_that_exist() -> None:
    """benchmarks/README.md's "run" column (no shell block there): each module answers
    --help, each script parses (bash -n), each `anyecg-edge` line parses with the CLI. Running
    them is a job of its own (a 24 h soak, GPUs), measured in the README's tables."""
    import click

    from anyecg_edge.cli import cli

    commands = _table_commands("benchmarks/README.md")
    assert len(commands) >= 7, commands
    for text in commands:
        words = shlex.split(text)
        if words[:2] == ["python", "-m"]:
            proc = subprocess.run(
                [sys.executable, "-m", words[2], "--help"], capture_output=True, text=True,
                env=_env(), timeout=120,
            )  # fmt: skip
            assert proc.returncode == 0, f"{text}: {proc.stderr[-1000:]}"
        elif words[0] == "bash":
            script = REPO_ROOT / words[1]
            assert script.is_file(), text
            assert subprocess.run(["bash", "-n", str(script)]).returncode == 0, text
        else:
            assert words[0] == "anyecg-edge", text
            cmd, rest = cli, words[1:]
            while rest and isinstance(cmd, click.Group) and rest[0] in cmd.commands:
                cmd, rest = cmd.commands[rest[0]], rest[1:]
            cmd.make_context(cmd.name, rest)  # the command's own options parse (else raises)
