"""GELU site discovery: one ONNX-text fixture per spelling, near misses, names, external data.

Oracles: the expected sites are written out by hand per fixture; that each fixture computes GELU
(and each near-miss fixture does not) is checked by running it in ORT against float64 GELU
computed here with math.erf / math.tanh / math.exp.
"""

from __future__ import annotations

import itertools
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.helper as oh
import onnx.parser
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gelu_quant.errors import BadInputError, ModelError
from gelu_quant.graph.discover import discover, explain, find_gelu_sites
from gelu_quant.graph.names import ensure_node_names
from gelu_quant.graph.polynomial import Poly, PolynomialError
from gelu_quant.graph.sites import QuantInfo

FIXTURES = Path(__file__).parent / "fixtures" / "spellings"


def load_fixture(name: str) -> onnx.ModelProto:
    model = onnx.parser.parse_model((FIXTURES / f"{name}.onnxtxt").read_text())
    onnx.checker.check_model(model, full_check=True)
    return model


# -- float64 oracles ------------------------------------------------------------------------------


def gelu_erf(x: np.ndarray) -> np.ndarray:
    return np.array([0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0))) for v in x.ravel()]).reshape(
        x.shape
    )


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    k = math.sqrt(2.0 / math.pi)
    return np.array(
        [0.5 * v * (1.0 + math.tanh(k * (v + 0.044715 * v**3))) for v in x.ravel()]
    ).reshape(x.shape)


def gelu_quick(x: np.ndarray) -> np.ndarray:
    return np.array([v / (1.0 + math.exp(-1.702 * v)) for v in x.ravel()]).reshape(x.shape)


ORACLES = {"exact": gelu_erf, "tanh": gelu_tanh, "quick": gelu_quick}


def run_ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return [np.asarray(o) for o in sess.run(None, feeds)]


def sample_inputs(model: onnx.ModelProto, cond: bool = True) -> tuple[dict[str, np.ndarray], Any]:
    """Seeded feeds for a fixture and the float64 pre-activation the GELU sees."""
    rng = np.random.default_rng(1234)
    x = np.concatenate([np.linspace(-5, 5, 161), rng.uniform(-6, 6, 95)]).reshape(16, 16)
    if model.graph.name.startswith("qdq_"):  # int8 input scale 1/32: stay inside [-4, 4)
        x = np.clip(x, -3.9, 3.9)
    bias = rng.uniform(-0.5, 0.5, 16)
    feeds: dict[str, np.ndarray] = {}
    pre = x.copy()
    for inp in model.graph.input:
        elem = inp.type.tensor_type.elem_type
        if inp.name == "c":
            feeds["c"] = np.array(cond)
        elif inp.name == "bias":
            feeds["bias"] = bias.astype(np.float32)
            pre = x.astype(np.float32).astype(np.float64) + bias.astype(np.float32)
        elif elem == onnx.TensorProto.FLOAT16:
            feeds[inp.name] = x.astype(np.float16)
            pre = x.astype(np.float16).astype(np.float64)
        else:
            feeds[inp.name] = x.astype(np.float32)
            pre = x.astype(np.float32).astype(np.float64)
    if model.graph.name.startswith("qdq_"):  # what QuantizeLinear -> DequantizeLinear passes on
        q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear")
        inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
        scale, zp = float(inits[q.input[1]]), float(inits[q.input[2]])
        pre = (np.clip(np.round(x / np.float32(scale)) + zp, -128, 127) - zp) * np.float32(scale)
    return feeds, pre


# -- the spellings --------------------------------------------------------------------------------

Q_IN = QuantInfo(tensor="hq", scale=0.03125, zero_point=0, dtype="int8", node="x_dq")
Q_OUT = QuantInfo(
    tensor="gq", scale=float(np.float32(0.0166)), zero_point=-118, dtype="int8", node="g_q"
)

