"""The config of inference: which model a pipeline runs, and ONNX Runtime's threads."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from edge_agent.config_types import FilePath, StrictConfig
from shared.messages import Name

ModelTask = Literal["anomaly", "score", "detection"]
"""How a pipeline reads a model's output: ``anomaly``, class probabilities of a sensor window
with one normal label; ``score``, one anomaly score per window, anomalous above a threshold
calibrated on normal data; ``detection``, boxes in the YOLOv8/v11 layout ``[1, 4 + C, N]``."""


class ModelConfig(StrictConfig):
    """Which ONNX model a pipeline runs: a file with its labels, or an entry of a manifest."""

    name: Name
    path: FilePath | None = None
    version: Name | None = None
    task: ModelTask = "anomaly"
    labels: list[str] | None = None
    labels_file: FilePath | None = None
    normal_label: str | None = None
    threshold: float | None = Field(
        default=None, allow_inf_nan=False, description="score models: the calibrated threshold"
    )
    manifest: FilePath | None = None

    @model_validator(mode="after")
    def _one_source_of_truth(self) -> ModelConfig:
        if (self.path is None) == (self.manifest is None):
            raise ValueError("give either `path` (with version and labels) or `manifest`")
        if self.path is not None:
            if self.version is None:
                raise ValueError("with `path`, also give version")
            if self.task == "score":
                return self._check_scorer()
            if (self.labels is None) == (self.labels_file is None):
                raise ValueError("with `path`, give either labels or labels_file")
            if self.task == "anomaly":
                if self.normal_label is None:
                    raise ValueError("an anomaly model needs normal_label")
                if self.labels is not None and self.normal_label not in self.labels:
                    raise ValueError(f"normal_label {self.normal_label!r} is not one of the labels")
            elif self.normal_label is not None:
                raise ValueError("a detection model has no normal_label")
        elif any(
            v is not None
            for v in (self.labels, self.labels_file, self.normal_label, self.threshold)
        ):
            raise ValueError(
                "with `manifest`, labels and threshold come from the manifest: remove them"
            )
        return self

    def _check_scorer(self) -> ModelConfig:
        if self.threshold is None:
            raise ValueError("a score model needs its threshold (calibrated on normal data)")
        if any(v is not None for v in (self.labels, self.labels_file, self.normal_label)):
            raise ValueError("a score model has no labels or normal_label")
        return self


Provider = Literal["cuda", "tensorrt", "openvino", "cpu"]
"""An ONNX Runtime execution provider, as the config names it."""


class RuntimeConfig(StrictConfig):
    """ONNX Runtime threads (small gateways run several pipelines on few cores) and execution
    providers, in order of preference: the first this onnxruntime offers runs the model, the
    CPU when none does; the choice is logged and reported in the agent's status."""

    intra_op_threads: int = Field(default=1, ge=0)
    inter_op_threads: int = Field(default=1, ge=0)
    providers: tuple[Provider, ...] = Field(default=("cuda", "cpu"), min_length=1)
