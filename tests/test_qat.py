"""QAT: fake quantization matches the exporters' int8 rounding, and finishing it gives a
standard student checkpoint whose weights sit on the per-channel int8 grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from anyecg_edge.training.models import create_model
from anyecg_edge.training.models.student import fuse_bn
from anyecg_edge.training.qat import (
    ActFakeQuant,
    WeightFakeQuant,
    finish_qat,
    is_qat_prepared,
    prepare_qat,
)


def _trained_student(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = create_model("student-xs", n_classes=3)
    model.train()
    with torch.no_grad():  # non-trivial BN statistics
        for _ in range(3):
            model(torch.randn(8, 1, 1000) * 2)
    return model


def test_weight_fake_quant_is_per_channel_symmetric_int8() -> None:
    w = torch.randn(4, 1, 9) * torch.tensor([0.01, 0.1, 1.0, 10.0])[:, None, None]
    w.requires_grad_(True)
    q = WeightFakeQuant()(w)
    scale = w.detach().abs().amax(dim=(1, 2), keepdim=True) / 127
    steps = q.detach() / scale
    assert torch.allclose(steps, steps.round(), atol=1e-4)  # on each channel's grid
    assert (steps.abs() <= 127 + 1e-4).all()
    assert (q.detach() - w.detach()).abs().max() <= scale.max() / 2 + 1e-6
    q.sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))  # straight-through


def test_act_fake_quant_range_holds_zero_and_freezes_in_eval() -> None:
    fq = ActFakeQuant()
    x = torch.linspace(0.5, 3.0, 101)  # all positive: the range still includes 0
    y = fq(x)
    scale = 3.0 / 255
    assert (y - x).abs().max() <= scale / 2 + 1e-6
    assert float(fq.lo) == pytest.approx(0.5) and float(fq.hi) == pytest.approx(3.0)
    fq.eval()
    fq(torch.full((4,), 100.0))
    assert float(fq.hi) == pytest.approx(3.0)  # eval does not move the range
    assert torch.allclose(fq(torch.tensor([100.0])), torch.tensor([3.0]), atol=scale)


def test_prepare_then_finish_keeps_the_architecture_and_the_int8_grid() -> None:
    model = _trained_student()
    reference = create_model("student-xs", n_classes=3)
    x = torch.randn(16, 1, 1000)
    model.eval()
    with torch.no_grad():
        before = model(x)
    prepare_qat(model)
    assert is_qat_prepared(model) and model.training
    model.eval()
    with torch.no_grad():
        # No activation range observed yet: only the weights are rounded (a small change).
        assert (model(x) - before).abs().max() < 0.02 * before.abs().max()
    model.train()
    with torch.no_grad():
        model(x)  # observe activation ranges
    model.eval()
    with torch.no_grad():
        fake = model(x)
    # The fake-int8 model is close to the float one, but not equal (it quantizes).
    rel = (fake - before).abs().mean() / before.std()
    assert 0 < rel < 0.2, rel
    finish_qat(model)
    assert not is_qat_prepared(model)
    assert set(model.state_dict()) == set(reference.state_dict())  # the registry's keys
    reference.load_state_dict(model.state_dict())  # strict load works
    with torch.no_grad():
        after = model(x)
    # Without activation quantization the finished model is the float model with int8-grid
    # weights: close to the original, and export's BN folding gives back the grid.
    assert (after - before).abs().mean() / before.std() < 0.1
    fused = fuse_bn(model)
    for m in fused.modules():
        if isinstance(m, torch.nn.Conv1d | torch.nn.Linear):
            w = m.weight.detach()
            scale = w.abs().amax(dim=tuple(range(1, w.dim())), keepdim=True) / 127
            steps = (w / scale).numpy()
            np.testing.assert_allclose(steps, np.round(steps), atol=2e-3)


def test_finish_requires_prepare_and_non_students_are_refused() -> None:
    with pytest.raises(ValueError, match="not prepared"):
        finish_qat(_trained_student())
    with pytest.raises(ValueError, match="only edge students"):
        prepare_qat(create_model("net1d-tiny", n_classes=3))


# ----------------------------------------------------------------------------- fidelity


def test_fidelity_report_of_a_perfect_and_a_scrambled_student() -> None:
    from anyecg_edge.training.distill import fidelity_report

    from anyecg_edge.runtime import ModelMetadata

    rng = np.random.default_rng(0)
    teacher = rng.normal(size=(400, 3))
    meta = ModelMetadata(
        labs=["a", "b", "c"],
        calibration={"a": [1.0, 0.0], "b": [2.0, -0.5]},
        thresholds={"a": 0.5, "b": 0.4},
        calibrated={"a": True, "b": True, "c": False},
    )
    same = fidelity_report(teacher, teacher, meta, meta, split="test")
    assert same["mean_auroc_vs_teacher"] == 1.0 and same["mean_abs_dp"] == 0.0
    assert same["call_agreement"] == 1.0 and same["n_labs_called"] == 2
    assert same["per_lab"]["c"]["reference"] == "teacher median split"  # no threshold
    assert same["per_lab"]["a"]["reference"] == "teacher calls"
    # A student that is the teacher plus noise keeps the order mostly; a shuffled one does not.
    noisy = fidelity_report(
        teacher + 0.3 * rng.normal(size=teacher.shape), teacher, meta, meta, split="test"
    )
    shuffled = fidelity_report(rng.permutation(teacher), teacher, meta, meta, split="test")
    assert 0.8 < noisy["mean_auroc_vs_teacher"] < 1.0
    assert abs(shuffled["mean_auroc_vs_teacher"] - 0.5) < 0.1
    assert noisy["mean_abs_dp"] < shuffled["mean_abs_dp"]
    assert noisy["call_agreement"] > shuffled["call_agreement"]
