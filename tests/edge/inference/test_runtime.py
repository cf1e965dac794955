"""Execution providers: the first of the preference this onnxruntime offers, the CPU when
none does, and the choice always said (in the log, in ``Runtime.provider``, in status); and
a model's outputs after the first that give one number per input, its attributes."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from pydantic import ValidationError

from edge_agent.inference.config import RuntimeConfig
from edge_agent.inference.manifest import ModelSpec
from edge_agent.inference.runtime import Runtime, provider_order
from edge_agent.inference.slot import MAX_MODEL_ATTRIBUTES, load_model
from shared.errors import ModelError
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


def write_model_with_outputs(path: Path, *, pairs_as_attribute: bool = False) -> Path:
    """A model of 4-value windows whose first output is ``probabilities`` ([batch, 2]), then
    ``level`` ([batch]: the window's sum), ``level_col`` ([batch, 1]: the same), ``pair``
    ([batch, 2]: not one number per window); with ``pairs_as_attribute`` ``pair`` is
    flattened and declared ``[n]``, which looks like one number per window and is not."""
    x = helper.make_tensor_value_info("window", TensorProto.FLOAT, ["batch", 4])
    pair_shape: list[str | int | None] = ["n"] if pairs_as_attribute else ["batch", 2]
    outputs = [
        helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 2]),
        helper.make_tensor_value_info("level", TensorProto.FLOAT, ["batch"]),
        helper.make_tensor_value_info("level_col", TensorProto.FLOAT, ["batch", 1]),
        helper.make_tensor_value_info("pair", TensorProto.FLOAT, pair_shape),
    ]
    last = "pair_flat" if pairs_as_attribute else "pairs"
    nodes = [
        helper.make_node("ReduceSum", ["window", "axis1"], ["level_col"], keepdims=1),
        helper.make_node("ReduceSum", ["window", "axis1"], ["level"], keepdims=0),
        helper.make_node("Concat", ["level_col", "level_col"], ["probabilities"], axis=1),
        helper.make_node("Concat", ["level_col", "level_col"], ["pairs"], axis=1),
        helper.make_node("Reshape", ["pairs", "flat"], ["pair_flat"]),
        helper.make_node("Identity", [last], ["pair"]),
    ]
    constants = [
        helper.make_tensor("axis1", TensorProto.INT64, [1], [1]),
        helper.make_tensor("flat", TensorProto.INT64, [1], [-1]),
    ]
    graph = helper.make_graph(nodes, "outputs", [x], outputs, constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_outputs_of_one_number_per_input_are_attributes(tmp_path: Path) -> None:
    runtime = Runtime(write_model_with_outputs(tmp_path / "m.onnx"))

    assert runtime.attribute_names == ("level", "level_col")  # pair is [batch, 2]
    windows = np.arange(8, dtype=np.float32).reshape(2, 4)
    answer, level, level_col = runtime.run_all(windows)
    assert answer.shape == (2, 2)
    assert level.tolist() == [6.0, 22.0]
    assert level_col.reshape(-1).tolist() == [6.0, 22.0]
    assert runtime.run(windows).shape == (2, 2)  # run: the answer alone


def test_an_attribute_output_that_is_not_one_number_per_window_is_refused_at_load(
    tmp_path: Path,
) -> None:
    path = write_model_with_outputs(tmp_path / "m.onnx", pairs_as_attribute=True)
    spec = ModelSpec("pairs", "1.0.0", path, ("normal", "fault"), "normal")

    with pytest.raises(ModelError, match=r"output 'pair' gives \(2,\) for one window"):
        load_model(spec, RuntimeConfig())


def test_a_model_with_more_attributes_than_an_event_can_carry_is_refused_at_load(
    tmp_path: Path,
) -> None:
    x = helper.make_tensor_value_info("window", TensorProto.FLOAT, ["batch", 4])
    names = [f"level_{n}" for n in range(MAX_MODEL_ATTRIBUTES + 1)]
    outputs = [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 2])]
    outputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch"]) for n in names]
    nodes = [
        helper.make_node("ReduceSum", ["window", "axis1"], ["total"], keepdims=1),
        helper.make_node("Concat", ["total", "total"], ["probabilities"], axis=1),
        helper.make_node("ReduceSum", ["window", "axis1"], ["level"], keepdims=0),
        *(helper.make_node("Identity", ["level"], [n]) for n in names),
    ]
    axis = helper.make_tensor("axis1", TensorProto.INT64, [1], [1])
    model = helper.make_model(
        helper.make_graph(nodes, "many", [x], outputs, [axis]),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    model.ir_version = 8
    path = tmp_path / "many.onnx"
    onnx.save(model, str(path))
    spec = ModelSpec("many", "1.0.0", path, ("normal", "fault"), "normal")

    with pytest.raises(ModelError, match=rf"{MAX_MODEL_ATTRIBUTES + 1} outputs give one number"):
        load_model(spec, RuntimeConfig())
