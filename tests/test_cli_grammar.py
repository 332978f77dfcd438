"""One CLI grammar (issue 13 items 3, 4, 7): the same `--json PATH|-` on every command that
produces a result, one `--threads` / `--workers` default, help on every option, the data
folder from one place (`--data-dir` / `ANYECG_DATA`, never the current directory),
`stream --units` for file sources, and `train ... --config RUN/train_config.json`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner

from anyecg_edge.cli import cli

REPO_ROOT = Path(__file__).resolve().parents[1]

#: Every command that produces a result: each takes `--json PATH|-`.
RESULT_COMMANDS = (
    "data synth", "data build", "train lora", "train distill", "evaluate", "export", "tflm",
    "predict", "stream", "ble scan", "bench",
)  # fmt: skip


def _walk(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, cmd in sorted(group.commands.items()):
        path = (*prefix, name)
        if isinstance(cmd, click.Group):
            yield from _walk(cmd, path)
        else:
            yield " ".join(path), cmd


def _command(path: str) -> click.Command:
    cmd: click.Command = cli
    for word in path.split():
        cmd = cmd.commands[word]  # type: ignore[attr-defined]
    return cmd


def test_every_option_of_every_command_has_help() -> None:
    missing = [
        f"{path} {param.opts[0]}"
        for path, cmd in [("(root)", cli), *_walk(cli)]
        for param in cmd.params
        if isinstance(param, click.Option) and not (param.help or "").strip()
    ]
    assert not missing, f"options without help text: {missing}"


@pytest.mark.parametrize("path", RESULT_COMMANDS)
def test_json_means_the_same_on_every_result_command(path: str) -> None:
    (param,) = [p for p in _command(path).params if "--json" in p.opts]
    assert param.name == "json_out" and param.flag_value == "-" and param.default is None
    assert param.metavar == "PATH|-" and "'-' or a bare --json: stdout" in param.help
    # ...and no command writes a result some other way: every --json is this one.
    others = [p for path2, cmd in _walk(cli) for p in cmd.params if "--json" in p.opts]
    assert all(p.metavar == "PATH|-" for p in others)
    assert {
        path2 for path2, cmd in _walk(cli) if any("--json" in p.opts for p in cmd.params)
    } == set(RESULT_COMMANDS)


def test_threads_and_workers_default_all_cores() -> None:
    threads = [(path, p) for path, cmd in _walk(cli) for p in cmd.params if "--threads" in p.opts]
    assert {path for path, _ in threads} >= {"predict", "stream", "bench", "evaluate", "train lora"}
    for path, p in threads:
        assert p.default is None and "default: all cores" in p.help, path
    (workers,) = [p for p in _command("data build").params if "--workers" in p.opts]
    assert workers.default is None and "all cores" in workers.help
    readme = (REPO_ROOT / "README.md").read_text()
    assert "(CPU, all cores)" in readme  # the data build step's claim, now the default


def test_json_dash_is_one_document_on_stdout_and_a_path_a_file(tmp_path: Path) -> None:
    args = ["data", "synth", "--visits", "3", "--segments-per-visit", "1", "1",
            "--segment-s", "12", "12", "--no-defects"]  # fmt: skip
    res = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "a"), "--json", "-"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)  # stdout: nothing but the JSON
    assert doc["visits"] == 3 and "planted_labs" in doc["truth"]
    assert "wrote 3 visits" in res.stderr  # the human lines went to stderr
    out = tmp_path / "synth.json"
    res = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "b"), "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["out"] == str(tmp_path / "b")
    assert "wrote 3 visits" in res.stdout and res.stderr == ""


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_an_unwritable_json_path_is_named_as_given(tmp_path: Path) -> None:
    """/proc takes no new file (as a read-only mount would not): the one line names the
    path the user typed, not the hidden temporary file the write goes through."""
    target = "/proc/anyecg_edge_result.json"
    args = ["data", "synth", "--visits", "3", "--segments-per-visit", "1", "1",
            "--segment-s", "12", "12", "--no-defects", "--out", str(tmp_path / "a")]  # fmt: skip
    res = subprocess.run([sys.executable, "-m", "anyecg_edge", "-q", *args, "--json", target],
                         capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)  # fmt: skip
    assert res.returncode != 0
    assert res.stderr.splitlines() == [
        f"Error: {target}: cannot write here: No such file or directory [errno ENOENT]"
    ], res.stderr


def test_stream_refuses_jsonl_and_json_both_on_stdout(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        cli, ["stream", "--source", f"file:{tmp_path / 'r.csv'}", "--model",
              str(tmp_path / "m.onnx"), "--jsonl", "-", "--json", "-"],
    )  # fmt: skip
    assert res.exit_code == 2
    assert "--jsonl - and --json - both write to stdout" in res.stderr


def test_data_folder_from_one_place_not_the_current_directory(tmp_path: Path) -> None:
    code = (
        "from anyecg_edge.datadir import data_dir; from anyecg_edge.demo import find_shared_data;"
        "print(data_dir()); print(find_shared_data())"
    )
    env = {k: v for k, v in os.environ.items() if k != "ANYECG_DATA"}
    run = lambda **e: subprocess.run(  # noqa: E731
        [sys.executable, "-c", code], cwd=tmp_path, env={**env, **e},
        capture_output=True, text=True, check=True,
    ).stdout.split("\n")  # fmt: skip
    default = run()[0]
    assert default == str(REPO_ROOT.parent / "shared" / "data")  # beside the checkout, not cwd
    got = run(ANYECG_DATA=str(tmp_path / "elsewhere"))
    assert got[0] == str(tmp_path / "elsewhere") and got[1] == "None"
    # bench and demo take --data-dir with the same variable.
    for path in ("bench", "demo"):
        (p,) = [p for p in _command(path).params if "--data-dir" in p.opts]
        assert p.envvar == "ANYECG_DATA"
    folders = ("anyecg_edge", "training", "quantization", "benchmarks", "firmware_bridge")
    files = [f for d in folders for f in (REPO_ROOT / d).rglob("*.py")]
    source = "".join(f.read_text() for f in [*files, REPO_ROOT / "tests" / "recordings.py"])
    assert 'Path.cwd().parent / "shared"' not in source
    assert source.count('/ "shared" / "data"') == 1  # anyecg_edge/datadir.py only


def _csv(path: Path, values: np.ndarray) -> Path:
    path.write_text("\n".join(f"{v:.9g}" for v in values) + "\n")
    return path


@pytest.mark.device
def test_stream_units_for_a_file_source(tmp_path: Path, shared_data: Path) -> None:
    from test_stream import write_tiny_onnx

    from anyecg_edge.io import read_record

    model = write_tiny_onnx(tmp_path / "tiny.onnx")
    mv = read_record(shared_data / "mitdb" / "100").signal_mv[: 360 * 25]

    def stream(path: Path, *extra: str):
        return CliRunner().invoke(
            cli, ["stream", "--source", f"file:{path}", "--model", str(model), "--fs", "360",
                  "--speed", "0", "--hop", "5", "--threads", "1", "--jsonl", "-", *extra],
        )  # fmt: skip

    def probs(res) -> list[dict]:
        assert res.exit_code == 0, res.output
        rows = [json.loads(x) for x in res.stdout.splitlines()]
        return [v for r in rows if "window_labs" in r for _, v in sorted(r["window_labs"].items())]

    ref = probs(stream(_csv(tmp_path / "mv.csv", mv)))
    uv = _csv(tmp_path / "uv.csv", mv.astype(np.float64) * 1000)
    assert ref and probs(stream(uv, "--units", "uV")) == pytest.approx(ref, abs=2e-4)
    # A sim source reads its record itself at the wearable's unit: --units is refused there.
    res = CliRunner().invoke(
        cli, ["stream", "--source", f"sim-polar:{uv}", "--model", str(model), "--units", "uV"]
    )
    assert res.exit_code == 1 and res.output.count("\n") == 1 and "--units" in res.output


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory) -> Path:
    from anyecg_edge.training.data import build_corpus, synth_cohort

    cohort = tmp_path_factory.mktemp("grammar_cohort")
    synth_cohort(cohort, 40, seed=3, segments_per_visit=(1, 1), segment_s=(15.0, 20.0))
    out = tmp_path_factory.mktemp("grammar_corpus")
    build_corpus(cohort, out, window_s=5.0, visits_per_unit=64, workers=1, progress=False)
    return out


def test_data_build_without_waveforms_or_windows_fails_in_one_line(tmp_path: Path) -> None:
    """An MC-MED folder without waveforms/, and one whose labs.csv has no rows: one line and
    a non-zero status (they exited 0 with an empty corpus marked done, or KeyError)."""
    from anyecg_edge.training.data import synth_cohort

    cohort = tmp_path / "c"
    synth_cohort(cohort, 4, seed=1, segments_per_visit=(1, 1), segment_s=(12.0, 12.0))
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("visits.csv", "labs.csv"):
        (bare / name).write_text((cohort / name).read_text())
    res = CliRunner().invoke(cli, ["data", "build", "--mcmed", str(bare), "--out",
                                   str(tmp_path / "k1"), "--workers", "1"])  # fmt: skip
    assert res.exit_code == 1
    assert res.stderr.splitlines() == [
        f"Error: {bare / 'waveforms'}: missing; an MC-MED folder holds visits.csv, labs.csv "
        "and waveforms/ (the lead-II WFDB records the windows are cut from)"
    ]
    (bare / "waveforms").symlink_to(cohort / "waveforms")
    header = (cohort / "labs.csv").read_text().splitlines()[0]
    (bare / "labs.csv").write_text(header + "\n")
    res = CliRunner().invoke(cli, ["data", "build", "--mcmed", str(bare), "--out",
                                   str(tmp_path / "k2"), "--workers", "1"])  # fmt: skip
    assert res.exit_code == 3, res.output
    assert res.stderr.splitlines()[-1].startswith(f"Error: corpus {tmp_path / 'k2'}: 0 windows: ")


TINY = ["--arch", "net1d-tiny", "--max-steps", "2", "--batch-size", "8", "--threads", "1",
        "--log-every", "1", "--eval-every", "2", "--lr", "0.002"]  # fmt: skip


def test_train_config_reruns_a_run_and_the_line_overrides(tiny_corpus: Path, tmp_path: Path):
    first = tmp_path / "r1"
    res = CliRunner().invoke(
        cli, ["-q", "train", "lora", "--corpus", str(tiny_corpus), "--out", str(first), *TINY,
              "--rank", "4", "--json", str(tmp_path / "r1.json")],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "r1.json").read_text())["steps"] == 2
    cfg = json.loads((first / "train_config.json").read_text())
    assert cfg["cli"]["command"] == "lora" and cfg["cli"]["options"]["rank"] == 4
    second = tmp_path / "r2"
    res = CliRunner().invoke(
        cli, ["-q", "train", "lora", "--config", str(first / "train_config.json"),
              "--out", str(second), "--max-steps", "1", "--threads", "1"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    again = json.loads((second / "train_config.json").read_text())
    a, b = dict(cfg["cli"]["options"]), dict(again["cli"]["options"])
    assert b.pop("max_steps") == 1 and a.pop("max_steps") == 2  # the line overrides the file
    assert a == b  # everything else is the first run's: same corpus, arch, rank, lr, ...
    assert again["train"]["lr"] == 0.002 and again["lora"]["rank"] == 4
    # An unknown key: one line naming it (and the file), exit 1, nothing trained.
    bad = tmp_path / "bad.json"
    cfg["cli"]["options"]["rnak"] = 8
    bad.write_text(json.dumps(cfg))
    res = CliRunner().invoke(
        cli, ["train", "lora", "--config", str(bad), "--out", str(tmp_path / "r3")]
    )
    assert res.exit_code == 1 and res.output.count("\n") == 1
    assert "unknown key 'rnak'" in res.output and str(bad) in res.output
    assert not (tmp_path / "r3" / "model.pt").exists()
    # A distill config is not a LoRA one.
    cfg["cli"] = {"command": "distill", "options": {}}
    bad.write_text(json.dumps(cfg))
    res = CliRunner().invoke(
        cli, ["train", "lora", "--config", str(bad), "--out", str(tmp_path / "r4")]
    )
    assert res.exit_code == 1 and "written by `train distill`" in res.output
    # A second run into a used --out replaced the first one's model.pt and metrics.json
    # and left its checkpoints for a later --resume to pick up: refused, nothing written.
    model_bytes = (first / "model.pt").read_bytes()
    res = CliRunner().invoke(
        cli, ["-q", "train", "lora", "--corpus", str(tiny_corpus), "--out", str(first), *TINY]
    )
    assert res.exit_code == 1
    assert res.stderr.strip().splitlines() == [
        f"Error: --out {first}: holds a training run (model.pt, checkpoints, "
        "train_config.json, metrics.json); pass --resume to continue it, or choose a new --out"
    ]
    assert (first / "model.pt").read_bytes() == model_bytes
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("mine")
    res = CliRunner().invoke(
        cli, ["-q", "train", "lora", "--corpus", str(tiny_corpus), "--out", str(other), *TINY]
    )
    assert res.exit_code == 1 and "is not empty (1 entries, e.g. 'todo.txt')" in res.stderr
    assert sorted(p.name for p in other.iterdir()) == ["todo.txt"]


def test_full_training_refuses_adapter_options(tmp_path: Path) -> None:
    """--full trains every weight: --rank and the other adapter options were ignored."""
    res = CliRunner().invoke(cli, ["train", "lora", "--full", "--rank", "4", "--alpha", "8",
                                   "--arch", "net1d-tiny", "--corpus", str(tmp_path),
                                   "--out", str(tmp_path / "r")])  # fmt: skip
    assert res.exit_code == 2
    assert "--rank, --alpha only apply to the LoRA adapter; --full trains every weight" in (
        res.stderr
    )
    assert not (tmp_path / "r").exists()


def test_train_config_paths_are_absolute(tmp_path: Path, monkeypatch) -> None:
    """The options a run records are rerun from anywhere: a corpus typed as "k1" is
    written as the folder it named then ("Directory 'k1' does not exist" from elsewhere)."""
    from anyecg_edge.commands._train_options import cli_options

    monkeypatch.chdir(tmp_path)
    opts = cli_options({"corpus": Path("k1"), "teacher": Path("runs/t1"), "rank": 4})
    assert opts == {"corpus": str(tmp_path / "k1"), "teacher": str(tmp_path / "runs/t1"),
                    "rank": 4}  # fmt: skip


def test_train_config_from_a_run_written_before_the_cli_section(
    tiny_corpus: Path, tmp_path: Path
) -> None:
    first = tmp_path / "r1"
    res = CliRunner().invoke(
        cli, ["-q", "train", "lora", "--corpus", str(tiny_corpus), "--out", str(first), *TINY]
    )
    assert res.exit_code == 0, res.output
    cfg = json.loads((first / "train_config.json").read_text())
    del cfg["cli"]  # as every run before this change wrote it
    legacy = tmp_path / "legacy.json"
    legacy.write_text(json.dumps(cfg))
    res = CliRunner().invoke(
        cli, ["-q", "train", "lora", "--config", str(legacy), "--out", str(tmp_path / "r2"),
              "--threads", "1"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    again = json.loads((tmp_path / "r2" / "train_config.json").read_text())
    assert again["train"] == cfg["train"] and again["arch"] == cfg["arch"]
    cfg["train"]["bogus_knob"] = 1
    legacy.write_text(json.dumps(cfg))
    res = CliRunner().invoke(
        cli, ["train", "lora", "--config", str(legacy), "--out", str(tmp_path / "r3")]
    )
    assert res.exit_code == 1 and "unknown key 'bogus_knob'" in res.output


def test_progress_is_off_without_a_terminal_and_reports_are_no_ops() -> None:
    from anyecg_edge.progress import progress_enabled, progress_session, report

    assert progress_enabled() is (sys.stderr.isatty())
    assert progress_enabled(no_progress=True) is False
    with progress_session(False):
        report("x", 1, 2)  # nothing open: a no-op, never an error
    report("x", 1, 2)

    # Through the real root: -q and --no-progress reach progress_enabled via ctx.obj.
    ctx = click.Context(cli, obj={"quiet": True})
    with ctx:
        assert progress_enabled() is False
    ctx = click.Context(cli, obj={"no_progress": True})
    with ctx:
        assert progress_enabled() is False


def test_progress_bar_draws_on_a_terminal_stderr_only(tmp_path: Path) -> None:
    """With stderr a terminal the bar (with ETA) is drawn there; stdout stays clean."""
    from tty_stderr import run_with_tty_stderr

    code = (
        "import time\n"
        "from anyecg_edge.progress import progress_enabled, progress_session, report\n"
        "assert progress_enabled()\n"
        "with progress_session(progress_enabled()):\n"
        "    for i in range(6):\n"
        "        report('train steps', i, 5); time.sleep(0.15)\n"
        "print('done')\n"
    )
    proc, text = run_with_tty_stderr(code)
    assert proc.returncode == 0 and proc.stdout == b"done\n"
    assert "train steps" in text and "ETA" in text and "5/5" in text
