"""A shipped model re-released under another version: the same graph and weights, a new file.

What an operator does when a model is re-published without retraining (a new version string, a
new sha256, the same answers); the demo, the rollout benchmark and the rollout tests use it to
have a second version of the vibration model without training one. Deterministic: the same
arguments give the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import onnx


def write_release(source: Path, target: Path, *, name: str, version: str, note: str = "") -> Path:
    """Copy the ONNX model ``source`` to ``target`` as ``name`` ``version``; returns ``target``.

    Only the model's doc string and its ``version`` metadata change.
    """
    model = onnx.load(str(source))
    model.doc_string = f"{name} {version}" + (f" ({note})" if note else "")
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = "version", version
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(target))
    return target
