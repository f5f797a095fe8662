"""What a GELU found in a graph is: :class:`GeluSite` and its QDQ context.

Discovery (``gelu_quant.graph.discover``) produces these; calibration, conversion and evaluation
consume them. A site's ``id`` is stable for a given model (``gelu0``, ``gelu1``, … in graph
order of the main graph, then subgraphs as ``<node>/<attr>/geluN``) and the converted model
keeps the site's output tensor name, so the same id names the same GELU in both models.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from gelu_quant.numerics import GeluForm


@dataclass(frozen=True)
class QuantInfo:
    """A DequantizeLinear feeding the site or a QuantizeLinear after it."""

    tensor: str
    """The int8/uint8/int16 tensor: DQ's input, or Q's output."""
    scale: float
    zero_point: int
    dtype: str
    """"int8", "uint8" or "int16"."""
    node: str
    """Name of the DQ or Q node."""
    bits: int | None = None
    """Low-bit codes: a ``Clip`` to the code range of this many bits sits between the Q and the
    DQ (what ``gelu_quant.torch`` exports for 2–7-bit codes); None: the dtype's full width."""


@dataclass(frozen=True)
class AxisQuantInfo:
    """A per-axis DequantizeLinear feeding the site or a per-axis QuantizeLinear after it: one
    scale and zero point per index of ``axis`` (what ``gelu_quant.torch`` exports for a grouped
    fake-quant GELU, every channel carrying its group's qparams)."""

    tensor: str
    """The integer tensor: DQ's input, or Q's output."""
    node: str
    """Name of the DQ or Q node."""
    axis: int
    """The node's ``axis`` attribute as written (negative: counted from the back)."""
    rank: int | None
    """Rank of the quantized tensor when known."""
    scales: tuple[float, ...]
    zero_points: tuple[int, ...]
    dtype: str
    """"int8" or "uint8"."""
    bits: int | None = None
    """Low-bit codes (a ``Clip`` to their range after the Q), as :attr:`QuantInfo.bits`."""

    @property
    def on_last_axis(self) -> bool:
        """The axis is the tensor's last one (``-1``, or ``rank - 1`` for a known rank)."""
        return self.axis == -1 or (self.rank is not None and self.axis == self.rank - 1)


@dataclass(frozen=True)
class GeluSite:
    """One GELU in a model."""

    id: str
    form: GeluForm
    """Which function the site computes (the same word the specs use): ``exact`` (erf) GELU,
    the ``tanh`` form, or ``quick`` (QuickGELU); how it is written is its ``spelling``."""
    spelling: str
    """How it was written: ``onnx:Gelu``, ``pattern:erf``, ``pattern:tanh``,
    ``com.microsoft:Gelu``, ``com.microsoft:FastGelu``, ``com.microsoft:BiasGelu``,
    ``com.microsoft:QuickGelu``, ``pattern:quick``, ``pattern:tanh-sigmoid`` (the tanh form
    written as ``x·σ(2√(2/π)(x + 0.044715x³))``) …"""
    input: str
    """The pre-activation tensor (for bias-folded spellings: ``x``; the site's true input is
    ``input + bias``)."""
    output: str
    """The GELU's float output tensor."""
    nodes: tuple[str, ...]
    """Names of the nodes that make up the GELU (the ones conversion replaces)."""
    dtype: str = "float32"
    """Float dtype of the pre-activation: "float32" or "float16"."""
    bias: str | None = None
    """Bias tensor folded into the op (BiasGelu, FastGelu with bias), else None."""
    shape: tuple[int | str | None, ...] | None = None
    """Shape of the pre-activation when known (symbolic dims as strings)."""
    qdq_in: QuantInfo | None = None
    qdq_out: QuantInfo | None = None
    qdq_in_axis: AxisQuantInfo | None = None
    """A per-axis DequantizeLinear feeding the site (then ``qdq_in`` is None)."""
    qdq_out_axis: AxisQuantInfo | None = None
    """A per-axis QuantizeLinear after the site (then ``qdq_out`` is None)."""
    graph: str = ""
    """"" for the main graph, else the path of the subgraph (``node/attr``)."""
    alpha: float | None = None
    """QuickGELU's alpha when form == "quick"."""
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def in_subgraph(self) -> bool:
        return self.graph != ""

    @staticmethod
    def form_in_json(d: Mapping[str, Any]) -> str:
        """The form in a site's JSON record; files written before the ``form`` field say
        ``variant`` (``erf`` for exact)."""
        if "form" in d:
            return str(d["form"])
        v = str(d["variant"])
        return "exact" if v == "erf" else v

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> GeluSite:
        """Inverse of :meth:`to_json` (also reads records with the older ``variant``)."""
        d = dict(d)
        d["form"] = GeluSite.form_in_json(d)
        d.pop("variant", None)
        for key in ("qdq_in", "qdq_out"):
            if d.get(key) is not None:
                d[key] = QuantInfo(**d[key])
        for key in ("qdq_in_axis", "qdq_out_axis"):
            if d.get(key) is not None:
                a = dict(d[key])
                a["scales"] = tuple(float(v) for v in a["scales"])
                a["zero_points"] = tuple(int(v) for v in a["zero_points"])
                d[key] = AxisQuantInfo(**a)
        d["nodes"] = tuple(d.get("nodes", ()))
        d["notes"] = tuple(d.get("notes", ()))
        if d.get("shape") is not None:
            d["shape"] = tuple(d["shape"])
        return cls(**d)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["nodes"] = list(self.nodes)
        d["notes"] = list(self.notes)
        d["shape"] = None if self.shape is None else list(self.shape)
        for key in ("qdq_in", "qdq_out"):  # "bits" only when there are low-bit codes
            if d[key] is not None and d[key].get("bits") is None:
                d[key].pop("bits", None)
        for key in ("qdq_in_axis", "qdq_out_axis"):  # only for per-axis Q/DQ
            if d[key] is None:
                d.pop(key)
            else:
                d[key]["scales"] = list(d[key]["scales"])
                d[key]["zero_points"] = list(d[key]["zero_points"])
        return d
