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
    except AiotError as error:  # a password or TLS file it names cannot be used, ...
        typer.echo(f"cannot run: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo("stopped")


@app.command("validate-config")
def validate_config(path: Annotated[Path, typer.Argument(help="Agent YAML config file.")]) -> None:
    """Check a config file and what it names (a CSV replay is read through, each sensor model
    loaded against its pipeline's windows); print what it declares, or the key, file and
    line that is wrong."""
    from edge_agent.config import key_line, load_config
    from edge_agent.preflight import preflight, secret_warnings

    try:
        agent_config = load_config(path)
    except ConfigError as error:
        typer.echo(f"invalid config: {error}", err=True)
        raise typer.Exit(2) from None
    for loc, reason in secret_warnings(agent_config, path):
        typer.echo(f"warning: {key_line(path, loc) if loc else path}: {reason}", err=True)
    problems = preflight(agent_config)
    if problems:
        typer.echo(f"invalid config: {path} ({len(problems)} error(s))", err=True)
        for loc, reason in problems:
            typer.echo(f"  {key_line(path, loc)}: {reason}", err=True)
        raise typer.Exit(2)
    names = ", ".join(p.name for p in agent_config.pipelines)
    typer.echo(f"{path}: OK, agent {agent_config.agent_id}, pipelines: {names}")


@app.command()
def doctor(
    config: ConfigPath,
    timeout_s: Annotated[
        float, typer.Option(min=0.1, help="Seconds each network check and source may take.")
    ] = 5.0,
) -> None:
    """Check everything the agent needs (config, files, disk, broker, cloud API, clock,
    models, sources, the running agent), each with ✓ or ✗ and a fix; exit 1 on any ✗."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from edge_agent import doctor as checks

    found = checks.run(config, timeout_s=timeout_s)
    table = Table(title=f"aiot edge doctor {config}", show_lines=False)
    for column in ("", "check", "finding", "fix"):
        table.add_column(column)
    marks = {True: Text("✓", style="green"), False: Text("✗", style="bold red"), None: Text("-")}
    for check in found:
        # Text, not markup: findings quote paths, URLs and errors that may hold brackets.
        table.add_row(marks[check.ok], Text(check.name), Text(check.detail), Text(check.fix))
    Console(width=200).print(table)
    failed = sum(check.ok is False for check in found)
    typer.echo(f"{failed} problem(s) found" if failed else "no problem found")
    raise typer.Exit(1 if failed else 0)
