"""Conversion: replace every GELU site of a model by a ``gelu_quant`` custom op.

:func:`convert_model` (in memory) runs the conversion passes (:func:`conversion_passes`) on the
model's onnx-ir graph; :func:`convert_file` is the shell around it: load (external data checked),
convert, write atomically (external data kept external), run ``onnx.checker`` on the written
file, write the manifest. Both are configured by a frozen :class:`ConvertConfig`; per-site
ranges come from a ranges file passed as ``ranges``.

What replaces a site is decided by the rules of :mod:`gelu_quant.graph.passes.site_rewrites`
(QDQ sites collapse into one op on their codes; float sites get Q -> op -> DQ, per-channel Q/DQ
for grouped tables, or the op itself for polynomials; the standard-op targets write Q -> DQ ->
Gelu -> Q -> DQ, after upgrading the model to opset 20), the spec by
:mod:`gelu_quant.graph.targets`. QuickGELU sites (``x·σ(1.702x)``) become approximations of
QuickGELU; targets that compute GELU itself skip them with a reason, as ``--form quick`` skips
GELU sites; polynomials are fitted where their tails are exact in their dtype, whatever range
the site was calibrated to; QDQ sites use the graph's own scales (with ranges given, the
manifest notes so).

Guarantees: every node that is not part of a GELU is kept as it was (names included: discovery's
generated names for unnamed nodes stay out of the model); the op writes the site's own output
tensor name (QDQ sites: the Q's output name); new nodes go where the site's last node was;
initializers that only the removed nodes read are dropped; the input's ``value_info`` entries
are kept as they were; the output is deterministic; the IR version is one ORT loads. Sites
inside subgraphs are reported as skipped.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np
import onnx
import onnx_ir as ir
from onnx_ir.passes.common import InlinePass, RemoveUnusedFunctionsPass, RemoveUnusedOpsetsPass

from gelu_quant.errors import BadInputError, ModelError
from gelu_quant.fingerprint import model_fingerprint
from gelu_quant.graph.discover import find_gelu_sites
from gelu_quant.graph.manifest import Manifest
from gelu_quant.graph.names import main_graph_node_names, node_names
from gelu_quant.graph.ops import DOMAIN, LUT_BODIES, CustomOp, LutBody
from gelu_quant.graph.ops.int4_codes import (
    CODE_CONTAINERS,
    INT4_OPSET,
    CodeContainer,
    four_bit_target,
)
from gelu_quant.graph.passes.add_functions import AddGeluFunctions
from gelu_quant.graph.passes.correct_consumers import CorrectConsumers, SampleSource
from gelu_quant.graph.passes.fold_scales import FoldGroupScales
from gelu_quant.graph.passes.ir_version import LoadableIrVersion
from gelu_quant.graph.passes.replace_sites import ReplaceGeluSites, all_names, restore_value_info
from gelu_quant.graph.passes.site_rewrites import RangeSource, SiteContext
from gelu_quant.graph.sites import GeluSite
from gelu_quant.graph.targets import TARGETS, SiteChoice, site_form
from gelu_quant.lut.grouped import MAX_GROUPS
from gelu_quant.modelfile import check_external_data, model_dir, read_model, uses_external_data
from gelu_quant.numerics import GELU_FORMS, GeluForm


class RangeFile(RangeSource, Protocol):
    """Ranges from a file: also held to the model's fingerprint, and named in the manifest."""

    source_name: str | None

    def check_model(self, model: str, force: bool = False) -> None: ...


GROUP_METHODS = ("minmax", "percentile", "entropy", "mse")
"""Range methods of a group of channels (``gelu_quant.calib.methods``)."""


