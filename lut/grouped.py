"""Grouped tables: K int8 tables for one GELU, one per group of channels.

A transformer's GELU input range is forced by a few outlier channels (all-MiniLM-L6-v2: a few
hundred values at 14–25 on a bulk within −9…4). One table per tensor spends its codes on that
range for every channel; a :class:`GroupedLutSpec` gives each group of channels its own input and
output qparams and its own 256-entry table. Channel ``c`` (on the last axis) uses table
``channel_group[c]``: input code ``Q_k(x)``, output code ``table_k[q - qmin]``, output value
``DQ_k(code)``, all with the group's qparams, exactly as :class:`~gelu_quant.lut.table.LutSpec`.

Deploying it needs no hardware beyond one table per op: permuting the FFN's channels (the columns
of the MatMul before GELU and the rows of the one after, an exact reordering) makes each group a
contiguous slice; per-group output scales fold into the next layer's weight rows, per-group input
scales into the producer's per-channel requantization.

The groups are chosen by :func:`partition_channels`: channels sorted by their calibrated maximum,
cut into K contiguous runs that minimise the sum over channels of the squared width of their
group's range (the squared quantization step each channel gets), by dynamic programming. Equal-
size groups (K equal runs of the sorted channels) are the simpler alternative.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from gelu_quant.errors import SpecError
from gelu_quant.lut.spec import GeluApprox, register_spec
from gelu_quant.lut.table import LutSpec, OutDType, build_lut
from gelu_quant.numerics import GeluForm
from gelu_quant.qparams import QDType

Partition = Literal["optimal", "equal"]
PARTITIONS: tuple[Partition, ...] = ("optimal", "equal")
MAX_GROUPS = 64


@register_spec
@dataclass(frozen=True, eq=False)
class GroupedLutSpec(GeluApprox):
    """K tables, one per group of channels of the last axis (see the module docstring)."""

    kind = "grouped_lut"

    groups: tuple[LutSpec, ...]
    channel_group: npt.NDArray[np.int64] = field(repr=False)
    """Group index of every channel of the last axis."""
    form: GeluForm = field(init=False)

    def __post_init__(self) -> None:
        if not self.groups:
            raise SpecError("a grouped table needs at least one group")
        if len(self.groups) > MAX_GROUPS:
            raise SpecError(f"{len(self.groups)} groups: at most {MAX_GROUPS}")
        first = self.groups[0]
        for g in self.groups[1:]:
            same = (g.in_qparams.dtype, g.out_dtype, g.form) == (
                first.in_qparams.dtype,
                first.out_dtype,
                first.form,
            )
            if not same:
                raise SpecError("every group must have the same input/output dtype and form")
        cg = np.asarray(self.channel_group)
        if cg.ndim != 1 or cg.size == 0 or cg.dtype.kind not in "iu":
            raise SpecError("channel_group must be a non-empty 1-D integer array")
        if cg.min() < 0 or cg.max() >= len(self.groups):
            raise SpecError(f"channel_group holds group indices outside 0..{len(self.groups) - 1}")
        cg = cg.astype(np.int64)
        cg.setflags(write=False)
        object.__setattr__(self, "channel_group", cg)
        object.__setattr__(self, "form", first.form)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, GroupedLutSpec)
            and self.groups == other.groups
            and np.array_equal(self.channel_group, other.channel_group)
        )

    __hash__ = None  # type: ignore[assignment]

    # -- semantics ---------------------------------------------------------------------------
    @property
    def channels(self) -> int:
        return int(self.channel_group.size)

    @property
    def domain(self) -> tuple[float, float]:
        los, his = zip(*(g.domain for g in self.groups), strict=True)
        return min(los), max(his)

    @property
    def table_bytes(self) -> int:
        """Bytes of the tables (the cost a lookup unit pays), channel map not included."""
        return sum(g.table.nbytes for g in self.groups)

    def lookup(self, codes: npt.ArrayLike) -> npt.NDArray[Any]:
        """Input codes (last axis = channels, each in its group's code space) to output codes."""
        q = np.asarray(codes)
        self._check_channels(q)
        out = np.empty(q.shape, dtype=self.groups[0].table.dtype)
        for k, g in enumerate(self.groups):
            mask = self.channel_group == k
            out[..., mask] = g.lookup(q[..., mask])
        return out

    def evaluate(self, x: npt.ArrayLike) -> npt.NDArray[np.floating]:
        """Per channel: its group's QuantizeLinear -> table -> DequantizeLinear."""
        a = np.asarray(x)
        self._check_channels(a)
        out: npt.NDArray[np.floating] | None = None
        for k, g in enumerate(self.groups):
            mask = self.channel_group == k
            if not mask.any():
                continue
            y = g.evaluate(a[..., mask])
            if out is None:
                out = np.empty(a.shape, dtype=y.dtype)
            out[..., mask] = y
        assert out is not None
        return out

    def _check_channels(self, a: npt.NDArray[Any]) -> None:
        if a.ndim == 0 or a.shape[-1] != self.channels:
            raise SpecError(
                f"a grouped table over {self.channels} channels needs inputs whose last axis has "
                f"{self.channels} entries, got shape {a.shape}"
            )

    # -- serialisation -----------------------------------------------------------------------
    def payload(self) -> dict[str, Any]:
        return {
            "groups": [g.payload() for g in self.groups],
            "channel_group": [int(v) for v in self.channel_group],
        }

    @classmethod
    def from_payload(cls, d: dict[str, Any]) -> GroupedLutSpec:
        return cls(
            groups=tuple(LutSpec.from_payload(g) for g in d["groups"]),
            channel_group=np.array(d["channel_group"], dtype=np.int64),
        )

    def summary(self) -> str:
        g0 = self.groups[0]
        lo, hi = self.domain
        return (
            f"grouped_lut: {self.form} GELU, {len(self.groups)} tables of {g0.table.size} "
            f"entries over {self.channels} channels, {g0.in_qparams.dtype} in [{lo:.6g}, "
            f"{hi:.6g}] -> {g0.out_dtype}, {self.table_bytes} bytes of tables"
        )

    def arrays(self) -> dict[str, npt.NDArray[Any]]:
        """Tables stacked (K x entries), the channel map, and per-group qparams as arrays."""
        out: dict[str, npt.NDArray[Any]] = {
            "tables": np.stack([g.table for g in self.groups]),
            "channel_group": self.channel_group.astype(
                np.uint8 if len(self.groups) <= 256 else np.int32
            ),
            "in_scale": np.array([g.in_qparams.scale for g in self.groups], np.float32),
            "in_zero_point": np.array([g.in_qparams.zero_point for g in self.groups], np.int32),
        }
        if self.groups[0].out_qparams is not None:
            oqs = [g.out_qparams for g in self.groups]
            out["out_scale"] = np.array([q.scale for q in oqs if q], np.float32)
            out["out_zero_point"] = np.array([q.zero_point for q in oqs if q], np.int32)
        return out


# -- building ------------------------------------------------------------------------------------
def partition_channels(
    channel_lo: npt.ArrayLike,
    channel_hi: npt.ArrayLike,
    groups: int,
    mode: Partition = "optimal",
) -> npt.NDArray[np.int64]:
    """Group index per channel: channels sorted by ``channel_hi`` (ties by index), cut into at
    most ``groups`` contiguous runs.

    ``optimal`` minimises ``sum_c (hi_g - lo_g)^2`` over channels ``c`` of group ``g`` (each
    range widened to contain 0, as qparams require) exactly, by dynamic programming over the
    sorted channels (O(groups · C²)); ``equal`` cuts the sorted channels into runs of equal size.
    Groups are numbered in order of increasing maximum.
    """
    lo = np.minimum(np.asarray(channel_lo, dtype=np.float64), 0.0)
    hi = np.maximum(np.asarray(channel_hi, dtype=np.float64), 0.0)
    if lo.ndim != 1 or lo.shape != hi.shape or lo.size == 0:
        raise SpecError("channel ranges must be two 1-D arrays of the same, non-zero length")
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        raise SpecError("channel ranges must be finite (calibrate on finite data)")
    if isinstance(groups, bool) or not isinstance(groups, int) or not 1 <= groups <= MAX_GROUPS:
        raise SpecError(f"groups must be an integer from 1 to {MAX_GROUPS}, got {groups!r}")
    if mode not in PARTITIONS:
        raise SpecError(f"unknown partition {mode!r}; expected one of {', '.join(PARTITIONS)}")
    n = lo.size
    k = min(groups, n)
    order = np.lexsort((np.arange(n), hi))
    if mode == "equal":
        runs = [r for r in np.array_split(np.arange(n), k) if r.size]
        bounds = [(int(r[0]), int(r[-1]) + 1) for r in runs]
    else:
        bounds = _optimal_runs(lo[order], hi[order], k)
    result = np.empty(n, dtype=np.int64)
    for g, (i, j) in enumerate(bounds):
        result[order[i:j]] = g
    return result


def _optimal_runs(
    lo: npt.NDArray[np.float64], hi: npt.NDArray[np.float64], k: int
) -> list[tuple[int, int]]:
    """Contiguous runs of the (hi-sorted) channels minimising sum of run size x width²."""
    n = lo.size
    best = np.full((k + 1, n + 1), np.inf)
    arg = np.zeros((k + 1, n + 1), dtype=np.int64)
    best[0, 0] = 0.0
    for j in range(1, n + 1):
        # width of run i..j-1 for every start i: hi[j-1] (sorted) minus the run's smallest lo
        run_lo = np.minimum.accumulate(lo[:j][::-1])[::-1]
        cost = (j - np.arange(j)) * (hi[j - 1] - run_lo) ** 2
        tot = best[:k, :j] + cost  # row g: the run ending at j is group g+1
        a = np.argmin(tot, axis=1)
        best[1:, j] = tot[np.arange(k), a]
        arg[1:, j] = a
    g = int(np.argmin(best[1:, n])) + 1  # fewer groups when they cost no more
    runs: list[tuple[int, int]] = []
    j = n
    while g > 0:
        i = int(arg[g, j])
        runs.append((i, j))
        j, g = i, g - 1
    return [r for r in runs[::-1] if r[1] > r[0]]


RangeChooser = Callable[[npt.NDArray[np.int64]], tuple[float, float]]
"""Given the channels of a group, its input range (e.g. a method over their statistics)."""


def build_grouped_lut(
    channel_group: npt.ArrayLike,
    group_range: RangeChooser | Sequence[tuple[float, float]],
    *,
    in_dtype: QDType = "int8",
    out_dtype: OutDType = "int8",
    form: GeluForm = "exact",
    in_bits: int | None = None,
    out_bits: int | None = None,
) -> GroupedLutSpec:
    """One :func:`~gelu_quant.lut.table.build_lut` table per group: ``group_range`` gives each
    group's input range, either as a list (one per group) or as a function of the group's
    channel indices. Output qparams follow GELU's output range over each group's input codes.
    ``in_bits`` / ``out_bits``: low-bit codes, as :func:`~gelu_quant.lut.table.build_lut`."""
    cg = np.asarray(channel_group, dtype=np.int64)
    k = int(cg.max()) + 1 if cg.size else 0
    specs = []
    for g in range(k):
        members = np.nonzero(cg == g)[0]
        if members.size == 0:
            raise SpecError(f"group {g} has no channels; number groups 0..K-1 without gaps")
        lo, hi = group_range(members) if callable(group_range) else group_range[g]
        specs.append(
            build_lut(
                in_range=(float(lo), float(hi)),
                in_dtype=in_dtype,
                out_dtype=out_dtype,
                form=form,
                in_bits=in_bits,
                out_bits=out_bits,
            )
        )
    return GroupedLutSpec(groups=tuple(specs), channel_group=cg)
