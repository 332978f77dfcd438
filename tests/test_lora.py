"""LoRA on Net1D: the full 1-lead ECGFounder from an authors'-format checkpoint (trainable
share, adapter save/reload, merged == adapter model, base untouched), fused == peft's own
LoRA computation, target checks."""

from __future__ import annotations

import json

import pytest
import torch
from anyecg_edge.training.data import build_corpus, synth_cohort
from anyecg_edge.training.data.dataset import CorpusDataset
from anyecg_edge.training.ecgfounder import read_state_dict, save_authors_format
from anyecg_edge.training.lora import (
    FusedLoraConv1d,
    FusedLoraLinear,
    LoraError,
    LoraSettings,
    apply_lora,
    detect_net1d_arch,
    load_lora_model,
    max_rel_error,
    merged_copy,
    parameter_counts,
    parse_target_modules,
)
from anyecg_edge.training.models import create_model
from anyecg_edge.training.torch_model import load_model_checkpoint
from anyecg_edge.training.trainer import file_sha256
from click.testing import CliRunner
from peft.tuners.lora import layer as lora_layer
from safetensors.torch import load_file

from anyecg_edge.cli import cli


def _unfuse(model: torch.nn.Module) -> None:
    """Back to peft's own LoRA forward (base(x) + s * B(A(x))): the reference computation."""
    for m in model.modules():
        if type(m) is FusedLoraConv1d:
            m.__class__ = lora_layer.Conv1d
        elif type(m) is FusedLoraLinear:
            m.__class__ = lora_layer.Linear


@pytest.fixture(scope="module")
def micro_corpus(tmp_path_factory):
    """A few 2 s windows: enough for two steps and a val pass of the 31 M-param model."""
    root = tmp_path_factory.mktemp("micro_cohort")
    synth_cohort(root, 24, seed=2, segments_per_visit=(1, 1), segment_s=(10.0, 12.0), defects=False)
    out = tmp_path_factory.mktemp("micro_corpus")
    build_corpus(root, out, window_s=2.0, visits_per_unit=24, progress=False)
    return out


@pytest.fixture(scope="module")
def ecgfounder_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("ecgfounder", n_classes=150)
    path = tmp_path_factory.mktemp("ecgf") / "1_lead_ECGFounder.pth"
    save_authors_format(model, path, epoch=3, step=1000, val_auroc=0.9)
    return path


