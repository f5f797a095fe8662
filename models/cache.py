"""A small on-disk cache for built model files, kept outside the repository.

Each entry is a folder ``<cache>/<name>-<key>/`` that appears all at once: it is built in a hidden
temporary folder beside it and renamed into place, so a build that is killed half-way leaves no
entry behind (only a hidden ``.<name>-<key>.tmp*`` folder, removed by the next build). Builds of the
same entry by several processes are serialised with a lock file where the platform has ``fcntl``.

The cache root is ``$GELU_QUANT_CACHE`` if set, else ``$XDG_CACHE_HOME/gelu-quant`` or
``~/.cache/gelu-quant``; model builds live in its ``models/`` folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

META_FILE = "meta.json"


def cache_root() -> Path:
    """The root folder of gelu-quant's cache (not created here)."""
    env = os.environ.get("GELU_QUANT_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "gelu-quant"


def models_cache_dir(cache_dir: Path | None = None) -> Path:
    """The folder of model build entries: ``cache_dir`` if given, else ``cache_root()/models``."""
    return Path(cache_dir) if cache_dir is not None else cache_root() / "models"


def settings_key(settings: Mapping[str, Any]) -> str:
    """A short stable hash of a JSON-serialisable mapping (sorted keys)."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock, the rename still protects entries
        yield
        return
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def read_meta(entry: Path) -> dict[str, Any]:
    """The ``meta.json`` of a cache entry (settings, versions, build time)."""
    data: dict[str, Any] = json.loads((entry / META_FILE).read_text())
    return data


def cached_build(
    name: str,
    settings: Mapping[str, Any],
    build: Callable[[Path], Mapping[str, Any] | None],
    cache_dir: Path | None = None,
) -> Path:
    """Return the entry folder for ``(name, settings)``, building it first if it is missing.

    ``build(folder)`` writes the entry's files into an empty temporary folder and may return extra
    facts to record in ``meta.json`` (beside the settings and the build time in seconds). The
    folder is renamed into place only when ``build`` returns normally.
    """
    base = models_cache_dir(cache_dir)
    key = settings_key(settings)
    final = base / f"{name}-{key}"
    if (final / META_FILE).is_file():
        return final
    base.mkdir(parents=True, exist_ok=True)
    with _locked(base / f".{name}-{key}.lock"):
        if (final / META_FILE).is_file():
            return final
        for stale in base.glob(f".{name}-{key}.tmp*"):
            shutil.rmtree(stale, ignore_errors=True)
        if final.exists():  # no meta.json: not ours or damaged by hand; rebuild it
            shutil.rmtree(final)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-{key}.tmp", dir=base))
        try:
            start = time.perf_counter()
            extra = build(tmp) or {}
            meta = {
                "name": name,
                "key": key,
                "settings": dict(settings),
                "build_seconds": round(time.perf_counter() - start, 2),
                **extra,
            }
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final
