"""The whole loop in one call: calibrate → convert → eval → export, from one config.

An edge deployment pipeline adds a single step, ``gelu-quant pipeline CONFIG.toml``, and gets one
exit code (0 passed, 1 gate failed, 2 bad input) and every artifact in one output folder::

    OUT/ranges.json            calibration ranges (every method; the chosen one marked)
    OUT/stats.npz              the raw statistics (mergeable with `gelu-quant merge-stats`)
    OUT/model.gq.onnx          the converted model (+ model.gq.onnx.data for external data)
    OUT/model.gq.manifest.json what conversion did per site, with specs and error bounds
    OUT/report.json|.md        the accuracy report (JSON is the stable machine form)
    OUT/junit.xml              one test case per gate threshold
    OUT/plots/                 per-site histograms and error curves (when matplotlib is present)
    OUT/export/<site>.h|.json  each site's table or polynomial for compiled-in targets
    OUT/pipeline.json          this run: config, paths, the verdict

The config is TOML (relative paths resolve against the config file's folder)::

    model = "model.onnx"
    output = "gelu-quant-out"
    target = "int8-lut"            # any `gelu-quant convert --target`

    [calibrate]
    data = "calibration.txt"       # any `--data` source
    tokenizer = "tokenizer/"       # text sources only
    method = "entropy"             # entropy (default) | minmax | percentile | mse
    batch-size = 16
    max-batches = 32

    [eval]
    data = "evaluation.txt"
    tokenizer = "tokenizer/"
    labels = "labels.npy"          # optional
    classification-outputs = []    # optional; default: every rank-2 float output
    max-batches = 16

    [gate]                         # same keys as [tool.gelu-quant.gate]
    min-cosine = 0.99

    [export]
    formats = ["c-header", "json"]
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

from gelu_quant import __version__
from gelu_quant.calib.methods import DEFAULT_METHOD
from gelu_quant.errors import BadInputError
from gelu_quant.evaluate.accuracy_report import AccuracyReport
from gelu_quant.evaluate.gate import GateConfig, gate_config_from_table

EXPORT_FORMATS = ("c-header", "json")
METHODS = ("minmax", "percentile", "entropy", "mse")


@dataclass(frozen=True)
class StageData:
    """Where one stage's data comes from."""

    data: str
    tokenizer: Path | None = None
    batch_size: int | None = None
    max_batches: int | None = None
    max_length: int | None = None


