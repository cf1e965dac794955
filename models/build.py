"""Reproducible build of every shipped model and of ``manifest.json``.

Same code, same machine -> byte-identical files: all randomness is seeded, training runs
on fixed thread counts, and nothing time- or host-dependent goes into the files.
Usage: ``python -m models.build [--out DIR] [--only vibration|detector ...]``
(``aiot models build`` calls :func:`build_all`).

The detector needs torch (``pip install aiot[train]``). Without it, its committed file and
manifest entry are kept as they are (copied when building into another directory), so a
machine without torch still builds the vibration model and a complete manifest.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import shutil
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from models import detector, detector_cloud, vibration, vibration_cloud
from models.manifest import MANIFEST_NAME, ModelCard, default_dir, load_manifest, manifest_json
from shared.digests import sha256_file
from shared.errors import ModelError

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Model:
    name: str  # as in the manifest
    build: Callable[[], tuple[bytes, ModelCard]]  # the ONNX file and its manifest entry
    needs: str | None = None  # a module the build imports that a plain install lacks


def _build_detector() -> tuple[bytes, ModelCard]:
    """Train and export (torch), then measure the exported file as an agent runs it."""
    from models import detector_net  # torch: only when training

    model = detector_net.train_and_export()
    return model, detector.card(model)


MODELS: dict[str, _Model] = {
    "vibration": _Model(vibration.NAME, vibration.build),
    "detector": _Model(detector.NAME, _build_detector, needs="torch"),
    "vibration-cloud": _Model(vibration_cloud.NAME, vibration_cloud.build),
    "detector-cloud": _Model(detector_cloud.NAME, detector_cloud.build, needs="torch"),
}


def can_build(key: str) -> bool:
    """True when this machine has what the model's build needs."""
    needs = MODELS[key].needs
    return needs is None or importlib.util.find_spec(needs) is not None


def build_all(out_dir: Path, only: Collection[str] | None = None) -> Path:
    """Build the models (all, or those in ``only``) into ``out_dir``; write the manifest.

    A model that is not selected, or whose build needs what is not installed, keeps its
    current file and entry: the one in ``out_dir`` if intact, else the committed one.
    """
    selected = set(MODELS if only is None else only)
    if unknown := selected - set(MODELS):
        raise ValueError(f"unknown model(s) {sorted(unknown)}: expected some of {list(MODELS)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    entries = []
    for key, model in MODELS.items():
        if key in selected and can_build(key):
            onnx, card = model.build()
            write_atomically(out_dir / card.file, onnx)
            entries.append(card)
            continue
        if key in selected:
            logger.warning(
                "%s: %s is not installed; keeping the built file", model.name, model.needs
            )
        entries.append(_existing(model.name, out_dir))
    path = out_dir / MANIFEST_NAME
    write_atomically(path, manifest_json(entries).encode("utf-8"))
    logger.info(
        "built %s into %s in %.1f s", sorted(selected), out_dir, time.perf_counter() - started
    )
    return path


def write_atomically(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename, so a reader never sees half a model."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _intact(name: str, directory: Path) -> ModelCard | None:
    try:
        entries = load_manifest(directory / MANIFEST_NAME)
    except ModelError:
        return None
    for entry in entries:
        path = entry.path(directory)
        if entry.name == name and path.is_file() and sha256_file(path) == entry.sha256:
            return entry
    return None


def _existing(name: str, out_dir: Path) -> ModelCard:
    """The intact entry of ``name`` in ``out_dir``, else the committed one copied there."""
    if (entry := _intact(name, out_dir)) is not None:
        return entry
    committed = default_dir()
    entry = _intact(name, committed)
    if entry is None:
        raise ModelError(f"{name}: cannot build it here and no intact copy in {committed}")
    shutil.copyfile(entry.path(committed), entry.path(out_dir))
    return entry


def stale(out_dir: Path) -> list[str]:
    """The models (keys of MODELS) whose file or manifest entry is missing or altered."""
    return [key for key, model in MODELS.items() if _intact(model.name, out_dir) is None]


def is_up_to_date(out_dir: Path) -> bool:
    """True when the manifest lists every model and each file is there with its sha256."""
    return not stale(out_dir)


def ensure_built(out_dir: Path) -> Path:
    """Return the manifest's path, building first only what is missing or altered."""
    if not (todo := stale(out_dir)):
        return out_dir / MANIFEST_NAME
    logger.info("models %s in %s are missing or do not match the manifest: building", todo, out_dir)
    return build_all(out_dir, only=todo)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: build into ``--out`` (default: the models package) and print the manifest."""
    parser = argparse.ArgumentParser(prog="python -m models.build", description=__doc__)
    parser.add_argument("--out", type=Path, default=default_dir(), help="target directory")
    parser.add_argument(
        "--only", action="append", choices=list(MODELS), help="build just this model (repeatable)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    manifest = build_all(args.out, only=args.only)
    print(manifest.read_text(encoding="utf-8"), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
