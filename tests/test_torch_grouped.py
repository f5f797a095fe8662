"""GroupedGeluFakeQuant: the forward is GroupedLutSpec.evaluate bit for bit on every code of every
group; the backward is, group by group, the per-tensor estimator's (itself checked against
finite differences and LSQ's closed forms in test_torch_fakequant.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from gelu_quant.errors import SpecError  # noqa: E402
from gelu_quant.lut.grouped import GroupedLutSpec, partition_channels  # noqa: E402
from gelu_quant.lut.table import build_lut  # noqa: E402
from gelu_quant.numerics import GELU_FORMS  # noqa: E402
from gelu_quant.torch import GeluFakeQuant, GroupedGeluFakeQuant  # noqa: E402

CHANNELS = 24


def _grouped_spec(form: str, bits: int, dtype: str, k: int) -> GroupedLutSpec:
    """K tables over channels with seeded ranges, grouped by partition_channels."""
    rng = np.random.default_rng(bits * 10 + k)
    lo = -rng.uniform(0.5, 12.0, CHANNELS)
    hi = rng.uniform(0.3, 20.0, CHANNELS)
    cg = partition_channels(lo, hi, k)
    specs = []
    for g in range(int(cg.max()) + 1):
        m = cg == g
        specs.append(
            build_lut(
                in_range=(float(lo[m].min()), float(hi[m].max())),
                in_dtype=dtype,  # type: ignore[arg-type]
                out_dtype=dtype,  # type: ignore[arg-type]
                form=form,  # type: ignore[arg-type]
                in_bits=bits,
                out_bits=bits,
            )
        )
    return GroupedLutSpec(groups=tuple(specs), channel_group=cg)


def _probes(spec: GroupedLutSpec) -> np.ndarray:
    """Rows of inputs, ``[N, C]``: column ``c`` holds every code value of its group, every
    rounding midpoint and its float32 neighbours, values beyond both ends and the specials."""
    cols = []
    for g in spec.groups:
        qp = g.in_qparams
        s = np.float64(np.float32(qp.scale))
        k = np.arange(qp.qmin - 3, qp.qmax + 4, dtype=np.float64) - qp.zero_point
        mids = ((k + 0.5) * s).astype(np.float32)
        cols.append(
            np.concatenate(
                [
                    (k * s).astype(np.float32),
                    mids,
                    np.nextafter(mids, np.float32(np.inf)),
                    np.nextafter(mids, np.float32(-np.inf)),
                    np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e30, -1e30], np.float32),
                ]
            )
        )
    n = max(c.size for c in cols)
    cols = [np.resize(c, n) for c in cols]  # repeat the shorter groups' probes
    return np.stack([cols[int(g)] for g in spec.channel_group], axis=1)


@pytest.mark.parametrize("form", GELU_FORMS)
@pytest.mark.parametrize("bits", [8, 6, 4])
@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_forward_is_the_grouped_spec_bit_for_bit(form: str, bits: int, dtype: str) -> None:
    for k in (1, 3, 5):
        spec = _grouped_spec(form, bits, dtype, k)
        m = GroupedGeluFakeQuant.from_spec(spec)
        assert m.spec() == spec
        x = _probes(spec)
        codes = m.input_codes(torch.from_numpy(x)).numpy()
        for c in range(CHANNELS):  # every code of every group is reached
            g = spec.groups[int(spec.channel_group[c])].in_qparams
            assert set(codes[:, c].tolist()) == set(range(g.qmin, g.qmax + 1))
        want = spec.evaluate(x)
        with torch.no_grad():
            got = m(torch.from_numpy(x)).numpy()
        assert got.dtype == want.dtype == np.float32
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), k
        got2 = m(torch.from_numpy(x).requires_grad_(True)).detach().numpy()
        assert np.array_equal(got2.view(np.uint32), want.view(np.uint32))
        # and on a batch of 3-D activations ([batch, tokens, channels])
        xr = np.random.default_rng(k).normal(0, 4, (2, 7, CHANNELS)).astype(np.float32)
        with torch.no_grad():
            got3 = m(torch.from_numpy(xr)).numpy()
        assert np.array_equal(got3.view(np.uint32), spec.evaluate(xr).view(np.uint32))


@pytest.mark.parametrize("lsq_grad_scale", [False, True])
def test_gradients_are_the_per_tensor_estimators_group_by_group(lsq_grad_scale: bool) -> None:
    """Group g's channels through the grouped module give the input gradients and (summed)
    scale gradients of a per-tensor GeluFakeQuant with group g's qparams on those channels; with
    LSQ's gradient scale, 1/sqrt(n_g qmax) uses the group's own element count n_g."""
    spec = _grouped_spec("exact", 6, "int8", 3)
    m = GroupedGeluFakeQuant.from_spec(spec, learn_ranges=True, lsq_grad_scale=lsq_grad_scale)
    rng = np.random.default_rng(7)
    x = rng.normal(0.0, 5.0, (50, CHANNELS)).astype(np.float32)
    xt = torch.from_numpy(x).requires_grad_(True)
    m(xt).sum().backward()
    assert xt.grad is not None and m.in_scale.grad is not None and m.out_scale.grad is not None
    for g, lut in enumerate(spec.groups):
        cols = np.nonzero(spec.channel_group == g)[0]
        ref = GeluFakeQuant(lut.in_qparams, lut.out_qparams, "exact", learn_ranges=True)
        ref.lsq_grad_scale = False
        xg = torch.from_numpy(np.ascontiguousarray(x[:, cols])).requires_grad_(True)
        ref(xg).sum().backward()
        assert xg.grad is not None and ref.in_scale.grad is not None
        assert ref.out_scale.grad is not None
        np.testing.assert_allclose(xt.grad.numpy()[:, cols], xg.grad.numpy(), rtol=1e-6)
        factor_in = factor_out = 1.0
        if lsq_grad_scale:
            n = x.shape[0] * cols.size
            factor_in = 1.0 / math.sqrt(n * lut.in_qparams.qmax)
            factor_out = 1.0 / math.sqrt(n * lut.out_qparams.qmax)  # type: ignore[union-attr]
        np.testing.assert_allclose(
            float(m.in_scale.grad[g]), factor_in * float(ref.in_scale.grad), rtol=1e-4, atol=1e-6
        )
        np.testing.assert_allclose(
            float(m.out_scale.grad[g]), factor_out * float(ref.out_scale.grad), rtol=1e-4
        )


def test_learned_scales_rebuild_every_group_table() -> None:
    spec = _grouped_spec("tanh", 4, "int8", 3)
    m = GroupedGeluFakeQuant.from_spec(spec, learn_ranges=True)
    x = torch.randn(64, CHANNELS, generator=torch.Generator().manual_seed(0)) * 4
    for _ in range(3):  # sign-SGD steps of 2 % of each scale
        m.zero_grad()
        ((m(x) - torch.nn.functional.gelu(x, approximate="tanh")) ** 2).mean().backward()
        with torch.no_grad():
            for p in (m.in_scale, m.out_scale):
                assert p.grad is not None and bool((p.grad != 0).all())
                p.sub_(0.02 * p * torch.sign(p.grad))
    new = m.spec()
    assert new != spec
    for g in range(len(spec.groups)):
        iq, oq = m.group_qparams(g)
        assert new.groups[g] == build_lut(in_qparams=iq, out_qparams=oq, form="tanh")
    with torch.no_grad():
        got = m(x).numpy()
    assert np.array_equal(got, new.evaluate(x.numpy()))


def test_wrong_channel_count_and_empty_groups_are_refused() -> None:
    spec = _grouped_spec("exact", 8, "int8", 3)
    m = GroupedGeluFakeQuant.from_spec(spec)
    with pytest.raises(SpecError, match="24 entries"):
        m(torch.zeros(2, 23))
    pairs = [(g.in_qparams, g.out_qparams) for g in spec.groups]
    with pytest.raises(SpecError, match="at least one channel"):
        GroupedGeluFakeQuant(pairs, [0] * CHANNELS)  # type: ignore[arg-type]
