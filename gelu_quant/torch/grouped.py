"""A grouped fake-quant GELU: K tables, one per group of channels, exactly the grouped spec.

:class:`GroupedGeluFakeQuant` is to :class:`~gelu_quant.lut.grouped.GroupedLutSpec` what
:class:`~gelu_quant.torch.fakequant.GeluFakeQuant` is to a single table: channel ``c`` of the
last axis uses group ``g = channel_group[c]`` — its input code with ONNX QuantizeLinear semantics
(``x / s_in[g]`` in float32, round half to even, NaN to 0, ``+ z_in[g]``, saturate to the group's
code range), the entry of the group's table (:func:`~gelu_quant.lut.table.build_lut` of the
group's qparams, float64), ``(code - z_out[g]) · s_out[g]`` in float32. So the output equals
:meth:`GroupedLutSpec.evaluate` bit for bit.

Backward: per channel, the estimator of :class:`GeluFakeQuant` with the channel's group scales
(straight-through round, GELU's derivative inside the range, 0 outside; LSQ gradients for the
per-group scales, summed over the group's channels). With ``lsq_grad_scale`` group ``g``'s
gradients are multiplied by ``1 / sqrt(n_g · qmax_g)``, ``n_g`` the number of elements of the
group's channels. Zero points stay fixed integers.

Inside ``torch.onnx.export`` (:func:`~gelu_quant.torch.onnx_export.export_qat_onnx`, opset >= 13)
it is written as per-axis ``QuantizeLinear -> DequantizeLinear -> GELU -> QuantizeLinear ->
DequantizeLinear`` on the last axis, every channel carrying its group's scale and zero point
(``Clip`` after each QuantizeLinear for low-bit codes); ``gelu-quant convert`` collapses that
into one ``GeluGroupedLut`` with the trained tables, bit for bit. The trained per-group qparams
are also :meth:`GroupedGeluFakeQuant.spec`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from gelu_quant.errors import SpecError
from gelu_quant.lut.grouped import GroupedLutSpec
from gelu_quant.lut.table import LutSpec, build_lut
from gelu_quant.qparams import QParams
from gelu_quant.torch.fakequant import _round_ste, torch_gelu


class GroupedGeluFakeQuant(nn.Module):
    """GELU through K per-group tables (channels on the last axis), ONNX quantization semantics.

    ``groups``: each group's ``(in_qparams, out_qparams)`` (integer outputs; every group the same
    dtypes); ``channel_group``: the group index of every channel; ``form``: the tables' GELU.
    ``learn_ranges``: the per-group scales become two parameters of shape ``[K]``.
    """

    channel_group: torch.Tensor
    in_zero_point: torch.Tensor
    out_zero_point: torch.Tensor
    in_qmin: torch.Tensor
    in_qmax: torch.Tensor
    out_qmin: torch.Tensor
    out_qmax: torch.Tensor
    in_scale: torch.Tensor
    out_scale: torch.Tensor
    _counts: torch.Tensor

    def __init__(
        self,
        groups: Sequence[tuple[QParams, QParams]],
        channel_group: Sequence[int] | np.ndarray | torch.Tensor,
        form: str = "exact",
        *,
        learn_ranges: bool = False,
        lsq_grad_scale: bool = True,
    ) -> None:
        super().__init__()
        if not groups:
            raise SpecError("a grouped fake-quant GELU needs at least one group")
        cg = torch.as_tensor(np.array(channel_group, dtype=np.int64))
        if cg.ndim != 1 or cg.numel() == 0:
            raise SpecError("channel_group must be a non-empty 1-D sequence of group indices")
        if int(cg.min()) < 0 or int(cg.max()) >= len(groups):
            raise SpecError(f"channel_group holds group indices outside 0..{len(groups) - 1}")
        dts = {(iq.dtype, oq.dtype) for iq, oq in groups}
        if len(dts) != 1:
            raise SpecError("every group must have the same input and output dtype")
        self.form = form
        self.site_id = ""
        self.in_dtype, self.out_dtype = next(iter(dts))
        self.lsq_grad_scale = lsq_grad_scale
        self.in_bits = [iq.bits for iq, _ in groups]
        self.out_bits = [oq.bits for _, oq in groups]
        self.register_buffer("channel_group", cg)
        ints = {
            "in_zero_point": [iq.zero_point for iq, _ in groups],
            "out_zero_point": [oq.zero_point for _, oq in groups],
            "in_qmin": [iq.qmin for iq, _ in groups],
            "in_qmax": [iq.qmax for iq, _ in groups],
            "out_qmin": [oq.qmin for _, oq in groups],
            "out_qmax": [oq.qmax for _, oq in groups],
        }
        for name, v in ints.items():
            self.register_buffer(name, torch.tensor(v, dtype=torch.int64))
        s_in = torch.tensor([iq.scale for iq, _ in groups], dtype=torch.float32)
        s_out = torch.tensor([oq.scale for _, oq in groups], dtype=torch.float32)
        if learn_ranges:
            self.in_scale = nn.Parameter(s_in)
            self.out_scale = nn.Parameter(s_out)
        else:
            self.register_buffer("in_scale", s_in)
            self.register_buffer("out_scale", s_out)
        counts = torch.bincount(cg, minlength=len(groups))
        if bool((counts == 0).any()):
            raise SpecError("every group needs at least one channel; number groups without gaps")
        self.register_buffer("_counts", counts)
        self._key: tuple[float, ...] | None = None
        self._spec: GroupedLutSpec | None = None
        self._tables = torch.zeros(0, dtype=torch.int64)
        self._width = 0
        self.spec()

    @classmethod
    def from_spec(
        cls, spec: GroupedLutSpec, *, learn_ranges: bool = False, lsq_grad_scale: bool = True
    ) -> GroupedGeluFakeQuant:
        """The module of a grouped spec (integer outputs)."""
        pairs = []
        for g in spec.groups:
            if g.out_qparams is None:
                raise SpecError("a grouped fake-quant GELU needs integer output codes")
            pairs.append((g.in_qparams, g.out_qparams))
        m = cls(
            pairs,
            spec.channel_group,
            spec.form,
            learn_ranges=learn_ranges,
            lsq_grad_scale=lsq_grad_scale,
        )
        assert m.spec() == spec
        return m

    # -- the spec ---------------------------------------------------------------------------
    @property
    def groups(self) -> int:
        return len(self.in_bits)

    def group_qparams(self, k: int) -> tuple[QParams, QParams]:
        """Group ``k``'s current input and output qparams (scales as float32 values)."""
        iq = QParams(
            float(self.in_scale[k].detach()),
            int(self.in_zero_point[k]),
            self.in_dtype,
            self.in_bits[k],
        )
        oq = QParams(
            float(self.out_scale[k].detach()),
            int(self.out_zero_point[k]),
            self.out_dtype,
            self.out_bits[k],
        )
        return iq, oq

    def spec(self) -> GroupedLutSpec:
        """The grouped table of the current qparams (rebuilt when a scale changed)."""
        key = tuple(self.in_scale.detach().tolist()) + tuple(self.out_scale.detach().tolist())
        if key != self._key or self._spec is None:
            specs: list[LutSpec] = []
            for k in range(self.groups):
                iq, oq = self.group_qparams(k)
                specs.append(
                    build_lut(
                        in_qparams=iq,
                        out_dtype=self.out_dtype,
                        out_qparams=oq,
                        form=self.form,  # type: ignore[arg-type]
                    )
                )
            self._spec = GroupedLutSpec(
                groups=tuple(specs), channel_group=self.channel_group.numpy().copy()
            )
            width = max(s.table.size for s in specs)
            tables = np.zeros((self.groups, width), dtype=np.int64)
            for k, s in enumerate(specs):
                tables[k, : s.table.size] = s.table.astype(np.int64)
            self._tables = torch.from_numpy(tables.reshape(-1))
            self._width = width
            self._key = key
        return self._spec

    # -- forward ----------------------------------------------------------------------------
    def _per_channel(self, t: torch.Tensor) -> torch.Tensor:
        return t[self.channel_group]

    def input_codes(self, x: torch.Tensor) -> torch.Tensor:
        """Each element's QuantizeLinear code with its channel's group qparams (int64)."""
        self._check(x)
        s = self._per_channel(self.in_scale.detach())
        r = torch.nan_to_num(torch.round(x.detach().float() / s), nan=0.0)
        r = r + self._per_channel(self.in_zero_point)
        lo, hi = self._per_channel(self.in_qmin), self._per_channel(self.in_qmax)
        return torch.clamp(r, lo.to(r.dtype), hi.to(r.dtype)).to(torch.int64)

    def output_codes(self, x: torch.Tensor) -> torch.Tensor:
        """The group table's output code for every element of ``x``."""
        self.spec()
        q = self.input_codes(x) - self._per_channel(self.in_qmin)
        return self._tables[self.channel_group * self._width + q]

    def table_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The exact grouped-table value (float32), no gradient."""
        codes = self.output_codes(x) - self._per_channel(self.out_zero_point)
        return codes.to(torch.float32) * self._per_channel(self.out_scale.detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export():
            from gelu_quant.torch.onnx_export import qdq_grouped_gelu

            return qdq_grouped_gelu(self, x)
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
            per_channel = max(x.numel() // max(x.shape[-1], 1), 1)
            n = (self._counts * per_channel).to(torch.float64)
            g_in = (1.0 / torch.sqrt(n * self.in_qmax.clamp(min=1))).to(torch.float32)
            g_out = (1.0 / torch.sqrt(n * self.out_qmax.clamp(min=1))).to(torch.float32)
            s_in = _grad_scaled_vec(s_in, g_in)
            s_out = _grad_scaled_vec(s_out, g_out)
        f32 = torch.float32
        zi = self._per_channel(self.in_zero_point).to(f32)
        zo = self._per_channel(self.out_zero_point).to(f32)
        ilo, ihi = self._per_channel(self.in_qmin).to(f32), self._per_channel(self.in_qmax).to(f32)
        olo = self._per_channel(self.out_qmin).to(f32)
        ohi = self._per_channel(self.out_qmax).to(f32)
        sd = self._per_channel(self.in_scale.detach())
        x = torch.nan_to_num(x, nan=0.0)
        x = torch.clamp(x, (ilo - zi - 1) * sd, (ihi - zi + 1) * sd)
        si, so = self._per_channel(s_in), self._per_channel(s_out)
        # torch.clamp, not maximum/minimum: at a bound the gradient passes whole (as in LSQ)
        codes = torch.clamp(_round_ste(x / si) + zi, ilo, ihi)
        y = torch_gelu((codes - zi) * si, self.form)
        codes = torch.clamp(_round_ste(y / so) + zo, olo, ohi)
        return (codes - zo) * so

    def _check(self, x: torch.Tensor) -> None:
        c = self.channel_group.numel()
        if x.ndim == 0 or x.shape[-1] != c:
            raise SpecError(
                f"a grouped GELU over {c} channels needs inputs whose last axis has {c} entries, "
                f"got shape {tuple(x.shape)}"
            )

    def extra_repr(self) -> str:
        return (
            f"form={self.form}, {self.groups} groups over {self.channel_group.numel()} channels, "
            f"{self.in_bits[0]}-bit {self.in_dtype}, learn_ranges={self._learning()}"
        )


def _grad_scaled_vec(s: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``s`` forward, ``g · ds`` backward, element-wise (LSQ's gradient scale per group)."""
    return (s - s * g).detach() + s * g
