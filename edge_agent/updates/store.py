"""The updates dir: the model versions on disk, and what the updater remembers across restarts.

Versions live in ``<updates dir>/<model name>/<version>/`` (``model.onnx``, ``manifest.json``)
and ``state.json`` (written atomically) says per pipeline which downloaded version is active
and which update is pending, so that a restart loads the active version again (verified
again), rolls back an update that was being watched, and resumes a download. Only the newest
``keep_versions`` versions of a model stay on disk, and every version in use.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from shared.errors import ConfigError
from shared.messages import DesiredModel, UpdateState, UpdateStatus
from shared.signing import ModelManifest, SignedManifest

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
REFUSED_KEPT = 32
"""Refused entries a pipeline remembers; an older one would be tried again if it came back."""
_SAFE_PART = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


class _Stored(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Installed(_Stored):
    """A downloaded version a pipeline runs (or ran before the active one)."""

    name: str
    version: str
    sha256: str
    deployment_id: int | None = None


class Pending(Installed):
    """An update under way, and how far it got."""

    phase: UpdateState


class PipelineUpdates(_Stored):
    """What the updater remembers of one pipeline across restarts."""

    active: Installed | None = None
    previous: Installed | None = None
    pending: Pending | None = None
    refused: list[str] = []
    """Keys (deployment id and sha256) of desired entries not to try again."""
    last: UpdateStatus | None = None

    def refuse(self, key: str) -> None:
        """Remember ``key`` (see ``refusal_key``) as not to be tried again."""
        self.refused = [*self.refused, key][-REFUSED_KEPT:]


class UpdaterState(_Stored):
    pipelines: dict[str, PipelineUpdates] = {}


def refusal_key(deployment_id: int | None, sha256: str) -> str:
    """What identifies a desired entry: a refused one is tried again only when this changes."""
    return f"{deployment_id}:{sha256}"


def entry_key(entry: DesiredModel) -> str:
    """The refusal key of a desired entry."""
    return refusal_key(entry.deployment_id, entry.manifest.manifest.sha256)


def read_state(path: Path) -> UpdaterState:
    """The state file, or an empty state if there is none (or it cannot be read)."""
    try:
        return UpdaterState.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return UpdaterState()
    except (OSError, ValidationError) as exc:
        log.error("ignoring unreadable update state %s: %s", path, exc)
        return UpdaterState()


def write_state(path: Path, state: UpdaterState) -> None:
    """Write the state file atomically: a crash leaves the old or the new one, never half."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as file:
        file.write(state.model_dump_json(indent=1).encode())
        file.flush()
        os.fsync(file.fileno())
    tmp.replace(path)


def folder_problem(manifest: ModelManifest) -> str | None:
    """Why the manifest's name or version cannot name a folder of the updates dir (None if
    both can): nothing the cloud sends may lead outside it."""
    for part in (manifest.name, manifest.version):
        if not _SAFE_PART.fullmatch(part) or part in (".", ".."):
            return f"model name or version {part!r} cannot name a directory"
    return None


def renamed(signed: SignedManifest) -> SignedManifest:
    """``signed`` with a name and version a status can carry (to report its refusal)."""

    def safe(text: str) -> str:
        cleaned = re.sub(r"[^A-Za-z0-9_.:-]", "_", text)[:64]
        return "_" if cleaned in ("", ".", "..") else cleaned

    manifest = signed.manifest
    safe_names = manifest.model_copy(
        update={"name": safe(manifest.name), "version": safe(manifest.version)}
    )
    return signed.model_copy(update={"manifest": safe_names})


class Store:
    """The updates dir and its state file, loaded once and written after every change."""

    def __init__(self, root: Path) -> None:
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create updates.dir {root}: {exc.strerror}") from None
        self.root = root
        self._path = root / STATE_FILE
        self.state = read_state(self._path)

    def folder(self, name: str, version: str) -> Path:
        """Where a version's ``model.onnx`` and ``manifest.json`` live."""
        return self.root / name / version

    def pipeline(self, name: str) -> PipelineUpdates:
        """What is remembered of pipeline ``name`` (an empty record the first time)."""
        return self.state.pipelines.setdefault(name, PipelineUpdates())

    def last(self, name: str) -> UpdateStatus | None:
        """The last update of pipeline ``name``, as its status reports it (any thread)."""
        ps = self.state.pipelines.get(name)
        return ps.last if ps is not None else None

    def save(self) -> None:
        """Write the state file; a failure is logged (the agent runs on, it may forget)."""
        try:
            write_state(self._path, self.state)
        except OSError as exc:
            log.error("cannot write the update state %s: %s", self._path, exc)

    def prune(self, model_name: str, keep: int) -> None:
        """Keep the newest ``keep`` versions of a model, and every version in use."""
        folder = self.root / model_name
        in_use = {
            i.version
            for ps in self.state.pipelines.values()
            for i in (ps.active, ps.previous, ps.pending)
            if i is not None and i.name == model_name
        }
        versions = sorted(
            (d for d in folder.iterdir() if d.is_dir()),
            key=lambda d: d.stat().st_mtime,
            reverse=True,
        )
        for old in versions[keep:]:
            if old.name not in in_use:
                shutil.rmtree(old, ignore_errors=True)
                log.info("removed model %s %s (keeping %d versions)", model_name, old.name, keep)