# quantize_static's outer Q/DQ in qdq_tanh_ort / qdq_quick_ort
ORT_Q_IN = QuantInfo(
    tensor="x_QuantizeLinear_Output",
    scale=float(np.float32(0.031242011)),
    zero_point=-1,
    dtype="int8",
    node="x_DequantizeLinear",
)


def ort_q_out(scale: float) -> QuantInfo:
    return QuantInfo(
        tensor="y_QuantizeLinear_Output",
        scale=float(np.float32(scale)),
        zero_point=-118,
        dtype="int8",
        node="y_QuantizeLinear",
    )


# fixture -> (variant, spelling, input, output, nodes, extra fields) of its single site
EXPECTED: dict[str, tuple[str, str, str, str, tuple[str, ...], dict[str, Any]]] = {
    "onnx_gelu": ("exact", "onnx:Gelu", "x", "y", ("gelu",), {}),
    "onnx_gelu_tanh": ("tanh", "onnx:Gelu", "x", "y", ("gelu",), {}),
    "erf_torchscript": (
        "exact",
        "pattern:erf",
        "x",
        "y",
        ("c_sqrt2", "div", "erf", "c_one", "add", "mul", "c_half", "mul_1"),
        {},
    ),
    "erf_dynamo": (
        "exact",
        "pattern:erf",
        "x",
        "y",
        ("node_Div_112", "node_Erf_113", "node_Add_115", "node_Mul_117", "node_gelu"),
        {},
    ),
    "erf_rsqrt2_fp16": (
        "exact",
        "pattern:erf",
        "x",
        "y",
        ("scale", "erf", "add", "half_x", "mul"),
        {"dtype": "float16"},
    ),
    "erf_div_two": ("exact", "pattern:erf", "x", "y", ("div", "erf", "add", "mul", "div_2"), {}),
    "tanh_pow": (
        "tanh",
        "pattern:tanh",
        "x",
        "y",
        ("pow", "mul_k3", "add_x", "mul_k", "tanh", "add_1", "mul_half", "mul"),
        {},
    ),
    "tanh_mulchain": (
        "tanh",
        "pattern:tanh",
        "x",
        "y",
        (
            "xx",
            "c_k3",
            "mul_k3",
            "c_one",
            "add_1",
            "mul_x",
            "c_k",
            "mul_k",
            "tanh",
            "c_one_b",
            "add_2",
            "mul",
            "c_half",
            "mul_half",
        ),
        {},
    ),
    "tanh_sigmoid": (
        "tanh",
        "pattern:tanh-sigmoid",
        "x",
        "y",
        ("pow", "mul_k3", "add_x", "mul_k", "sigmoid", "mul"),
        {},
    ),
    "quick_pattern": (
        "quick",
        "pattern:quick",
        "x",
        "y",
        ("scale", "sigmoid", "mul"),
        {"alpha": float(np.float32(1.702))},
    ),
    "ms_gelu": ("exact", "com.microsoft:Gelu", "x", "y", ("gelu",), {}),
    "ms_fastgelu": ("tanh", "com.microsoft:FastGelu", "x", "y", ("fast_gelu",), {}),
    "ms_fastgelu_bias": (
        "tanh",
        "com.microsoft:FastGelu",
        "x",
        "y",
        ("fast_gelu",),
        {"bias": "bias"},
    ),
    "ms_biasgelu": ("exact", "com.microsoft:BiasGelu", "x", "y", ("bias_gelu",), {"bias": "bias"}),
    "ms_quickgelu": (
        "quick",
        "com.microsoft:QuickGelu",
        "x",
        "y",
        ("quick_gelu",),
        {"alpha": 1.702},
    ),
    "qdq_gelu": ("exact", "onnx:Gelu", "x", "g", ("gelu",), {"qdq_in": Q_IN, "qdq_out": Q_OUT}),
    "qdq_erf_ort": (
        "exact",
        "pattern:erf",
        "x",
        "g",
        (
            "c_sqrt2",
            "div",
            "erf",
            "erf_q",
            "erf_dq",
            "c_one",
            "one_q",
            "one_dq",
            "add",
            "add_q",
            "add_dq",
            "mul",
            "mul_q",
            "mul_dq",
            "c_half",
            "half_q",
            "half_dq",
            "mul_1",
        ),
        {"qdq_in": Q_IN, "qdq_out": Q_OUT},
    ),
    "qdq_erf_dedicated": (
        "exact",
        "pattern:erf",
        "x",
        "g",
        ("x_dq_b", "div", "erf", "add", "mul", "mul_half"),
        {"qdq_in": Q_IN, "qdq_out": Q_OUT},
    ),
    "qdq_tanh_ort": (
        "tanh",
        "pattern:tanh",
        "x_DequantizeLinear_Output",
        "y_QuantizeLinear_Input",
        (
            "half_DequantizeLinear",
            "k3_DequantizeLinear",
            "k_DequantizeLinear",
            "one_DequantizeLinear",
            "pow",
            "mul_half",
            "p_QuantizeLinear",
            "hx_QuantizeLinear",
            "p_DequantizeLinear",
            "hx_DequantizeLinear",
            "mul_k3",
            "p3_QuantizeLinear",
            "p3_DequantizeLinear",
            "add_x",
            "s_QuantizeLinear",
            "s_DequantizeLinear",
            "mul_k",
            "u_QuantizeLinear",
            "u_DequantizeLinear",
            "tanh",
            "t_QuantizeLinear",
            "t_DequantizeLinear",
            "add_1",
            "a_QuantizeLinear",
            "a_DequantizeLinear",
            "mul",
        ),
        {"qdq_in": ORT_Q_IN, "qdq_out": ort_q_out(0.016322255)},
    ),
    "qdq_quick_ort": (
        "quick",
        "pattern:quick",
        "x_DequantizeLinear_Output",
        "y_QuantizeLinear_Input",
        (
            "alpha_DequantizeLinear",
            "scale",
            "s_QuantizeLinear",
            "s_DequantizeLinear",
            "sigmoid",
            "g_QuantizeLinear",
            "g_DequantizeLinear",
            "mul",
        ),
        {
            "qdq_in": ORT_Q_IN,
            "qdq_out": ort_q_out(0.016279813),
            # DequantizeLinear(127; scale, zero point -128) in float32
            "alpha": float(np.float32(255) * np.float32(0.00667451)),
        },
    ),
    "unnamed_nodes": (
        "exact",
        "pattern:erf",
        "x",
        "y",
        ("Erf_gq1", "Erf_gq2", "Add_gq3", "Mul_gq4", "Mul_gq5"),
        {},
    ),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_site_is_found(name: str) -> None:
    variant, spelling, x, y, nodes, extra = EXPECTED[name]
    sites = find_gelu_sites(load_fixture(name))
    assert len(sites) == 1
    s = sites[0]
    assert (s.id, s.form, s.spelling, s.input, s.output) == ("gelu0", variant, spelling, x, y)
    assert s.nodes == nodes
    assert s.dtype == extra.get("dtype", "float32")
    assert s.bias == extra.get("bias")
    assert s.alpha == extra.get("alpha")
    assert s.qdq_in == extra.get("qdq_in")
    assert s.qdq_out == extra.get("qdq_out")
    assert s.shape == ("N", 16)
    assert s.graph == ""
    assert s.notes == ()
    assert explain(load_fixture(name)) == []


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_computes_gelu_in_ort(name: str) -> None:
    """The fixture itself is a GELU of its site's variant (so the expectations mean something)."""
    model = load_fixture(name)
    feeds, pre = sample_inputs(model)
    y = run_ort(model, feeds)[0].astype(np.float64)
    want = ORACLES[EXPECTED[name][0]](pre)
    if name.startswith("qdq_"):
        atol = 0.05  # input, inner and output quantization steps (scales 0.031, 0.0166 ...)
    elif y.dtype == np.float16 or feeds.get("x", np.zeros(1, np.float32)).dtype == np.float16:
        atol = 4e-3
    else:
        atol = 2e-5
    np.testing.assert_allclose(y, want, rtol=2e-3 if atol == 4e-3 else 1e-5, atol=atol)


def test_sites_in_if_branches_have_graph_paths_and_compute_gelu() -> None:
    model = load_fixture("if_subgraph")
    sites = find_gelu_sites(model)
    assert [(s.id, s.graph, s.spelling, s.input, s.output, s.nodes) for s in sites] == [
        ("branch/then_branch/gelu0", "branch/then_branch", "onnx:Gelu", "x", "a", ("then_gelu",)),
        (
            "branch/else_branch/gelu0",
            "branch/else_branch",
            "pattern:erf",
            "x",
            "b",
            ("div", "erf", "add", "mul", "mul_half"),
        ),
    ]
    assert all(s.in_subgraph for s in sites)
    assert find_gelu_sites(model, include_subgraphs=False) == []
    for cond in (True, False):
        feeds, pre = sample_inputs(model, cond)
        np.testing.assert_allclose(run_ort(model, feeds)[0], gelu_erf(pre), rtol=1e-5, atol=2e-5)


def test_site_in_loop_body_computes_tanh_gelu() -> None:
    model = load_fixture("loop_subgraph")
    sites = find_gelu_sites(model)
    assert [(s.id, s.graph, s.form, s.spelling, s.input, s.output) for s in sites] == [
        ("loop/body/gelu0", "loop/body", "tanh", "pattern:tanh", "v", "w")
    ]
    assert sites[0].nodes == (
        "cube",
        "cube_2",
        "mul_k3",
        "add_x",
        "mul_k",
        "tanh",
        "add_1",
        "mul",
        "mul_half",
    )
    feeds, pre = sample_inputs(model)
    np.testing.assert_allclose(run_ort(model, feeds)[0], gelu_tanh(pre), rtol=1e-5, atol=2e-5)


def test_intermediate_captured_by_a_subgraph_is_not_replaceable() -> None:
    text = (FIXTURES / "erf_dynamo.onnxtxt").read_text()
    text = text.replace("(float[N,16] x)", "(float[N,16] x, bool c)").replace(
        "=> (float[N,16] y)", "=> (float[N,16] y, float[N,16] z)"
    )
    text = text.rstrip().rstrip("}") + (
        "  [branch] z = If (c) <"
        "then_branch = t () => (float[N,16] p) { [cap] p = Identity (val_117) },"
        " else_branch = f () => (float[N,16] q) { [cap2] q = Identity (x) }>\n}\n"
    )
    found = discover(onnx.parser.parse_model(text))
    assert found.sites == []
    assert [(m.node, m.reason) for m in found.near_misses] == [
        (
            "node_Erf_113",
            "intermediate 'val_117' is read by 2 nodes ('node_Add_115', 'cap'): not replaceable",
        )
    ]


def test_rank_two_scalar_constant_is_accepted_only_when_it_cannot_broadcast() -> None:
    text = (FIXTURES / "erf_dynamo.onnxtxt").read_text()
    text = text.replace("float val_120 = {0.5}", "float[1,1] val_120 = {0.5}")
    sites = find_gelu_sites(onnx.parser.parse_model(text))  # x is [N,16]: same rank
    assert [s.output for s in sites] == ["y"]
    rank1 = text.replace("float[N,16] x", "float[16] x").replace("float[N,16] y", "float[1,16] y")
    found = discover(onnx.parser.parse_model(rank1))
    assert found.sites == []
    assert "rank-2 constant may broadcast" in found.near_misses[0].reason


def test_gelu_in_a_model_local_function_is_noted() -> None:
    text = (FIXTURES / "onnx_gelu.onnxtxt").read_text()
    text = text.replace('"" : 20]', '"" : 20, "local" : 1]').replace(
        "[gelu] y = Gelu (x)", "[call] y = local.act (x)"
    )
    text += '<domain: "local", opset_import: ["" : 20]>\nact (a) => (b) {\n  b = Gelu (a)\n}\n'
    found = discover(onnx.parser.parse_model(text))
    assert found.sites == []
    assert found.notes == (
        "model-local function local:act uses Gelu: GELUs inside functions are not reported "
        "(inline the functions first)",
    )


@pytest.mark.parametrize("infer_shapes", [True, False])
def test_qdq_without_zero_points_is_uint8(infer_shapes: bool) -> None:
    """ONNX: a QuantizeLinear without zero point and output_dtype makes uint8, zero point 0."""
    text = (FIXTURES / "qdq_gelu.onnxtxt").read_text()
    for old in (", int8 zp_in = {0}", ", int8 zp_out = {-118}", ", zp_in)", ", zp_out)"):
        text = text.replace(old, ")" if old.endswith(")") else "")
    site = discover(onnx.parser.parse_model(text), infer_shapes=infer_shapes).sites[0]
    assert site.qdq_in == QuantInfo("hq", 0.03125, 0, "uint8", "x_dq")
    assert site.qdq_out == QuantInfo("gq", float(np.float32(0.0166)), 0, "uint8", "g_q")
    assert (site.dtype, site.notes) == ("float32", ())


# -- near misses ----------------------------------------------------------------------------------

# fixture -> (spelling attempted, anchor node, words the reason must contain, computes GELU?)
MISSES: dict[str, tuple[str, str, tuple[str, ...], bool]] = {
    "miss_erf_wrong_constant": ("pattern:erf", "erf", ("0.666667·x", "x/√2"), False),
    "miss_erf_wrong_half": ("pattern:erf", "erf", ("0.6·x + 0.6·x·T",), False),
    "miss_erf_shared_intermediate": (
        "pattern:erf",
        "erf",
        ("'e'", "'other'", "not replaceable"),
        True,
    ),
    "miss_erf_graph_output_intermediate": (
        "pattern:erf",
        "erf",
        ("'d'", "graph output", "not replaceable"),
        True,
    ),
    "miss_tanh_wrong_cubic": ("pattern:tanh", "tanh", ("0.0797885·x^3",), False),
    "miss_silu": ("pattern:quick", "sigmoid", ("SiLU",), False),
    "miss_tanh_pooler": ("pattern:tanh", "tanh", ("not a polynomial",), False),
}


@pytest.mark.parametrize("name", sorted(MISSES))
def test_near_miss_is_refused_and_explained(name: str) -> None:
    spelling, node, words, _ = MISSES[name]
    found = discover(load_fixture(name))
    assert found.sites == []
    assert len(found.near_misses) == 1  # miss_silu: the plain Sigmoid gate stays silent
    miss = found.near_misses[0]
    assert (miss.spelling, miss.node, miss.graph) == (spelling, node, "")
    for w in words:
        assert w in miss.reason
    assert miss.to_json()["reason"] == miss.reason


@pytest.mark.parametrize("name", sorted(set(MISSES) - {"miss_tanh_pooler"}))
def test_near_miss_fixtures_are_or_are_not_gelu_as_claimed(name: str) -> None:
    """Refusals of non-GELUs are right (far from every GELU); refused true GELUs are GELUs."""
    model = load_fixture(name)
    feeds, pre = sample_inputs(model)
    y = run_ort(model, feeds)[0].astype(np.float64)
    errors = [float(np.max(np.abs(y - f(pre)))) for f in ORACLES.values()]
    if MISSES[name][3]:
        assert errors[0] < 2e-5
    else:
        assert min(errors) > 1e-2


# -- operand orders and associations, generated ---------------------------------------------------


def _erf_model(rsqrt: bool, swap_arg: bool, swap_add: bool, swap_mul: bool, half: str) -> Any:
    x, c = "x", "c"
    nodes = [
        oh.make_node("Mul" if rsqrt else "Div", [c, x] if swap_arg and rsqrt else [x, c], ["d"]),
        oh.make_node("Erf", ["d"], ["e"]),
        oh.make_node("Add", ["one", "e"] if swap_add else ["e", "one"], ["a"]),
    ]
    if half == "last":
        nodes += [
            oh.make_node("Mul", ["a", x] if swap_mul else [x, "a"], ["m"]),
            oh.make_node("Mul", ["half", "m"] if swap_mul else ["m", "half"], ["y"]),
        ]
    elif half == "on_x":
        nodes += [
            oh.make_node("Mul", [x, "half"] if swap_mul else ["half", x], ["hx"]),
            oh.make_node("Mul", ["hx", "a"] if swap_mul else ["a", "hx"], ["y"]),
        ]
    else:  # on the erf sum
        nodes += [
            oh.make_node("Mul", ["a", "half"] if swap_mul else ["half", "a"], ["ha"]),
            oh.make_node("Mul", ["ha", x] if swap_mul else [x, "ha"], ["y"]),
        ]
    for i, n in enumerate(nodes):
        n.name = f"n{i}"
    c_val = 1 / math.sqrt(2) if rsqrt else math.sqrt(2)
    inits = [
        oh.make_tensor("c", onnx.TensorProto.FLOAT, [], [c_val]),
        oh.make_tensor("one", onnx.TensorProto.FLOAT, [], [1.0]),
        oh.make_tensor("half", onnx.TensorProto.FLOAT, [], [0.5]),
    ]
    vi = [oh.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [16, 16]) for n in ("x", "y")]
    graph = oh.make_graph(nodes, "erf_variant", [vi[0]], [vi[1]], inits)
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=10)


