"""`aiot edge validate-config` reads what a config names (a CSV replay) and names the key,
the file and the line of what is wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from models.normal import fit_normal
from models.normal_files import write_model
from models.window_features import WindowSpec

MANIFEST = Path(__file__).resolve().parents[2] / "models" / "manifest.json"


def _press_model(directory: Path) -> Path:
    """A scorer of [temp, pressure] windows of 4 readings, learnt in a moment."""
    rng = np.random.default_rng(0)
    values = np.c_[20 + rng.normal(size=400), 3 + 0.1 * rng.normal(size=400)]
    spec = WindowSpec(("temp", "pressure"), size=4, hop=2)
    write_model(fit_normal(values, spec, name="press-normal", version="1.0.0"), directory)
    return directory / "manifest.json"


def _config(
    tmp_path: Path, csv_text: str, *, channels: str = "[temp, pressure]", model: str = ""
) -> Path:
    (tmp_path / "press.csv").write_text(csv_text)
    model = model or f"{{name: press-normal, manifest: {_press_model(tmp_path / 'models')}}}"
    config = tmp_path / "edge.yaml"
    config.write_text(
        f"""\
agent_id: press-1
pipelines:
  - name: press
    source: {{type: csv, path: press.csv, timestamp: t, channels: {channels}}}
    window: {{size: 4, rate_hz: 1}}
    model: {model}
"""
    )
    return config


def _validate(config: Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["edge", "validate-config", str(config)])
    return result.exit_code, result.output


def test_a_good_replay_file_passes(tmp_path: Path) -> None:
    code, output = _validate(_config(tmp_path, "t,temp,pressure\n1,20,3\n2,21,3.1\n"))
    assert code == 0, output
    assert "OK" in output


@pytest.mark.parametrize(
    ("csv_text", "expected"),
    [
        ("t,temp\n1,20\n", ("source.channels", "press.csv:1", "pressure")),  # no column
        ("t,temp,pressure\n1,20,3\n2,warm,3\n", ("source.path", "press.csv:3", "temp")),
        ("t,temp,pressure\n2,20,3\n1,21,3\n", ("source.path", "press.csv:3", "backwards")),
    ],
)
def test_a_bad_replay_file_names_key_file_and_line(
    tmp_path: Path, csv_text: str, expected: tuple[str, str, str]
) -> None:
    code, output = _validate(_config(tmp_path, csv_text))
    assert code == 2
    key, where, what = expected
    assert f"pipelines[0].{key}" in output
    assert where in output
    assert what in output


def test_a_model_that_does_not_take_the_windows_names_the_window_key(tmp_path: Path) -> None:
    vibration = f"{{name: vibration-anomaly, manifest: {MANIFEST}}}"
    config = _config(tmp_path, "t,temp,pressure\n1,20,3\n2,21,3.1\n", model=vibration)
    code, output = _validate(config)
    assert code == 2
    assert "edge.yaml:5: pipelines[0].window" in output
    assert "[2, 4]" in output
    assert "vibration-anomaly" in output