@dataclass(frozen=True)
class PipelineConfig:
    """Everything one pipeline run needs; see the module docstring for the TOML form."""

    model: Path
    output: Path
    calibrate: StageData
    evaluate: StageData
    target: str = "int8-lut"
    method: str = DEFAULT_METHOD
    percentile: float | None = None
    labels: Path | None = None
    classification_outputs: tuple[str, ...] | None = None
    """Outputs scored as classifiers (top-1, KL); None: every rank-2 float output; (): none."""
    gate: GateConfig = field(default_factory=GateConfig)
    exports: tuple[str, ...] = EXPORT_FORMATS
    plots: bool = True
    threads: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise BadInputError(f"unknown method {self.method!r}; choose one of {METHODS}")
        bad = [f for f in self.exports if f not in EXPORT_FORMATS]
        if bad:
            raise BadInputError(f"unknown export format(s) {bad}; choose from {EXPORT_FORMATS}")

    def to_json(self) -> dict[str, Any]:
        def stage(s: StageData) -> dict[str, Any]:
            return {
                "data": s.data,
                "tokenizer": None if s.tokenizer is None else str(s.tokenizer),
                "batch_size": s.batch_size,
                "max_batches": s.max_batches,
                "max_length": s.max_length,
            }

        return {
            "model": str(self.model),
            "output": str(self.output),
            "target": self.target,
            "method": self.method,
            "percentile": self.percentile,
            "calibrate": stage(self.calibrate),
            "evaluate": stage(self.evaluate),
            "labels": None if self.labels is None else str(self.labels),
            "classification_outputs": None
            if self.classification_outputs is None
            else list(self.classification_outputs),
            "gate": self.gate.to_json(),
            "exports": list(self.exports),
            "plots": self.plots,
        }

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str]) -> PipelineConfig:
        """Read a pipeline config file; relative paths resolve against its folder."""
        import tomllib

        p = Path(path)
        try:
            doc = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise BadInputError(f"pipeline config {p} does not exist") from None
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise BadInputError(f"cannot read pipeline config {p}: {e}") from None
        return cls.from_mapping(doc, base=p.resolve().parent, where=str(p))

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any], *, base: Path, where: str) -> PipelineConfig:
        top = {"model", "output", "target", "threads", "calibrate", "eval", "gate", "export"}
        _known(doc, top, where)

        def path_of(v: Any, key: str) -> Path:
            if not isinstance(v, str) or not v:
                raise BadInputError(f"{where}: '{key}' must be a path string")
            q = Path(v).expanduser()
            return q if q.is_absolute() else base / q

        def data_of(v: Any, key: str) -> str:
            if not isinstance(v, str) or not v:
                raise BadInputError(f"{where}: '{key}' must be a data source string")
            if ":" in v and not Path(v).exists() and not (base / v).exists():
                return v  # module:callable
            return str(path_of(v, key))

        def stage(key: str, extra: set[str]) -> tuple[StageData, dict[str, Any]]:
            t = doc.get(key)
            if not isinstance(t, Mapping) or "data" not in t:
                raise BadInputError(f"{where}: needs a [{key}] table with a 'data' source")
            keys = {"data", "tokenizer", "batch-size", "max-batches", "max-length", *extra}
            _known(t, keys, f"{where} [{key}]")
            sd = StageData(
                data=data_of(t["data"], f"{key}.data"),
                tokenizer=path_of(t["tokenizer"], f"{key}.tokenizer") if "tokenizer" in t else None,
                batch_size=_opt_int(t, "batch-size", where),
                max_batches=_opt_int(t, "max-batches", where),
                max_length=_opt_int(t, "max-length", where),
            )
            return sd, dict(t)

        cal, cal_t = stage("calibrate", {"method", "percentile"})
        ev, ev_t = stage("eval", {"labels", "plots", "classification-outputs"})
        cls_outs = ev_t.get("classification-outputs")
        if cls_outs is not None and (
            not isinstance(cls_outs, list) or not all(isinstance(x, str) for x in cls_outs)
        ):
            raise BadInputError(f"{where}: eval.classification-outputs must be a list of names")
        if "model" not in doc:
            raise BadInputError(f"{where}: 'model' is required")
        gate_t = doc.get("gate", {})
        if not isinstance(gate_t, Mapping):
            raise BadInputError(f"{where}: [gate] must be a table")
        exp = doc.get("export", {})
        if not isinstance(exp, Mapping):
            raise BadInputError(f"{where}: [export] must be a table")
        _known(exp, {"formats"}, f"{where} [export]")
        formats = exp.get("formats", list(EXPORT_FORMATS))
        if not isinstance(formats, list) or not all(isinstance(f, str) for f in formats):
            raise BadInputError(f"{where}: export.formats must be a list of strings")
        pct = cal_t.get("percentile")
        if pct is not None and (isinstance(pct, bool) or not isinstance(pct, int | float)):
            raise BadInputError(f"{where}: calibrate.percentile must be a number")
        return cls(
            model=path_of(doc["model"], "model"),
            output=path_of(doc.get("output", "gelu-quant-out"), "output"),
            calibrate=cal,
            evaluate=ev,
            target=str(doc.get("target", "int8-lut")),
            method=str(cal_t.get("method", DEFAULT_METHOD)),
            percentile=None if pct is None else float(pct),
            labels=path_of(ev_t["labels"], "eval.labels") if "labels" in ev_t else None,
            classification_outputs=None if cls_outs is None else tuple(cls_outs),
            gate=gate_config_from_table(gate_t, f"{where} [gate]"),
            exports=tuple(formats),
            plots=bool(ev_t.get("plots", True)),
            threads=int(doc.get("threads", 0)),
        )


def _known(t: Mapping[str, Any], keys: set[str], where: str) -> None:
    unknown = sorted(set(t) - keys)
    if unknown:
        raise BadInputError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(keys)}")


def _opt_int(t: Mapping[str, Any], key: str, where: str) -> int | None:
    v = t.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise BadInputError(f"{where}: '{key}' must be a positive integer, got {v!r}")
    return v


@dataclass(frozen=True)
class PipelineResult:
    """What a run produced."""

    output: Path
    files: dict[str, Path]
    report: AccuracyReport
    timings: dict[str, float]

    @property
    def passed(self) -> bool:
        return self.report.passed


Log = Callable[[str], None]


