"""The CLI spine: subcommands, data commands, predict on real records, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from anyecg_edge.training.ecgfounder import save_authors_format
from anyecg_edge.training.models import create_model
from anyecg_edge.training.torch_model import TorchModel, save_model_checkpoint
from click.testing import CliRunner

from anyecg_edge import RESEARCH_USE_NOTE, __version__
from anyecg_edge.cli import cli
from anyecg_edge.labs import load_catalog
from anyecg_edge.runtime import ModelMetadata

SUBCOMMANDS = ("data", "train", "evaluate", "export", "predict", "stream", "ble", "bench", "demo")


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def student_checkpoint(tmp_path_factory) -> Path:
    labs = list(load_catalog().keys)
    torch.manual_seed(0)
    model = create_model("student-s", n_classes=len(labs))
    path = tmp_path_factory.mktemp("ckpt") / "student.pt"
    return save_model_checkpoint(
        path,
        model,
        arch="student-s",
        model_kwargs={"n_classes": len(labs)},
        metadata=ModelMetadata(labs=labs, thresholds={labs[0]: 0.9}),
    )


def test_help_lists_every_subcommand() -> None:
    code, out = run("--help")
    assert code == 0
    for name in SUBCOMMANDS:
        assert f"  {name} " in out
    assert "never diagnoses" in " ".join(out.split())


def test_help_does_not_import_numpy() -> None:
    """`--help` stays light: command modules import numpy (and the runtimes) only when run."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from anyecg_edge.cli import cli\n"
        "try:\n"
        "    cli.main(['--help'], standalone_mode=False)\n"
        "finally:\n"
        "    print('numpy' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False", out.stdout + out.stderr


def test_version() -> None:
    code, out = run("--version")
    assert code == 0 and __version__ in out


def test_predict_json_on_real_record(student_checkpoint: Path, shared_data: Path) -> None:
    record = shared_data / "cinc2021" / "E07500"
    code, out = run(
        "-q",
        "predict",
        "--model",
        str(student_checkpoint),
        "--input",
        str(record),
        "--lead",
        "I",
        "--json",
    )
    assert code == 0, out
    result = json.loads(out)
    labs = load_catalog()
    assert result["status"] == "ok" and result["lead"] == "I" and result["fs"] == 500
    assert set(result["labs"]) == set(labs.keys)
    potassium = result["labs"]["potassium"]
    assert 0.0 <= potassium["probability"] <= 1.0
    assert potassium["unit"] == labs.by_key("potassium").unit
    assert potassium["spread"]["n_windows"] == 1
    # Only the lab with a threshold is called; the others say so instead of guessing.
    assert potassium["abnormal"] is None and potassium["status"] == "not calibrated"
    assert potassium["threshold"] is None
    assert result["note"] == RESEARCH_USE_NOTE
    assert result["model"]["calibrated"] is False
    # The per-lab threshold from the checkpoint's metadata is the one applied.
    first = result["labs"][labs[0].key]
    assert first["threshold"] == 0.9 and first["abnormal"] == (first["probability"] >= 0.9)


def test_predict_matches_the_torch_model_directly(
    student_checkpoint: Path, shared_data: Path
) -> None:
    """The CLI's number is the model's output on the preprocessed window, nothing else."""
    from anyecg_edge.io import read_record
    from anyecg_edge.signal import preprocess

    rec = read_record(shared_data / "mitdb" / "100", lead="MLII")
    model = TorchModel.load(student_checkpoint)
    window = rec.signal_mv[: int(10 * rec.fs)]
    expected = model.predict(preprocess(window, rec.fs)[None, None, :])[0]
    code, out = run(
        "-q",
        "predict",
        "--model",
        str(student_checkpoint),
        "--input",
        str(shared_data / "mitdb" / "100"),
        "--lead",
        "MLII",
        "--json",
    )
    assert code == 0, out
    result = json.loads(out)
    assert result["fs"] == 360 and result["quality"]["windows_total"] == 180
    first_window_only = np.array([result["labs"][k]["probability"] for k in model.labs])
    # The record estimate averages 180 windows; check the first window through the same path.
    assert first_window_only.shape == expected.shape
    from anyecg_edge.predict import predict_record

    one = predict_record(
        type(rec)(signal_mv=window, fs=rec.fs, lead=rec.lead, source=rec.source), model
    )
    got = np.array([one.labs[k]["probability"] for k in model.labs])
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_predict_mains_none_skips_the_notch(student_checkpoint: Path, shared_data: Path) -> None:
    """`--mains none` reaches predict_record as mains_hz=None (no notch), not float('none')."""
    from anyecg_edge.io import read_record
    from anyecg_edge.predict import predict_record

    record = shared_data / "cinc2021" / "E07500"
    code, out = run(
        "-q",
        "predict",
        "--model",
        str(student_checkpoint),
        "--input",
        str(record),
        "--lead",
        "I",
        "--mains",
        "none",
        "--json",
    )
    assert code == 0, out
    result = json.loads(out)
    assert result["status"] == "ok"
    model = TorchModel.load(student_checkpoint)
    rec = read_record(record, lead="I")
    expected = predict_record(rec, model, mains_hz=None)
    assert {k: v["probability"] for k, v in result["labs"].items()} == {
        k: v["probability"] for k, v in expected.labs.items()
    }


