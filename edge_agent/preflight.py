"""Checks ``validate-config`` runs after the config validates: what only the files it names
can tell (a CSV replay read through, a model that does not fit its pipeline's windows).

Each problem is ``(key location, reason)``; the caller turns the location into the file's
line with ``edge_agent.config.key_line``.
"""

from __future__ import annotations

from edge_agent.config import AgentConfig
from edge_agent.inference.slot import load_model, resolve_model
from edge_agent.pipelines.config import PipelineConfig
from edge_agent.pipelines.sensor import window_fits
from edge_agent.sources.registry import check_source
from shared.errors import ConfigError, ModelError

Problem = tuple[tuple[int | str, ...], str]


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
    return problems


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
