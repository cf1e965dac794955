"""``aiot models fit-normal`` on files: a CSV of normal operation in, a model and its
manifest entry out.

The CSV is read by the edge's own CSV reader (the ``csv`` source), so a file that replays
on a gateway fits here with the same rules and the same errors (key, file, line). The
model is written next to a ``manifest.json`` whose other entries are kept, so one
directory can hold the models of several machines.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_agent.sources.csv import CsvFile, CsvSourceConfig
from models.build import write_atomically
from models.manifest import MANIFEST_NAME, ModelCard, load_manifest, manifest_json
from models.normal import F64, FitResult, card
from shared.digests import sha256_bytes
from shared.errors import ConfigError, ModelError


def read_normal_csv(config: CsvSourceConfig) -> tuple[tuple[str, ...], F64, float | None]:
    """Channels, readings ``[N, C]`` and the rate (rows per second, when fixed) of a CSV.

    A bad row is an error here (normal data is what the model will call normal): it names
    the file, the line and the column, as the ``csv`` source does.
    """
    config.check()
    parts = []
    with CsvFile.open(config) as table:
        channels = table.channels
        for chunk in table.chunks():
            if chunk.errors:
                raise ConfigError(chunk.errors[0])
            parts.append(np.asarray(chunk.values, dtype=np.float64))
    values = np.concatenate(parts) if parts else np.zeros((0, len(channels)))
    return channels, values, config.rate_hz


def write_model(result: FitResult, out_dir: Path) -> tuple[Path, ModelCard]:
    """Write ``NAME-VERSION.onnx`` and add its entry to ``out_dir/manifest.json``.

    An existing entry of the same name and version is replaced; the others are kept.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    file = f"{result.name}-{result.version}.onnx"
    entry = card(result, file=file, sha256=sha256_bytes(result.model))
    manifest = out_dir / MANIFEST_NAME
    kept: list[ModelCard] = []
    if manifest.exists():
        try:
            kept = load_manifest(manifest)
        except ModelError as exc:
            raise ModelError(f"{exc}; move it away or choose another --out") from None
    kept = [e for e in kept if (e.name, e.version) != (result.name, result.version)]
    write_atomically(out_dir / file, result.model)
    write_atomically(manifest, manifest_json([*kept, entry]).encode("utf-8"))
    return out_dir / file, entry
