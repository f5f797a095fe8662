"""Fuzzing the model loaders and the GELU matcher with random and mutated graphs.

Starting from every GELU spelling fixture, hypothesis makes broken models two ways:

- **bytes**: the serialized model truncated, with bytes flipped, inserted or deleted;
- **structure**: a parsed model with dangling inputs, cycles, attributes of the wrong type,
  huge or empty or negative shapes, NaN/inf constants, missing or duplicated names, constants
  of the wrong dtype or rank, removed outputs.

The property (the oracle is the contract, not the code): every case ends in sites found, a near
miss explained, or a :class:`~gelu_quant.errors.GeluQuantError` — through the CLI, exit code 0 or
2 with one line on stderr — never another exception, never a hang (each example has a deadline).
Converting what was found must end the same way. Derandomized and without hypothesis's example
database, so every machine runs the same examples.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import onnx.parser
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import AttributeProto, TensorProto, helper, numpy_helper

from gelu_quant.cli.main import main
from gelu_quant.errors import GeluQuantError
from gelu_quant.graph.convert import ConvertConfig, convert_model
from gelu_quant.graph.discover import discover
from gelu_quant.modelfile import parse_model

FIXTURES = Path(__file__).parent / "fixtures" / "spellings"
NAMES = sorted(p.stem for p in FIXTURES.glob("*.onnxtxt"))
_MODELS = {n: onnx.parser.parse_model((FIXTURES / f"{n}.onnxtxt").read_text()) for n in NAMES}
_BYTES = {n: m.SerializeToString() for n, m in _MODELS.items()}

FUZZ = settings(
    max_examples=400,
    deadline=5000,  # ms per example: a hang or a pathological slowdown fails the test
    derandomize=True,
    database=None,  # the same examples on every machine: no replay of locally saved failures
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _outcome(model: onnx.ModelProto | bytes) -> str:
    """What the library does with the model: ``found``, ``refused`` (a GeluQuantError)."""
    try:
        proto = parse_model(model, "fuzzed model") if isinstance(model, bytes) else model
        d = discover(proto)
    except GeluQuantError as e:
        assert "\n" not in str(e).strip(), f"multi-line error: {e}"
        return "refused"
    for miss in d.near_misses:  # a near miss always says why it was refused
        assert miss.reason.strip(), miss
    if d.sites:
        # converting what was found ends in a model or a clean refusal as well
        try:
            convert_model(proto, ConvertConfig(target="int8-lut", range=(-4.0, 4.0)))
        except GeluQuantError as e:
            assert "\n" not in str(e).strip(), f"multi-line error: {e}"
    return "found" if d.sites else "none"


# -- byte-level mutations --------------------------------------------------------------------


@st.composite
def mutated_bytes(draw: st.DrawFn) -> bytes:
    raw = bytearray(_BYTES[draw(st.sampled_from(NAMES))])
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["truncate", "flip", "insert", "delete", "zero"]))
        if not raw:
            break
        i = draw(st.integers(0, len(raw) - 1))
        if kind == "truncate":
            del raw[i:]
        elif kind == "flip":
            raw[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            raw[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del raw[i : i + draw(st.integers(1, 16))]
        else:
            raw[i : i + 4] = b"\x00" * len(raw[i : i + 4])
    return bytes(raw)


@FUZZ
@given(mutated_bytes())
def test_mutated_bytes_never_crash_the_matcher(raw: bytes) -> None:
    _outcome(raw)


# -- structural mutations --------------------------------------------------------------------


def _mut_dangling(m: onnx.ModelProto, i: int) -> None:
    if not m.graph.node:
        return
    n = m.graph.node[i % len(m.graph.node)]
    if n.input:
        n.input[i % len(n.input)] = "no_such_tensor"


def _mut_cycle(m: onnx.ModelProto, i: int) -> None:
    nodes = m.graph.node
    if not nodes:
        return
    a, b = nodes[i % len(nodes)], nodes[-1 - (i % len(nodes))]
    if a.input and b.output:
        a.input[0] = b.output[0]  # an early node reads a late node's output


def _mut_attr_type(m: onnx.ModelProto, i: int) -> None:
    for n in m.graph.node:
        for a in n.attribute:
            if i % 3 == 0:
                a.type = AttributeProto.INT
                a.i = 7
            elif i % 3 == 1:
                a.type = AttributeProto.STRING
                a.s = b"tanh" if a.name != "approximate" else b"bogus"
            else:
                a.type = AttributeProto.FLOATS
                a.floats[:] = [math.nan]
    if i % 2 == 0 and m.graph.node:
        m.graph.node[0].attribute.append(helper.make_attribute("approximate", 3))


def _mut_shapes(m: onnx.ModelProto, i: int) -> None:
    dims = [[1 << 62, 3], [0], [0, 0, 0], [-5, 2], [], [2**31] * 4][i % 6]
    for vi in list(m.graph.input) + list(m.graph.output) + list(m.graph.value_info):
        if vi.type.HasField("tensor_type"):
            shape = vi.type.tensor_type.shape
            del shape.dim[:]
            for d in dims:
                shape.dim.add().dim_value = d


def _mut_nan_constants(m: onnx.ModelProto, i: int) -> None:
    v = [math.nan, math.inf, -math.inf, 1e38, 0.0][i % 5]

    def poison(t: TensorProto) -> None:
        if t.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE):
            a = numpy_helper.to_array(t).copy()
            a[...] = v
            t.CopyFrom(numpy_helper.from_array(a.astype(a.dtype), t.name))

    for t in m.graph.initializer:
        poison(t)
    for n in m.graph.node:
        for a in n.attribute:
            if a.type == AttributeProto.TENSOR:
                poison(a.t)


def _mut_names(m: onnx.ModelProto, i: int) -> None:
    for n in m.graph.node:
        n.name = "" if i % 2 else "same"
    if i % 3 == 0 and len(m.graph.node) > 1:
        m.graph.node[1].output[0] = m.graph.node[0].output[0]  # two producers of one tensor


def _mut_dtypes(m: onnx.ModelProto, i: int) -> None:
    for t in m.graph.initializer:
        a = numpy_helper.to_array(t)
        with np.errstate(invalid="ignore"):  # NaN constants cast to int64 on purpose
            as_int = a.astype(np.int64)
        new = [as_int, a.reshape(-1, 1, 1), np.zeros((0,), a.dtype), a[None]][i % 4]
        t.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(new), t.name))
    for vi in m.graph.input:
        vi.type.tensor_type.elem_type = [TensorProto.STRING, TensorProto.BOOL, 0][i % 3]


def _mut_outputs(m: onnx.ModelProto, i: int) -> None:
    if i % 2:
        del m.graph.output[:]
    else:
        del m.graph.input[:]


def _mut_drop_node(m: onnx.ModelProto, i: int) -> None:
    if m.graph.node:
        del m.graph.node[i % len(m.graph.node)]


MUTATIONS = {
    "dangling": _mut_dangling,
    "cycle": _mut_cycle,
    "attr_type": _mut_attr_type,
    "shapes": _mut_shapes,
    "nan_constants": _mut_nan_constants,
    "names": _mut_names,
    "dtypes": _mut_dtypes,
    "outputs": _mut_outputs,
    "drop_node": _mut_drop_node,
}


@FUZZ
@given(
    st.sampled_from(NAMES),
    st.lists(st.tuples(st.sampled_from(sorted(MUTATIONS)), st.integers(0, 1000)), max_size=3),
)
def test_mutated_graphs_end_in_sites_near_misses_or_one_line_errors(
    name: str, mutations: list[tuple[str, int]]
) -> None:
    m = onnx.ModelProto()
    m.CopyFrom(_MODELS[name])
    for kind, i in mutations:
        MUTATIONS[kind](m, i)
    _outcome(m)


@pytest.mark.parametrize("kind", sorted(MUTATIONS))
def test_each_mutation_through_the_cli(kind: str, tmp_path: Path) -> None:
    """Through the command line: exit 0 or 2, one line on stderr when 2, for every fixture."""
    for name in NAMES:
        m = onnx.ModelProto()
        m.CopyFrom(_MODELS[name])
        MUTATIONS[kind](m, 1)
        path = tmp_path / f"{name}.onnx"
        path.write_bytes(m.SerializeToString())
        for args in (
            ["inspect", str(path), "--explain"],
            [
                "convert",
                str(path),
                "--range",
                "-4",
                "4",
                "--target",
                "int8-lut",
                "-o",
                str(tmp_path / f"{name}.gq.onnx"),
                "--overwrite",
            ],
        ):
            r = CliRunner().invoke(main, args)
            assert r.exit_code in (0, 2), (name, args[0], r.exit_code, r.stderr)
            if r.exit_code == 2:
                assert len(r.stderr.strip().splitlines()) == 1, (name, args[0], r.stderr)
                assert "internal error" not in r.stderr


def test_random_garbage_is_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    for k in range(40):
        path = tmp_path / f"g{k}.onnx"
        path.write_bytes(rng.integers(0, 256, int(rng.integers(1, 4096)), dtype=np.uint8).tobytes())
        r = CliRunner().invoke(main, ["inspect", str(path)])
        assert r.exit_code == 2, (k, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1
