"""The edge agent: a daemon that runs ONNX models on gateways and sends events over MQTT."""

__version__ = "0.1.0"
