"""``gelu-quant convert``: replace every GELU of a model by a ``gelu_quant`` custom op."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from gelu_quant.calib.ranges_file import load_ranges
from gelu_quant.errors import BadInputError
from gelu_quant.graph.convert import ConvertConfig, convert_file, default_manifest_path
from gelu_quant.graph.ops import LUT_BODIES
from gelu_quant.graph.targets import TARGETS


@click.command("convert")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option(
    "--range",
    "range_",
    type=float,
    nargs=2,
    default=None,
    metavar="LO HI",
    help="One input range for every float site.",
)
@click.option(
    "--ranges",
    "ranges_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="The calibrator's ranges file (per-site ranges).",
)
@click.option("--method", default=None, help="Range method to read from --ranges.")
@click.option(
    "--target",
    required=True,
    type=click.Choice(list(TARGETS)),
    help="What replaces each GELU.",
)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="OUT.onnx")
@click.option("--expand", is_flag=True, help="Inline the function bodies.")
@click.option(
    "--manifest",
    "manifest_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Manifest path (default: OUT.manifest.json).",
)
@click.option("--force", is_flag=True, help="Use a ranges file made for another model.")
@click.option(
    "--overwrite", is_flag=True, help="Replace an existing output file (never the input)."
)
@click.option(
    "--form",
    type=click.Choice(["exact", "tanh", "quick"]),
    default=None,
    help="GELU form to approximate (default: each site's own; QuickGELU sites are always quick).",
)
@click.option(
    "--groups",
    type=int,
    default=1,
    show_default=True,
    help="Tables per site: K > 1 partitions each site's channels by their calibrated ranges "
    "into K groups, each with its own qparams and table (needs --ranges; 8-bit tables).",
)
@click.option("--site", "sites", multiple=True, help="Convert only this site id. Repeatable.")
@click.option(
    "--segments",
    type=int,
    default=None,
    help="Polynomial segments (default: the target's default shape, see README).",
)
@click.option(
    "--degree", type=int, default=None, help="Polynomial degree (default: the target's default)."
)
@click.option(
    "--lut-body",
    type=click.Choice(list(LUT_BODIES)),
    default="auto",
    show_default=True,
    help="Function body of GELU tables (auto: the proved formula body, else gather).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@click.option("--quiet", is_flag=True, help="Print nothing on success.")
def convert(
    model: str,
    range_: tuple[float, float] | None,
    ranges_file: str | None,
    method: str | None,
    target: str,
    output: str,
    expand: bool,
    manifest_path: str | None,
    force: bool,
    overwrite: bool,
    form: Any,
    sites: tuple[str, ...],
    groups: int,
    segments: int | None,
    degree: int | None,
    lut_body: Any,
    as_json: bool,
    quiet: bool,
) -> None:
    """Replace every GELU of MODEL and write OUT.onnx plus its manifest.

    Float sites take their input range from --ranges (per site) or --range (all sites);
    QDQ sites with a table target use the scales already in the graph (the ranges are not
    used for them: a warning on stderr and the manifest's notes say so). Polynomials are
    fitted where their tails are exact, whatever the range.
    """
    out = Path(output)
    if out.exists() and not overwrite:
        raise BadInputError(f"{output} exists; pass --overwrite to replace it")
    config = ConvertConfig(
        target=target,
        range=range_,
        method=method,
        force=force,
        form=form,
        expand=expand,
        lut_body=lut_body,
        poly_segments=segments,
        poly_degree=degree,
        sites=sites or None,
        groups=groups,
    )
    ranges = None if ranges_file is None else load_ranges(ranges_file)
    result = convert_file(model, out, config, manifest_path=manifest_path, ranges=ranges)
    man = result.manifest
    for note in man.notes:
        click.echo(f"warning: {note}", err=True)
    if as_json:
        click.echo(man.dumps(), nl=False)
        return
    if quiet:
        return
    mpath = manifest_path or default_manifest_path(out)
    click.echo(f"{model} -> {output} ({len(man.converted)} converted, {len(man.skipped)} skipped)")
    for s in man.sites:
        if s.status == "converted":
            err = (s.error or {}).get("max_abs")
            rng = "" if s.range is None else f" [{s.range[0]:.6g}, {s.range[1]:.6g}]"
            spec = s.spec or {}
            cost = ""
            if "segments" in spec and "degree" in spec:
                k, d = spec["segments"], spec["degree"]
                cost = f", {k} seg x deg {d} = cost {k * d}"
            click.echo(
                f"  {s.id}: {s.spelling} -> {s.op_type} ({s.form}, {s.mode}, body {s.body}"
                f"{cost}){rng} max error {err:.3e}"
            )
        else:
            click.echo(f"  {s.id}: skipped: {s.reason}")
    click.echo(f"manifest: {mpath}")
