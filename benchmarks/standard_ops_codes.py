"""Standard-op output on every MiniLM export: per site, the input codes whose output code differs
from the ``int8-lut`` table (float32 GELU on the other side of a rounding boundary than float64).

Converts each export with ``--target int8-qdq-gelu`` (one range for all sites, or the QDQ model's
own scales; ``--ranges R.json`` for calibrated ranges of the opset-17 export), then runs
``DequantizeLinear -> Gelu -> QuantizeLinear`` with each site's qparams on all 256 codes in ORT
and compares with the float64 table (the oracle of ``tests/test_standard_ops.py``).

Usage: ``python benchmarks/standard_ops_codes.py [--ranges R.json]``
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from test_standard_ops import _boundary_codes

from gelu_quant.calib.ranges_file import load_ranges
from gelu_quant.graph.convert import ConvertConfig, convert_file
from gelu_quant.models.minilm import minilm_onnx


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranges", type=Path)
    ap.add_argument("--out", type=Path, default=Path("/tmp"))
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    for v in ("opset17", "opset20", "dynamo", "ort-optimized", "qdq", "tanh17"):
        rf = load_ranges(args.ranges) if args.ranges and v != "qdq" else None
        rng = None if v == "qdq" or rf is not None else (-12.0, 12.0)
        cfg = ConvertConfig("int8-qdq-gelu", range=rng, force=True)
        res = convert_file(minilm_onnx(v), args.out / f"std-{v}.onnx", cfg, ranges=rf)
        cells = []
        for rec in res.manifest.converted:
            differ, near = _boundary_codes(rec.spec or {})
            cells.append(f"{rec.id}: {differ or 'none'} ({len(near)} near a boundary)")
        print(f"{v:<14} " + "; ".join(cells))


if __name__ == "__main__":
    main()