ERF_VARIANTS = list(itertools.product([False, True], repeat=4))


@pytest.mark.parametrize("half", ["last", "on_x", "on_sum"])
@pytest.mark.parametrize(("rsqrt", "swap_arg", "swap_add", "swap_mul"), ERF_VARIANTS)
def test_every_operand_order_and_association_of_the_erf_pattern(
    rsqrt: bool, swap_arg: bool, swap_add: bool, swap_mul: bool, half: str
) -> None:
    model = _erf_model(rsqrt, swap_arg, swap_add, swap_mul, half)
    sites = find_gelu_sites(model)
    assert [(s.input, s.output, s.nodes) for s in sites] == [
        ("x", "y", tuple(f"n{i}" for i in range(5)))
    ]
    feeds, pre = sample_inputs(model)
    np.testing.assert_allclose(run_ort(model, feeds)[0], gelu_erf(pre), rtol=1e-5, atol=2e-5)


# -- names, loading, external data ----------------------------------------------------------------


def test_ensure_node_names_is_deterministic_and_matches_discovery() -> None:
    model = load_fixture("unnamed_nodes")
    before = model.SerializeToString()
    named = ensure_node_names(model)
    assert model.SerializeToString() == before  # the input is not modified
    names = [n.name for n in named.graph.node]
    assert names == ["Identity_gq0", "Erf_gq1", "Erf_gq2", "Add_gq3", "Mul_gq4", "Mul_gq5"]
    assert ensure_node_names(named).SerializeToString() == named.SerializeToString()
    site = find_gelu_sites(model)[0]
    assert set(site.nodes) <= set(names)
    assert discover(model).renamed_nodes == 5
    named_fixture = load_fixture("erf_dynamo")
    assert ensure_node_names(named_fixture) == named_fixture


