"""``gelu-quant export``: one folder for the device step, from a converted model and its manifest.

Layout of ``DIR``::

    DIR/<model>.onnx (+ its .data)       the converted model, as convert wrote it
    DIR/<model>.manifest.json            convert's manifest
    DIR/kernels/gelu_*.c|.h              the reference C kernels the sites need (once each)
    DIR/sites/<site>.h                   the site's spec: arrays and parameters
    DIR/sites/<site>_kernel.h            <site>_gelu(in, out, n): the kernel with those arrays
                                         (grouped tables: n values laid out [rows, channels],
                                         channel = last axis; <SITE>_CHANNELS is defined there)
    DIR/export.json                      ties each header to its site, the op in the model and
                                         the fingerprints of the converted and source models
    DIR/README.md                        how to build and call them

The folder is built beside ``DIR`` and moved into place at the end: a failure leaves nothing
half-written. Sites whose spec has no C kernel (baselines) get their
header only (where ``c_header`` can write one) or nothing, and ``export.json`` says so.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from gelu_quant import __version__
from gelu_quant.errors import BadInputError, GeluQuantError
from gelu_quant.fingerprint import model_fingerprint
from gelu_quant.graph.manifest import load_manifest_json
from gelu_quant.lut.ckernels import KERNELS, kernel_call, kernel_files
from gelu_quant.lut.export import c_header
from gelu_quant.lut.grouped import GroupedLutSpec
from gelu_quant.lut.spec import spec_from_json

EXPORT_SCHEMA = "gelu-quant/export"
EXPORT_VERSION = 1


def _ident(site_id: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in site_id)


def export_folder(
    model: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    manifest: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write the device folder ``out`` for the converted ``model``; returns ``export.json``."""
    model_p, out_p = Path(model), Path(out)
    if not model_p.is_file():
        raise BadInputError(f"model file {str(model_p)!r} not found")
    stem = model_p.name[: -len(".onnx")] if model_p.name.endswith(".onnx") else model_p.name
    man_p = Path(manifest) if manifest is not None else model_p.with_name(f"{stem}.manifest.json")
    man = load_manifest_json(man_p)
    if man.get("output", {}).get("name") not in (None, model_p.name):
        raise BadInputError(
            f"{man_p} describes {man['output']['name']!r}, not {model_p.name!r}; pass --manifest"
        )
    if out_p.exists() and not overwrite:
        raise BadInputError(f"{out_p} exists; pass --overwrite to replace it")
    parent = out_p.resolve().parent
    if not parent.is_dir():
        raise BadInputError(f"output folder {str(parent)!r} does not exist")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_p.name}.", dir=parent))
    try:
        doc = _write(model_p, man_p, man, tmp)
        if out_p.exists():
            shutil.rmtree(out_p)
        os.replace(tmp, out_p)
        return doc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write(model_p: Path, man_p: Path, man: dict[str, Any], folder: Path) -> dict[str, Any]:
    shutil.copyfile(model_p, folder / model_p.name)
    data = man.get("output", {}).get("external_data")
    if data:  # the model names its data file: it keeps that name
        shutil.copyfile(model_p.with_name(data), folder / data)
    shutil.copyfile(man_p, folder / man_p.name)
    (folder / "kernels").mkdir()
    (folder / "sites").mkdir()
    sites: list[dict[str, Any]] = []
    for rec in man.get("sites", []):
        if rec.get("status") != "converted" or not rec.get("spec"):
            continue
        spec = spec_from_json(rec["spec"])
        name = _ident(rec["id"])
        entry: dict[str, Any] = {
            "id": rec["id"],
            "input": rec.get("input"),
            "output": rec.get("output"),
            "op_type": rec.get("op_type"),
            "spec": spec.kind,
            "summary": spec.summary(),
        }
        try:
            call = kernel_call(spec, name)
        except GeluQuantError as e:
            try:
                (folder / "sites" / f"{name}.h").write_text(c_header(spec, name))
                entry["header"] = f"sites/{name}.h"
            except GeluQuantError:
                pass
            entry["kernel"] = None
            entry["note"] = str(e)
            sites.append(entry)
            continue
        four_bit = rec.get("code_container") in ("int4", "uint4")
        for filename, text in kernel_files(spec, name).items():
            sub = "kernels" if filename in KERNELS[call.kind] else "sites"
            if four_bit and sub == "sites" and filename == f"{name}.h":
                text = _four_bit_comment(text, rec["code_container"], call.in_ctype)
            (folder / sub / filename).write_text(text)
        if four_bit:
            entry["model_code_container"] = rec["code_container"]
        entry.update(
            header=f"sites/{name}.h",
            kernel_header=f"sites/{name}_kernel.h",
            kernel_source=f"kernels/{KERNELS[call.kind][1]}",
            function=f"{name}_gelu",
            in_ctype=call.in_ctype,
            out_ctype=call.out_ctype,
        )
        if isinstance(spec, GroupedLutSpec):
            entry.update(channels=spec.channels, groups=len(spec.groups), layout="rows, channels")
        sites.append(entry)
    doc = {
        "schema": EXPORT_SCHEMA,
        "schema_version": EXPORT_VERSION,
        "tool_version": __version__,
        "model": {
            "file": model_p.name,
            "manifest": man_p.name,
            "fingerprint": model_fingerprint(folder / model_p.name),
            "source": man.get("source", {}),
            "target": man.get("target"),
        },
        "sites": sites,
    }
    (folder / "export.json").write_text(json.dumps(doc, indent=1) + "\n")
    (folder / "README.md").write_text(_readme(doc))
    return doc


