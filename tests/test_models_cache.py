"""The models cache: entries appear whole, are reused, and a failed build leaves nothing behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from gelu_quant.models.cache import cache_root, cached_build, read_meta, settings_key


def test_builds_once_and_records_meta(tmp_path: Path) -> None:
    calls: list[Path] = []

    def build(folder: Path) -> dict[str, int]:
        calls.append(folder)
        (folder / "model.onnx").write_bytes(b"x")
        return {"answer": 42}

    first = cached_build("thing", {"a": 1}, build, tmp_path)
    second = cached_build("thing", {"a": 1}, build, tmp_path)
    assert first == second == tmp_path / f"thing-{settings_key({'a': 1})}"
    assert len(calls) == 1 and calls[0] != first  # built elsewhere, then renamed
    assert (first / "model.onnx").read_bytes() == b"x"
    meta = read_meta(first)
    assert meta["answer"] == 42 and meta["settings"] == {"a": 1}
    other = cached_build("thing", {"a": 2}, build, tmp_path)
    assert other != first and len(calls) == 2


def test_failed_build_leaves_no_entry_and_no_temp(tmp_path: Path) -> None:
    def build(folder: Path) -> None:
        (folder / "model.onnx").write_bytes(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        cached_build("thing", {"a": 1}, build, tmp_path)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_stale_temp_folders_are_removed_by_the_next_build(tmp_path: Path) -> None:
    key = settings_key({"a": 1})
    stale = tmp_path / f".thing-{key}.tmpabc"
    stale.mkdir()
    (stale / "model.onnx").write_bytes(b"half")
    entry = cached_build("thing", {"a": 1}, lambda folder: None, tmp_path)
    assert not stale.exists() and (entry / "meta.json").is_file()


def test_settings_key_ignores_key_order() -> None:
    assert settings_key({"a": 1, "b": [1, 2]}) == settings_key({"b": [1, 2], "a": 1})
    assert settings_key({"a": 1}) != settings_key({"a": 2})


def test_cache_root_follows_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GELU_QUANT_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    monkeypatch.delenv("GELU_QUANT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_root() == tmp_path / "x" / "gelu-quant"
