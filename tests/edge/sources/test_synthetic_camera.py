"""The synthetic camera source: it renders the configured scene, random actors come from
the seed."""

from __future__ import annotations

import numpy as np
from pydantic import TypeAdapter

from edge_agent.sources.synthetic_camera import SyntheticSceneSource, SyntheticSceneSourceConfig
from edge_agent.sources.synthetic_scene import SyntheticScene
from tests.edge.vision_fixtures import take


def test_synthetic_scene_source_renders_the_configured_scene() -> None:
    config = TypeAdapter(SyntheticSceneSourceConfig).validate_python(
        {
            "type": "synthetic_scene",
            "fps": 5,
            "duration_s": 2,
            "speed": 0,
            "seed": 4,
            "actors": [
                {"label": "car", "start_xy": [0, 250], "velocity": [80, 0], "size": [80, 40]},
                {
                    "label": "person",
                    "enter_s": 0.5,
                    "start_xy": [300, 120],
                    "size": [20, 50],
                    "pauses": [[1.0, 0.5]],
                },
            ],
            "lighting": [{"at_s": 1.0, "gain": 0.7}],
        }
    )
    assert isinstance(config, SyntheticSceneSourceConfig)
    source = SyntheticSceneSource(config)
    samples = take(source)
    assert [s.seq for s in samples] == list(range(10))
    assert np.allclose(np.diff([s.ts for s in samples]), 0.2)
    assert source.window == 640 * 360 * 3
    for sample in samples:
        assert np.array_equal(sample.data, source.scene.render(source.scene_time(sample.seq)))
    assert [b.label for b in source.scene.truth(source.scene_time(5))] == ["car", "person"]


def test_random_actors_come_from_the_seed() -> None:
    def scene(seed: int) -> SyntheticScene:
        config = SyntheticSceneSourceConfig(
            type="synthetic_scene", seed=seed, random_actors=6, duration_s=30
        )
        return SyntheticSceneSource(config).scene

    assert scene(1).actors == scene(1).actors
    assert len(scene(1).actors) == 6
    assert scene(1).actors != scene(2).actors