def _check_groups(g: object, target: str, code_container: str = "auto") -> None:
    if isinstance(g, bool) or not isinstance(g, int) or not 1 <= g <= MAX_GROUPS:
        raise BadInputError(f"--groups must be an integer from 1 to {MAX_GROUPS}, got {g!r}")
    t = TARGETS.get(target)
    if g > 1 and t is not None and (t.kind != "lut" or t.in_dtype not in ("int8", "uint8")):
        raise BadInputError(
            f"--groups applies to table targets with int8/uint8 input codes (int8-lut, "
            f"uint8-lut, int8-lut-fp16out, int6-lut-int8out, int4-lut, …), not {target}"
        )
    if g > 1 and code_container == "int4":
        raise BadInputError(
            "grouped tables keep their codes in an 8-bit container: --code-container int4 "
            "needs --groups 1"
        )


@dataclass(frozen=True)
class ConvertConfig:
    """Everything that decides what :func:`convert_model` writes."""

    target: str
    range: tuple[float, float] | None = None
    """One input range for every float site (``--range``); per-site ranges (the ``ranges``
    argument of :func:`convert_model`) win over it."""
    method: str | None = None
    """Range method to read from the ranges (default: the file's chosen one)."""
    force: bool = False
    """Use a ranges file made for a different model fingerprint."""
    form: GeluForm | None = None
    """GELU form the specs approximate; default: the site's own (tanh sites -> tanh)."""
    expand: bool = False
    """Inline the function bodies (runtimes without model-local functions)."""
    lut_body: LutBody = "auto"
    poly_segments: int | None = None
    """Polynomial segments; None: the default shape for the target and form."""
    poly_degree: int | None = None
    """Polynomial degree; None: the default shape for the target and form."""
    sites: tuple[str, ...] | None = None
    """Convert only these site ids (others are reported as skipped)."""
    verify: bool = True
    """Prove formula bodies equal to their tables by running them (ORT and onnx.reference)."""
    check: bool = True
    """Run ``onnx.checker.check_model(full_check=True)`` on the result."""
    tail_cut: bool = True
    """Start a calibrated table range where GELU's negative tail stops mattering
    (:mod:`gelu_quant.lut.tails`: no output changes below the cut, finer codes above it).
    Explicit ``--range`` values are used as given."""
    groups: int = 1
    """Tables per float site: > 1 gives grouped tables (channels of the last axis partitioned
    by their calibrated ranges, each group its own qparams and table; needs a ranges file with
    per-channel extremes). Table targets with int8/uint8 input codes (low-bit ones too)."""

    group_method: str = "minmax"
    """Grouped tables: the range method of each group, run on its members' summed per-channel
    histograms (``minmax``: the members' min/max, the best measured on MiniLM)."""

    correct_consumers: bool = True
    """Refit the linear layer after each converted site to its table's error, from the ranges
    file's row sample (:mod:`gelu_quant.graph.passes.correct_consumers`); sites without a
    sample or a MatMul consumer stay as they are (the manifest says why)."""
    fold_scales: bool = False
    """Grouped tables: fold the per-channel scales into the producing and consuming MatMul
    weights where the graph allows (:mod:`gelu_quant.graph.passes.fold_scales`)."""
    site_choices: tuple[SiteChoice, ...] = ()
    """Per-site target / method / groups over the ones above (not standard-op targets)."""
    decision: Mapping[str, Any] | None = None
    """How ``site_choices`` were chosen and what was measured; the manifest's ``auto``."""
    code_container: CodeContainer = "auto"
    """Float sites' table codes of at most 4 bits (``int4-lut``, ``uint3-lut``, …): ``auto``
    stores them as ONNX INT4/UINT4 where the model's opset allows (>= 21), else in the 8-bit
    container with a ``Clip``; ``int8`` always the 8-bit container; ``int4`` always 4-bit
    tensors (refused below opset 21 and for targets with wider codes)."""

    def __post_init__(self) -> None:
        _check_groups(self.groups, self.target, self.code_container)
        if self.group_method not in GROUP_METHODS:
            raise BadInputError(
                f"unknown group range method {self.group_method!r}; one of "
                f"{', '.join(GROUP_METHODS)}"
            )
        if (
            self.fold_scales
            and self.groups == 1
            and not any(c.groups > 1 for c in self.site_choices)
        ):
            raise BadInputError(
                "--fold-scales folds grouped tables' scales: it needs --groups K > 1"
            )
        object.__setattr__(self, "site_choices", tuple(self.site_choices))
        for c in self.site_choices:
            t = TARGETS.get(c.target)
            if t is None or t.kind == "standard":
                raise BadInputError(f"site {c.site}: {c.target!r} is not a gelu_quant target")
            _check_groups(c.groups, c.target, self.code_container)
        if len({c.site for c in self.site_choices}) != len(self.site_choices):
            raise BadInputError("a site has more than one choice")
        if self.target not in TARGETS:
            raise BadInputError(
                f"unknown target {self.target!r}; choose one of {', '.join(TARGETS)}"
            )
        if self.range is not None:
            lo, hi = (float(v) for v in self.range)
            if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
                raise BadInputError(f"--range {lo} {hi}: need finite LO < HI")
            object.__setattr__(self, "range", (lo, hi))
        if self.lut_body not in LUT_BODIES:
            raise BadInputError(f"unknown LUT body {self.lut_body!r}")
        if self.form is not None and self.form not in GELU_FORMS:
            raise BadInputError(
                f"unknown GELU form {self.form!r}; expected one of {', '.join(GELU_FORMS)}"
            )
        if self.sites is not None:
            object.__setattr__(self, "sites", tuple(self.sites))
        if self.code_container not in CODE_CONTAINERS:
            raise BadInputError(
                f"unknown code container {self.code_container!r}; expected one of "
                + ", ".join(CODE_CONTAINERS)
            )
        if self.code_container == "int4":
            wide = [
                t
                for t in (self.target, *(c.target for c in self.site_choices))
                if not four_bit_target(TARGETS[t])
            ]
            if wide:
                raise BadInputError(
                    f"--code-container int4 stores codes of at most 4 bits; {wide[0]} has wider "
                    "or float codes (use int4-lut, uint4-lut, int3-lut, int2-lut, …)"
                )

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["range"] = None if self.range is None else list(self.range)
        d["sites"] = None if self.sites is None else list(self.sites)
        d.pop("decision")
        if not self.site_choices:
            d.pop("site_choices")
        if self.code_container == "auto":  # the default: manifests as before
            d.pop("code_container")
        return d


