"""The README's examples are what a user copies first: they must stay valid."""

from __future__ import annotations

from pathlib import Path

from edge_agent.config import load_config

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_camera_config_in_the_readme_is_valid(tmp_path: Path) -> None:
    text = README.read_text()
    section = text.split("## Pointing the agent at your own camera and model", 1)[1]
    block = section.split("```yaml", 1)[1].split("```", 1)[0]
    path = tmp_path / "agent.yaml"
    path.write_text("agent_id: gate-1\n" + block)
    config = load_config(path)
    pipeline = config.pipelines[0]
    assert pipeline.is_camera
    assert pipeline.model.task == "detection"
    assert [a.type for a in pipeline.actions] == ["mqtt", "command"]


def test_the_readme_opens_with_the_two_commands() -> None:
    head = README.read_text().split("## ", 1)[0]
    assert "make demo" in head
    assert "make test" in head


def test_the_device_config_in_the_readme_is_valid(tmp_path: Path) -> None:
    section = README.read_text().split("## Reading a real machine", 1)[1]
    block = section.split("```yaml", 1)[1].split("```", 1)[0]
    path = tmp_path / "agent.yaml"
    path.write_text("agent_id: plant-1\n" + block)
    config = load_config(path)
    assert [p.source.type for p in config.pipelines] == ["modbus", "opcua"]
    assert all(p.window is not None for p in config.pipelines)
