"""A small, deterministic builder for ONNX graphs written node by node with ``onnx.helper``.

skl2onnx is not a dependency; our models are a handful of standard ops, and writing them
out keeps the file free of converter metadata (timestamps, tool versions) that would
break byte-for-byte reproducible builds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

# Opset 17 is the first with DFT and is understood by every onnxruntime we support (>=1.18).
OPSET = 17
IR_VERSION = 8
Dim = int | str


class GraphBuilder:
    """Collects nodes and initializers; names come from a counter so builds are repeatable."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._nodes: list[onnx.NodeProto] = []
        self._initializers: list[onnx.TensorProto] = []
        self._count = 0
        self._names: set[str] = set()

    def const(self, name: str, value: npt.ArrayLike, dtype: type = np.float32) -> str:
        """Add an initializer and return its name."""
        if name in self._names:
            raise ValueError(f"initializer {name!r} is already defined")
        self._names.add(name)
        self._initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def axes(self, *axes: int) -> str:
        """An int64 axes tensor (Unsqueeze, ReduceSum and Slice take axes as inputs)."""
        name = "axes_" + "_".join(str(a) for a in axes)
        return name if name in self._names else self.const(name, axes, np.int64)

    def op(self, op_type: str, *inputs: str, **attributes: Any) -> str:
        """Add one node with one output and return the output's name."""
        self._count += 1
        output = f"{op_type.lower()}_{self._count}"
        node = helper.make_node(
            op_type, list(inputs), [output], name=f"n{self._count}_{op_type}", **attributes
        )
        self._nodes.append(node)
        return output

    def rename(self, value: str, output: str) -> str:
        """Expose ``value`` under a public name (an Identity the runtime optimises away)."""
        self._nodes.append(helper.make_node("Identity", [value], [output], name=f"out_{output}"))
        return output

    def model(
        self,
        inputs: Sequence[tuple[str, Sequence[Dim]]],
        outputs: Sequence[tuple[str, Sequence[Dim]]],
        doc: str,
        producer_version: str,
    ) -> onnx.ModelProto:
        """Assemble and check a float32 model with the given inputs and outputs."""
        graph = helper.make_graph(
            self._nodes,
            self.name,
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in inputs],
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in outputs],
            self._initializers,
            doc_string=doc,
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name="aiot-models",
            producer_version=producer_version,
            doc_string=doc,
        )
        model.ir_version = IR_VERSION
        onnx.checker.check_model(model, full_check=True)
        return model
