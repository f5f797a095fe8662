"""Preparing a torch model for quantization-aware training: every GELU becomes a table.

:func:`prepare_qat` swaps every GELU of a module for a :class:`GeluFakeQuant` initialised from a
gelu-quant ranges file (or any mapping ``site id -> (lo, hi)``), and :func:`calibrate_ranges`
makes such a mapping in PyTorch with the statistics and range methods of ``gelu-quant
calibrate`` (:class:`gelu_quant.calib.stats.TensorStats`, :func:`gelu_quant.calib.methods.
select_range`).

What counts as a GELU:

* ``torch.nn.GELU`` (``approximate="none"`` → exact table, ``"tanh"`` → tanh table);
* the ``transformers.activations`` classes, when transformers is installed: ``GELUActivation``
  (exact), ``NewGELUActivation``, ``FastGELUActivation``, ``PytorchGELUTanh`` / ``GELUTanh``,
  ``AccurateGELUActivation`` (tanh form), ``QuickGELUActivation`` (quick form,
  ``x · sigmoid(1.702 x)``), ``ClippedGELUActivation`` (exact table whose output range is
  intersected with the clip bounds: the output quantizer's saturation does the clipping, to within
  one output step);
* with ``functional=True``, calls of ``torch.nn.functional.gelu`` in
  ``forward`` code: the module is traced with ``torch.fx`` (GELU modules stay leaves) and each
  call becomes a fake-quant submodule. fx cannot trace data-dependent control flow (most Hugging
  Face models): for those, swap the module that makes the call instead.

Sites are named ``gelu0``, ``gelu1``, … in order of execution when ``example_inputs`` are given
(a forward pass with hooks), otherwise in module registration order; the ranges file of the
model's ONNX export names its sites in graph order, which is the order of execution for the
TorchScript exporter (checked on the digits ViT in the tests).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gelu_quant.calib.methods import MethodName, select_range
from gelu_quant.calib.ranges_file import RangesFile, load_ranges
from gelu_quant.calib.stats import TensorStats
from gelu_quant.errors import BadInputError, ModelError, SpecError
from gelu_quant.graph.sites import GeluSite
from gelu_quant.graph.targets import Target, grouped_spec
from gelu_quant.lut.table import gelu_output_qparams
from gelu_quant.lut.tails import cut_range
from gelu_quant.qparams import QDType, QParams
from gelu_quant.torch.fakequant import GeluFakeQuant
from gelu_quant.torch.grouped import GroupedGeluFakeQuant

_TRANSFORMERS_FORMS = {
    "GELUActivation": "exact",
    "NewGELUActivation": "tanh",
    "FastGELUActivation": "tanh",
    "PytorchGELUTanh": "tanh",
    "GELUTanh": "tanh",
    "AccurateGELUActivation": "tanh",
    "QuickGELUActivation": "quick",
    "ClippedGELUActivation": "exact",
}


def gelu_form_of(module: nn.Module) -> str | None:
    """The GELU form a module computes, or None when it is not a GELU."""
    if isinstance(module, GeluFakeQuant):
        return None
    if isinstance(module, nn.GELU):
        return "tanh" if module.approximate == "tanh" else "exact"
    cls = type(module)
    if cls.__module__.startswith("transformers.") and cls.__name__ in _TRANSFORMERS_FORMS:
        return _TRANSFORMERS_FORMS[cls.__name__]
    return None


@dataclass(frozen=True)
class GeluModule:
    """One GELU module of a model: where it sits and what it computes."""

    site_id: str
    name: str
    """Qualified module name (``encoder.layer.0.intermediate.intermediate_act_fn``)."""
    form: str
    module: nn.Module


def find_gelus(model: nn.Module, example_inputs: Sequence[Any] | None = None) -> list[GeluModule]:
    """Every GELU module of ``model`` with its site id (see the module docstring for order)."""
    found = [(n, m, f) for n, m in model.named_modules() if (f := gelu_form_of(m)) is not None]
    if example_inputs is not None and found:
        order: list[int] = []
        ids = {id(m): i for i, (_, m, _) in enumerate(found)}
        hooks = [
            m.register_forward_pre_hook(lambda mod, _a: order.append(ids[id(mod)]))
            for _, m, _ in found
        ]
        try:
            with torch.no_grad():
                model(*example_inputs)
        finally:
            for h in hooks:
                h.remove()
        first = list(dict.fromkeys(order))
        first += [i for i in range(len(found)) if i not in first]  # never called: after
        found = [found[i] for i in first]
    return [GeluModule(f"gelu{i}", n, f, m) for i, (n, m, f) in enumerate(found)]


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)


RangesLike = RangesFile | str | os.PathLike[str] | Mapping[str, tuple[float, float]]


def _range_of(
    ranges: RangesLike, site: str, method: str | None, bits: int, out_bits: int | None
) -> tuple[float, float]:
    """A site's range; from a ranges file, chosen for ``bits`` / ``out_bits`` code tables as
    ``convert`` chooses it (:meth:`RangesFile.range_for`)."""
    if isinstance(ranges, RangesFile):
        return ranges.range_for(site, method, bits=bits, out_bits=out_bits or bits)
    if isinstance(ranges, Mapping):
        if site not in ranges:
            raise BadInputError(f"no range for GELU site {site!r}; the ranges give {list(ranges)}")
        lo, hi = ranges[site]
        return float(lo), float(hi)
    raise TypeError(type(ranges))


def _site_form(ranges: RangesLike, site: str) -> str | None:
    if isinstance(ranges, RangesFile):
        for s in ranges.sites:
            if s["id"] == site:
                return GeluSite.form_in_json(s)
    return None


def make_fake_quant(
    form: str,
    in_range: tuple[float, float],
    *,
    bits: int = 8,
    out_bits: int | None = None,
    dtype: QDType = "int8",
    out_clip: tuple[float, float] | None = None,
    learn_ranges: bool = True,
    tail_cut: bool = False,
) -> GeluFakeQuant:
    """The fake-quant GELU ``convert`` would build for this range (plus an optional output clip).

    ``tail_cut``: cut GELU's negative tail off the range first, as ``convert`` does with a
    calibrated range (:func:`gelu_quant.lut.tails.cut_range`, at the table's code widths)."""
    ob = out_bits or bits
    if tail_cut:
        in_range = cut_range(
            in_range[0],
            in_range[1],
            in_dtype=dtype,
            out_dtype=dtype,
            form=form,  # type: ignore[arg-type]
            in_bits=bits,
            out_bits=ob,
        )
    iq = QParams.from_range(in_range[0], in_range[1], dtype, bits)
    oq = gelu_output_qparams(iq, dtype, form, ob)  # type: ignore[arg-type]
    if out_clip is not None:
        lo, hi = oq.real_range
        lo, hi = max(lo, out_clip[0]), min(hi, out_clip[1])
        oq = QParams.from_range(lo, hi, dtype, ob)
    return GeluFakeQuant(iq, oq, form, learn_ranges=learn_ranges)


def prepare_qat(
    model: nn.Module,
    ranges: RangesLike,
    *,
    bits: int = 8,
    out_bits: int | None = None,
    dtype: QDType = "int8",
    method: str | None = None,
    learn_ranges: bool = True,
    example_inputs: Sequence[Any] | None = None,
    functional: bool = False,
    tail_cut: bool = False,
    groups: int = 1,
    group_method: str = "minmax",
) -> nn.Module:
    """Swap every GELU of ``model`` (in place) for a :class:`GeluFakeQuant`; returns the model
    (a ``torch.fx.GraphModule`` when ``functional=True``).

    ``groups`` > 1: every GELU becomes a :class:`GroupedGeluFakeQuant` with the tables
    ``convert --groups K --group-method M`` builds from the same ranges file (a path or
    :class:`RangesFile` with per-channel statistics; the negative tail is always cut, as
    ``convert`` does), bit for bit, at ``bits`` / ``out_bits``.

    ``tail_cut``: cut GELU's negative tail off each range first, as ``convert`` does when it
    builds tables from a ranges file (so ``bits=8, tail_cut=True`` gives ``convert``'s int8 table
    of each site; the cut is computed at ``bits`` / ``out_bits``).

    ``ranges``: a ranges file (path or :class:`RangesFile`, ``method`` picks a method, default
    the file's chosen one) or a mapping ``site id -> (lo, hi)`` (e.g. :func:`calibrate_ranges`).
    ``bits`` / ``out_bits``: code widths of the input and output (2..8; ``out_bits`` defaults to
    ``bits``). A site whose form differs from the ranges file's is refused.
    """
    if isinstance(ranges, (str, os.PathLike)):
        ranges = load_ranges(ranges)
    if groups != 1 and (functional or not isinstance(ranges, RangesFile)):
        raise BadInputError(
            "groups > 1 needs a ranges file with per-channel statistics (a path or RangesFile, "
            "not a mapping of ranges) and module GELUs (functional=False)"
        )
    sites = find_gelus(model, example_inputs)
    for s in sites:
        form = _site_form(ranges, s.site_id)
        if form is not None and form != s.form:
            raise BadInputError(
                f"GELU {s.name} ({s.form}) is site {s.site_id}, which the ranges file lists as "
                f"{form!r}: the ranges were made for another model or the site order differs"
            )
        if groups != 1:
            assert isinstance(ranges, RangesFile)
            gq = _grouped_fake_quant(
                ranges, s, groups, group_method, bits, out_bits, dtype, learn_ranges
            )
            _set_submodule(model, s.name, gq)
            continue
        clip = None
        if type(s.module).__name__ == "ClippedGELUActivation":
            clip = (float(s.module.min), float(s.module.max))  # type: ignore[arg-type]
        fq = make_fake_quant(
            s.form,
            _range_of(ranges, s.site_id, method, bits, out_bits),
            bits=bits,
            out_bits=out_bits,
            dtype=dtype,
            out_clip=clip,
            learn_ranges=learn_ranges,
            tail_cut=tail_cut,
        )
        fq.site_id = s.site_id
        _set_submodule(model, s.name, fq)
    if functional:
        return _swap_functional(
            model, ranges, len(sites), bits, out_bits, dtype, method, learn_ranges, tail_cut
        )
    return model


def _grouped_fake_quant(
    ranges: RangesFile,
    s: GeluModule,
    groups: int,
    group_method: str,
    bits: int,
    out_bits: int | None,
    dtype: QDType,
    learn_ranges: bool,
) -> GroupedGeluFakeQuant:
    """Site ``s``'s grouped tables, as ``convert --groups`` builds them from ``ranges``."""
    if type(s.module).__name__ == "ClippedGELUActivation":
        raise BadInputError(f"GELU {s.name} is clipped: grouped tables have no output clip")
    if dtype not in ("int8", "uint8"):
        raise BadInputError(f"grouped tables need int8 or uint8 codes, not {dtype}")
    ob = out_bits or bits
    target = Target("lut", dtype, dtype, bits=bits, out_bits=None if ob == bits else ob)
    try:
        ch = ranges.channel_ranges_for(s.site_id)
        spec = grouped_spec(
            None,
            target,
            s.form,  # type: ignore[arg-type]
            ch,
            groups,
            None
            if group_method == "minmax"
            else lambda m: ranges.group_range_for(s.site_id, m, group_method, s.form, bits, ob),
        )
    except ModelError as e:
        raise BadInputError(f"GELU {s.name} (site {s.site_id}): {e}") from None
    gq = GroupedGeluFakeQuant.from_spec(spec, learn_ranges=learn_ranges)
    gq.site_id = s.site_id
    return gq


_FUNCTIONAL_GELUS: tuple[Callable[..., Any], ...] = (nn.functional.gelu,)


def _swap_functional(
    model: nn.Module,
    ranges: RangesLike,
    first: int,
    bits: int,
    out_bits: int | None,
    dtype: QDType,
    method: str | None,
    learn_ranges: bool,
    tail_cut: bool,
) -> nn.Module:
    import torch.fx

    class _Tracer(torch.fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return isinstance(m, GeluFakeQuant) or super().is_leaf_module(m, qualname)

    try:
        graph = _Tracer().trace(model)
    except Exception as e:  # fx raises many types for untraceable code
        raise BadInputError(
            f"torch.fx cannot trace {type(model).__name__} ({type(e).__name__}: {e}); swap the "
            "modules that call torch.nn.functional.gelu instead, or pass functional=False"
        ) from None
    gm = torch.fx.GraphModule(model, graph)
    k = first
    for node in list(gm.graph.nodes):
        if node.op == "call_function" and node.target in _FUNCTIONAL_GELUS:
            approx = node.kwargs.get("approximate", node.args[1] if len(node.args) > 1 else "none")
            form = "tanh" if approx == "tanh" else "exact"
            site = f"gelu{k}"
            fq = make_fake_quant(
                form,
                _range_of(ranges, site, method, bits, out_bits),
                bits=bits,
                out_bits=out_bits,
                dtype=dtype,
                learn_ranges=learn_ranges,
                tail_cut=tail_cut,
            )
            fq.site_id = site
            name = f"gelu_fq_{k}"
            gm.add_submodule(name, fq)
            with gm.graph.inserting_after(node):
                new = gm.graph.call_module(name, (node.args[0],))
            node.replace_all_uses_with(new)
            gm.graph.erase_node(node)
            k += 1
    gm.graph.lint()
    gm.recompile()
    return gm


def fake_quant_modules(model: nn.Module) -> list[GeluFakeQuant]:
    """The model's fake-quant GELUs, in site order."""
    mods = [m for m in model.modules() if isinstance(m, GeluFakeQuant)]
    return sorted(mods, key=lambda m: int(getattr(m, "site_id", "gelu0")[4:]))


# -- calibration in PyTorch --------------------------------------------------------------------
class _Observer(nn.Module):
    def __init__(self, inner: nn.Module, stats: TensorStats) -> None:
        super().__init__()
        self.inner = inner
        self.stats = stats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.stats.update(x.detach().to(torch.float32).cpu().numpy())
        return self.inner(x)


def collect_stats(
    model: nn.Module,
    batches: Iterable[Sequence[Any]],
    *,
    example_inputs: Sequence[Any] | None = None,
) -> dict[str, TensorStats]:
    """Run ``model(*batch)`` for every batch and return each GELU site's input statistics (the
    statistics ``gelu-quant calibrate`` accumulates from the ONNX model)."""
    sites = find_gelus(model, example_inputs)
    stats = {s.site_id: TensorStats() for s in sites}
    for s in sites:
        _set_submodule(model, s.name, _Observer(s.module, stats[s.site_id]))
    try:
        with torch.no_grad():
            for batch in batches:
                model(*batch)
    finally:
        for s in sites:
            _set_submodule(model, s.name, s.module)
    return stats


def calibrate_ranges(
    model: nn.Module,
    batches: Iterable[Sequence[Any]],
    method: MethodName = "minmax",
    *,
    example_inputs: Sequence[Any] | None = None,
    percentile: float | None = None,
    stats: Mapping[str, TensorStats] | None = None,
    bits: int | None = None,
    out_bits: int | None = None,
) -> dict[str, tuple[float, float]]:
    """Each GELU site's input range by ``method`` (``minmax``, ``percentile``, ``entropy``,
    ``mse``) from statistics collected in PyTorch: what ``gelu-quant calibrate --method`` gives
    on the exported model for the same data (up to the float32 differences of the two runtimes).
    ``stats``: statistics already collected by :func:`collect_stats` (``batches`` is then not
    read), to try several methods on one pass. ``bits`` / ``out_bits``: the table's input / output
    code widths (None: 8; ``out_bits`` defaults to ``bits``), which ``entropy`` and ``mse`` choose
    for (the range that is best for 4-bit tables is narrower than the int8 one), as
    ``convert`` chooses them from a ranges file for a low-bit target."""
    sites = {s.site_id: s for s in find_gelus(model, example_inputs)}
    if stats is None:
        stats = collect_stats(model, batches, example_inputs=example_inputs)
    out: dict[str, tuple[float, float]] = {}
    for sid, st in stats.items():
        if st.count == 0:
            raise SpecError(f"GELU site {sid} ({sites[sid].name}) saw no data")
        kw: dict[str, Any] = {"form": sites[sid].form, "bits": bits, "out_bits": out_bits}
        if percentile is not None:
            kw["percentile"] = percentile
        out[sid] = select_range(st, method, **kw)
    return out
