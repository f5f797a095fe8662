"""Per-site plots (optional: needs matplotlib, the ``plots`` extra).

One PNG per comparable GELU site, two panels sharing the x axis:

- the histogram of the site's pre-activations in the reference model (log counts), with the
  approximation's input range shaded and its ends marked;
- the approximation's error curve: the largest ``|candidate output - GELU(candidate input)|``
  seen per input bin (GELU in float64), i.e. what the candidate's GELU replacement adds on
  top of the error it receives.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from gelu_quant.errors import BadInputError
from gelu_quant.evaluate.site_comparison import SiteAccumulator

PlotWriter = Callable[
    [Path, Sequence[SiteAccumulator], Mapping[str, tuple[float, float]]], dict[str, str]
]


def require_matplotlib() -> PlotWriter:
    """Return :func:`write_site_plots` if matplotlib imports, else raise BadInputError."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise BadInputError(
            "--plots needs matplotlib: pip install 'gelu-quant[plots]' (or drop --plots)"
        ) from None
    return write_site_plots


def plot_filename(site_id: str) -> str:
    """A file name for a site id (ids of subgraph sites contain '/')."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", site_id) + ".png"


def _trim(counts: np.ndarray) -> slice:
    nz = np.flatnonzero(counts)
    if nz.size == 0:
        return slice(0, counts.size)
    return slice(max(int(nz[0]) - 2, 0), min(int(nz[-1]) + 3, counts.size))


def write_site_plots(
    directory: Path,
    sites: Sequence[SiteAccumulator],
    ranges: Mapping[str, tuple[float, float]],
) -> dict[str, str]:
    """Write one PNG per site into ``directory``; return site id → path of the file."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    for sa in sites:
        h = sa.histogram
        if h is None or h.total == 0:
            continue
        site = sa.site
        fig, (ax1, ax2) = plt.subplots(2, 1, sharex=True, figsize=(7.0, 5.0), dpi=100)
        try:
            edges = h.edges
            sl = _trim(h.counts)
            lo_x, hi_x = float(edges[sl.start]), float(edges[sl.stop])
            rng = ranges.get(site.id)
            if rng is not None:
                lo_x, hi_x = min(lo_x, rng[0]), max(hi_x, rng[1])
            centers = 0.5 * (edges[:-1] + edges[1:])
            width = float(edges[1] - edges[0])
            ax1.bar(centers[sl], h.counts[sl], width=width, color="#4472c4", log=True)
            ax1.set_ylabel("count (log)")
            ax1.set_title(
                f"{site.id} ({site.form}): pre-activations, min {h.min_seen:.3g}, "
                f"max {h.max_seen:.3g}"
            )
            ec = sa.error_curve
            if ec is not None and ec.total and ec.max_value is not None:
                e_edges = ec.edges
                e_centers = 0.5 * (e_edges[:-1] + e_edges[1:])
                mask = ec.counts > 0
                ax2.plot(e_centers[mask], ec.max_value[mask], ".", ms=2, color="#c00000")
                ax2.set_yscale("symlog", linthresh=1e-6)
            else:
                ax2.text(
                    0.5,
                    0.5,
                    "no error curve (site input not probed)",
                    ha="center",
                    transform=ax2.transAxes,
                )
            ax2.set_ylabel("max |error|")
            ax2.set_xlabel("GELU input")
            for ax in (ax1, ax2):
                if rng is not None:
                    ax.axvspan(rng[0], rng[1], color="#70ad47", alpha=0.15)
                    for v in rng:
                        ax.axvline(v, color="#70ad47", lw=1.0)
                ax.set_xlim(lo_x, hi_x)
            if rng is not None:
                ax1.plot([], [], color="#70ad47", label=f"range [{rng[0]:.4g}, {rng[1]:.4g}]")
                ax1.legend(loc="upper right", fontsize=8)
            fig.tight_layout()
            path = directory / plot_filename(site.id)
            tmp = path.with_name(f".{path.name}.tmp.png")
            fig.savefig(tmp, format="png", metadata={"Software": None})
            tmp.replace(path)
            written[site.id] = str(path)
        finally:
            plt.close(fig)
    return written
