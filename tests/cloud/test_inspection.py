"""Uploaded models are inspected by a child process with limits; odd models are a 422 with why.

The models are built here with the ``onnx`` helper API: each is the smallest graph with the
property at hand (a string output, a ZipMap, an infinite golden output, a loop that never
ends, an output of 16 GiB).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import onnx
import pytest
from fastapi.testclient import TestClient
from onnx import TensorProto, helper

from cloud_api.inspection import InspectionLimits, inspect_onnx
from shared.errors import ModelError
from tests.cloud.conftest import AppFactory
from tests.cloud.test_registry import MODEL_FILE, files_under, rows, upload

X = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])


def model_bytes(
    nodes: list[onnx.NodeProto],
    outputs: list[onnx.ValueInfoProto],
    initializers: list[onnx.TensorProto] | None = None,
    *,
    ml: bool = False,
) -> bytes:
    opsets = [helper.make_opsetid("", 17)]
    if ml:
        opsets.append(helper.make_opsetid("ai.onnx.ml", 3))
    graph = helper.make_graph(nodes, "probe", [X], outputs, initializers or [])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    onnx.checker.check_model(model)
    content: bytes = model.SerializeToString()
    return content


def string_output() -> bytes:
    cast = helper.make_node("Cast", ["x"], ["y"], to=TensorProto.STRING)
    return model_bytes([cast], [helper.make_tensor_value_info("y", TensorProto.STRING, [1, 2])])


def zipmap_output() -> bytes:
    """What skl2onnx makes of a classifier's probabilities unless told zipmap=False."""
    zipmap = helper.make_node(
        "ZipMap", ["x"], ["z"], domain="ai.onnx.ml", classlabels_int64s=[0, 1]
    )
    scores = helper.make_tensor_type_proto(TensorProto.FLOAT, [])
    seq = helper.make_sequence_type_proto(helper.make_map_type_proto(TensorProto.INT64, scores))
    return model_bytes([zipmap], [helper.make_value_info("z", seq)], ml=True)


def infinite_output() -> bytes:
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0])
    divide = helper.make_node("Div", ["x", "zero"], ["y"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])
    return model_bytes([divide], [y], [zero])


def never_ending() -> bytes:
    """A loop of 10^15 additions: ONNX Runtime runs it until someone stops it."""
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond"], ["cond_out"]),
            helper.make_node("Add", ["v", "v"], ["v_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v", TensorProto.FLOAT, [1, 2]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [1, 2]),
        ],
    )
    trips = helper.make_tensor("trips", TensorProto.INT64, [], [10**15])
    keep_going = helper.make_tensor("keep_going", TensorProto.BOOL, [], [True])
    loop = helper.make_node("Loop", ["trips", "keep_going", "x"], ["y"], body=body)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])
    return model_bytes([loop], [y], [trips, keep_going])


def huge_output() -> bytes:
    """x expanded to 65536 x 32768 x 2 floats: 16 GiB for its first output."""
    shape = helper.make_tensor("shape", TensorProto.INT64, [3], [65536, 32768, 2])
    expand = helper.make_node("Expand", ["x", "shape"], ["y"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [65536, 32768, 2])
    return model_bytes([expand], [y], [shape])


@pytest.fixture
def api(make_api: AppFactory) -> Iterator[TestClient]:
    with make_api(ingest_enabled=False) as client:
        yield client


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (string_output(), "first output 'y' is a string tensor"),
        (zipmap_output(), "is a seq(map(int64,tensor(float))), not a tensor (a ZipMap"),
        (infinite_output(), "output of 'y' is not finite (inf"),
        (huge_output(), "more than the inspection's limit of 2048 MiB of memory"),
    ],
    ids=["string", "zipmap", "inf", "16-GiB-output"],
)
def test_a_model_without_a_usable_self_test_is_a_422_that_says_why(
    api: TestClient, content: bytes, reason: str, tmp_path: Path
) -> None:
    status, body = upload(api, "odd", "1.0.0", content)

    assert status == 422, body
    assert reason in str(body["detail"])
    assert str(tmp_path) not in str(body["detail"]), "no server paths in a refusal"
    assert files_under(tmp_path / "artifacts") == []
    assert files_under(tmp_path / "uploads") == []
    assert rows(api) == 0


def test_a_model_that_runs_past_the_time_limit_is_stopped(tmp_path: Path) -> None:
    path = tmp_path / "loop.onnx"
    path.write_bytes(never_ending())
    children_before = _children()

    with pytest.raises(ModelError, match=r"took longer than its limit of 3 s"):
        inspect_onnx(path, limits=InspectionLimits(timeout_s=3.0))

    assert _children() == children_before, "the child was killed and reaped"


def test_a_model_over_the_memory_limit_is_refused_with_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(MODEL_FILE.read_bytes())
    # The shipped model fits in the default; 100 MiB is less than ONNX Runtime itself.
    assert inspect_onnx(path).golden_output is not None
    with pytest.raises(ModelError, match=r"100 MiB"):
        inspect_onnx(path, limits=InspectionLimits(memory_bytes=100 * 1024 * 1024))


def test_a_string_output_after_a_numeric_one_is_recorded(tmp_path: Path) -> None:
    """Only the first output makes the self-test: other outputs may be anything ORT loads."""
    both = model_bytes(
        [
            helper.make_node("Identity", ["x"], ["scores"]),
            helper.make_node("Cast", ["x"], ["names"], to=TensorProto.STRING),
        ],
        [
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 2]),
            helper.make_tensor_value_info("names", TensorProto.STRING, [1, 2]),
        ],
    )
    path = tmp_path / "both.onnx"
    path.write_bytes(both)

    inspection = inspect_onnx(path)

    assert [(o.name, o.dtype) for o in inspection.outputs] == [
        ("scores", "float32"),
        ("names", "str"),
    ]
    assert inspection.golden_output is not None
    assert len(inspection.golden_output) == 2


@pytest.mark.parametrize(
    ("fields", "reason"),
    [({"task": "t\x00"}, "task"), ({"task": "t" * 65}, "task"), ({"labels": "a,b\x00"}, "label")],
)
def test_task_and_labels_are_bounded_text(
    api: TestClient, fields: dict[str, str], reason: str
) -> None:
    status, body = upload(api, "vib", "1.0.0", MODEL_FILE.read_bytes(), **fields)
    assert status == 422, body
    assert reason in str(body["detail"])
    assert rows(api) == 0


def _children() -> set[int]:
    """This process's children that still exist (zombies included)."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid():
                found.add(int(entry))
    return found