def test_predict_table_says_research_use(student_checkpoint: Path, shared_data: Path) -> None:
    code, out = run(
        "-q",
        "predict",
        "--model",
        str(student_checkpoint),
        "--input",
        str(shared_data / "cinc2021" / "E07501"),
    )
    assert code == 0, out
    assert "Research use only" in out and "not calibrated" in out


def test_predict_authors_checkpoint(tmp_path: Path, shared_data: Path) -> None:
    torch.manual_seed(1)
    path = save_authors_format(
        create_model("ecgfounder", n_classes=150), tmp_path / "1_lead_ECGFounder.pth"
    )
    code, out = run(
        "-q",
        "predict",
        "--model",
        str(path),
        "--input",
        str(shared_data / "cinc2021" / "E07502"),
        "--lead",
        "I",
        "--json",
    )
    assert code == 0, out
    result = json.loads(out)
    assert len(result["labs"]) == 150 and "ecgfounder_class_000" in result["labs"]


def _write_csv(path: Path, x: np.ndarray) -> Path:
    np.savetxt(path, x, header="I", comments="")
    return path


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing_file", "no such file"),
        ("wrong_lead", "available leads"),
        ("too_short", "one window needs 10.00 s"),
        ("nan_filled", "all samples NaN"),
        ("wrong_fs", "header says 500 Hz"),
        ("csv_without_fs", "pass fs"),
        ("missing_model", "model file not found"),
        ("not_a_model", "not a loadable torch checkpoint"),
    ],
)
def test_bad_inputs_get_one_line_errors(
    case: str, expected: str, tmp_path: Path, student_checkpoint: Path, shared_data: Path
) -> None:
    record = str(shared_data / "cinc2021" / "E07500")
    model = str(student_checkpoint)
    extra: list[str] = []
    if case == "missing_file":
        record = str(tmp_path / "absent.hea")
    elif case == "wrong_lead":
        extra = ["--lead", "V9"]
    elif case == "too_short":
        record = str(_write_csv(tmp_path / "short.csv", np.random.default_rng(0).normal(size=2500)))
        extra = ["--fs", "500"]
    elif case == "nan_filled":
        record = str(_write_csv(tmp_path / "nan.csv", np.full(6000, np.nan)))
        extra = ["--fs", "500"]
    elif case == "wrong_fs":
        extra = ["--fs", "360"]
    elif case == "csv_without_fs":
        record = str(_write_csv(tmp_path / "x.csv", np.zeros(6000)))
    elif case == "missing_model":
        model = str(tmp_path / "absent.pt")
    elif case == "not_a_model":
        model = str(tmp_path / "junk.pt")
        Path(model).write_bytes(b"not a checkpoint")
    code, out = run("-q", "predict", "--model", model, "--input", record, *extra)
    assert code == (5 if case.endswith("model") else 1)  # model errors: exit 5, input: 1
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1, out
    assert expected in lines[0] and "Traceback" not in out


def test_data_synth_then_build(tmp_path: Path) -> None:
    cohort, corpus = tmp_path / "cohort", tmp_path / "corpus"
    code, out = run(
        "data",
        "synth",
        "--out",
        str(cohort),
        "--visits",
        "12",
        "--seed",
        "3",
        "--segments-per-visit",
        "1",
        "2",
        "--segment-s",
        "40",
        "60",
    )
    assert code == 0, out
    assert "planted labs: POTASSIUM" in out
    truth = json.loads((cohort / "truth.json").read_text())
    assert "POTASSIUM" in truth["planted_labs"]
    code, out = run(
        "data",
        "build",
        "--mcmed",
        str(cohort),
        "--out",
        str(corpus),
        "--no-progress",
        "--before",
        "30m",
        "--after",
        "15m",
    )
    assert code == 0, out
    manifest = json.loads((corpus / "manifest.json").read_text())
    assert f"{manifest['counts']['windows']} windows" in out
    assert (corpus / "index.parquet").is_file()
    code, out = run(
        "data",
        "build",
        "--mcmed",
        str(cohort),
        "--out",
        str(corpus),
        "--no-progress",
        "--before",
        "soon",
    )
    # A usage error, found when the line is parsed (issue 14): exit 2, the option named.
    assert code == 2 and "Invalid value for '--before'" in out and "not understood" in out
    assert "Traceback" not in out
