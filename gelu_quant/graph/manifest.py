"""The conversion manifest: what ``gelu-quant convert`` did to every GELU site, as JSON.

Schema ``gelu-quant/manifest`` version 1, written beside the converted model
(``OUT.manifest.json`` by default)::

    {"schema": "gelu-quant/manifest", "schema_version": 1, "tool_version": "0.1.0",
     "source": {"name": "model.onnx", "fingerprint": "sha256:…"},
     "output": {"name": "model.gq.onnx", "expanded": false, "external_data": null},
     "target": "int8-lut",
     "config": {…ConvertConfig…},
     "converted": 6, "skipped": 0,
     "notes": […],                       # e.g. a QDQ model's scales used instead of --ranges
     "sites": [{"id": "gelu0", "status": "converted" | "skipped", "reason": null,
                "site_form", "spelling", "graph", "input", "output", "bias",
                "form": "exact" | "tanh" | "quick", "cost": segments x degree | null,
                "mode": "float" | "qdq",
                "range": [lo, hi] | null, "range_source": "--range" | "ranges:<method>" | "qdq",
                "op_type": "GeluLut_…", "body": "formula" | "gather" | "poly", "body_notes": […],
                "replaced_nodes": […], "added_nodes": […],
                "output_tensor": "…",          # float tensor with the site's output, or null
                "quantized_output": {"tensor", "scale", "zero_point", "dtype"} | null,
                "code_container": "int4" | "uint4" | "int8" | "uint8",  # low-bit tables only
                "spec": {…spec.to_json()…},
                "error": {…ErrorReport.to_json(): max_abs, mean_abs, worst_x, …},
                "corrected": {"applied", "reason", "rows", "weight", "bias", "channels",
                              "ridge", "heldout_error": {ridge | "none": error},
                              "int8_weight_error_before", "int8_weight_error_after"},
                "folded": {"input": {…}, "output": {…}}}]}   # --fold-scales only

``output_tensor`` is the site's own output name whenever the converted model still has that
float tensor (always for float models); for collapsed QDQ sites it is null unless the float
tensor had other consumers, and ``quantized_output`` names the int8 tensor the op writes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gelu_quant import __version__
from gelu_quant.errors import BadInputError
from gelu_quant.graph.sites import GeluSite

MANIFEST_SCHEMA = "gelu-quant/manifest"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class SiteRecord:
    """One site's line in the manifest."""

    id: str
    status: Literal["converted", "skipped"]
    site_form: str
    spelling: str
    graph: str
    input: str
    output: str
    bias: str | None = None
    form: str | None = None
    """The function the approximation approximates (exact, tanh, quick), converted sites."""
    cost: int | None = None
    """Polynomials: segments x degree."""
    reason: str | None = None
    mode: Literal["float", "qdq"] | None = None
    range: tuple[float, float] | None = None
    range_source: str | None = None
    op_type: str | None = None
    body: str | None = None
    body_notes: tuple[str, ...] = ()
    replaced_nodes: tuple[str, ...] = ()
    added_nodes: tuple[str, ...] = ()
    output_tensor: str | None = None
    quantized_output: dict[str, Any] | None = None
    spec: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    target: str | None = None
    """The site's own target when it differs by site (``convert --target auto``)."""
    folded: dict[str, Any] | None = None
    """``--fold-scales``: what was folded into the producer and consumer weights, per side."""
    corrected: dict[str, Any] | None = None
    """The consumer correction (:mod:`gelu_quant.graph.passes.correct_consumers`): applied or
    not and why, the weights it rewrote, the ridge and the held-out errors that chose it."""
    code_container: str | None = None
    """Low-bit table codes (2-7 bits): the element type holding them in the graph, ``int4`` /
    ``uint4`` (ONNX 4-bit tensors) or ``int8`` / ``uint8`` (8-bit container, clipped)."""

    @classmethod
    def for_site(
        cls, site: GeluSite, status: Literal["converted", "skipped"], **fields: Any
    ) -> SiteRecord:
        """The record of ``site``: its identity copied from the site, the rest from ``fields``."""
        return cls(
            id=site.id,
            status=status,
            site_form=site.form,
            spelling=site.spelling,
            graph=site.graph,
            input=site.input,
            output=site.output,
            bias=site.bias,
            **fields,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "reason": self.reason,
            "site_form": self.site_form,
            "spelling": self.spelling,
            "graph": self.graph,
            "input": self.input,
            "output": self.output,
            "bias": self.bias,
            "form": self.form,
            "cost": self.cost,
            "mode": self.mode,
            "range": None if self.range is None else [float(self.range[0]), float(self.range[1])],
            "range_source": self.range_source,
            "op_type": self.op_type,
            "body": self.body,
            "body_notes": list(self.body_notes),
            "replaced_nodes": list(self.replaced_nodes),
            "added_nodes": list(self.added_nodes),
            "output_tensor": self.output_tensor,
            "quantized_output": self.quantized_output,
            "spec": self.spec,
            "error": self.error,
            **({} if self.target is None else {"target": self.target}),
            **({} if self.folded is None else {"folded": self.folded}),
            **({} if self.corrected is None else {"corrected": self.corrected}),
            **({} if self.code_container is None else {"code_container": self.code_container}),
        }


@dataclass(frozen=True)
class Manifest:
    """Everything a conversion did, per site."""

    target: str
    config: dict[str, Any]
    sites: tuple[SiteRecord, ...]
    source_name: str = ""
    source_fingerprint: str | None = None
    output_name: str = ""
    expanded: bool = False
    external_data: str | None = None
    tool_version: str = __version__
    notes: tuple[str, ...] = field(default_factory=tuple)
    auto: dict[str, Any] | None = None
    """``convert --target auto``: the budget, the data and each site's measurements."""

    @property
    def converted(self) -> list[SiteRecord]:
        return [s for s in self.sites if s.status == "converted"]

    @property
    def skipped(self) -> list[SiteRecord]:
        return [s for s in self.sites if s.status == "skipped"]

    def site(self, site_id: str) -> SiteRecord:
        for s in self.sites:
            if s.id == site_id:
                return s
        raise KeyError(site_id)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": MANIFEST_SCHEMA,
            "schema_version": MANIFEST_VERSION,
            "tool_version": self.tool_version,
            "source": {"name": self.source_name, "fingerprint": self.source_fingerprint},
            "output": {
                "name": self.output_name,
                "expanded": self.expanded,
                "external_data": self.external_data,
            },
            "target": self.target,
            "config": self.config,
            "converted": len(self.converted),
            "skipped": len(self.skipped),
            "notes": list(self.notes),
            "sites": [s.to_json() for s in self.sites],
            **({} if self.auto is None else {"auto": self.auto}),
        }

    def dumps(self) -> str:
        """Deterministic JSON text (trailing newline)."""
        return json.dumps(self.to_json(), indent=1, allow_nan=False) + "\n"

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write atomically."""
        from gelu_quant.fileio import write_text_atomic

        return write_text_atomic(path, self.dumps())


def load_manifest_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a manifest file as JSON (checking its schema)."""
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInputError(f"manifest {path} does not exist") from None
    except json.JSONDecodeError as e:
        raise BadInputError(f"manifest {path} is not JSON: {e}") from None
    if not isinstance(d, dict) or d.get("schema") != MANIFEST_SCHEMA:
        raise BadInputError(f"{path} is not a gelu-quant manifest")
    if d.get("schema_version") != MANIFEST_VERSION:
        raise BadInputError(
            f"manifest schema version {d.get('schema_version')!r} is not supported "
            f"(this gelu-quant reads {MANIFEST_VERSION})"
        )
    return d
