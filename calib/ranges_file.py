"""The ranges file (``ranges.json``) and the raw statistics file (``--save-stats``).

Ranges file, schema ``gelu-quant/ranges`` version 1::

    {"schema": "gelu-quant/ranges", "schema_version": 1, "tool_version": "0.1.0",
     "model": {"name": "model.onnx", "fingerprint": "sha256:…"},
     "data": {"samples": N, "batches": B, "sources": [{"source", "kind", "samples", "batches"}]},
     "method": "percentile", "params": {"percentile": 99.99, "num_quantized_bins": 255, …},
     "sites": [{"id", "input", "output", "form", "spelling", "bias", "dtype",
                "stats": {"count", "nonfinite", "min", "max", "bin_width", "num_bins",
                          "quantiles": {"0.0001": …, …}, "observed_output": [lo, hi],
                          "channels": C, "hist": {"k", "offset", "counts"}},
                "ranges": {"minmax": {"input": [lo, hi], "output": [lo, hi]}, "percentile": …,
                           "entropy": …, "mse": …},
                "chosen": "percentile",
                "channels": {"min": [...], "max": [...]}}],   # when per-channel stats exist
     "skipped": {"site id": "reason"}}

A method whose range cannot be computed has ``null`` in ``ranges``. ``ranges`` are chosen for
8-bit tables; ``stats.hist`` is the site's exact histogram (:class:`TensorStats` grid ``k``,
``offset``; counts packed by :func:`pack_counts`), from which :meth:`RangesFile.range_for`
scores ``entropy`` and ``mse`` again at a low-bit table's own code widths (files without it
fall back to the summed per-channel histograms).

**Row sample** (for the consumer correction): when calibrate sampled input rows, they go to a
file beside the ranges file, ``<stem>.sample.npz`` (one float16 array per site id),
and the ranges file records it as ``"sample": {"file", "sha256", "dtype", "rows": {id: n},
"population": {id: rows seen}}``. The sample is read (and its digest checked) only when asked
for; a ranges file whose sample is missing still converts, without the correction.

**Model fingerprint**: :func:`gelu_quant.fingerprint.model_fingerprint`.

Statistics file (``--save-stats``): ``.npz`` (or ``.json``) with the exact per-site
:class:`TensorStats`, the sites, the observed output ranges, the model fingerprint and the data
description; ``merge-stats`` combines such shards into exactly the statistics of one pass.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import zlib
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx

from gelu_quant import __version__
from gelu_quant.calib.channel_hist import group_histogram
from gelu_quant.calib.collector import Collected
from gelu_quant.calib.methods import (
    DEFAULT_PERCENTILE,
    METHODS,
    MethodName,
    Range,
    entropy_range,
    minmax_range,
    mse_range,
    output_range,
    percentile_range,
    quantized_bins,
)
from gelu_quant.calib.row_sample import RowSample
from gelu_quant.calib.stats import TensorStats
from gelu_quant.errors import BadInputError, GeluQuantError, ModelError
from gelu_quant.fileio import write_bytes_atomic
from gelu_quant.fingerprint import model_fingerprint
from gelu_quant.graph.sites import GeluSite

RANGES_SCHEMA = "gelu-quant/ranges"
STATS_SCHEMA = "gelu-quant/stats"
SCHEMA_VERSION = 1
QUANTILES = (0.0001, 0.001, 0.01, 0.5, 0.99, 0.999, 0.9999)


def refuse_overwriting_inputs(output: str | os.PathLike[str], *inputs: object) -> None:
    """Raise if ``output`` names the same file as one of ``inputs``."""
    out = Path(os.fspath(output)).resolve()
    for i in inputs:
        if isinstance(i, str | os.PathLike) and Path(os.fspath(i)).resolve() == out:
            raise BadInputError(
                f"refusing to overwrite input file {str(output)!r}; choose another output path"
            )


# -- per-site ranges ---------------------------------------------------------------------------
@dataclass(frozen=True)
class MethodParams:
    """Parameters of the range methods."""

    percentile: float = DEFAULT_PERCENTILE
    num_quantized_bins: int = 255
    dtype: str = "int8"

    def to_json(self) -> dict[str, Any]:
        return {
            "percentile": self.percentile,
            "num_quantized_bins": self.num_quantized_bins,
            "dtype": self.dtype,
        }


def _compute(
    method: MethodName,
    st: TensorStats,
    form: str,
    params: MethodParams,
    bits: int | None = None,
    out_bits: int | None = None,
) -> Range:
    """``method``'s range; ``bits`` / ``out_bits`` (None: 8) the table's code widths, which
    ``entropy`` and ``mse`` score at (:func:`~gelu_quant.calib.methods.select_range`)."""
    ib, ob = _widths(bits, out_bits)
    if method == "minmax":
        return minmax_range(st)
    if method == "percentile":
        return percentile_range(st, params.percentile)
    if method == "entropy":
        nq = params.num_quantized_bins if ib is None else quantized_bins(ib)
        return entropy_range(st, nq)
    out = 8 if ob is None else ob  # mse_range's None would mean "as the input"
    return mse_range(st, form, params.dtype, bits=ib, out_bits=out)  # type: ignore[arg-type]


def _widths(bits: int | None, out_bits: int | None) -> tuple[int | None, int | None]:
    """``(bits, out_bits)`` with 8 written as None (the dtype's width: the stored ranges)."""
    ob = bits if out_bits is None else out_bits
    return (None if bits in (None, 8) else bits), (None if ob in (None, 8) else ob)


def _rescored(method: str, bits: int | None, out_bits: int | None) -> bool:
    """Whether ``method``'s range at these code widths differs from the stored 8-bit one."""
    return method in ("entropy", "mse") and _widths(bits, out_bits) != (None, None)


def _histogram_stats(k: int, offset: int, counts: np.ndarray, lo: float, hi: float) -> TensorStats:
    """Statistics of a histogram on grid ``(k, offset)`` with finite extremes ``lo``, ``hi``
    (what the range methods read; no per-channel part)."""
    return TensorStats(
        num_bins=counts.size,
        count=int(counts.sum()),
        min=lo,
        max=hi,
        k=k,
        offset=offset,
        counts=counts,
    )


def site_ranges(
    st: TensorStats, form: str, params: MethodParams, methods: Sequence[MethodName] = METHODS
) -> dict[str, Any]:
    """Every method's input range and the derived output range (``None`` when impossible)."""
    out: dict[str, Any] = {}
    for m in methods:
        try:
            lo, hi = _compute(m, st, form, params)
            olo, ohi = output_range(lo, hi, form)
            out[m] = {"input": [float(lo), float(hi)], "output": [float(olo), float(ohi)]}
        except (GeluQuantError, ValueError):
            out[m] = None
    return out


def channel_extremes(st: TensorStats) -> dict[str, Any]:
    """``{"channels": {"min": [...], "max": [...], "hist": {...}}}`` (per channel of the last
    axis, finite values only; what grouped tables are partitioned and ranged by), or ``{}``
    without per-channel statistics. Values are float32 in origin, written exactly; ``hist`` holds
    the per-channel histograms (:mod:`gelu_quant.calib.channel_hist`), packed by
    :func:`pack_counts`, for range methods on groups of channels."""
    if st.channel_min is None or st.channel_max is None or not st.count:
        return {}
    lo, hi = st.channel_min, st.channel_max
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        return {}  # a channel that saw no finite value: no per-channel ranges
    out: dict[str, Any] = {"min": [float(v) for v in lo], "max": [float(v) for v in hi]}
    if st.channel_hist is not None:
        out["hist"] = pack_counts(st.channel_hist)
    return {"channels": out}


def pack_counts(counts: npt.NDArray[np.int64]) -> dict[str, Any]:
    """A 2-D count array as JSON: the smallest unsigned type that holds it, little-endian,
    zlib-compressed (level 1: a quarter of level 6's time for 8 % more bytes), base64
    (all-MiniLM-L6-v2: about 0.8 MB per GELU for 1536 × 512 counts)."""
    top = int(counts.max()) if counts.size else 0
    dt = "<u2" if top < 1 << 16 else "<u4" if top < 1 << 32 else "<i8"
    raw = np.ascontiguousarray(counts.astype(dt)).tobytes()
    return {
        "shape": list(counts.shape),
        "dtype": dt,
        "zlib_base64": base64.b64encode(zlib.compress(raw, 1)).decode("ascii"),
    }


def unpack_counts(
    d: Mapping[str, Any], what: str = "per-channel histograms"
) -> npt.NDArray[np.int64]:
    """The inverse of :func:`pack_counts`."""
    try:
        raw = zlib.decompress(base64.b64decode(d["zlib_base64"]))
        shape = tuple(int(n) for n in d["shape"])
        if d["dtype"] not in ("<u2", "<u4", "<i8"):
            raise ValueError(f"dtype {d['dtype']!r}")
        return np.frombuffer(raw, dtype=d["dtype"]).reshape(shape).astype(np.int64)
    except (KeyError, TypeError, ValueError, zlib.error) as e:
        raise BadInputError(f"malformed {what} in the ranges file ({e}); calibrate again") from None


def stats_summary(st: TensorStats, obs_lo: float | None, obs_hi: float | None) -> dict[str, Any]:
    q: dict[str, float | None] = {}
    for level in QUANTILES:
        q[repr(level)] = st.quantile(level) if st.count else None
    return {
        "count": st.count,
        "nonfinite": st.nonfinite,
        "min": st.min if st.count else None,
        "max": st.max if st.count else None,
        "bin_width": st.bin_width,
        "num_bins": st.num_bins,
        "quantiles": q,
        "observed_output": None if obs_lo is None or obs_hi is None else [obs_lo, obs_hi],
        "channels": None if st.channel_min is None else int(st.channel_min.size),
        "hist": {"k": st.k, "offset": st.offset, "counts": pack_counts(st.counts)},
    }


# -- the ranges file ---------------------------------------------------------------------------
@dataclass
class RangesFile:
    """A parsed ranges file."""

    model_name: str
    fingerprint: str
    data: dict[str, Any]
    method: str
    params: dict[str, Any]
    sites: list[dict[str, Any]]
    skipped: dict[str, str] = field(default_factory=dict)
    tool_version: str = __version__
    schema_version: int = SCHEMA_VERSION
    source_name: str | None = None
    """File name it was loaded from (None when built in memory); manifests record it."""
    samples: dict[str, npt.NDArray[np.float16]] | None = None
    """Site id -> sampled input rows (in memory: from calibrate; loaded: read on first use)."""
    sample_info: dict[str, Any] | None = None
    """The ``sample`` entry (which file, its digest, rows per site); None without a sample."""
    sample_dir: Path | None = None
    """Where a loaded ranges file's sample file is looked for."""
    _sample_problem: str | None = field(default=None, init=False, repr=False)

    def sample_for(self, site_id: str) -> npt.NDArray[np.float16] | None:
        """The site's sampled input rows, None when there are none (:meth:`sample_problem`
        says why)."""
        if self.samples is None and self.sample_info is not None and self._sample_problem is None:
            self._load_sample()
        return None if self.samples is None else self.samples.get(site_id)

    def sample_problem(self) -> str:
        """Why :meth:`sample_for` has nothing (for messages and manifests)."""
        if self._sample_problem is not None:
            return self._sample_problem
        if self.sample_info is None and self.samples is None:
            return "the ranges file has no row sample (calibrate with --sample-rows > 0)"
        return "the row sample has no rows for this site"

    def _load_sample(self) -> None:
        info = self.sample_info or {}
        name = str(info.get("file", ""))
        path = (self.sample_dir or Path(".")) / name
        try:
            raw = path.read_bytes()
        except OSError as e:
            self._sample_problem = f"row sample {str(path)!r} cannot be read ({e.strerror})"
            return
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        if digest != info.get("sha256"):
            self._sample_problem = (
                f"row sample {str(path)!r} does not match the ranges file (digest {digest[:19]}…, "
                f"expected {str(info.get('sha256'))[:19]}…): calibrate again"
            )
            return
        try:
            with np.load(io.BytesIO(raw), allow_pickle=False) as z:
                self.samples = {str(k): np.asarray(z[k], np.float16) for k in z.files}
        except (OSError, ValueError) as e:
            self._sample_problem = f"row sample {str(path)!r} is unreadable ({e!r})"

    @property
    def site_ids(self) -> list[str]:
        return [s["id"] for s in self.sites]

    def _site(self, site_id: str) -> dict[str, Any]:
        for s in self.sites:
            if s["id"] == site_id:
                return s
        why = self.skipped.get(site_id)
        extra = f" (skipped during calibration: {why})" if why else ""
        raise BadInputError(
            f"the ranges file has no range for site {site_id!r}{extra}; it has "
            f"{', '.join(self.site_ids) or 'no sites'}"
        )

    def _chosen(self, site_id: str, method: str | None) -> dict[str, Any]:
        s = self._site(site_id)
        m = method or s["chosen"]
        r = s["ranges"].get(m)
        if r is None:
            raise BadInputError(f"site {site_id!r} has no {m!r} range in the ranges file")
        return dict(r)

    def method_of(self, site_id: str, method: str | None = None) -> str:
        """``method``, or the site's chosen method when None."""
        return method or str(self._site(site_id)["chosen"])

    def range_for(
        self,
        site_id: str,
        method: str | None = None,
        *,
        bits: int | None = None,
        out_bits: int | None = None,
    ) -> tuple[float, float]:
        """The chosen (or the named method's) input range of a site. ``bits`` / ``out_bits``:
        the code widths of the table it is for (None: 8-bit, the stored range); ``entropy`` and
        ``mse`` are chosen again at other widths, from the site's histogram (``stats.hist``),
        or the sum of its per-channel histograms in a file without one."""
        m = self.method_of(site_id, method)
        if not _rescored(m, bits, out_bits):
            lo, hi = self._chosen(site_id, method)["input"]
            return float(lo), float(hi)
        self._chosen(site_id, m)  # the same refusals as the stored range
        st = self._site_stats(site_id)
        if st is None:
            ch = self._site(site_id).get("channels")
            if not (isinstance(ch, dict) and "hist" in ch):
                raise BadInputError(
                    f"site {site_id!r}: the ranges file has no histogram to choose the {m!r} "
                    f"range of {bits}-bit tables from; calibrate again, or use minmax or "
                    "percentile"
                )
            return self.group_range_for(
                site_id, np.arange(len(ch["min"])), m, self._form(site_id), bits, out_bits
            )
        r = _compute(m, st, self._form(site_id), self._method_params(), bits, out_bits)  # type: ignore[arg-type]
        return float(r[0]), float(r[1])

    def _form(self, site_id: str) -> str:
        return GeluSite.form_in_json(self._site(site_id))

    def _method_params(self) -> MethodParams:
        p = self.params
        return MethodParams(
            percentile=float(p.get("percentile", DEFAULT_PERCENTILE)),
            num_quantized_bins=int(p.get("num_quantized_bins", 255)),
            dtype=str(p.get("dtype", "int8")),
        )

    def _site_stats(self, site_id: str) -> TensorStats | None:
        """The site's exact histogram as :class:`TensorStats` (None in a file without one)."""
        st = self._site(site_id).get("stats")
        if not isinstance(st, dict) or not isinstance(st.get("hist"), dict):
            return None
        h = st["hist"]
        try:
            counts = unpack_counts(h["counts"], f"histogram of site {site_id!r}")
            k, off = int(h["k"]), int(h["offset"])
            lo, hi = float(st["min"]), float(st["max"])
        except (KeyError, TypeError, ValueError):
            raise BadInputError(
                f"site {site_id!r}: malformed histogram in the ranges file; calibrate again"
            ) from None
        if counts.ndim != 1 or int(counts.sum()) != int(st.get("count", -1)):
            raise BadInputError(f"site {site_id!r}: the histogram does not match its count")
        return _histogram_stats(k, off, counts, lo, hi)

    def channel_ranges_for(self, site_id: str) -> tuple[np.ndarray, np.ndarray] | None:
        """Per-channel (min, max) of a site's input over the last axis, None when not recorded."""
        ch = self._site(site_id).get("channels")
        if not isinstance(ch, dict):
            return None
        lo, hi = np.asarray(ch["min"], np.float64), np.asarray(ch["max"], np.float64)
        if lo.shape != hi.shape or lo.ndim != 1 or lo.size == 0:
            raise BadInputError(
                f"site {site_id!r}: malformed per-channel ranges in the ranges file"
            )
        return lo, hi

    def group_range_for(
        self,
        site_id: str,
        members: npt.ArrayLike,
        method: str,
        form: str = "exact",
        bits: int | None = None,
        out_bits: int | None = None,
    ) -> tuple[float, float]:
        """The input range ``method`` chooses for a group of channels (indices ``members`` of
        the last axis) from the sum of their histograms, for tables of ``bits`` / ``out_bits``
        code widths (None: 8). ``minmax`` is the members' min/max and needs no histograms; the
        other methods refuse a ranges file without them."""
        if method not in METHODS:
            raise BadInputError(f"unknown range method {method!r}; one of {', '.join(METHODS)}")
        ch = self._site(site_id).get("channels")
        if not isinstance(ch, dict):
            raise BadInputError(f"site {site_id!r} has no per-channel statistics")
        lo, hi = np.asarray(ch["min"], np.float64), np.asarray(ch["max"], np.float64)
        m = np.asarray(members, np.int64)
        if method == "minmax":
            return float(lo[m].min()), float(hi[m].max())
        if "hist" not in ch:
            raise BadInputError(
                f"site {site_id!r}: the ranges file has no per-channel histograms (calibrated "
                "with --no-channel-histograms, or by an older gelu-quant); calibrate again "
                f"with them to choose group ranges by {method!r}, or use minmax"
            )
        hist = unpack_counts(ch["hist"])
        if hist.shape[0] != lo.size:
            raise BadInputError(f"site {site_id!r}: per-channel histograms do not match")
        st = _histogram_stats(*group_histogram(hist, lo, hi, m))
        r = _compute(method, st, form, self._method_params(), bits, out_bits)
        return float(r[0]), float(r[1])

    def output_range_for(self, site_id: str, method: str | None = None) -> tuple[float, float]:
        """GELU's output range over :meth:`range_for`."""
        lo, hi = self._chosen(site_id, method)["output"]
        return float(lo), float(hi)

    def check_model(
        self, model: str | os.PathLike[str] | onnx.ModelProto, force: bool = False
    ) -> None:
        """Refuse (``ModelError``) a model whose fingerprint differs, unless ``force``."""
        fp = model_fingerprint(model)
        if fp != self.fingerprint and not force:
            raise ModelError(
                f"the ranges file was made for a different model ({self.model_name}, "
                f"{self.fingerprint[:19]}…) than the one given ({fp[:19]}…); calibrate this "
                "model, or pass --force to use the ranges anyway"
            )

    def to_json(self) -> dict[str, Any]:
        extra = {} if self.sample_info is None else {"sample": self.sample_info}
        return {
            "schema": RANGES_SCHEMA,
            "schema_version": self.schema_version,
            "tool_version": self.tool_version,
            "model": {"name": self.model_name, "fingerprint": self.fingerprint},
            "data": self.data,
            "method": self.method,
            "params": self.params,
            "sites": self.sites,
            "skipped": self.skipped,
            **extra,
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=1, allow_nan=False) + "\n"

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the ranges file, and its row sample beside it (``<stem>.sample.npz``) first."""
        p = Path(os.fspath(path))
        if self.samples:
            sample_path = p.with_name(p.stem + ".sample.npz")
            buf = io.BytesIO()
            # uncompressed: float16 rows compress by 9 % only, at about 5 s for MiniLM
            np.savez(buf, **self.samples)  # type: ignore[arg-type]
            raw = buf.getvalue()
            write_bytes_atomic(sample_path, raw)
            info = dict(self.sample_info or {})
            info.update(
                file=sample_path.name,
                sha256="sha256:" + hashlib.sha256(raw).hexdigest(),
                dtype="float16",
                rows={k: int(v.shape[0]) for k, v in self.samples.items()},
            )
            self.sample_info = info
        write_bytes_atomic(p, self.dumps().encode())

    @classmethod
    def from_json(cls, d: Mapping[str, Any], where: str = "ranges file") -> RangesFile:
        if d.get("schema") != RANGES_SCHEMA:
            raise BadInputError(
                f"{where} is not a gelu-quant ranges file (schema "
                f"{d.get('schema')!r}); make one with gelu-quant calibrate"
            )
        if int(d.get("schema_version", -1)) > SCHEMA_VERSION:
            raise BadInputError(
                f"{where} has schema version {d.get('schema_version')}, newer "
                f"than this gelu-quant ({__version__}) reads; upgrade"
            )
        try:
            return cls(
                model_name=str(d["model"]["name"]),
                fingerprint=str(d["model"]["fingerprint"]),
                data=dict(d["data"]),
                method=str(d["method"]),
                params=dict(d["params"]),
                sites=[dict(s) for s in d["sites"]],
                skipped=dict(d.get("skipped", {})),
                tool_version=str(d.get("tool_version", "")),
                schema_version=int(d["schema_version"]),
                sample_info=dict(d["sample"]) if isinstance(d.get("sample"), dict) else None,
            )
        except (KeyError, TypeError) as e:
            raise BadInputError(
                f"{where} is malformed ({e!r}); re-run gelu-quant calibrate"
            ) from None


def load_ranges(path: str | os.PathLike[str]) -> RangesFile:
    """Read a ranges file."""
    p = Path(os.fspath(path))
    try:
        d = json.loads(p.read_text())
    except FileNotFoundError:
        raise BadInputError(f"ranges file {str(p)!r} not found") from None
    except (OSError, ValueError) as e:
        raise BadInputError(f"cannot read ranges file {str(p)!r}: {e}") from None
    if not isinstance(d, dict):
        raise BadInputError(f"{p} is not a gelu-quant ranges file")
    rf = RangesFile.from_json(d, str(p))
    rf.source_name = p.name
    rf.sample_dir = p.resolve().parent
    return rf


# -- statistics files (shards) -----------------------------------------------------------------
@dataclass
class StatsFile:
    """Raw statistics of one or more calibration passes over one model."""

    model_name: str
    fingerprint: str
    sites: list[GeluSite]
    collected: Collected
    sources: list[dict[str, Any]]

    def data_description(self) -> dict[str, Any]:
        return {
            "samples": sum(int(s.get("samples", 0)) for s in self.sources),
            "batches": sum(int(s.get("batches", 0)) for s in self.sources),
            "sources": self.sources,
        }

    def _meta(self) -> dict[str, Any]:
        c = self.collected
        return {
            "schema": STATS_SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "tool_version": __version__,
            "model": {"name": self.model_name, "fingerprint": self.fingerprint},
            "sources": self.sources,
            "sites": [s.to_json() for s in self.sites],
            "output_min": c.output_min,
            "output_max": c.output_max,
            "skipped": c.skipped,
            "batches": c.batches,
            "samples": c.samples,
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write as ``.json`` or ``.npz`` (by extension; exact either way; only ``.npz`` keeps
        the row samples)."""
        meta = self._meta()

        if str(path).endswith(".json"):
            meta["stats"] = {sid: st.to_json() for sid, st in self.collected.stats.items()}
            write_bytes_atomic(path, (json.dumps(meta, indent=1) + "\n").encode())
            return
        arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps(meta))}
        for i, (sid, st) in enumerate(self.collected.stats.items()):
            arrays[f"site{i}/id"] = np.array(sid)
            arrays.update(st.to_arrays(f"site{i}/"))
            sample = self.collected.samples_of.get(sid)
            if sample is not None:
                arrays.update(sample.to_arrays(f"site{i}/sample/"))
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
        write_bytes_atomic(path, buf.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> StatsFile:
        p = Path(os.fspath(path))
        samples: dict[str, RowSample] = {}
        try:
            if p.suffix == ".json":
                meta = json.loads(p.read_text())
                stats = {sid: TensorStats.from_json(d) for sid, d in meta["stats"].items()}
            else:
                with np.load(p, allow_pickle=False) as z:
                    arrays = {k: z[k] for k in z.files}
                meta = json.loads(str(arrays["meta"]))
                stats = {}
                i = 0
                while f"site{i}/id" in arrays:
                    sid = str(arrays[f"site{i}/id"])
                    stats[sid] = TensorStats.from_arrays(arrays, f"site{i}/")
                    sample = RowSample.from_arrays(arrays, f"site{i}/sample/")
                    if sample is not None:
                        samples[sid] = sample
                    i += 1
        except FileNotFoundError:
            raise BadInputError(f"statistics file {str(p)!r} not found") from None
        except (OSError, ValueError, KeyError) as e:
            raise BadInputError(
                f"cannot read statistics file {str(p)!r} ({e!r}); was it "
                "written by gelu-quant calibrate --save-stats?"
            ) from None
        if meta.get("schema") != STATS_SCHEMA:
            raise BadInputError(f"{p} is not a gelu-quant statistics file")
        sites = [_site_from_json(s) for s in meta["sites"]]
        c = Collected(
            stats=stats,
            output_min=dict(meta["output_min"]),
            output_max=dict(meta["output_max"]),
            skipped=dict(meta["skipped"]),
            samples_of=samples,
            batches=int(meta["batches"]),
            samples=int(meta["samples"]),
        )
        return cls(
            model_name=str(meta["model"]["name"]),
            fingerprint=str(meta["model"]["fingerprint"]),
            sites=sites,
            collected=c,
            sources=list(meta["sources"]),
        )

    def merge(self, other: StatsFile, other_name: str = "shard") -> None:
        """Add another shard (same model required)."""
        if other.fingerprint != self.fingerprint:
            raise BadInputError(
                f"{other_name} was collected on a different model ({other.model_name}, "
                f"{other.fingerprint[:19]}…) than the first shard ({self.model_name}, "
                f"{self.fingerprint[:19]}…); shards must come from the same model"
            )
        if [s.id for s in other.sites] != [s.id for s in self.sites]:
            raise BadInputError(f"{other_name} lists different GELU sites than the first shard")
        self.collected.merge(other.collected)
        self.sources.extend(other.sources)

    def to_ranges(self, method: MethodName, params: MethodParams) -> RangesFile:
        """Compute every method's ranges and mark ``method`` as chosen."""
        if method not in METHODS:
            raise BadInputError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
        c = self.collected

        def entry(site: GeluSite) -> dict[str, Any] | None:
            st = c.stats.get(site.id)
            if st is None:
                return None
            return {
                "id": site.id,
                "input": site.input,
                "output": site.output,
                "form": site.form,
                "spelling": site.spelling,
                "bias": site.bias,
                "dtype": site.dtype,
                "stats": stats_summary(st, c.output_min.get(site.id), c.output_max.get(site.id)),
                "ranges": site_ranges(st, site.form, params),
                "chosen": method,
                **channel_extremes(st),
            }

        def sample_rows(sid: str) -> tuple[str, npt.NDArray[np.float16]]:
            return sid, c.samples_of[sid].rows

        # sites are independent, and their heavy steps (zlib, numpy casts) release the GIL
        with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
            found = [e for e in pool.map(entry, self.sites) if e is not None]
            kept_ids = [e["id"] for e in found if e["id"] in c.samples_of]
            rows = dict(pool.map(sample_rows, kept_ids))
        entries: list[dict[str, Any]] = found
        skipped = dict(c.skipped)
        for e in entries:
            if e["ranges"][method] is None:
                skipped.setdefault(e["id"], "no finite values observed")
        samples = {sid: r for sid, r in rows.items() if r.shape[0]}
        return RangesFile(
            model_name=self.model_name,
            fingerprint=self.fingerprint,
            data=self.data_description(),
            method=method,
            params=params.to_json(),
            sites=entries,
            skipped=skipped,
            samples=samples or None,
            sample_info=(
                {"population": {sid: c.samples_of[sid].seen for sid in samples}}
                if samples
                else None
            ),
        )


def _site_from_json(d: Mapping[str, Any]) -> GeluSite:
    return GeluSite.from_json(dict(d))
