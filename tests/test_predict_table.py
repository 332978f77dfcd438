"""`predict`'s lab table as a user sees it: from a pipe or a narrow terminal (80 columns)
to a wide one, no lab name, number or call is cut to an ellipsis and no line is wider than
the console."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console
from test_stream import write_tiny_onnx

from anyecg_edge.cli import cli
from anyecg_edge.commands.predict import _prediction_table

# The catalog's longest names, one-sided reference ranges, and labs with and without a
# calibrated threshold.
LABS = ["mchc", "immature_granulocytes_abs", "esr", "troponin_i", "egfr", "potassium"]
THRESHOLDS = {"mchc": 0.4, "esr": 0.3, "potassium": 0.25}
WIDTHS = [80, 100, 120, 160, 200]


@pytest.fixture(scope="module")
def predicted(tmp_path_factory, shared_data) -> tuple[Path, dict]:
    """The tiny model's file and its `predict --json` result on MIT-BIH 100."""
    folder = tmp_path_factory.mktemp("table")
    model = write_tiny_onnx(folder / "tiny.onnx", labs=LABS)
    manifest = folder / "tiny.onnx.manifest.json"
    meta = json.loads(manifest.read_text())
    meta["thresholds"] = THRESHOLDS
    manifest.write_text(json.dumps(meta))
    args = ["predict", "--input", str(shared_data / "mitdb" / "100"), "--model", str(model)]
    res = CliRunner().invoke(cli, [*args, "--json", "-"])
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    # How the record was read travels with the result (here: which lead, and why).
    assert result["record_note"] == "lead MLII chosen automatically from MLII, V5"
    return model, result


@pytest.fixture(scope="module")
def prediction(predicted) -> dict:
    return predicted[1]


def _cells_shown_whole(text: str, result: dict) -> None:
    assert "…" not in text
    flat = " ".join(text.split())  # a wrapped name reads whole once the columns' spaces go
    for lab in result["labs"].values():
        for word in lab["display_name"].split():
            assert word in flat, word
        assert f"{lab['probability']:.3f}" in text
        assert lab["status"] in flat


@pytest.mark.parametrize("width", [80, 200])
def test_predict_prints_every_cell_whole(predicted, shared_data, width):
    """The command itself, at the width a pipe gives (80) and a wide terminal's."""
    model, prediction = predicted
    args = ["predict", "--input", str(shared_data / "mitdb" / "100"), "--model", str(model)]
    res = CliRunner(env={"COLUMNS": str(width)}).invoke(cli, args)
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert max(len(line) for line in lines) <= width
    _cells_shown_whole(res.stdout, prediction)
    assert "not calibrated" in " ".join(res.stdout.split())  # the labs without a threshold
    assert "mm/h" in res.stdout and "≥60" in res.stdout and "≤0.04" in res.stdout


@pytest.mark.parametrize("width", WIDTHS)
def test_the_table_fits_every_width_with_intervals(prediction, width):
    """With the interval column of a calibrated model (level and n as a manifest's
    bootstrap gives them) the table still fits 80 columns without cutting a cell."""
    result = json.loads(json.dumps(prediction))
    result["model"]["interval"] = {"level": 0.9, "n": 32}
    for lab in result["labs"].values():
        p = lab["probability"]
        lab["interval"] = [max(p - 0.05, 0.0), min(p + 0.05, 1.0)]
    console = Console(record=True, width=width, file=io.StringIO(), color_system=None)
    console.print(_prediction_table(result, console))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= width
    _cells_shown_whole(text, result)
    for lab in result["labs"].values():
        low, high = lab["interval"]
        assert f"{low:.2f}–{high:.2f}" in text
    assert "90% interval" in text
    # Reference ranges are in the table at every width: beside the name or in their column.
    assert re.search(r"32–36", text) and "mmol/L" in text
