"""Model zoo: exact ECGFounder Net1D vs the oracle, strict checkpoint loading, registry, students."""

from __future__ import annotations

import importlib.util
import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from anyecg_edge.training.ecgfounder import (
    CheckpointError,
    load_ecgfounder,
    read_state_dict,
    save_authors_format,
)
from anyecg_edge.training.models import (
    Net1D,
    Net1DConfig,
    StudentNet,
    count_macs,
    count_params,
    create_model,
    create_model_from_config,
    fuse_bn,
    list_models,
    model_config,
)
from anyecg_edge.training.models.net1d import SameConv1d, same_padding
from torch import nn


def _load_oracle():
    """Load tests/reference/net1d_oracle.py by path (independent of how pytest sets sys.path)."""
    path = Path(__file__).resolve().parent / "reference" / "net1d_oracle.py"
    spec = importlib.util.spec_from_file_location("net1d_oracle", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


oracle = _load_oracle()

RELEASED = oracle.RELEASED_CONFIG
FS_HZ = 500
WINDOW = 10 * FS_HZ


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def oracle_model(in_channels: int, n_classes: int = 150, seed: int = 0, **cfg) -> nn.Module:
    torch.manual_seed(seed)
    return oracle.Net1D(in_channels=in_channels, n_classes=n_classes, **{**RELEASED, **cfg}).eval()


def randomize_bn(model: nn.Module, seed: int = 1) -> None:
    """Non-trivial BN statistics and affine params, so skipped or misplaced BN would show."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.2)


@pytest.fixture(scope="module")
def oracle_1lead() -> nn.Module:
    return oracle_model(1)


@pytest.fixture(scope="module")
def authors_ckpt_1lead(tmp_path_factory, oracle_1lead):
    path = tmp_path_factory.mktemp("ckpt") / "1_lead_ECGFounder.pth"
    save_authors_format(
        oracle_1lead,
        path,
        epoch=3,
        step=10000,
        val_auroc=np.float64(0.9204),  # numpy scalar, as sklearn/np.mean produce
        optimizer=torch.optim.Adam(oracle_1lead.parameters(), lr=5e-5).state_dict(),
        scheduler={"mode": "max", "factor": 0.1, "patience": 10, "best": 0.9204},
    )
    return path


# ---------------------------------------------------------------- Net1D exactness


@pytest.mark.parametrize("in_channels,n_params", [(1, 30_807_750), (12, 30_819_014)])
def test_released_param_count_and_keys_match_oracle(in_channels, n_params):
    ours = create_model("ecgfounder", n_classes=150, in_channels=in_channels)
    ref = oracle_model(in_channels)
    assert count_params(ours) == n_params == count_params(ref)
    ours_sd, ref_sd = ours.state_dict(), ref.state_dict()
    assert len(ours_sd) == 509
    assert list(ours_sd) == list(ref_sd)  # same names in the same order
    assert {k: v.shape for k, v in ours_sd.items()} == {k: v.shape for k, v in ref_sd.items()}
    for key in (
        "first_conv.conv.weight",
        "first_bn.running_mean",
        "stage_list.0.block_list.0.conv2.conv.weight",
        "stage_list.6.block_list.3.bn3.running_var",
        "stage_list.3.block_list.2.se_fc1.weight",
        "dense.weight",
    ):
        assert key in ours_sd


def test_released_macs_match_analytic_count():
    """count_macs counts MACs as executed; check it against the architecture by hand."""
    model = create_model("ecgfounder", n_classes=150)
    cfg = model.config
    length = -(-WINDOW // 2)  # first conv, stride 2
    nominal = length * cfg.base_filters * cfg.in_channels * cfg.kernel_size
    surplus = 0  # stride-1 "same" convs compute one extra leading output that is sliced off
    channels = cfg.base_filters
    for f, m in zip(cfg.filter_list, cfg.m_blocks_list, strict=True):
        groups = f // cfg.groups_width
        for b in range(m):
            c_in = channels if b == 0 else f
            nominal += length * f * c_in  # conv1 (1x1), before the stride
            out_len = -(-length // cfg.stride) if b == 0 else length
            conv2 = f * (f // groups) * cfg.kernel_size
            nominal += out_len * conv2  # conv2 (k16 grouped, strided on block 0)
            surplus += 0 if b == 0 else conv2
            nominal += out_len * f * f  # conv3 (1x1)
            nominal += f * (f // 2) * 2  # SE linears
            length = out_len
        channels = f
    nominal += channels * 150
    assert length == 20  # 5000 -> 2500 -> 1250 -> 625 -> 313 -> 157 -> 79 -> 40 -> 20
    assert count_macs(model, (1, 1, WINDOW)) == nominal + surplus
    assert surplus < 0.01 * nominal
    assert 1.1e9 < nominal < 1.2e9  # DESIGN.md §3: ~1.14 GMAC per single-lead window


@pytest.mark.parametrize(
    "length,kernel,stride",
    [(L, k, s) for L in (1, 2, 15, 16, 17, 625, 5000) for k in (1, 2, 7, 16) for s in (1, 2, 3)],
)
def test_same_conv_matches_oracle(length, kernel, stride):
    torch.manual_seed(length * 100 + kernel * 10 + stride)
    ref = oracle.MyConv1dPadSame(4, 6, kernel, stride, groups=2)
    ours = SameConv1d(4, 6, kernel, stride, groups=2)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 4, length)
    y_ref, y = ref(x), ours(x)
    assert y.shape == y_ref.shape == (2, 6, -(-length // stride))
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-6)


def test_same_padding_is_the_asymmetric_tf_rule():
    assert same_padding(5000, 16, 1) == (7, 8)
    assert same_padding(5000, 16, 2) == (7, 7)
    assert same_padding(625, 16, 2) == (7, 8)
    assert same_padding(5000, 1, 1) == (0, 0)


def test_released_1lead_checkpoint_reproduces_oracle(oracle_1lead, authors_ckpt_1lead):
    state, meta = read_state_dict(authors_ckpt_1lead)
    assert list(meta) == ["epoch", "step", "optimizer", "scheduler", "val_auroc"]
    assert len(state) == 509 and meta["val_auroc"] == pytest.approx(0.9204)
    model = load_ecgfounder(authors_ckpt_1lead)
    assert isinstance(model, Net1D) and not model.training
    assert (model.in_channels, model.n_classes) == (1, 150)
    assert model.checkpoint_meta["step"] == 10000
    torch.manual_seed(42)
    x = torch.randn(2, 1, WINDOW)
    with torch.no_grad():
        y_ref, y = oracle_1lead(x), model(x)
        assert y.shape == (2, 150)
        assert rel_err(y, y_ref) < 1e-4
        feats = model.forward_features(x)
    assert feats.shape == (2, 1024)
    torch.testing.assert_close(model.forward_head(feats), y)


def test_released_12lead_checkpoint_reproduces_oracle(tmp_path):
    ref = oracle_model(12, seed=7)
    path = save_authors_format(ref, tmp_path / "12_lead_ECGFounder.pth", val_auroc=0.9)
    model = load_ecgfounder(path)
    assert (model.in_channels, model.n_classes) == (12, 150)
    assert count_params(model) == 30_819_014
    torch.manual_seed(3)
    x = torch.randn(1, 12, WINDOW)
    with torch.no_grad():
        assert rel_err(model(x), ref(x)) < 1e-4


SMALL_CONFIGS = {
    # released structure, BN and dropout on, random BN stats
    "tiny-bn": dict(
        base_filters=16, filter_list=[16, 32, 48], m_blocks_list=[2, 1, 2], use_bn=True, use_do=True
    ),
    # ratio != 1, odd kernel, stride 3 (length-dependent left pad, padded max-pool)
    "ratio-k7-s3": dict(
        base_filters=8,
        ratio=0.5,
        filter_list=[32, 32, 64],
        m_blocks_list=[1, 2, 1],
        kernel_size=7,
        stride=3,
    ),
}


@pytest.mark.parametrize("name", sorted(SMALL_CONFIGS))
@pytest.mark.parametrize("in_channels,length", [(1, WINDOW), (12, 4999), (3, 37)])
def test_small_configs_match_oracle_eval_and_train(name, in_channels, length):
    cfg = {**RELEASED, **SMALL_CONFIGS[name]}
    ref = oracle_model(in_channels, n_classes=5, seed=11, **SMALL_CONFIGS[name])
    randomize_bn(ref)
    ours = Net1D(Net1DConfig(in_channels=in_channels, n_classes=5, **cfg))
    ours.load_state_dict(ref.state_dict(), strict=True)
    torch.manual_seed(5)
    x = torch.randn(3, in_channels, length)
    ours.eval()
    with torch.no_grad():
        assert rel_err(ours(x), ref(x)) < 1e-4
    # train mode: batch-stat BN, gradients identical (dropout off so both are deterministic)
    ref_t = oracle_model(
        in_channels, n_classes=5, seed=11, **{**SMALL_CONFIGS[name], "use_do": False}
    )
    ours_t = Net1D(Net1DConfig(in_channels=in_channels, n_classes=5, **{**cfg, "use_do": False}))
    ours_t.load_state_dict(ref_t.state_dict())
    ref_t.train(), ours_t.train()
    ref_t(x).square().mean().backward()
    ours_t(x).square().mean().backward()
    for (k, p_ref), (_, p) in zip(ref_t.named_parameters(), ours_t.named_parameters(), strict=True):
        # unused BN params (use_bn False; stage 0 block 0 skips bn1) get no gradient in either
        is_bn = "bn" in k.split(".")[-2]
        unused = is_bn and (not cfg["use_bn"] or k.startswith("stage_list.0.block_list.0.bn1."))
        assert (p.grad is None) == (p_ref.grad is None) == unused, k
        if p.grad is not None:
            torch.testing.assert_close(p.grad, p_ref.grad, rtol=1e-4, atol=1e-6, msg=k)


def test_compile_full_graph_no_breaks():
    """torch.compile traces forward and backward as one graph (no graph breaks, no .item())."""
    model = create_model("net1d-tiny", n_classes=4)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    x = torch.randn(2, 1, WINDOW)
    out = compiled(x)
    torch.testing.assert_close(out, model(x), rtol=1e-5, atol=1e-6)
    out.sum().backward()
    assert model.dense.weight.grad is not None


def test_reset_head():
    model = create_model("net1d-tiny", n_classes=150)
    before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("dense.")}
    model.reset_head(7)
    assert model.n_classes == 7 and model.dense.weight.shape == (7, model.num_features)
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert model(torch.randn(2, 1, 1000)).shape == (2, 7)


# ---------------------------------------------------------------- strict loader


def tiny_state(seed: int = 0, n_classes: int = 6, in_channels: int = 1) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return create_model("net1d-tiny", n_classes=n_classes, in_channels=in_channels).state_dict()


def test_module_prefix_and_bare_state_dict_load(tmp_path, oracle_1lead):
    state = tiny_state()
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "ddp.pt")
    torch.save(state, tmp_path / "bare.pt")
    save_authors_format(create_model("net1d-tiny", n_classes=6), tmp_path / "authors.pth")
    for name in ("ddp.pt", "bare.pt"):
        model = load_ecgfounder(tmp_path / name, arch="net1d-tiny")
        assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    assert load_ecgfounder(tmp_path / "authors.pth", arch="net1d-tiny").n_classes == 6


def test_renamed_key_is_refused_by_name(tmp_path):
    state = tiny_state()
    state["stage_list.1.block_list.0.conv2.conv.weight_renamed"] = state.pop(
        "stage_list.1.block_list.0.conv2.conv.weight"
    )
    torch.save(state, tmp_path / "renamed.pt")
    with pytest.raises(CheckpointError) as err:
        load_ecgfounder(tmp_path / "renamed.pt", arch="net1d-tiny")
    msg = str(err.value)
    assert "\n" not in msg and "renamed.pt" in msg
    assert "1 missing key [stage_list.1.block_list.0.conv2.conv.weight]" in msg
    assert "1 unexpected key [stage_list.1.block_list.0.conv2.conv.weight_renamed]" in msg


def test_wrong_shape_is_refused_with_both_shapes(tmp_path):
    state = tiny_state()
    state["stage_list.2.block_list.0.se_fc1.weight"] = torch.zeros(16, 31)
    torch.save(state, tmp_path / "shape.pt")
    with pytest.raises(CheckpointError, match=r"shape.pt: .*1 shape mismatch") as err:
        load_ecgfounder(tmp_path / "shape.pt", arch="net1d-tiny")
    assert "stage_list.2.block_list.0.se_fc1.weight: checkpoint (16, 31) vs model (16, 32)" in str(
        err.value
    )


def test_many_missing_keys_are_listed_briefly(tmp_path):
    state = {k: v for k, v in tiny_state().items() if "stage_list.3" not in k}
    torch.save(state, tmp_path / "cut.pt")
    with pytest.raises(CheckpointError) as err:
        load_ecgfounder(tmp_path / "cut.pt", arch="net1d-tiny")
    msg = str(err.value)
    assert "25 missing keys [" in msg and ", ...]" in msg and msg.count("stage_list.3") == 5


def test_in_channels_mismatch_is_refused(tmp_path):
    torch.save(tiny_state(in_channels=12), tmp_path / "12.pt")
    assert load_ecgfounder(tmp_path / "12.pt", arch="net1d-tiny").in_channels == 12
    with pytest.raises(
        CheckpointError,
        match=r"first_conv.conv.weight: checkpoint \(16, 12, 16\) vs model \(16, 1, 16\)",
    ):
        load_ecgfounder(tmp_path / "12.pt", in_channels=1, arch="net1d-tiny")


def test_head_replacement_keeps_backbone(tmp_path, oracle_1lead, authors_ckpt_1lead, caplog):
    with caplog.at_level(logging.INFO, logger="anyecg_edge.training.ecgfounder"):
        model = load_ecgfounder(authors_ckpt_1lead, n_classes=108)
    assert "head replaced" in caplog.text
    assert model.dense.weight.shape == (108, 1024) and model.n_classes == 108
    ref_sd = oracle_1lead.state_dict()
    sd = model.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in ref_sd.items() if not k.startswith("dense."))
    x = torch.randn(1, 1, WINDOW)
    with torch.no_grad():
        h = oracle_1lead.first_activation(oracle_1lead.first_conv(x))
        for stage in oracle_1lead.stage_list:
            h = stage(h)
        ref_feats = h.mean(-1)
        assert rel_err(model.forward_features(x), ref_feats) < 1e-4
    # the head swap never excuses a backbone mismatch
    state = tiny_state()
    del state["stage_list.0.block_list.0.se_fc2.bias"]
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(
        CheckpointError, match=r"missing key \[stage_list.0.block_list.0.se_fc2.bias\]"
    ):
        load_ecgfounder(tmp_path / "bad.pt", n_classes=3, arch="net1d-tiny")


class _Arbitrary:  # pickled by reference: weights_only must refuse it
    pass


@pytest.mark.parametrize(
    "writer,pattern",
    [
        (None, r"no such checkpoint file"),
        (lambda p: p.write_bytes(b"this is not a torch file"), r"not a readable torch checkpoint"),
        (lambda p: p.write_bytes(b""), r"not a readable torch checkpoint"),
        (
            lambda p: p.write_bytes(pickle.dumps({"state_dict": _Arbitrary()}, protocol=2)),
            r"refused by torch.load",
        ),
        (
            lambda p: torch.save({"state_dict": {"a": _Arbitrary()}}, p),
            r"refused by torch.load\(weights_only=True\)",
        ),
        (
            lambda p: torch.save({"x": np.zeros(3)}, p),
            r"refused by torch.load\(weights_only=True\)",
        ),
        (lambda p: torch.save(torch.zeros(3), p), r"expected a dict .* got Tensor"),
        (lambda p: torch.save({"state_dict": [1, 2]}, p), r"'state_dict' entry is a list"),
        (lambda p: torch.save({"a": torch.zeros(1), "b": 3}, p), r"1 non-tensor entry \[b\]"),
        (
            lambda p: torch.save({"conv.weight": torch.zeros(1)}, p),
            r"no 'first_conv.conv.weight' tensor",
        ),
    ],
)
def test_bad_files_get_one_line_errors(tmp_path, writer, pattern):
    path = tmp_path / "ckpt.pth"
    if writer is not None:
        writer(path)
    with pytest.raises(CheckpointError, match=pattern) as err:
        load_ecgfounder(path, arch="net1d-tiny")
    assert "\n" not in str(err.value) and "ckpt.pth" in str(err.value)


def test_nonfinite_weights_are_refused(tmp_path):
    state = tiny_state()
    state["stage_list.0.block_list.0.conv1.conv.bias"][0] = float("nan")
    torch.save(state, tmp_path / "nan.pt")
    with pytest.raises(
        CheckpointError, match=r"NaN/inf values \[stage_list.0.block_list.0.conv1.conv.bias\]"
    ):
        load_ecgfounder(tmp_path / "nan.pt", arch="net1d-tiny")


def test_read_state_dict_strips_prefixes_and_returns_meta(tmp_path):
    state = tiny_state()
    torch.save(
        {"epoch": 2, "state_dict": {f"module._orig_mod.{k}": v for k, v in state.items()}},
        tmp_path / "c.pth",
    )
    sd, meta = read_state_dict(tmp_path / "c.pth")
    assert list(sd) == list(state) and meta == {"epoch": 2}


def test_save_authors_format_rejects_unknown_fields(tmp_path):
    with pytest.raises(ValueError, match="unknown field"):
        save_authors_format(create_model("net1d-tiny", n_classes=2), tmp_path / "x.pth", lr=1)


def test_non_net1d_arch_refused(tmp_path):
    torch.save(tiny_state(), tmp_path / "t.pt")
    with pytest.raises(CheckpointError, match="not a Net1D model"):
        load_ecgfounder(tmp_path / "t.pt", arch="student-s")


# ---------------------------------------------------------------- registry


def test_registry_lists_and_round_trips():
    assert {"ecgfounder", "net1d-tiny", "student-s", "student-xs"} <= set(list_models())
    assert list_models() == sorted(list_models())
    cfg = model_config("ecgfounder")
    assert cfg["arch"] == "net1d" and cfg["filter_list"] == [64, 160, 160, 400, 400, 1024, 1024]
    assert cfg["n_classes"] == 150 and cfg["use_bn"] is False
    for name in list_models():
        if name == "ecgfounder":
            continue
        model = create_model(name, n_classes=9, in_channels=2)
        again = create_model_from_config({**model_config(name), "n_classes": 9, "in_channels": 2})
        again.load_state_dict(model.state_dict(), strict=True)
        model.eval(), again.eval()
        x = torch.randn(2, 2, WINDOW)
        torch.testing.assert_close(again(x), model(x))
        assert model(x).shape == (2, 9)


def test_registry_errors():
    with pytest.raises(ValueError, match=r"unknown model 'resnet'.*ecgfounder.*student-s"):
        create_model("resnet", n_classes=2)
    with pytest.raises(ValueError, match=r"unknown config field\(s\) \['kernal_size'\]"):
        create_model("net1d-tiny", n_classes=2, kernal_size=3)
    with pytest.raises(ValueError, match="Net1DConfig.n_classes"):
        create_model("net1d-tiny", n_classes=0)
    with pytest.raises(ValueError, match="'arch' must be one of"):
        create_model_from_config({"n_classes": 2})


def test_net1d_tiny_is_small_and_cheap():
    # "Fast enough for CPU tests" as a compute bound, not a wall-clock one (shared CI boxes).
    model = create_model("net1d-tiny", n_classes=108).eval()
    assert 10_000 < count_params(model) < 100_000
    assert count_macs(model, (1, WINDOW)) < 0.02 * count_macs(
        create_model("ecgfounder", n_classes=108), (1, WINDOW)
    )
    with torch.no_grad():
        assert model(torch.randn(2, 1, WINDOW)).shape == (2, 108)


def test_create_model_overrides_apply():
    model = create_model("ecgfounder", n_classes=108, in_channels=12, use_bn=True)
    assert isinstance(model, Net1D) and model.config.use_bn and model.dense.out_features == 108
    assert model.first_conv.conv.in_channels == 12


# ---------------------------------------------------------------- students and profiling


@pytest.mark.parametrize(
    "name,max_params,max_macs",
    [("student-s", 250_000, 2_500_000), ("student-xs", 60_000, 1_000_000)],
)
def test_student_budgets(name, max_params, max_macs):
    model = create_model(name, n_classes=108)
    assert isinstance(model, StudentNet)
    assert count_params(model) <= max_params
    assert count_macs(model, (1, 1, WINDOW)) <= max_macs  # <= 5 MFLOPs for student-s
    assert not any(isinstance(m, nn.Sigmoid | nn.SiLU) for m in model.modules())
    assert model(torch.randn(2, 1, WINDOW)).shape == (2, 108)
    assert model.forward_features(torch.randn(2, 1, WINDOW)).shape == (2, model.num_features)


def test_student_sizes_are_ordered():
    s, xs = (create_model(n, n_classes=108) for n in ("student-s", "student-xs"))
    assert count_params(xs) < count_params(s)
    assert count_macs(xs, (1, 1, WINDOW)) < count_macs(s, (1, 1, WINDOW))


@pytest.mark.parametrize("name", ["student-s", "student-xs"])
def test_bn_fold_equals_unfolded_in_eval(name):
    torch.manual_seed(0)
    model = create_model(name, n_classes=12, act="relu6")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    for _ in range(3):  # real, non-trivial BN statistics and affine params
        opt.zero_grad()
        model(torch.randn(8, 1, WINDOW) * 2 + 0.5).square().mean().backward()
        opt.step()
    randomize_bn(model, seed=3)
    model.eval()
    fused = fuse_bn(model)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in fused.modules())
    assert any(isinstance(m, nn.BatchNorm1d) for m in model.modules())  # original untouched
    x = torch.randn(4, 1, WINDOW)
    with torch.no_grad():
        y, y_fused = model(x), fused(x)
    assert rel_err(y_fused, y) < 1e-5
    assert count_macs(fused, (1, 1, WINDOW)) == count_macs(model, (1, 1, WINDOW))


def test_count_macs_by_hand():
    model = nn.Sequential(
        nn.Conv1d(2, 4, 3, stride=2, padding=1, groups=2),  # out len 5: 4*5*(2/2)*3 = 60
        nn.ReLU(),
        nn.Conv1d(4, 8, 1),  # 8*5*4 = 160
        nn.AdaptiveAvgPool1d(1),
        nn.Flatten(),
        nn.Linear(8, 3),  # 3*8 = 24
    )
    assert count_macs(model, (1, 2, 10)) == 244
    assert count_macs(model, (5, 2, 10)) == 244  # per sample
    assert count_params(model) == (4 * 1 * 3 + 4) + (8 * 4 + 8) + (3 * 8 + 3)
    model[0].weight.requires_grad_(False)
    assert count_params(model, trainable_only=True) == count_params(model) - 12
    with pytest.raises(ValueError, match="input_shape"):
        count_macs(model, (2, 0))


def test_config_validation_messages():
    with pytest.raises(ValueError, match=r"Net1DConfig.filter_list / m_blocks_list"):
        Net1DConfig(filter_list=[16, 32], m_blocks_list=[1])
    with pytest.raises(ValueError, match=r"stage 0"):
        Net1DConfig(filter_list=[8], m_blocks_list=[1])  # fewer filters than groups_width
    with pytest.raises(ValueError, match=r"StudentConfig.blocks\[0\]"):
        create_model("student-s", n_classes=2, blocks=[(16, 4, 2)])
    with pytest.raises(ValueError, match=r"StudentConfig.act"):
        create_model("student-s", n_classes=2, act="silu")
