"""Grouped tables from per-axis Q/DQ: a QDQ site whose DequantizeLinear and QuantizeLinear carry
one scale and zero point per channel becomes a :class:`~gelu_quant.lut.grouped.GroupedLutSpec`.

Channels (the last axis) with the same ``(input scale, input zero point, output scale, output
zero point)`` share a group, numbered in order of first appearance; each group's table is
:func:`~gelu_quant.lut.table.build_lut` of its qparams, exactly the table a per-tensor QDQ site
with those qparams gets (so a model exported from
:class:`~gelu_quant.torch.grouped.GroupedGeluFakeQuant` converts to the tables it trained with).
Refused, with a reason (the site is then left as it is): a channel axis other than the last, the
two sides on different channel counts or dtypes other than int8/uint8, more than
:data:`~gelu_quant.lut.grouped.MAX_GROUPS` distinct groups (a per-channel-calibrated model:
one table per channel is not what grouped tables are for).
"""

from __future__ import annotations

import numpy as np

from gelu_quant.errors import ModelError
from gelu_quant.graph.sites import AxisQuantInfo
from gelu_quant.lut.grouped import MAX_GROUPS, GroupedLutSpec
from gelu_quant.lut.table import LutSpec, build_lut
from gelu_quant.numerics import GeluForm
from gelu_quant.qparams import QParams


def _check_side(q: AxisQuantInfo, side: str) -> None:
    if not q.on_last_axis:
        rank = "unknown rank" if q.rank is None else f"rank {q.rank}"
        raise ModelError(
            f"per-axis {side} {q.node!r} quantizes axis {q.axis} ({rank}): grouped tables group "
            "the channels of the last axis; export with the channel axis last (axis=-1)"
        )
    if q.dtype not in ("int8", "uint8"):
        raise ModelError(
            f"per-axis {side} {q.node!r} has {q.dtype} codes: grouped tables take int8/uint8"
        )


def axis_grouped_spec(
    qin: AxisQuantInfo,
    qout: AxisQuantInfo,
    form: GeluForm,
    channels: int | str | None = None,
) -> GroupedLutSpec:
    """The grouped tables of a per-axis ``DequantizeLinear -> GELU -> QuantizeLinear`` site
    (``channels``: the site's last dimension when known). Raises ModelError when the site is not
    one grouped tables can represent (see the module docstring)."""
    _check_side(qin, "DequantizeLinear")
    _check_side(qout, "QuantizeLinear")
    n = len(qin.scales)
    if len(qout.scales) != n:
        raise ModelError(
            f"per-axis DequantizeLinear {qin.node!r} has {n} channels, QuantizeLinear "
            f"{qout.node!r} {len(qout.scales)}: not one channel axis"
        )
    if isinstance(channels, int) and channels != n:
        raise ModelError(f"per-axis Q/DQ over {n} channels on a last axis of {channels}")
    keys = list(zip(qin.scales, qin.zero_points, qout.scales, qout.zero_points, strict=True))
    distinct = list(dict.fromkeys(keys))
    if len(distinct) > MAX_GROUPS:
        raise ModelError(
            f"per-axis Q/DQ with {len(distinct)} distinct (scale, zero point) pairs over {n} "
            f"channels: grouped tables hold at most {MAX_GROUPS} groups (quantize groups of "
            "channels with shared qparams, or per tensor)"
        )
    index = {k: i for i, k in enumerate(distinct)}
    channel_group = np.array([index[k] for k in keys], dtype=np.int64)
    tables: list[LutSpec] = []
    for s_in, z_in, s_out, z_out in distinct:
        in_qp = QParams(s_in, z_in, qin.dtype, qin.bits)  # type: ignore[arg-type]
        out_qp = QParams(s_out, z_out, qout.dtype, qout.bits)  # type: ignore[arg-type]
        tables.append(
            build_lut(
                in_qparams=in_qp,
                out_dtype=out_qp.dtype,
                out_qparams=out_qp,
                form=form,
            )
        )
    return GroupedLutSpec(groups=tuple(tables), channel_group=channel_group)
