"""A fake-quant GELU whose forward pass is exactly the table the device runs.

:class:`GeluFakeQuant` computes, per tensor,

1. input codes with ONNX QuantizeLinear semantics: ``x / s_in`` in float32 (IEEE division, as ORT
   and :func:`gelu_quant.qparams.quantize_linear` do), round half to even (``torch.round``), NaN to
   0, ``+ z_in``, saturate to the code range of ``bits`` bits;
2. the table entry of that code, built by :func:`gelu_quant.lut.table.build_lut` from the current
   qparams (``Q_out(GELU(DQ_in(q)))`` in float64 — the very spec ``convert`` writes);
3. output dequantization ``(code - z_out) * s_out`` in float32.

So the output equals :meth:`LutSpec.evaluate` bit for bit on every input.

Backward (the estimator, documented exactly): the forward *value* is the table's, the gradient is
that of the "soft" chain ``y = FQ_out(g(FQ_in(x)))`` where ``g`` is the form's GELU in float32
and ``FQ(v) = (clamp(round_ste(v / s) + z, qmin, qmax) - z) · s`` is an LSQ fake quantizer with a
straight-through round (``round_ste(u) = u`` for the gradient). Hence:

* ``dy/dx = g'(x̂)`` where both ``x`` and ``g(x̂)`` fall inside their code ranges, else 0
  (``x̂`` is the dequantized input code: GELU's own derivative, clipped outside the range);
* ``dy/ds`` (LSQ, Esser et al. 2020): ``round(v) - v`` inside the range, ``qmin - z`` below,
  ``qmax - z`` above, for the output quantizer directly and for the input quantizer through
  ``g'``; each scale's gradient is multiplied by LSQ's ``1 / sqrt(numel · qmax_pos)`` when
  ``lsq_grad_scale`` is on. Zero points stay fixed integers (they are the ONNX zero points).

Scales are learned only when ``learn_ranges=True``; the table is then rebuilt from the current
(float32) scales whenever they change, so training always sees the deployable table.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from gelu_quant.errors import SpecError
from gelu_quant.lut.table import LutSpec, build_lut
from gelu_quant.numerics import GELU_FORMS, QUICK_ALPHA
from gelu_quant.qparams import QDType, QParams


def torch_gelu(x: torch.Tensor, form: str) -> torch.Tensor:
    """The form's GELU in torch (float32 autograd path of the estimator)."""
    if form == "exact":
        return nn.functional.gelu(x)
    if form == "tanh":
        return nn.functional.gelu(x, approximate="tanh")
    if form == "quick":
        return x * torch.sigmoid(QUICK_ALPHA * x)
    raise SpecError(f"unknown GELU form {form!r}; expected one of exact, tanh, quick")


def _round_ste(u: torch.Tensor) -> torch.Tensor:
    return u + (torch.round(u) - u).detach()


def _grad_scaled(s: torch.Tensor, g: float) -> torch.Tensor:
    """``s`` in the forward pass, ``g · ds`` in the backward pass (LSQ's gradient scale)."""
    return (s - s * g).detach() + s * g


def lsq_fake_quant(
    x: torch.Tensor, scale: torch.Tensor, zero_point: int, qmin: int, qmax: int
) -> torch.Tensor:
    """``(clamp(round_ste(x / s) + z, qmin, qmax) - z) · s`` with LSQ's straight-through round."""
    codes = torch.clamp(_round_ste(x / scale) + zero_point, qmin, qmax)
    return (codes - zero_point) * scale