def test_full_ecgfounder_lora_from_authors_checkpoint(micro_corpus, ecgfounder_ckpt, tmp_path):
    digest = file_sha256(ecgfounder_ckpt)
    out = tmp_path / "run"
    n_val = len(CorpusDataset(micro_corpus, "val"))
    assert 1 <= n_val <= 24
    result = CliRunner().invoke(
        cli,
        [
            "train",
            "lora",
            "--init",
            str(ecgfounder_ckpt),
            "--corpus",
            str(micro_corpus),
            "--out",
            str(out),
            "--labs",
            "potassium,calcium,sodium",
            "--max-steps",
            "2",
            "--batch-size",
            "2",
            "--lr",
            "1e-2",
            "--warmup",
            "0",
            "--merge",
            "--threads",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("trainable parameters"))
    print(line)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["arch"] == "ecgfounder"  # detected from the checkpoint
    assert metrics["trainable_pct"] <= 3.0
    assert f"({metrics['trainable_pct']:.2f} %)" in line
    assert metrics["steps"] == 2

    # Adapter in peft's format; reloads onto the untouched base checkpoint.
    adapter = out / "adapter"
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 8 and cfg["modules_to_save"] == ["dense"]
    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    assert any("lora_A" in k for k in tensors) and any("dense" in k for k in tensors)
    assert file_sha256(ecgfounder_ckpt) == digest  # the base file is never rewritten
    model = load_lora_model(out)
    base_state, _ = read_state_dict(ecgfounder_ckpt)
    own = model.get_base_model().state_dict()
    for key, value in base_state.items():
        if key.startswith("dense."):
            continue  # the head is replaced by the lab head
        peft_key = key.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")
        tensor = own.get(key, own.get(peft_key))
        assert tensor is not None, key
        assert torch.equal(tensor, value), f"base weight {key} changed"
    lora_b = [v for k, v in tensors.items() if "lora_B" in k]
    assert any(float(v.abs().max()) > 0 for v in lora_b), "training did not move the adapter"

    # merged (plain model.pt and authors'-format merged.pth) == adapter model
    x = torch.stack([CorpusDataset(micro_corpus, "val")[i][0] for i in range(min(n_val, 2))])
    with torch.no_grad():
        fused = model(x)
        _unfuse(model)
        reference = model(x)  # peft's own LoRA path
        merged, meta = load_model_checkpoint(out / "model.pt")
        plain = merged(x)
        authors = create_model("ecgfounder", n_classes=3)
        state, _ = read_state_dict(out / "merged.pth")
        authors.load_state_dict(state)
        authors_out = authors.eval()(x)
    assert max_rel_error(reference, fused) < 1e-5
    assert max_rel_error(reference, plain) < 1e-4
    assert max_rel_error(reference, authors_out) < 1e-4
    assert meta.labs == ["potassium", "calcium", "sodium"] and meta.window_s == 2.0
    # Every lab is accounted for: calibrated (slope > 0, threshold inside (0, 1)) or marked
    # not calibrated with its reason (this micro corpus has few validation visits).
    assert set(meta.calibrated) == set(meta.labs)
    for lab in meta.labs:
        if meta.calibrated[lab]:
            assert meta.calibration[lab][0] > 0 and 0.0 < meta.thresholds[lab] < 1.0
        else:
            assert lab not in meta.thresholds and lab not in meta.calibration
            assert "minimum" in meta.extra["calibration_method"][lab]["reason"]
    assert meta.units["potassium"] == "mmol/L"
    head = load_file(str(out / "head.safetensors"))
    assert head["weight"].shape == (3, 1024)


def test_trainable_share_of_full_ecgfounder_default_settings() -> None:
    with torch.device("meta"):
        model = create_model("ecgfounder", n_classes=108)
    peft_model = apply_lora(model, LoraSettings())
    trainable, total = parameter_counts(peft_model)
    print(
        f"ECGFounder 108 labs, LoRA r8: {trainable:,} of {total:,} ({100 * trainable / total:.2f} %)"
    )
    assert trainable / total <= 0.03


def test_fused_equals_peft_lora_in_float64_with_gradients() -> None:
    torch.manual_seed(1)
    base = create_model("net1d-tiny", n_classes=5).double()
    a = apply_lora(base, LoraSettings(rank=4))
    for name, p in a.named_parameters():
        if "lora_B" in name:  # peft initialises B = 0; make the adapter non-trivial
            p.data.normal_(0, 0.1)
    x = torch.randn(3, 1, 600, dtype=torch.float64)
    out_f = a(x)
    out_f.square().sum().backward()
    grads_f = {n: p.grad.clone() for n, p in a.named_parameters() if p.requires_grad}
    a.zero_grad()
    _unfuse(a)
    out_r = a(x)
    out_r.square().sum().backward()
    assert torch.allclose(out_f, out_r, rtol=1e-10, atol=1e-12)
    for n, p in a.named_parameters():
        if p.requires_grad:
            assert torch.allclose(grads_f[n], p.grad, rtol=1e-9, atol=1e-12), n
    merged = merged_copy(a)
    assert max_rel_error(out_r, merged(x)) < 1e-10


def test_grouped_conv_targets_are_refused() -> None:
    model = create_model("ecgfounder", n_classes=3, filter_list=(32, 32), m_blocks_list=(1, 1))
    with pytest.raises(LoraError, match="grouped conv .*groups=2"):
        apply_lora(model, LoraSettings(target_modules=r".*\.conv2\.conv"))
    with pytest.raises(LoraError, match="SameConv1d.*conv1.conv"):
        apply_lora(model, LoraSettings(target_modules=["conv1"]))
    with pytest.raises(LoraError, match="match no layer"):
        apply_lora(model, LoraSettings(target_modules=["nothing"]))
    assert parse_target_modules("conv1.conv, se_fc1") == ["conv1.conv", "se_fc1"]
    assert parse_target_modules(r".*\.se_fc[12]") == r".*\.se_fc[12]"
    peft_model = apply_lora(model, LoraSettings(target_modules=parse_target_modules("conv3.conv")))
    names = [n for n, m in peft_model.named_modules() if isinstance(m, FusedLoraConv1d)]
    assert names and all(n.endswith("conv3.conv") for n in names)


def test_detect_arch_and_cli_errors(tmp_path, micro_corpus) -> None:
    torch.manual_seed(0)
    path = save_authors_format(create_model("net1d-tiny", n_classes=7), tmp_path / "tiny.pth")
    assert detect_net1d_arch(path) == "net1d-tiny"
    runner = CliRunner()
    r = runner.invoke(
        cli, ["train", "lora", "--corpus", str(micro_corpus), "--out", str(tmp_path / "o")]
    )
    assert r.exit_code == 2 and "--init" in r.output and "--arch" in r.output
    r = runner.invoke(
        cli,
        [
            "train",
            "lora",
            "--init",
            str(path),
            "--corpus",
            str(micro_corpus),
            "--out",
            str(tmp_path / "o"),
            "--labs",
            "potassium,unobtainium",
        ],
    )
    assert r.exit_code == 1 and "unobtainium" in r.output and "Traceback" not in r.output
    r = runner.invoke(
        cli,
        [
            "train",
            "lora",
            "--arch",
            "net1d-tiny",
            "--corpus",
            str(micro_corpus),
            "--out",
            str(tmp_path / "o"),
            "--target-modules",
            r".*\.conv2\.conv",
        ],
    )
    assert r.exit_code == 1 and "grouped conv" in r.output and "Traceback" not in r.output