def test_duplicate_node_names_are_made_unique() -> None:
    model = load_fixture("erf_dynamo")
    for n in model.graph.node:
        n.name = "same"
    names = [n.name for n in ensure_node_names(model).graph.node]
    assert names[0] == "same"
    assert len(set(names)) == len(names)
    assert find_gelu_sites(model)[0].nodes == tuple(names)


def test_path_with_external_weights_is_read_without_them(tmp_path: Path) -> None:
    """A model with a big weight stored externally is discovered; with its data file gone the
    model is refused with one line naming the missing file (every command checks external data
    before anything reads it)."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 256)).astype(np.float32)
    model = load_fixture("erf_dynamo")
    g = model.graph
    g.initializer.append(onnx.numpy_helper.from_array(w, "w"))
    g.node.insert(0, oh.make_node("MatMul", ["h", "w0"], ["x"], name="dense"))
    g.node.insert(0, oh.make_node("Slice", ["w", "s", "e", "ax"], ["w0"], name="take"))
    for n, v in (("s", [0]), ("e", [16]), ("ax", [1])):
        g.initializer.append(onnx.numpy_helper.from_array(np.array(v, np.int64), n))
    g.input[0].name = "h"
    path = tmp_path / "model.onnx"
    onnx.save(
        model, path, save_as_external_data=True, location="model.onnx.data", size_threshold=1024
    )
    sites = find_gelu_sites(path)
    assert [(s.input, s.output, len(s.nodes)) for s in sites] == [("x", "y", 5)]
    assert sites[0].shape == ("N", 16)  # inferred through MatMul with the stubbed weight
    (tmp_path / "model.onnx.data").unlink()
    with pytest.raises(ModelError, match=r"external data file 'model.onnx.data' .* is missing"):
        find_gelu_sites(str(path))


def test_external_constants_are_read_from_the_data_file(tmp_path: Path) -> None:
    model = load_fixture("erf_dynamo")
    for t in model.graph.initializer:  # raw_data, which is what onnx moves to external files
        t.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(t), t.name))
    path = tmp_path / "m.onnx"
    onnx.save(model, path, save_as_external_data=True, location="m.data", size_threshold=0)
    stored = onnx.load(path, load_external_data=False).graph.initializer
    assert all(t.data_location == onnx.TensorProto.EXTERNAL for t in stored)
    assert [s.spelling for s in find_gelu_sites(path)] == ["pattern:erf"]


def test_bad_inputs_raise_the_documented_errors(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="no such model file"):
        find_gelu_sites(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\xff\x00 this is not protobuf \x12")
    with pytest.raises(ModelError):
        find_gelu_sites(junk)
    with pytest.raises(BadInputError):
        find_gelu_sites(42)  # type: ignore[arg-type]


def test_sites_are_in_graph_order_with_sequential_ids() -> None:
    a = load_fixture("erf_dynamo")  # x -> erf pattern -> y, then y -> Gelu -> z
    g = a.graph
    g.node.append(oh.make_node("Gelu", ["y"], ["z"], name="gelu"))
    g.output[0].name = "z"
    a.opset_import[0].version = 20
    sites = find_gelu_sites(a)
    assert [(s.id, s.spelling, s.input, s.output) for s in sites] == [
        ("gelu0", "pattern:erf", "x", "y"),
        ("gelu1", "onnx:Gelu", "y", "z"),
    ]


# -- the polynomial helper ------------------------------------------------------------------------


def test_polynomial_arithmetic_and_format() -> None:
    x, t = Poly.atom(2, 0), Poly.atom(2, 1)
    half = Poly.const(2, 0.5)
    p = half * x * (Poly.const(2, 1.0) + t)
    assert p.matches({(1, 0): 0.5, (1, 1): 0.5}, 1e-12, 0.0)
    assert not p.matches({(1, 0): 0.5}, 1e-12, 0.0)
    assert p.format(("x", "T")) == "0.5·x + 0.5·x·T"
    assert (x - x).terms == {}
    assert (x.power(3) * x).degree() == 4
    with pytest.raises(PolynomialError):
        x.power(7)
    assert Poly.const(1, 2.0).constant_value() == 2.0
    assert x.constant_value() is None


# -- random arrangements of the tanh form (hypothesis) --------------------------------------------


class _Builder:
    """Writes an expression as ONNX nodes, swapping commutative operands at random."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def const(self, value: float) -> str:
        name = f"c{len(self.inits)}"
        self.inits.append(oh.make_tensor(name, onnx.TensorProto.FLOAT, [], [value]))
        return name

    def op(self, op_type: str, a: str, b: str) -> str:
        if op_type in ("Add", "Mul") and self.rng.random() < 0.5:
            a, b = b, a
        out = f"t{len(self.nodes)}"
        self.nodes.append(oh.make_node(op_type, [a, b], [out], name=f"n{len(self.nodes)}"))
        return out

    def cube(self, x: str) -> str:
        kind = self.rng.randrange(3)
        if kind == 0:
            return self.op("Pow", x, self.const(3.0))
        if kind == 1:
            return self.op("Mul", self.op("Mul", x, x), x)
        return self.op("Mul", self.op("Pow", x, self.const(2.0)), x)

    def tanh_argument(self, x: str) -> str:
        k, c3 = math.sqrt(2 / math.pi), 0.044715
        kind = self.rng.randrange(4)
        if kind == 0:  # k * (x + c3 * x^3)
            return self.op(
                "Mul",
                self.const(k),
                self.op("Add", x, self.op("Mul", self.const(c3), self.cube(x))),
            )
        if kind == 1:  # k*x + (k*c3) * x^3
            return self.op(
                "Add",
                self.op("Mul", self.const(k), x),
                self.op("Mul", self.const(k * c3), self.cube(x)),
            )
        if kind == 2:  # x * (k + k*c3 * x*x)
            xx = self.op("Mul", x, x)
            return self.op(
                "Mul", x, self.op("Add", self.const(k), self.op("Mul", self.const(k * c3), xx))
            )
        # (x * (1 + c3*x*x)) * k, the 1 subtracted from 2
        one = self.op("Sub", self.const(2.0), self.const(1.0))
        inner = self.op("Add", one, self.op("Mul", self.const(c3), self.op("Mul", x, x)))
        return self.op("Mul", self.op("Mul", x, inner), self.const(k))

    def body(self, x: str, t: str) -> str:
        kind = self.rng.randrange(4)
        if kind == 0:  # product of 0.5, x, (1 + t) in a random association
            factors = [self.const(0.5), x, self.op("Add", self.const(1.0), t)]
            self.rng.shuffle(factors)
            return self.op("Mul", self.op("Mul", factors[0], factors[1]), factors[2])
        if kind == 1:  # (x + x*t) / 2
            return self.op("Div", self.op("Add", x, self.op("Mul", x, t)), self.const(2.0))
        if kind == 2:  # 0.5*x + 0.5*x*t, each written out
            left = self.op("Mul", self.const(0.5), x)
            return self.op("Add", left, self.op("Mul", self.op("Mul", x, self.const(0.5)), t))
        # x * (0.5 + 0.5*t)
        return self.op(
            "Mul", x, self.op("Add", self.const(0.5), self.op("Mul", self.const(0.5), t))
        )


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.integers(0, 2**32 - 1))
def test_random_arrangements_of_the_tanh_form_are_found(seed: int) -> None:
    b = _Builder(random.Random(seed))
    u = b.tanh_argument("x")
    t = f"t{len(b.nodes)}"
    b.nodes.append(oh.make_node("Tanh", [u], [t], name=f"n{len(b.nodes)}"))
    y = b.body("x", t)
    vi_x = oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [16, 16])
    vi_y = oh.make_tensor_value_info(y, onnx.TensorProto.FLOAT, [16, 16])
    graph = oh.make_graph(b.nodes, "tanh_random", [vi_x], [vi_y], b.inits)
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=10)
    sites = find_gelu_sites(model)
    assert [(s.form, s.spelling, s.input, s.output) for s in sites] == [
        ("tanh", "pattern:tanh", "x", y)
    ]
    assert sites[0].nodes == tuple(n.name for n in b.nodes)  # every node is part of the GELU
    feeds, pre = sample_inputs(model)
    np.testing.assert_allclose(run_ort(model, feeds)[0], gelu_tanh(pre), rtol=1e-5, atol=3e-5)
