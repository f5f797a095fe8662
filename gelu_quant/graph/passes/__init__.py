"""Conversion as onnx-ir passes (see :func:`gelu_quant.graph.convert.conversion_passes`):

* :class:`~gelu_quant.graph.passes.replace_sites.ReplaceGeluSites` — each GELU site by its op
  (the rules of :mod:`gelu_quant.graph.passes.site_rewrites`);
* :class:`~gelu_quant.graph.passes.add_functions.AddGeluFunctions` — the ops' function bodies;
* onnx-ir's own ``InlinePass``, ``RemoveUnusedFunctionsPass``, ``RemoveUnusedOpsetsPass`` for
  ``--expand``;
* :class:`~gelu_quant.graph.passes.ir_version.LoadableIrVersion` — an IR version ORT loads.
"""
