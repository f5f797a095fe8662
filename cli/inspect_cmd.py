"""``gelu-quant inspect MODEL``: list the GELU sites of a model (and near misses)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from gelu_quant.graph.converted_ops import ConvertedOp, converted_ops
from gelu_quant.graph.discover import Discovery, NearMiss, discover
from gelu_quant.graph.sites import AxisQuantInfo, GeluSite, QuantInfo
from gelu_quant.modelfile import read_model


def inspect_document(
    model: str, found: Discovery, converted: list[ConvertedOp] | None = None
) -> dict[str, Any]:
    """The ``--json`` document: ``{"model", "sites", "near_misses", "notes"}``, and
    ``"gelu_quant_ops"`` for a converted model (its ops with their tensors' element types)."""
    doc: dict[str, Any] = {
        "model": model,
        "sites": [s.to_json() for s in found.sites],
        "near_misses": [m.to_json() for m in found.near_misses],
        "notes": list(found.notes),
    }
    if converted:
        doc["gelu_quant_ops"] = [c.to_json() for c in converted]
    return doc


def format_converted(converted: list[ConvertedOp]) -> list[str]:
    """Lines for the ``gelu_quant`` ops of a converted model (element types in -> out)."""
    if not converted:
        return []
    lines = [f"{len(converted)} gelu_quant op(s):"]
    for c in converted:
        lines.append(
            f"  {c.node}: {c.kind} ({c.op_type}) {c.input_type or '?'} -> {c.output_type or '?'}"
        )
    return lines


def _qdq_text(q: QuantInfo | None) -> str:
    if q is None:
        return "-"
    return f"{q.dtype} s={q.scale:.4g} zp={q.zero_point}"


def _axis_text(q: AxisQuantInfo) -> str:
    distinct = len(set(zip(q.scales, q.zero_points, strict=True)))
    return f"{q.dtype} per-axis {q.axis}: {len(q.scales)} ch, {distinct} distinct"


def _shape_text(site: GeluSite) -> str:
    if site.shape is None:
        return "?"
    return "[" + ",".join("?" if d is None else str(d) for d in site.shape) + "]"


def format_table(model: str, found: Discovery, explain: bool) -> str:
    """The human-readable listing."""
    header = ("id", "form", "spelling", "dtype", "shape", "qdq in", "qdq out", "graph")
    rows = [
        (
            s.id,
            s.form + (f" a={s.alpha:.4g}" if s.alpha is not None else ""),
            s.spelling + (" +bias" if s.bias else ""),
            s.dtype,
            _shape_text(s),
            _qdq_text(s.qdq_in) if s.qdq_in_axis is None else _axis_text(s.qdq_in_axis),
            _qdq_text(s.qdq_out) if s.qdq_out_axis is None else _axis_text(s.qdq_out_axis),
            s.graph or "main",
        )
        for s in found.sites
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [f"{model}: {len(found.sites)} GELU site(s)"]
    if rows:
        lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
        lines += [
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
        ]
    for s in found.sites:
        lines += [f"note: {s.id}: {n}" for n in s.notes]
    lines += [f"note: {n}" for n in found.notes]
    if explain:
        lines.append(f"near misses: {len(found.near_misses)}")
        lines += [_miss_text(m) for m in found.near_misses]
    elif found.near_misses:
        lines.append(
            f"{len(found.near_misses)} near miss(es); --explain shows why they were refused"
        )
    return "\n".join(lines)


def _miss_text(m: NearMiss) -> str:
    where = f"{m.graph}/" if m.graph else ""
    return f"  {m.spelling} at {where}{m.node}: {m.reason}"


@click.command("inspect")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document instead of a table.")
@click.option(
    "--explain", is_flag=True, help="Also list patterns that almost matched, and why not."
)
@click.option("--no-subgraphs", is_flag=True, help="Do not look inside If/Loop/Scan bodies.")
def inspect_cmd(model: Path, as_json: bool, explain: bool, no_subgraphs: bool) -> None:
    """List the GELU sites of MODEL: id, form, spelling, dtype, shape, QDQ context (and, for a
    converted model, its gelu_quant ops with the element types they read and write)."""
    found = discover(model, include_subgraphs=not no_subgraphs)
    converted = converted_ops(read_model(model))
    if as_json:
        click.echo(json.dumps(inspect_document(str(model), found, converted), indent=2))
    else:
        click.echo(
            "\n".join([format_table(str(model), found, explain), *format_converted(converted)])
        )
