"""Checks ``validate-config`` runs after the config validates: what only the files it names
can tell (a CSV replay read through, a model that does not fit its pipeline's windows, a
password file or TLS file that cannot be used).

Each problem is ``(key location, reason)``; the caller turns the location into the file's
line with ``edge_agent.config.key_line``. ``secret_warnings`` are not errors: a secret that
others may read (a password or key file readable by group or others, a password written in
the config itself) and TLS verification turned off. No message ever holds a secret's value.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel

from edge_agent.broker import BrokerConfig
from edge_agent.config import AgentConfig
from edge_agent.inference.slot import load_model, resolve_model
from edge_agent.passwords import PasswordConfig
from edge_agent.pipelines.config import PipelineConfig
from edge_agent.pipelines.sensor import window_fits
from edge_agent.sources.registry import check_source
from edge_agent.tls import TlsConfig
from shared.errors import ConfigError, ModelError
from shared.tls import client_context

Problem = tuple[tuple[int | str, ...], str]
Located = tuple[tuple[int | str, ...], BaseModel]


def preflight(config: AgentConfig) -> list[Problem]:
    """Every problem found, in pipeline order; an empty list when all is well."""
    problems: list[Problem] = []
    for index, pipeline in enumerate(config.pipelines):
        where: tuple[int | str, ...] = ("pipelines", index)
        try:
            check_source(pipeline.source, "source")
        except ConfigError as exc:
            key, _, reason = str(exc).partition(": ")
            problems.append(((*where, *key.split(".")), reason))
        if not pipeline.is_camera:
            problems += [((*where, *loc), reason) for loc, reason in _model_fits(pipeline)]
    return problems + _secret_problems(config)


def _sections(model: BaseModel, loc: tuple[int | str, ...] = ()) -> Iterator[Located]:
    """Every config section in the tree, with its key location."""
    yield loc, model
    for name in type(model).model_fields:
        value = getattr(model, name)
        items = enumerate(value) if isinstance(value, list) else [(None, value)]
        for index, item in items:
            if isinstance(item, BaseModel):
                yield from _sections(item, (*loc, name) if index is None else (*loc, name, index))


def _secret_problems(config: AgentConfig) -> list[Problem]:
    """Password and TLS files that cannot be used (missing, unreadable, empty, not PEM)."""
    problems: list[Problem] = []
    for loc, section in _sections(config):
        if isinstance(section, PasswordConfig) and section.password_file is not None:
            try:
                section.read_password()
            except ConfigError as exc:
                problems.append(((*loc, "password_file"), str(exc).removeprefix("password_file ")))
        if isinstance(section, TlsConfig):
            try:
                client_context(section.files())
            except ConfigError as exc:  # the message names the file
                problems.append((loc, str(exc)))
    return problems


def secret_warnings(config: AgentConfig, path: Path) -> list[Problem]:
    """Secrets others may read, and verification turned off; ``()`` is the config file."""
    warnings: list[Problem] = []
    in_config = False
    for loc, section in _sections(config):
        if isinstance(section, PasswordConfig):
            warnings += _readable((*loc, "password_file"), section.password_file)
            env = section.password_env
            if env is not None and not os.environ.get(env):
                warnings.append(
                    ((*loc, "password_env"), f"{env} is not set here (the service must set it)")
                )
        if isinstance(section, BrokerConfig) and section.broker.password is not None:
            in_config = True
            warnings.append(
                ((*loc, "url"), "holds a password: move it to password_file or password_env")
            )
        if isinstance(section, TlsConfig):
            warnings += _readable((*loc, "key_file"), section.key_file)
            if section.insecure:
                warnings.append(
                    ((*loc, "insecure"), "no certificate is verified: set ca_file instead")
                )
    if in_config:
        warnings += _readable((), path)
    return warnings


def _readable(loc: tuple[int | str, ...], path: Path | None) -> list[Problem]:
    """A warning if the secret file ``path`` is readable by group or others."""
    try:
        mode = path.stat().st_mode if path is not None else 0
    except OSError:
        return []  # a missing file is a problem of its own
    if mode & (stat.S_IRGRP | stat.S_IROTH) == 0:
        return []
    return [
        (
            loc,
            f"{path} holds a secret and is readable by group or others "
            f"(mode {stat.S_IMODE(mode):04o}): chmod 600 {path}",
        )
    ]


def _model_fits(pipeline: PipelineConfig) -> list[Problem]:
    """The sensor model loads and takes the pipeline's windows."""
    try:
        model = load_model(resolve_model(pipeline.model), pipeline.runtime)
    except (ConfigError, ModelError) as exc:
        return [(("model",), str(exc))]
    shape: tuple[int, ...] | None
    if pipeline.window is not None:
        named = getattr(pipeline.source, "channels", None)  # a device's, when its config lists them
        channels = pipeline.window.channels or model.channels or named
        shape = (len(channels), pipeline.window.size) if channels else None
    else:
        shape = (getattr(pipeline.source, "window", 0),)
    if shape is not None and not window_fits(shape, model.input_shape):
        key = "window" if pipeline.window is not None else "source"
        return [
            (
                (key,),
                f"windows of {list(shape)} values do not fit model {model.ref.name} "
                f"{model.ref.version}, which takes {list(model.input_shape)} ({model.task})",
            )
        ]
    return []