def _plots_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def run_pipeline(
    config: PipelineConfig, *, progress: bool = False, log: Log | None = None
) -> PipelineResult:
    """Run calibrate → convert → eval → export; every file is written atomically into
    ``config.output``. A failed gate is a verdict, not an error: check ``result.passed``."""
    from gelu_quant.calib.calibration import calibrate_model
    from gelu_quant.calib.data import model_input_specs, open_data_source
    from gelu_quant.calib.methods import MethodName
    from gelu_quant.calib.ranges_file import MethodParams, load_ranges
    from gelu_quant.evaluate.accuracy_report import to_json, to_junit_xml, to_markdown
    from gelu_quant.evaluate.evaluator import EvalConfig, evaluate
    from gelu_quant.fileio import write_text_atomic
    from gelu_quant.graph.convert import ConvertConfig, convert_file
    from gelu_quant.lut.export import c_header, spec_json_text
    from gelu_quant.lut.spec import spec_from_json
    from gelu_quant.modelfile import read_model

    say = log or (lambda _msg: None)
    cfg = config
    if not cfg.model.is_file():
        raise BadInputError(f"model {cfg.model} does not exist")
    read_model(cfg.model)  # an unreadable or untrusted model fails here, before anything is written
    out = cfg.output
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {
        "ranges": out / "ranges.json",
        "stats": out / "stats.npz",
        "model": out / "model.gq.onnx",
        "manifest": out / "model.gq.manifest.json",
        "report_json": out / "report.json",
        "report_md": out / "report.md",
        "junit": out / "junit.xml",
    }
    inputs = {p.resolve() for p in (cfg.model, cfg.labels) if p is not None}
    for key, p in files.items():
        if p.resolve() in inputs:
            raise BadInputError(
                f"output {p} ({key}) would overwrite an input; choose another output"
            )
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    say(f"[1/4] calibrating {cfg.model.name} on {cfg.calibrate.data}")
    params = MethodParams() if cfg.percentile is None else MethodParams(percentile=cfg.percentile)
    ranges = calibrate_model(
        cfg.model,
        cfg.calibrate.data,
        files["ranges"],
        method=cast(MethodName, cfg.method),
        params=params,
        batch_size=cfg.calibrate.batch_size,
        max_batches=cfg.calibrate.max_batches,
        tokenizer=cfg.calibrate.tokenizer,
        max_length=cfg.calibrate.max_length,
        save_stats=files["stats"],
        progress=progress,
        threads=cfg.threads or None,
    )
    timings["calibrate_s"] = time.perf_counter() - t0
    say(f"      {len(ranges.site_ids)} GELU sites -> {files['ranges']}")

    t0 = time.perf_counter()
    say(f"[2/4] converting every GELU to {cfg.target}")
    result = convert_file(
        cfg.model,
        files["model"],
        ConvertConfig(target=cfg.target, method=cfg.method),
        manifest_path=files["manifest"],
        ranges=load_ranges(files["ranges"]),
    )
    timings["convert_s"] = time.perf_counter() - t0
    say(
        f"      {len(result.manifest.converted)} converted, {len(result.manifest.skipped)} "
        f"skipped -> {files['model']}"
    )

    t0 = time.perf_counter()
    say(f"[3/4] evaluating against fp32 on {cfg.evaluate.data}")
    source = open_data_source(
        cfg.evaluate.data,
        model_input_specs(cfg.model),
        batch_size=cfg.evaluate.batch_size,
        max_batches=cfg.evaluate.max_batches,
        tokenizer=cfg.evaluate.tokenizer,
        max_length=cfg.evaluate.max_length,
    )
    plots_dir = out / "plots" if cfg.plots and _plots_available() else None
    report = evaluate(
        cfg.model,
        files["model"],
        source,
        EvalConfig(
            gate=cfg.gate,
            labels=cfg.labels,
            classification_outputs=cfg.classification_outputs,
            manifest=files["manifest"],
            plots_dir=plots_dir,
            max_batches=cfg.evaluate.max_batches,
            threads=cfg.threads,
            progress=progress,
        ),
    )
    write_text_atomic(files["report_json"], to_json(report))
    write_text_atomic(files["report_md"], to_markdown(report, markdown_path=files["report_md"]))
    write_text_atomic(files["junit"], to_junit_xml(report))
    if plots_dir is not None:
        files["plots"] = plots_dir
    timings["evaluate_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    say("[4/4] exporting tables and polynomials")
    export_dir = out / "export"
    export_dir.mkdir(exist_ok=True)
    for rec in result.manifest.converted:
        if rec.spec is None:
            continue
        spec = spec_from_json(rec.spec)
        stem = "".join(c if c.isalnum() or c in "_-" else "_" for c in rec.id)
        if "c-header" in cfg.exports:
            write_text_atomic(export_dir / f"{stem}.h", c_header(spec, stem))
        if "json" in cfg.exports:
            write_text_atomic(export_dir / f"{stem}.json", spec_json_text(spec))
    files["export"] = export_dir
    timings["export_s"] = time.perf_counter() - t0

    res = PipelineResult(output=out, files=files, report=report, timings=timings)
    summary = {
        "tool_version": __version__,
        "config": cfg.to_json(),
        "files": {k: str(v) for k, v in sorted(files.items())},
        "passed": report.passed,
        "timings": {k: round(v, 3) for k, v in timings.items()},
    }
    files["summary"] = out / "pipeline.json"
    write_text_atomic(files["summary"], json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return res


def stderr_log(quiet: bool) -> Log:
    """A logger that prints stage lines to stderr unless quiet."""
    if quiet:
        return lambda _msg: None
    return lambda msg: print(msg, file=sys.stderr, flush=True)


def with_output(config: PipelineConfig, output: Path | None) -> PipelineConfig:
    """The config with its output folder replaced (the CLI's ``-o``)."""
    return config if output is None else replace(config, output=output)
