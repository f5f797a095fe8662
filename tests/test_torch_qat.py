"""A few QAT steps (seconds): distillation from the fp32 model lowers the student's error, and
the trained tables are still the spec of the trained scales."""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from gelu_quant.lut.table import build_lut  # noqa: E402
from gelu_quant.torch import calibrate_ranges, fake_quant_modules, prepare_qat  # noqa: E402


def _teacher() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(16, 64),
        nn.GELU(),
        nn.Linear(64, 64),
        nn.GELU(approximate="tanh"),
        nn.Linear(64, 8),
    ).eval()


def test_distillation_steps_lower_the_error_of_3_bit_tables() -> None:
    teacher = _teacher()
    g = torch.Generator().manual_seed(1)
    train = torch.randn(512, 16, generator=g) * 2
    held = torch.randn(256, 16, generator=g) * 2
    ranges = calibrate_ranges(teacher, [(train,)], "minmax")
    student = prepare_qat(copy.deepcopy(teacher), ranges, bits=3, learn_ranges=True)
    with torch.no_grad():
        t_train, t_held = teacher(train), teacher(held)

    def held_error() -> float:
        with torch.no_grad():
            return float(nn.functional.mse_loss(student(held), t_held))

    before = held_error()
    opt = torch.optim.Adam(student.parameters(), lr=2e-3)
    for step in range(60):
        idx = slice(64 * (step % 8), 64 * (step % 8 + 1))
        loss = nn.functional.mse_loss(student(train[idx]), t_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = held_error()
    assert after < 0.5 * before, (before, after)
    for fq in fake_quant_modules(student):
        spec = build_lut(
            in_qparams=fq.in_qparams,
            out_qparams=fq.out_qparams,
            form=fq.form,  # type: ignore[arg-type]
        )
        assert spec.table.size == 8 and fq.spec() == spec
        x = np.linspace(-10, 10, 999, dtype=np.float32)
        with torch.no_grad():
            assert np.array_equal(fq(torch.from_numpy(x)).numpy(), spec.evaluate(x))


def test_only_ranges_train_when_weights_are_frozen() -> None:
    teacher = _teacher()
    x = torch.randn(128, 16, generator=torch.Generator().manual_seed(2))
    student = prepare_qat(copy.deepcopy(teacher), calibrate_ranges(teacher, [(x,)]), bits=4)
    for p in student.parameters():
        p.requires_grad_(False)
    scales = [p for m in fake_quant_modules(student) for p in (m.in_scale, m.out_scale)]
    for p in scales:
        p.requires_grad_(True)
    loss = nn.functional.mse_loss(student(x), teacher(x).detach())
    loss.backward()
    assert all(p.grad is not None and float(p.grad.abs()) > 0 for p in scales)
    assert all(p.grad is None for p in student.parameters() if not p.requires_grad)
