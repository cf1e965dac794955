"""Reproducible build of every shipped model and of ``manifest.json``.

Same code, same machine -> byte-identical files: all randomness is seeded, training runs
on one BLAS thread, and nothing time- or host-dependent goes into the files.
Usage: ``python -m models.build [--out DIR]`` (``aiot models build`` calls :func:`build_all`).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from models import vibration
from models.manifest import (
    MANIFEST_NAME,
    Manifest,
    default_dir,
    file_sha256,
    load_manifest,
)
from shared.errors import ModelError

logger = logging.getLogger(__name__)


def build_all(out_dir: Path) -> Path:
    """Build every model into ``out_dir`` and write its manifest; return the manifest's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    manifest = Manifest(models=[vibration.build(out_dir)])
    path = out_dir / MANIFEST_NAME
    text = manifest.model_dump_json(indent=2) + "\n"
    vibration.write_atomically(path, text.encode("utf-8"))
    logger.info(
        "built %d model(s) into %s in %.1f s",
        len(manifest.models),
        out_dir,
        time.perf_counter() - started,
    )
    return path


def is_up_to_date(out_dir: Path) -> bool:
    """True when the manifest exists and every file it lists is there with its sha256."""
    try:
        entries = load_manifest(out_dir / MANIFEST_NAME)
    except ModelError:
        return False
    return bool(entries) and all(
        entry.path(out_dir).is_file() and file_sha256(entry.path(out_dir)) == entry.sha256
        for entry in entries
    )


def ensure_built(out_dir: Path) -> Path:
    """Return the manifest's path, building first only if something is missing or altered."""
    if is_up_to_date(out_dir):
        return out_dir / MANIFEST_NAME
    logger.info("models in %s are missing or do not match the manifest: building", out_dir)
    return build_all(out_dir)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: build into ``--out`` (default: the models package) and print the manifest."""
    parser = argparse.ArgumentParser(prog="python -m models.build", description=__doc__)
    parser.add_argument("--out", type=Path, default=default_dir(), help="target directory")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    manifest = build_all(args.out)
    print(manifest.read_text(encoding="utf-8"), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
