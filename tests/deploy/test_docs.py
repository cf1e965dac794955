"""What the READMEs and deploy scripts tell an operator to type exists: every ``aiot`` command
and option in them is one the CLI has, and the agent config the README shows validates."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer

from cli.main import app
from edge_agent.config import load_config

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "deploy" / "README.md"]
SCRIPTS = [
    ROOT / "deploy" / "mosquitto" / "init.sh",
    ROOT / "deploy" / "k8s" / "15-setup.yaml",
    ROOT / "deploy" / "compose.yml",
]
PIPELINE = """
pipelines:
  - name: spindle-vibration
    source: {type: simulated_vibration, seed: 7}
    model: {name: vibration-anomaly, manifest: ../../models/manifest.json}
"""


def shell_lines(path: Path) -> list[str]:
    """Shell lines of a file: the ```sh blocks of a Markdown page, else every line."""
    text = path.read_text()
    if path.suffix == ".md":
        text = "\n".join(re.findall(r"```sh\n(.*?)```", text, flags=re.DOTALL))
    joined = re.sub(r"\\\n\s*", " ", text)  # continuation lines
    return [line.split(" #", 1)[0] for line in joined.splitlines()]


NOT_A_COMMAND = ("-n", "chown", "useradd")  # `kubectl -n aiot`, the user aiot


def aiot_commands(path: Path) -> list[list[str]]:
    """Every ``aiot ...`` invocation in ``path``, as words up to a pipe, ``&&`` or ``)``;
    the ``[...]`` of optional parts and the ``...`` of repeats left out."""
    found = []
    for line in shell_lines(path):
        for match in re.finditer(r"(?:^|(?<=[\s'(|;&]))aiot ([^|&;)'\">]*)", line):
            before = line[: match.start()].split()
            if before and before[-1] in NOT_A_COMMAND:
                continue
            words = shlex.split(match.group(1).replace("$", "").replace("[", "").replace("]", ""))
            found.append(["aiot", *(word for word in words if word != "...")])
    return found


def resolve(words: list[str]) -> tuple[Any, list[str]]:
    """The (click) command ``words`` name and the words after it."""
    command: Any = typer.main.get_command(app)
    rest = words[1:]
    while hasattr(command, "get_command") and rest and not rest[0].startswith("-"):
        sub = command.get_command(typer.Context(command), rest[0])
        assert sub is not None, f"{' '.join(words)}: no command {rest[0]!r}"
        command, rest = sub, rest[1:]
    return command, rest


def options(command: Any) -> set[str]:
    names = {"--help"}
    for param in command.params:
        names.update(param.opts)
        names.update(param.secondary_opts)
    return names


def cases() -> list[tuple[str, list[str]]]:
    return [(path.name, words) for path in [*DOCS, *SCRIPTS] for words in aiot_commands(path)]


@pytest.mark.parametrize(("where", "words"), cases(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_documented_command_and_option_exists(where: str, words: list[str]) -> None:
    command, rest = resolve(words)
    known = options(command)
    for word in rest:
        if word.startswith("--"):
            assert word.split("=", 1)[0] in known, f"{where}: {' '.join(words)}: {word}"


def test_the_docs_name_the_commands_an_operator_needs() -> None:
    named = {resolve(words)[0].name for _, words in cases()}
    needed = {"create-key", "enroll-agent", "create-broker-user", "broker-config", "deploy", "push"}
    assert needed <= named


def test_the_agent_config_in_the_readme_is_valid_with_cloud_and_updates(tmp_path: Path) -> None:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Running an agent against a cloud", 1)[1]
    block = section.split("```yaml", 1)[1].split("```", 1)[0]
    path = tmp_path / "a" / "b" / "agent.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(block + PIPELINE)
    config = load_config(path)
    assert config.cloud is not None
    assert config.cloud.username == config.agent_id == config.mqtt.username
    assert config.updates.health_window_s == 30
