"""The ONNX models the platform ships with, their manifest, and the code that builds them.

Importing this package loads only the manifest's reader (pydantic and the edge's schema of
the file); the builds (scikit-learn, onnx, torch) live in ``models.build`` and are imported
on demand.
"""

from models.manifest import MANIFEST_NAME, ModelCard, default_dir, load_manifest

__all__ = ["MANIFEST_NAME", "ModelCard", "default_dir", "load_manifest"]
