"""`aiot edge ...`: run the edge agent daemon or check its config."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli import configure_logging
from shared.errors import AiotError, ConfigError

app = typer.Typer(help="The edge agent that runs on gateways.", no_args_is_help=True)

ConfigPath = Annotated[Path, typer.Option("--config", "-c", help="Agent YAML config file.")]


@app.command()
def run(config: ConfigPath, log_level: str = "INFO") -> None:
    """Run the agent until SIGTERM or Ctrl-C (both stop it the same way, then "stopped")."""
    from edge_agent.agent import run as run_agent
    from edge_agent.config import load_config

    configure_logging(log_level)
    try:
        agent_config = load_config(config)
    except ConfigError as error:
        typer.echo(f"invalid config: {error}", err=True)
        raise typer.Exit(2) from None
    try:
        run_agent(agent_config)
    except AiotError as error:  # a model that does not load, an outbox it cannot open
        typer.echo(f"cannot run the agent: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo("stopped")


@app.command("validate-config")
def validate_config(path: Annotated[Path, typer.Argument(help="Agent YAML config file.")]) -> None:
    """Check a config file and what it names (a CSV replay is read through, each sensor model
    loaded against its pipeline's windows); print what it declares, or the key, file and
    line that is wrong."""
    from edge_agent.config import key_line, load_config
    from edge_agent.preflight import preflight

    try:
        agent_config = load_config(path)
    except ConfigError as error:
        typer.echo(f"invalid config: {error}", err=True)
        raise typer.Exit(2) from None
    problems = preflight(agent_config)
    if problems:
        typer.echo(f"invalid config: {path} ({len(problems)} error(s))", err=True)
        for loc, reason in problems:
            typer.echo(f"  {key_line(path, loc)}: {reason}", err=True)
        raise typer.Exit(2)
    names = ", ".join(p.name for p in agent_config.pipelines)
    typer.echo(f"{path}: OK, agent {agent_config.agent_id}, pipelines: {names}")