class GeluFakeQuant(nn.Module):
    """GELU through a lookup table with ONNX quantization semantics (per tensor).

    ``in_qparams``: the input codes' qparams (int8/uint8, 2–8 bits); ``out_qparams``: the output
    codes' (default: GELU's output range over the input codes, as ``build_lut`` chooses);
    ``form``: the table's GELU (``exact``, ``tanh``, ``quick`` — QuickGELU
    ``x · sigmoid(1.702 x)``, transformers' ``QuickGELUActivation``). ``learn_ranges``: the
    two scales become parameters (LSQ gradients).
    """

    def __init__(
        self,
        in_qparams: QParams,
        out_qparams: QParams | None = None,
        form: str = "exact",
        *,
        learn_ranges: bool = False,
        lsq_grad_scale: bool = True,
    ) -> None:
        super().__init__()
        if form not in GELU_FORMS:
            raise SpecError(
                f"GELU form {form!r} has no table in this gelu-quant; "
                f"expected one of {', '.join(GELU_FORMS)}"
            )
        spec = build_lut(
            in_qparams=in_qparams,
            out_dtype=in_qparams.dtype if out_qparams is None else out_qparams.dtype,
            out_qparams=out_qparams,
            form=form,
        )
        assert spec.out_qparams is not None
        self.form = form
        self.site_id = ""
        """The site id (``gelu0``, …) :func:`~gelu_quant.torch.prepare.prepare_qat` gave it."""
        self.in_dtype: QDType = in_qparams.dtype
        self.out_dtype: QDType = spec.out_qparams.dtype
        self.in_bits = in_qparams.bits
        self.out_bits = spec.out_qparams.bits
        self.in_zero_point = in_qparams.zero_point
        self.out_zero_point = spec.out_qparams.zero_point
        self.in_qmin, self.in_qmax = in_qparams.qmin, in_qparams.qmax
        self.out_qmin, self.out_qmax = spec.out_qparams.qmin, spec.out_qparams.qmax
        self.lsq_grad_scale = lsq_grad_scale
        s_in = torch.tensor(in_qparams.scale, dtype=torch.float32)
        s_out = torch.tensor(spec.out_qparams.scale, dtype=torch.float32)
        if learn_ranges:
            self.in_scale = nn.Parameter(s_in)
            self.out_scale = nn.Parameter(s_out)
        else:
            self.register_buffer("in_scale", s_in)
            self.register_buffer("out_scale", s_out)
        self._key: tuple[float, float] | None = None
        self._table = torch.zeros(0, dtype=torch.int64)
        self._spec: LutSpec | None = None
        self._set_table(spec)

    # -- the spec ---------------------------------------------------------------------------
    @property
    def in_qparams(self) -> QParams:
        """Current input qparams (the scale rounded to float32, as ONNX stores it)."""
        return QParams(
            float(self.in_scale.detach()), self.in_zero_point, self.in_dtype, self.in_bits
        )

    @property
    def out_qparams(self) -> QParams:
        """Current output qparams."""
        return QParams(
            float(self.out_scale.detach()), self.out_zero_point, self.out_dtype, self.out_bits
        )

    def _set_table(self, spec: LutSpec) -> None:
        self._spec = spec
        self._table = torch.from_numpy(spec.table.astype(np.int64))
        self._key = (float(self.in_scale.detach()), float(self.out_scale.detach()))

    def spec(self) -> LutSpec:
        """The table of the current qparams: the spec ``convert`` builds from them."""
        key = (float(self.in_scale.detach()), float(self.out_scale.detach()))
        if key != self._key or self._spec is None:
            self._set_table(
                build_lut(
                    in_qparams=self.in_qparams,
                    out_dtype=self.out_dtype,
                    out_qparams=self.out_qparams,
                    form=self.form,
                )
            )
        assert self._spec is not None
        return self._spec

    # -- forward ----------------------------------------------------------------------------
    def input_codes(self, x: torch.Tensor) -> torch.Tensor:
        """QuantizeLinear of ``x`` (int64 codes in the ``bits``-bit range)."""
        s = self.in_scale.detach()
        r = torch.nan_to_num(torch.round(x.detach().float() / s), nan=0.0)
        return torch.clamp(r + self.in_zero_point, self.in_qmin, self.in_qmax).to(torch.int64)

    def output_codes(self, x: torch.Tensor) -> torch.Tensor:
        """The table's output code for every element of ``x``."""
        self.spec()
        return self._table[self.input_codes(x) - self.in_qmin]

    def table_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The exact table value (float32), no gradient."""
        codes = self.output_codes(x)
        return (codes - self.out_zero_point).to(torch.float32) * self.out_scale.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export():
            from gelu_quant.torch.onnx_export import qdq_gelu

            return qdq_gelu(self, x)
        exact = self.table_forward(x)
        if not (torch.is_grad_enabled() and (x.requires_grad or self._learning())):
            return exact.to(x.dtype)
        soft = self._soft(x.float())
        return (exact + (soft - soft.detach())).to(x.dtype)

    def _learning(self) -> bool:
        return isinstance(self.in_scale, nn.Parameter) and bool(self.in_scale.requires_grad)

    def _soft(self, x: torch.Tensor) -> torch.Tensor:
        s_in: torch.Tensor = self.in_scale
        s_out: torch.Tensor = self.out_scale
        if self.lsq_grad_scale and self._learning():
            n = max(x.numel(), 1)
            s_in = _grad_scaled(s_in, 1.0 / math.sqrt(n * max(self.in_qmax, 1)))
            s_out = _grad_scaled(s_out, 1.0 / math.sqrt(n * max(self.out_qmax, 1)))
        # NaN and values far outside the range would turn the straight-through terms into NaN;
        # beyond one step outside the range the estimator is constant anyway.
        sd = self.in_scale.detach()
        x = torch.nan_to_num(x, nan=0.0)
        x = torch.clamp(
            x,
            float((self.in_qmin - self.in_zero_point - 1) * sd),
            float((self.in_qmax - self.in_zero_point + 1) * sd),
        )
        xh = lsq_fake_quant(x, s_in, self.in_zero_point, self.in_qmin, self.in_qmax)
        y = torch_gelu(xh, self.form)
        return lsq_fake_quant(y, s_out, self.out_zero_point, self.out_qmin, self.out_qmax)

    def extra_repr(self) -> str:
        iq, oq = self.in_qparams, self.out_qparams
        lo, hi = iq.real_range
        return (
            f"form={self.form}, in=[{lo:.4g}, {hi:.4g}] {iq.bits}-bit {iq.dtype}, "
            f"out scale={oq.scale:.4g} zp={oq.zero_point} {oq.bits}-bit, "
            f"learn_ranges={self._learning()}"
        )

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_range(
        cls,
        lo: float,
        hi: float,
        *,
        bits: int = 8,
        out_bits: int | None = None,
        dtype: QDType = "int8",
        form: str = "exact",
        **kwargs: Any,
    ) -> GeluFakeQuant:
        """The table for input range ``[lo, hi]``: ``bits``-bit input codes, ``out_bits``-bit
        output codes (default ``bits``) over GELU's output range, as ``convert`` builds it."""
        from gelu_quant.lut.table import gelu_output_qparams

        iq = QParams.from_range(lo, hi, dtype, bits)
        oq = gelu_output_qparams(iq, dtype, form, out_bits or bits)  # type: ignore[arg-type]
        return cls(iq, oq, form, **kwargs)