@dataclass
class ConvertResult:
    """The converted model and what was done to each site."""

    model: onnx.ModelProto
    manifest: Manifest
    functions: dict[str, CustomOp] = field(default_factory=dict)
    """The custom ops used, by op type."""


def _default_opset(model: onnx.ModelProto) -> int:
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    raise ModelError("the model imports no default-domain opset")


def conversion_passes(replace: ReplaceGeluSites, expand: bool) -> list[ir.passes.PassBase]:
    """The passes after site replacement: function bodies, ``--expand``'s inlining and clean-up
    (onnx-ir's own passes), an IR version ORT loads."""
    passes: list[ir.passes.PassBase] = [AddGeluFunctions(list(replace.functions.values()))]
    if expand:
        passes += [InlinePass(), RemoveUnusedFunctionsPass(), RemoveUnusedOpsetsPass()]
    passes.append(LoadableIrVersion())
    return passes


def expand_functions(model: onnx.ModelProto) -> onnx.ModelProto:
    """Inline every local function of ``model`` (for runtimes without them), with the passes
    ``--expand`` runs; opset imports no node uses any more are dropped."""
    irm = ir.serde.deserialize_model(model)
    ir.passes.Sequential(InlinePass(), RemoveUnusedFunctionsPass(), RemoveUnusedOpsetsPass())(irm)
    return ir.serde.serialize_model(irm)


