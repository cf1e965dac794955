"""The synthetic camera source: frames of the synthetic street scene at ``fps``, as a camera.

The scene itself (``edge_agent.sources.synthetic_scene``) is pure drawing, shared with the
detector's training data; this module is its config (scripted or random actors, lighting
changes) and the source that plays it. Frame ``seq`` shows scene time ``seq / fps`` and is
stamped with the start time plus that, however fast it is read.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Annotated, Literal, cast

import numpy as np
from pydantic import AfterValidator, Field, model_validator

from edge_agent.config_types import StrictConfig
from edge_agent.sources.sample import Sample, simulated_clock
from edge_agent.sources.synthetic_scene import CLASSES, Actor, SyntheticScene, random_actors

Point = tuple[float, float]


def _known_label(value: str) -> str:
    if value not in CLASSES:
        raise ValueError(f"expected one of {', '.join(CLASSES)}")
    return value


class ActorConfig(StrictConfig):
    """One object crossing the synthetic scene (see ``synthetic_scene.Actor``)."""

    label: Annotated[str, AfterValidator(_known_label)]
    enter_s: float = Field(default=0.0, ge=0)
    start_xy: Point
    velocity: Point = (0.0, 0.0)
    size: tuple[Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)]]
    pauses: list[tuple[float, Annotated[float, Field(ge=0)]]] = Field(
        default_factory=list, description="(at_s, for_s): stands still"
    )
    exit_s: float | None = None

    def actor(self) -> Actor:
        return Actor(
            self.label,
            self.enter_s,
            self.start_xy,
            self.velocity,
            self.size,
            tuple(self.pauses),
            self.exit_s,
        )


class LightingChangeConfig(StrictConfig):
    """From ``at_s`` the scene's brightness ramps (about 1 s) to ``gain`` times the normal."""

    at_s: float = Field(ge=0)
    gain: float = Field(ge=0)


class SyntheticSceneSourceConfig(StrictConfig):
    """A simulated fixed street camera with scripted (or random) cars and people."""

    type: Literal["synthetic_scene"]
    width: int = Field(default=640, ge=16, le=4096)
    height: int = Field(default=360, ge=16, le=4096)
    fps: float = Field(default=10.0, gt=0)
    duration_s: float | None = Field(default=None, gt=0)
    speed: float = Field(default=1.0, ge=0, description="1.0 = real time, 0 = no waiting")
    seed: int = 0
    noise_std: float = Field(default=2.0, ge=0)
    actors: list[ActorConfig] = Field(default_factory=list)
    random_actors: int = Field(
        default=0, ge=0, description="this many more actors, drawn from the seed"
    )
    lighting: list[LightingChangeConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _random_needs_duration(self) -> SyntheticSceneSourceConfig:
        if self.random_actors and self.duration_s is None:
            raise ValueError("random_actors needs duration_s (they are spread over it)")
        return self


def build_scene(config: SyntheticSceneSourceConfig) -> SyntheticScene:
    """The scene a config describes (its scripted actors first, then the random ones)."""
    actors: list[Actor] = [a.actor() for a in config.actors]
    if config.random_actors:
        rng = np.random.default_rng([config.seed, 99])
        actors += random_actors(
            rng,
            config.random_actors,
            width=config.width,
            height=config.height,
            duration_s=cast(float, config.duration_s),
        )
    return SyntheticScene(
        width=config.width,
        height=config.height,
        seed=config.seed,
        actors=actors,
        noise_std=config.noise_std,
        lighting=[(c.at_s, c.gain) for c in config.lighting],
    )


class SyntheticSceneSource:
    """Frames of ``SyntheticScene`` at ``fps``; ``scene`` gives the ground truth."""

    def __init__(
        self,
        config: SyntheticSceneSourceConfig,
        *,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self.scene = build_scene(config)
        self._wall_clock = wall_clock
        self._monotonic = monotonic

    @property
    def period_s(self) -> float:
        return 1.0 / self._config.fps

    @property
    def window(self) -> int:
        return self._config.width * self._config.height * 3

    def scene_time(self, seq: int) -> float:
        """Scene seconds of frame ``seq`` (for ``scene.truth``)."""
        return seq * self.period_s

    def samples(self, stop: threading.Event) -> Iterator[Sample]:
        t0 = self._wall_clock()
        clock = simulated_clock(
            self.period_s,
            stop,
            speed=self._config.speed,
            duration_s=self._config.duration_s,
            monotonic=self._monotonic,
        )
        for seq, t_s in clock:
            yield Sample(seq, t0 + t_s, self.scene.render(t_s))
