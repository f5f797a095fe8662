"""``gelu-quant export``: one folder for the device step (model, kernels, headers, manifest)."""

from __future__ import annotations

import json

import click

from gelu_quant.device_export import export_folder


@click.command("export")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Folder.")
@click.option(
    "--manifest",
    type=click.Path(dir_okay=False),
    help="convert's manifest (default: beside MODEL).",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
@click.option("--json", "as_json", is_flag=True, help="Print export.json.")
def export_cmd(
    model: str, output: str, manifest: str | None, overwrite: bool, as_json: bool
) -> None:
    """Write the device folder for a converted MODEL: the model, per-site C headers and the
    kernels that run them, export.json tying each to its site and the model fingerprint, and a
    README on building and calling them."""
    doc = export_folder(model, output, manifest=manifest, overwrite=overwrite)
    if as_json:
        click.echo(json.dumps(doc, indent=1))
        return
    n = sum(1 for s in doc["sites"] if s.get("function"))
    click.echo(f"{output}: {n} of {len(doc['sites'])} site(s) with a C kernel; see README.md")
