"""Execution providers: the first of the preference this onnxruntime offers, the CPU when
none does, and the choice always said (in the log, in ``Runtime.provider``, in status)."""

from __future__ import annotations

import logging

import onnxruntime as ort
import pytest
from pydantic import ValidationError

from edge_agent.inference.config import RuntimeConfig
from edge_agent.inference.runtime import Runtime, provider_order
from tests.edge.conftest import MODEL


def offering(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    """Make onnxruntime offer ``names`` (what another build of it would list)."""
    monkeypatch.setattr(ort, "get_available_providers", lambda: list(names))


def test_the_first_offered_provider_of_the_preference_is_chosen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    offering(monkeypatch, "OpenVINOExecutionProvider", "CPUExecutionProvider")

    assert provider_order(("cuda", "openvino", "cpu")) == (
        ["openvino", "cpu"],
        "cuda not available in this onnxruntime",
    )
    assert provider_order(("cpu", "openvino")) == (["cpu", "openvino"], "preferred")
    assert provider_order(("tensorrt",)) == (["cpu"], "tensorrt not available in this onnxruntime")


def test_without_a_gpu_the_default_runs_on_the_cpu_and_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime offers CUDA")
    caplog.set_level(logging.INFO, logger="edge_agent.inference.runtime")

    runtime = Runtime(MODEL, providers=RuntimeConfig().providers)

    assert runtime.provider == "cpu"
    assert f"model {MODEL}: ONNX Runtime on cpu (cuda not available" in caplog.text


def test_a_provider_offered_that_cannot_start_falls_back_to_the_cpu_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A provider offered that refuses to start (here: CUDA listed as offered on a build
    without it, which ORT refuses) hands the model to the next one, with a warning; ORT's own
    silent fallback is caught by reading the session's providers back."""
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine can start CUDA")
    offering(monkeypatch, "CUDAExecutionProvider", "CPUExecutionProvider")
    caplog.set_level(logging.INFO, logger="edge_agent.inference.runtime")

    runtime = Runtime(MODEL, providers=("cuda", "cpu"))

    assert runtime.provider == "cpu"
    assert "cuda could not start" in caplog.text
    assert "ONNX Runtime on cpu (cuda could not start)" in caplog.text


def test_an_unknown_provider_is_a_config_error_naming_it() -> None:
    with pytest.raises(ValidationError, match=r"providers\.0"):
        RuntimeConfig.model_validate({"providers": ["gpu"]})
    with pytest.raises(ValidationError, match="providers"):
        RuntimeConfig.model_validate({"providers": []})