def _four_bit_comment(header: str, container: str, ctype: str) -> str:
    """The site header with a comment after its first line: the model stores the codes as ONNX
    4-bit tensors, the C API keeps each code in its own 8-bit container."""
    first, rest = header.split("\n", 1)
    note = (
        f"/* In the model this site's codes are ONNX {container.upper()} tensors (two per "
        f"byte); this API takes and returns one code per {ctype}, the same values. */"
    )
    return f"{first}\n{note}\n{rest}"


def _readme(doc: dict[str, Any]) -> str:
    with_kernel = [s for s in doc["sites"] if s.get("function")]
    lines = [
        "# GELU kernels for this model",
        "",
        f"Written by gelu-quant {doc['tool_version']} for `{doc['model']['file']}` "
        f"({doc['model']['fingerprint'][:19]}…), target `{doc['model']['target']}`.",
        "Each site's kernel reproduces the op of the same site in the model bit for bit.",
        "",
        "Build (C99, no allocation; keep IEEE arithmetic: no `-ffast-math`):",
        "",
        "```sh",
        "cc -std=c99 -O2 -ffp-contract=off -Ikernels -Isites -c "
        + " ".join(sorted({s["kernel_source"] for s in with_kernel})),
        "```",
        "",
        "Call (one function per site, `n` values from `in` to `out`):",
        "",
        *(
            [
                "Grouped-table sites (a channels count in the table) take the tensor row-major "
                "with the channel on the last axis: value `i` is in channel `i % channels`, "
                "`n` = rows × channels (`<SITE>_CHANNELS` in the site's kernel header).",
                "",
            ]
            if any(s.get("channels") for s in doc["sites"])
            else []
        ),
        "| site | tensor in → out | include | function | in → out C types | channels |",
        "|---|---|---|---|---|---|",
    ]
    if any(s.get("model_code_container") for s in doc["sites"]):
        lines[-2:-2] = [
            "Sites whose codes the model stores as ONNX INT4/UINT4 tensors "
            "(`model_code_container` in export.json) take and return one code per "
            "`int8_t`/`uint8_t` here: the same values, unpacked.",
            "",
        ]
    for s in doc["sites"]:
        if s.get("function"):
            lines.append(
                f"| {s['id']} | `{s['input']}` → `{s['output']}` | `{s['kernel_header']}` | "
                f"`{s['function']}(in, out, n)` | `{s['in_ctype']}` → `{s['out_ctype']}` | "
                f"{s.get('channels', '')} |"
            )
        else:
            lines.append(f"| {s['id']} | | `{s.get('header', '')}` | none: {s['note']} | | |")
    return "\n".join(lines) + "\n"
