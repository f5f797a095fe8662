"""``gelu-quant convert``: replace every GELU of a model by a ``gelu_quant`` custom op."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from gelu_quant.calib.ranges_file import load_ranges
from gelu_quant.cli.options import text_data_options
from gelu_quant.errors import BadInputError
from gelu_quant.graph.convert import (
    GROUP_METHODS,
    ConvertConfig,
    convert_file,
    default_manifest_path,
)
from gelu_quant.graph.ops import LUT_BODIES
from gelu_quant.graph.ops.int4_codes import CODE_CONTAINERS
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
    type=click.Choice([*TARGETS, "auto"]),
    help="What replaces each GELU (auto: per site, the cheapest candidate that keeps the "
    "measured output error within --budget on --data).",
)
@click.option(
    "--budget",
    type=float,
    default=None,
    help="--target auto: largest allowed 1 - mean cosine of every output against fp32.",
)
@click.option(
    "--data",
    default=None,
    metavar="SOURCE",
    help="--target auto: data to measure on, a held-out part of the CALIBRATION data (never "
    "the evaluation data); the same sources as `calibrate`.",
)
@text_data_options
@click.option(
    "--score-output",
    "score_outputs",
    multiple=True,
    metavar="NAME",
    help="--target auto: output(s) the budget applies to (repeatable; default: every output).",
)
@click.option(
    "--auto-candidates",
    default=None,
    metavar="T[:K],…",
    help="--target auto: candidate targets (K: tables per site), default "
    "int8-lut,int8-lut:2,int8-lut-fp16out,int8-lut:4,int8-lut:8,int8-lut-fp16out:8.",
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
    "into K groups, each with its own qparams and table (needs --ranges; table targets with "
    "int8/uint8 input codes).",
)
@click.option(
    "--group-method",
    type=click.Choice(list(GROUP_METHODS)),
    default="minmax",
    show_default=True,
    help="Grouped tables: the range method of each group, on its members' per-channel "
    "histograms (minmax measured best on MiniLM).",
)
@click.option(
    "--fold-scales",
    is_flag=True,
    help="Grouped tables: fold the per-channel input scales into the producing MatMul and the "
    "output scales into the consuming MatMul (int8 pipelines; see the manifest's `folded`).",
)
@click.option(
    "--no-consumer-correction",
    is_flag=True,
    help="Leave the MatMul after each GELU as it is (default: refit it to the table's error "
    "from the ranges file's row sample; see the manifest's `corrected`).",
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
    help="Function body of GELU tables (auto: the proved formula body, else gather; "
    "grouped tables: gather-elements).",
)
@click.option(
    "--code-container",
    type=click.Choice(list(CODE_CONTAINERS)),
    default="auto",
    show_default=True,
    help="Codes of 2-4-bit tables (int4-lut, uint3-lut, …): int4 stores them as ONNX "
    "INT4/UINT4 tensors (opset 21+), int8 in an 8-bit container with a Clip, auto: INT4/UINT4 "
    "where the model's opset allows.",
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
    group_method: str,
    fold_scales: bool,
    no_consumer_correction: bool,
    segments: int | None,
    degree: int | None,
    lut_body: Any,
    budget: float | None,
    data: str | None,
    tokenizer: str | None,
    max_length: int | None,
    auto_candidates: str | None,
    score_outputs: tuple[str, ...],
    code_container: Any,
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
    ranges = None if ranges_file is None else load_ranges(ranges_file)
    auto = target == "auto"
    if not auto and (
        budget is not None or data is not None or auto_candidates is not None or score_outputs
    ):
        raise BadInputError(
            "--budget, --data, --auto-candidates and --score-output go with --target auto"
        )
    choices: tuple[Any, ...] = ()
    decision = None
    if auto:
        choices, decision, target = _auto(
            model,
            ranges,
            budget,
            data,
            tokenizer,
            max_length,
            auto_candidates,
            method,
            force,
            groups,
            sites,
            quiet,
            score_outputs,
        )
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
        group_method=group_method,
        fold_scales=fold_scales,
        correct_consumers=not no_consumer_correction,
        site_choices=choices,
        decision=decision,
        code_container=code_container,
    )
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
            own = f"{s.target}: " if s.target else ""
            codes = f", codes {s.code_container}" if s.code_container else ""
            click.echo(
                f"  {s.id}: {s.spelling} -> {own}{s.op_type} ({s.form}, {s.mode}, body {s.body}"
                f"{codes}{cost}){rng} max error {err:.3e}"
            )
        else:
            click.echo(f"  {s.id}: skipped: {s.reason}")
    if man.auto is not None:
        a = man.auto
        click.echo(
            f"auto: measured 1 - cos {a['error']:.3g} (budget {a['budget']:g}, worst cos "
            f"{a['worst_cos']:.5f}) on {a['samples']} samples, {a['bytes']} B of tables"
        )
    click.echo(f"manifest: {mpath}")


def _auto(
    model: str,
    ranges: Any,
    budget: float | None,
    data: str | None,
    tokenizer: str | None,
    max_length: int | None,
    candidates: str | None,
    method: str | None,
    force: bool,
    groups: int,
    sites: tuple[str, ...],
    quiet: bool,
    score_outputs: tuple[str, ...],
) -> tuple[tuple[Any, ...], dict[str, Any], str]:
    """``--target auto``: the per-site choices, the decision, and the config's base target."""
    from gelu_quant.auto_choice import DEFAULT_CANDIDATES, choose, parse_candidates
    from gelu_quant.calib.data import model_input_specs, open_data_source
    from gelu_quant.evaluate.feeds import describe

    if ranges is None or budget is None or data is None:
        raise BadInputError("--target auto needs --ranges, --budget and --data")
    if groups != 1 or sites:
        raise BadInputError("--target auto chooses the groups per site; drop --groups / --site")
    if not Path(model).is_file():
        raise BadInputError(f"model file {model!r} not found")
    ranges.check_model(model, force=force)
    cands = parse_candidates(
        candidates.split(",") if candidates is not None else DEFAULT_CANDIDATES
    )
    source = open_data_source(
        data, model_input_specs(model), tokenizer=tokenizer, max_length=max_length
    )
    log = None if quiet else (lambda m: click.echo(m, err=True))
    choices, decision = choose(
        Path(model),
        ranges,
        source,
        budget,
        candidates=cands,
        method=method,
        force=force,
        data_description=describe(source),
        score_outputs=score_outputs or None,
        log=log,
    )
    return tuple(choices), decision, cands[0].target
