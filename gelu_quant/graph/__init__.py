"""Graph work on onnx-ir: finding GELU sites (``discover``), the custom ops (``ops``),
conversion as passes (``passes``, ``convert``) and its manifest."""
