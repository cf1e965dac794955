"""The gateway's own side: the config file, the files it names, and room on disk.

Disk: every bounded store the agent writes (``STORES``: the outbox today; a spool is one more
line) must have room to grow to its bound on its file system, or the agent would fail writes
before its own drop policy applies.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from pydantic import BaseModel

from edge_agent.config import AgentConfig, key_line
from edge_agent.doctor.check import Check
from edge_agent.preflight import preflight, secret_warnings

STORES: tuple[tuple[str, Callable[[AgentConfig], tuple[Path, int]]], ...] = (
    ("outbox", lambda c: (c.outbox.path, c.outbox.max_bytes)),
)
"""(name, config -> (file, its bound in bytes)) of every bounded store the agent writes."""


def config_checks(path: Path, config: AgentConfig) -> list[Check]:
    """What ``validate-config`` finds beyond the schema (CSV files read, models that fit)."""
    problems = preflight(config)
    if not problems:
        names = ", ".join(p.name for p in config.pipelines)
        return [Check.passed("config", f"{path}: agent {config.agent_id}, pipelines {names}")]
    return [
        Check.failed("config", f"{key_line(path, loc)}: {reason}", "correct the key in the file")
        for loc, reason in problems
    ]


def file_checks(config: AgentConfig) -> list[Check]:
    """Every file the config names can be read; the outbox and updates dirs can be written."""
    checks = []
    written = []
    for where, file in named_files(config, ()):
        if where in _WRITTEN or where.endswith(_WRITTEN_DIRS):
            written.append((where, file))
            continue
        problem = _unreadable(file)
        if problem is not None:
            checks.append(Check.failed(f"file {where}", f"{file}: {problem[0]}", problem[1]))
    if not checks:
        checks.append(Check.passed("files", "every file the config names can be read"))
    written.append(("updates.dir", config.updates_dir))  # a default when the key is unset
    for where, path in dict(written).items():
        checks.append(_writable(where, path))
    return checks


def secret_checks(path: Path, config: AgentConfig) -> list[Check]:
    """Secrets others may read, a password in the file, verification turned off (what
    ``validate-config`` warns about; a problem here)."""
    return [
        Check.failed(
            "secrets", f"{key_line(path, loc) if loc else path}: {reason}",
            "chmod 600 the file, or move the password to password_file / password_env",
        )
        for loc, reason in secret_warnings(config, path)
    ]  # fmt: skip


def disk_checks(config: AgentConfig) -> list[Check]:
    """Each bounded store has room to grow to its bound on its file system."""
    checks = []
    for name, where in STORES:
        path, bound = where(config)
        used = path.stat().st_size if path.exists() else 0
        folder = _existing_parent(path)
        free = shutil.disk_usage(folder).free
        need = max(bound - used, 0)
        if free >= need:
            checks.append(
                Check.passed(
                    f"disk ({name})",
                    f"{_mb(free)} free on {folder}, {name} may grow "
                    f"by {_mb(need)} to its bound of {_mb(bound)}",
                )
            )
        else:
            checks.append(
                Check.failed(
                    f"disk ({name})",
                    f"{_mb(free)} free on {folder}, but the {name} may grow by {_mb(need)} to "
                    f"its bound of {_mb(bound)}",
                    f"free space on {folder}, or lower {name}.max_bytes below {_mb(used + free)}",
                )
            )
    return checks


def named_files(node: object, where: tuple[str, ...]) -> Iterator[tuple[str, Path]]:
    """(key path, file) of every path in the config tree (models, CSV files, keys, CAs...)."""
    if isinstance(node, Path):
        yield ".".join(where), node
    elif isinstance(node, BaseModel):
        for key in type(node).model_fields:
            yield from named_files(getattr(node, key), (*where, key))
    elif isinstance(node, list | tuple):
        for index, item in enumerate(node):
            name = getattr(item, "name", None)
            yield from named_files(item, (*where, str(name if name is not None else index)))
    elif isinstance(node, dict):
        for key, item in node.items():
            yield from named_files(item, (*where, str(key)))


_WRITTEN = {"outbox.path", "updates.dir"}
_WRITTEN_DIRS = (".thumbnails",)
"""Paths the agent writes (by key path, or its last key): checked as writable, not as inputs."""


def _unreadable(file: Path) -> tuple[str, str] | None:
    if not file.exists():
        return "does not exist", "create it, or correct the key that names it"
    if file.is_dir():
        return None if os.access(file, os.R_OK | os.X_OK) else ("cannot be read", _chmod(file))
    if not os.access(file, os.R_OK):
        return "cannot be read by this user", _chmod(file)
    return None


def _writable(name: str, path: Path) -> Check:
    """``path`` (or the directory it will be created in) can be written by this user."""
    if path.is_file() and not os.access(path, os.R_OK | os.W_OK):
        return Check.failed(name, f"{path} cannot be written by this user", _chmod(path))
    folder = _existing_parent(path)
    if os.access(folder, os.W_OK | os.X_OK):
        return Check.passed(name, f"{path} can be written")
    return Check.failed(
        name,
        f"{folder} cannot be written by this user",
        "chown the directory to the agent's user (systemd: ReadWritePaths)",
    )


def _existing_parent(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path if path.is_dir() else path.parent


def _chmod(file: Path) -> str:
    return f"give the agent's user access (chmod/chown {file})"


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"