def convert_model(
    model: onnx.ModelProto,
    config: ConvertConfig,
    *,
    sites: Iterable[GeluSite] | None = None,
    ranges: RangeSource | None = None,
    source_name: str = "",
) -> ConvertResult:
    """Replace the GELU sites of ``model`` (not modified) per ``config``.

    ``sites`` defaults to :func:`gelu_quant.graph.discover.find_gelu_sites`; ``ranges`` (for
    example a loaded ``RangesFile``) gives per-site ranges, else ``config.range`` is used for
    every float site. Sites that cannot be converted are reported as skipped in the manifest;
    a conversion that converts nothing raises ``ModelError``.
    """
    if config.groups > 1 and ranges is None:
        raise BadInputError(
            "--groups needs per-channel ranges: pass --ranges RANGES.json from calibrate"
        )
    notes: list[str] = []
    if TARGETS[config.target].kind == "standard":
        model, upgraded = _with_gelu_op(model)
        if upgraded:
            sites = None  # the upgraded graph is discovered again
            notes.append(f"upgraded to opset {GELU_OPSET} with onnx.version_converter ({upgraded})")
    opset = _default_opset(model)
    if config.code_container == "int4" and opset < INT4_OPSET:
        raise BadInputError(
            f"--code-container int4: INT4/UINT4 tensors need opset {INT4_OPSET} and the model "
            f"imports opset {opset}; upgrade it (onnx.version_converter) or use "
            "--code-container int8 (or auto: the 8-bit container below opset 21)"
        )
    sites = list(find_gelu_sites(model) if sites is None else sites)
    irm = ir.serde.deserialize_model(model)
    context = SiteContext(
        target=TARGETS[config.target],
        form="exact",
        opset=opset,
        lut_body=config.lut_body,
        verify=config.verify,
        method=config.method,
        range=config.range,
        ranges=ranges,
        groups=config.groups,
        tail_cut=config.tail_cut,
        group_method=config.group_method,
        poly_segments=config.poly_segments,
        poly_degree=config.poly_degree,
        new_name=str,
        still_read=lambda t, r: True,
        output_of=str,
        code_container=config.code_container,
    )
    replace = ReplaceGeluSites(
        sites,
        context,
        node_names=main_graph_node_names(model),
        taken_names=all_names(irm.graph) | set(node_names(model)),
        form_of=lambda site: site_form(site, config.form),
        selected=config.sites,
        choices={c.site: c for c in config.site_choices},
    )
    replace(irm)
    if config.correct_consumers and ranges is not None and hasattr(ranges, "sample_for"):
        CorrectConsumers(
            replace.records,
            replace.specs,
            cast(SampleSource, ranges),
            taken=all_names(irm.graph),
        )(irm)
        missing = {
            str(r.corrected.get("reason"))
            for r in replace.records
            if r.corrected
            and not r.corrected.get("applied")
            and "row sample" in str(r.corrected.get("reason"))
        }
        notes.extend(f"consumer correction not applied: {m}" for m in sorted(missing))
    if config.fold_scales:
        FoldGroupScales(replace.records, taken=all_names(irm.graph))(irm)
    named = set(config.sites or ()) | {c.site for c in config.site_choices}
    if named:
        unknown = named - {s.id for s in sites}
        if unknown:
            raise BadInputError(f"no site named {', '.join(sorted(unknown))} in the model")
    if not any(r.status == "converted" for r in replace.records):
        why = "; ".join(f"{r.id}: {r.reason}" for r in replace.records) or "the model has no GELU"
        raise ModelError(f"nothing to convert ({why})")
    ir.passes.Sequential(*conversion_passes(replace, config.expand))(irm)
    out = _serialize(irm, model, replace.functions)
    weights = sum(len(t.raw_data) for t in out.graph.initializer)
    # in-memory check for models far from protobuf's 2 GB limit; convert_file checks the
    # written file instead, whatever its size
    if config.check and weights < (1 << 30) and not uses_external_data(out):
        problem = _checker_error(out)
        if problem is not None:
            source_problem = _checker_error(model)
            if source_problem is None:
                raise ModelError(f"the converted model fails the ONNX checker: {problem}")
            notes.append(_unchecked_note(problem, source_problem))
    low = _low_bit_method_note(config, ranges, replace.records)
    if low:
        notes.append(low)
    qdq_ids = [r.id for r in replace.records if r.status == "converted" and r.mode == "qdq"]
    if qdq_ids and (ranges is not None or config.range is not None):
        notes.append(qdq_ranges_note(qdq_ids, "--ranges" if ranges is not None else "--range"))
    manifest = Manifest(
        target=config.target,
        config=_config_json(config, ranges),
        sites=tuple(replace.records),
        source_name=source_name,
        expanded=config.expand,
        notes=tuple(notes),
        auto=None if config.decision is None else dict(config.decision),
    )
    return ConvertResult(out, manifest, dict(replace.functions))


