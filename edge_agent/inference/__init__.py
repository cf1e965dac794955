"""Local inference: the ONNX Runtime boundary (``runtime``) and the active model (``slot``)."""
