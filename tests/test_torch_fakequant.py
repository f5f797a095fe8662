"""GeluFakeQuant: the forward is the numpy table spec bit for bit; the backward is the documented
straight-through / LSQ estimator (checked against float64 finite differences and closed forms)."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from gelu_quant.lut.table import build_lut  # noqa: E402
from gelu_quant.numerics import GELU_FORMS, gelu  # noqa: E402
from gelu_quant.qparams import QParams  # noqa: E402
from gelu_quant.torch import GeluFakeQuant  # noqa: E402

RANGES = [(-8.0, 8.0), (-17.3, 25.1), (-0.6, 3.0), (-3.0, 0.4), (-5.5, 12.25)]


def _probe_inputs(qp: QParams, rng: np.random.Generator) -> np.ndarray:
    """Every code's value, every rounding midpoint (float32 neighbours too), values beyond both
    ends, random values, and the specials."""
    s = np.float64(np.float32(qp.scale))
    codes = np.arange(qp.qmin - 3, qp.qmax + 4, dtype=np.float64) - qp.zero_point
    mids = ((codes + 0.5) * s).astype(np.float32)
    near = np.concatenate([np.nextafter(mids, np.float32(np.inf)), np.nextafter(mids, -np.inf)])
    lo, hi = qp.real_range
    rand = rng.uniform(lo - 2 * s, hi + 2 * s, 4000).astype(np.float32)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e30, -1e30], dtype=np.float32)
    return np.concatenate([(codes * s).astype(np.float32), mids, near, rand, special])


@pytest.mark.parametrize("form", GELU_FORMS)
@pytest.mark.parametrize("bits", [8, 7, 6, 5, 4, 3, 2])
@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_forward_is_the_table_spec_bit_for_bit(form: str, bits: int, dtype: str) -> None:
    rng = np.random.default_rng(bits)
    for lo, hi in RANGES:
        spec = build_lut(
            in_range=(lo, hi),
            in_dtype=dtype,
            out_dtype=dtype,
            form=form,  # type: ignore[arg-type]
            in_bits=bits,
            out_bits=bits,
        )
        assert spec.table.size == 2**bits
        m = GeluFakeQuant(spec.in_qparams, spec.out_qparams, form)
        x = _probe_inputs(spec.in_qparams, rng)
        with torch.no_grad():
            got = m(torch.from_numpy(x)).numpy()
        want = spec.evaluate(x)
        assert got.dtype == want.dtype == np.float32
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), (lo, hi)
        # and with gradients on (the straight-through path must not change the value)
        xt = torch.from_numpy(x).requires_grad_(True)
        got2 = m(xt).detach().numpy()
        assert np.array_equal(got2.view(np.uint32), want.view(np.uint32))


def test_low_bit_table_entries_from_float64_oracle() -> None:
    """A 4-bit table: entry q is clip(rint(gelu(DQ(q)) / s_out) + z_out, -8, 7), written out."""
    spec = build_lut(in_range=(-6.0, 6.0), in_bits=4, out_bits=4)
    iq, oq = spec.in_qparams, spec.out_qparams
    assert oq is not None
    assert (iq.qmin, iq.qmax, oq.qmin, oq.qmax) == (-8, 7, -8, 7)
    s_in = np.float64(np.float32(12.0 / 15.0))
    assert iq.scale == s_in
    x = (np.arange(-8, 8) - iq.zero_point) * s_in
    g = x * 0.5 * np.array([math.erfc(-v / math.sqrt(2.0)) for v in x])
    want = np.clip(np.rint(g / np.float64(oq.scale)) + oq.zero_point, -8, 7)
    assert np.array_equal(spec.table.astype(np.int64), want.astype(np.int64))


def test_learned_scales_rebuild_the_table() -> None:
    m = GeluFakeQuant.from_range(-4.0, 6.0, bits=6, learn_ranges=True)
    with torch.no_grad():
        m.in_scale.mul_(1.1)
        m.out_scale.mul_(0.97)
    spec = build_lut(in_qparams=m.in_qparams, out_qparams=m.out_qparams)
    x = np.linspace(-6, 8, 3001, dtype=np.float32)
    got = m(torch.from_numpy(x)).detach().numpy()
    assert np.array_equal(got, spec.evaluate(x))
    assert m.spec() == spec


def _gelu_prime(x: np.ndarray, form: str) -> np.ndarray:
    h = 1e-5
    return (gelu(x + h, form) - gelu(x - h, form)) / (2 * h)


@pytest.mark.parametrize("form", GELU_FORMS)
@pytest.mark.parametrize("bits", [8, 4])
def test_input_gradient_is_gelu_derivative_inside_zero_outside(form: str, bits: int) -> None:
    m = GeluFakeQuant.from_range(-5.0, 7.0, bits=bits, form=form)
    iq = m.in_qparams
    lo, hi = iq.real_range
    rng = np.random.default_rng(1)
    x = rng.uniform(lo - 3, hi + 3, 2000).astype(np.float32)
    xt = torch.from_numpy(x).requires_grad_(True)
    m(xt).sum().backward()
    assert xt.grad is not None
    grad = xt.grad.numpy().astype(np.float64)
    s = np.float64(iq.scale)
    codes = np.rint(x.astype(np.float64) / s) + iq.zero_point
    xh = (np.clip(codes, iq.qmin, iq.qmax) - iq.zero_point) * s
    oq = m.out_qparams
    v_out = gelu(xh, form) / np.float64(oq.scale) + oq.zero_point
    c_out = np.rint(v_out)
    inside = (codes >= iq.qmin) & (codes <= iq.qmax) & (c_out >= oq.qmin) & (c_out <= oq.qmax)
    # away from the range ends (float32 vs float64 decide the borderline cases differently)
    margin = (np.abs(codes - iq.qmin) > 1) & (np.abs(codes - iq.qmax) > 1)
    margin &= (np.abs(v_out - oq.qmin + 0.5) > 0.01) & (np.abs(v_out - oq.qmax - 0.5) > 0.01)
    assert inside[margin].sum() > 200 and (~inside[margin]).sum() > 200
    fd = _gelu_prime(xh, form)
    np.testing.assert_allclose(grad[margin & inside], fd[margin & inside], rtol=1e-4, atol=1e-5)
    assert np.all(grad[margin & ~inside] == 0.0)


def test_lsq_scale_gradients_closed_form() -> None:
    """Without LSQ's gradient scale, d/ds of FQ is round(v) - v inside, qmin - z / qmax - z
    outside (Esser et al. 2020, eq. 3), composed through GELU' for the input scale."""
    m = GeluFakeQuant.from_range(-3.0, 5.0, bits=4, learn_ranges=True, lsq_grad_scale=False)
    iq, oq = m.in_qparams, m.out_qparams
    rng = np.random.default_rng(2)
    x = rng.uniform(-5, 7, 500).astype(np.float32)
    m(torch.from_numpy(x)).sum().backward()
    s_in, s_out = np.float64(iq.scale), np.float64(oq.scale)
    v = x.astype(np.float64) / s_in
    c = np.rint(v) + iq.zero_point
    d_in = np.where(
        c < iq.qmin,
        iq.qmin - iq.zero_point,
        np.where(c > iq.qmax, iq.qmax - iq.zero_point, np.rint(v) - v),
    )
    xh = (np.clip(c, iq.qmin, iq.qmax) - iq.zero_point) * s_in
    g = gelu(xh)
    u = g / s_out
    cu = np.rint(u) + oq.zero_point
    out_inside = (cu >= oq.qmin) & (cu <= oq.qmax)
    d_out = np.where(
        cu < oq.qmin,
        oq.qmin - oq.zero_point,
        np.where(cu > oq.qmax, oq.qmax - oq.zero_point, np.rint(u) - u),
    )
    want_out = d_out.sum()
    want_in = (out_inside * _gelu_prime(xh, "exact") * d_in).sum()
    assert m.out_scale.grad is not None and m.in_scale.grad is not None
    np.testing.assert_allclose(float(m.out_scale.grad), want_out, rtol=2e-3, atol=1e-3)
    np.testing.assert_allclose(float(m.in_scale.grad), want_in, rtol=2e-3, atol=1e-3)


def test_lsq_gradient_scale_factor() -> None:
    kw = {"bits": 6, "learn_ranges": True}
    a = GeluFakeQuant.from_range(-3.0, 5.0, lsq_grad_scale=False, **kw)  # type: ignore[arg-type]
    b = GeluFakeQuant.from_range(-3.0, 5.0, lsq_grad_scale=True, **kw)  # type: ignore[arg-type]
    x = torch.linspace(-4, 6, 1000)
    a(x).sum().backward()
    b(x).sum().backward()
    g = 1.0 / math.sqrt(1000 * 31)
    assert a.out_scale.grad is not None and b.out_scale.grad is not None
    np.testing.assert_allclose(float(b.out_scale.grad), g * float(a.out_scale.grad), rtol=1e-5)
