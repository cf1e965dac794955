"""The `aiot` command: the composition root.

Each subcommand imports its side (edge_agent or cloud_api) only when it runs, so a gateway
with just the `edge` extra can run `aiot edge ...` without the cloud's dependencies.
"""

from __future__ import annotations

import typer

from cli import cloud, config_cmd, edge, models
from cli.demo import demo
from cli.deploy import deploy
from cli.fleet import agents, events
from cli.placement import placement

app = typer.Typer(
    help="Hybrid edge-cloud AIoT inference platform.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(edge.app, name="edge")
app.add_typer(cloud.app, name="cloud")
app.add_typer(models.app, name="models")
app.add_typer(config_cmd.app, name="config")
app.command()(demo)
app.command()(deploy)
app.command()(placement)
app.command()(agents)
app.command()(events)