GELU_OPSET = 20
"""The first default-domain opset with the ``Gelu`` op (the standard-op targets need it)."""


def _with_gelu_op(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """``model`` at opset >= 20, upgraded by onnx's version converter when it is older (and
    what was done), or a ModelError saying why it cannot be."""
    opset = _default_opset(model)
    if opset >= GELU_OPSET:
        return model, ""
    try:
        import onnx.version_converter

        up = onnx.version_converter.convert_version(model, GELU_OPSET)
        onnx.checker.check_model(up)
    except Exception as e:  # the converter raises assorted errors
        raise ModelError(
            f"the standard-op output needs opset {GELU_OPSET} (the ONNX Gelu op) and onnx's "
            f"version converter cannot upgrade this model from opset {opset}: {_one_line(e)[:300]}"
            "; use a gelu_quant target (int8-lut) instead"
        ) from None
    return up, f"from opset {opset}"


def _serialize(
    irm: ir.Model, original: onnx.ModelProto, ops: dict[str, CustomOp]
) -> onnx.ModelProto:
    """The IR model as a ModelProto, with everything it kept from ``original`` in the original's
    own bytes: untouched nodes, initializers, graph inputs and outputs, local functions (and the
    ``gelu_quant`` functions as :class:`CustomOp` built them),
    ``value_info`` entries (onnx-ir would write one for every typed value) and the order of the
    opset imports. (onnx-ir re-serialises what it read equivalently, not always byte for byte:
    an explicit empty ``domain`` is dropped, for example.)"""
    out = restore_value_info(ir.serde.serialize_model(irm), original.graph.value_info)
    g, og = out.graph, original.graph
    _restore_nodes(g, og)
    for name in ("name", "doc_string"):
        if og.HasField(name):
            setattr(g, name, getattr(og, name))
    for name in ("producer_name", "producer_version", "domain", "model_version", "doc_string"):
        if original.HasField(name):
            setattr(out, name, getattr(original, name))
    del out.metadata_props[:]
    out.metadata_props.extend(original.metadata_props)
    for field_name in ("input", "output"):
        by_name = {v.name: v for v in getattr(og, field_name)}
        for v in getattr(g, field_name):
            if v.name in by_name:
                v.CopyFrom(by_name[v.name])
    inits = {t.name: t for t in og.initializer}
    for t in g.initializer:
        if t.name in inits:
            t.CopyFrom(inits[t.name])
    funcs = {(f.domain, f.name, f.overload): f for f in original.functions}
    # ours as built: onnx-ir drops a function's value_info, which onnx.reference needs
    funcs.update({(DOMAIN, name, ""): op.function() for name, op in ops.items()})
    for f in out.functions:
        if (f.domain, f.name, f.overload) in funcs:
            f.CopyFrom(funcs[(f.domain, f.name, f.overload)])
    versions = {o.domain: o.version for o in out.opset_import}
    imports = [o for o in original.opset_import if versions.get(o.domain) == o.version]
    kept = {o.domain for o in imports}
    imports += [o for o in out.opset_import if o.domain not in kept]
    imports = [onnx.OperatorSetIdProto.FromString(o.SerializeToString()) for o in imports]
    del out.opset_import[:]
    out.opset_import.extend(imports)
    return out


def _signature(n: onnx.NodeProto) -> tuple[object, ...]:
    return (n.domain or "", n.op_type, tuple(n.input), tuple(n.output))


def _restore_nodes(g: onnx.GraphProto, og: onnx.GraphProto) -> None:
    """Put back the original proto of every node the passes left in place (the same op on the
    same inputs writing the same outputs); new nodes stay as serialised."""
    originals: dict[tuple[object, ...], list[onnx.NodeProto]] = {}
    for n in og.node:
        originals.setdefault(_signature(n), []).append(n)
    merged = []
    for n in g.node:
        same = originals.get(_signature(n))
        merged.append(same.pop(0) if same else n)
    del g.node[:]
    g.node.extend(merged)


def _config_json(config: ConvertConfig, ranges: RangeSource | None) -> dict[str, Any]:
    d = config.to_json()
    name = getattr(ranges, "source_name", None)
    return {
        "target": d.pop("target"),
        "range": d.pop("range"),
        "ranges_file": None if ranges is None else (name or "(in memory)"),
        **d,
    }


def _low_bit_method_note(
    config: ConvertConfig, ranges: RangeSource | None, records: Iterable[Any]
) -> str | None:
    """A hint when low-bit tables took the ranges file's chosen method and it is not ``mse``:
    the file's choice is made for int8 tables, and ``mse`` scores the low-bit table itself."""
    t = TARGETS[config.target]
    if ranges is None or config.method is not None or config.groups > 1 or t.kind != "lut":
        return None
    if t.bits >= 8:
        return None
    ids = [
        r.id
        for r in records
        if r.status == "converted" and r.mode == "float" and ranges.method_of(r.id) != "mse"
    ]
    if not ids:
        return None
    m = ranges.method_of(ids[0])
    return (
        f"{len(ids)} site(s) use the ranges file's chosen method {m!r} for {t.bits}-bit tables; "
        "--method mse, which scores each table at its own code widths, is usually far more "
        "accurate at low widths (all-MiniLM-L6-v2: 3.3x lower 1 - cos at 4 bits, 1.8x at 6)"
    )


def qdq_ranges_note(site_ids: list[str], option: str) -> str:
    """The note saying a QDQ model's own scales were used, not the given ranges."""
    return (
        f"{option} not used for {len(site_ids)} QDQ site(s) ({', '.join(site_ids)}): their "
        "tables were built from the QuantizeLinear/DequantizeLinear scales already in the graph"
    )


# -- files ----------------------------------------------------------------
def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def default_manifest_path(output: str | os.PathLike[str]) -> Path:
    """``OUT.manifest.json`` for ``OUT.onnx``."""
    p = Path(output)
    stem = p.name[: -len(".onnx")] if p.name.endswith(".onnx") else p.name
    return p.with_name(f"{stem}.manifest.json")


def convert_file(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    config: ConvertConfig,
    *,
    manifest_path: str | os.PathLike[str] | None = None,
    sites: Iterable[GeluSite] | None = None,
    ranges: RangeFile | None = None,
) -> ConvertResult:
    """Convert the model file ``src`` into ``dst`` and write the manifest beside it.

    ``ranges`` (a loaded ranges file, ``gelu_quant.calib.ranges_file.load_ranges``) is held to
    the model's fingerprint first (``config.force`` skips that).

    External data stays external (``<dst name>.data`` beside ``dst``, when the input had any);
    files are written atomically, the checker runs on the written file (so models over 2 GB are
    checked too), and neither ``src`` nor its data file is ever overwritten.
    """
    src_p, dst_p = Path(src), Path(dst)
    if not src_p.is_file():
        raise BadInputError(f"model file {str(src_p)!r} not found")
    if not dst_p.resolve().parent.is_dir():
        raise BadInputError(f"output folder {str(dst_p.resolve().parent)!r} does not exist")
    if dst_p.resolve() == src_p.resolve():
        raise BadInputError(f"refusing to overwrite the input {str(src_p)!r}; choose another -o")
    man_p = Path(manifest_path) if manifest_path is not None else default_manifest_path(dst_p)
    if man_p.resolve() in (src_p.resolve(), dst_p.resolve()):
        raise BadInputError(f"manifest path {str(man_p)!r} collides with a model file")
    header = read_model(src_p)  # external data checked: nothing is read outside its folder
    refs = check_external_data(header, model_dir(src_p))
    external = bool(refs)
    data_name = f"{dst_p.name}.data"
    if external:
        inputs_data = {r.path for r in refs}
        if (dst_p.resolve().parent / data_name).resolve() in inputs_data:
            raise BadInputError(
                f"the output's data file {data_name!r} is the input's external data file; "
                "choose another output name"
            )
    if ranges is not None:
        ranges.check_model(str(src_p), force=config.force)
    if sites is None:
        sites = find_gelu_sites(str(src_p))
    fingerprint = model_fingerprint(str(src_p))
    model = read_model(src_p, external_data=True) if external else header
    # the checker runs on the written file (works beyond 2 GB), not in memory
    in_memory = dataclasses.replace(config, check=False)
    result = convert_model(model, in_memory, sites=sites, ranges=ranges, source_name=src_p.name)
    del model, header
    # tensors under the size threshold stay inline: a small model may end up with no data file
    wrote_data, check_note = _save_atomic(
        result.model, dst_p, data_name if external else None, check=config.check, source=src_p
    )
    result.manifest = Manifest(
        target=result.manifest.target,
        config=_config_json(config, ranges),
        sites=result.manifest.sites,
        source_name=src_p.name,
        source_fingerprint=fingerprint,
        output_name=dst_p.name,
        expanded=config.expand,
        external_data=data_name if wrote_data else None,
        notes=result.manifest.notes + ((check_note,) if check_note else ()),
        auto=result.manifest.auto,
    )
    result.manifest.save(man_p)
    return result


def _checker_error(model: onnx.ModelProto | str) -> str | None:
    """``onnx.checker``'s full check: None when it passes, else its message on one line."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:  # ValidationError, InferenceError, ValueError, …
        return _one_line(e)
    return None


def _unchecked_note(problem: str, source_problem: str) -> str:
    return (
        "the converted model was not held to onnx.checker: the input model itself fails it "
        f"({source_problem[:200]}); the converted model's check says: {problem[:200]}"
    )


def _save_atomic(
    model: onnx.ModelProto,
    dst: Path,
    data_name: str | None,
    *,
    check: bool,
    source: Path | None = None,
) -> tuple[bool, str | None]:
    """Write ``dst`` (and its data file ``data_name``) atomically; whether a data file was
    written (tensors under 1 KB stay inline), and a note when the checker could not be held to
    (the input ``source`` fails it too: gelu-quant keeps what it was given, and says so)."""
    folder = dst.resolve().parent
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=folder))
    try:
        tmp_model = tmpdir / dst.name
        if data_name is None:
            if model.ByteSize() >= (1 << 31) - 1:
                raise ModelError("the converted model exceeds 2 GB; give it external data")
            tmp_model.write_bytes(model.SerializeToString(deterministic=True))
        else:
            onnx.save_model(
                model,
                str(tmp_model),
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                location=data_name,
                size_threshold=1024,
                convert_attribute=False,
            )
        note = None
        problem = _checker_error(str(tmp_model)) if check else None
        if problem is not None:
            source_problem = _checker_error(str(source)) if source is not None else None
            if source_problem is None:
                raise ModelError(f"the converted model fails the ONNX checker: {problem}")
            note = _unchecked_note(problem, source_problem)
        wrote_data = data_name is not None and (tmpdir / data_name).exists()
        if wrote_data:
            os.replace(tmpdir / data_name, folder / data_name)  # type: ignore[operator]
        os.replace(tmp_model, dst)
        return wrote_data, note
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
