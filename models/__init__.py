"""The ONNX models the platform ships with, their manifest, and the code that builds them.

Importing this package is cheap and safe on a gateway: the readers below need only
pydantic; the build (scikit-learn, onnx) lives in ``models.build`` and is imported on demand.
"""

from models.manifest import MANIFEST_NAME, ModelEntry, default_dir, load_manifest

__all__ = ["MANIFEST_NAME", "ModelEntry", "default_dir", "load_manifest"]
