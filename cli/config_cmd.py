"""`aiot config set` / `aiot config show`: agents' remote configuration through the REST API.

An overlay is the agent's whole remote configuration (a key left out takes the agent's file
value again). It is given as JSON or YAML (``--file``), as ``--set key.path=value`` pairs
(the value read as YAML: ``0.6`` a number, ``INFO`` a string), or both::

    aiot config set --agent press-3 --set pipelines.spindle.filters.threshold.threshold=0.6
    aiot config set --label site=plant-1 --file overlay.yaml
    aiot config set --agent press-3        # an empty overlay: back to the agent's file

The cloud stores it under a new version and publishes it retained; each agent applies it or
refuses it with the reason, which ``aiot config show`` prints. Exit 2 when the API refuses
the request (the reason is printed), 1 when it cannot be reached.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from cli.deploy import target_of
from cli.models import DEFAULT_API, api_headers, refused

if TYPE_CHECKING:
    import httpx
    from rich.table import Table

app = typer.Typer(help="Agents' remote configuration (overlays).", no_args_is_help=True)

STATE_STYLE = {"applied": "green", "refused": "red", "pending": "yellow", "none": "dim"}

ApiOption = Annotated[str, typer.Option(envvar="AIOT_API_URL", help="Cloud API base URL.")]
KeyOption = Annotated[
    str | None, typer.Option(envvar="AIOT_API_KEY", help="Sent as a Bearer token.")
]


@app.command("set")
def set_config(
    agent: Annotated[
        list[str] | None, typer.Option(help="Target agent id (repeat for several).")
    ] = None,
    label: Annotated[
        list[str] | None, typer.Option(help="Target agents with label KEY=VALUE (repeatable).")
    ] = None,
    file: Annotated[
        Path | None, typer.Option(exists=True, dir_okay=False, help="Overlay as JSON or YAML.")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="KEY.PATH=VALUE added to the overlay (value read as YAML)."),
    ] = None,
    api: ApiOption = DEFAULT_API,
    api_key: KeyOption = None,
) -> None:
    """Set the remote configuration of some agents (the whole overlay, a new version)."""
    import httpx

    overlay = build_overlay(file, set_ or [])
    target = target_of(agent or [], label or [])
    with httpx.Client(base_url=api, timeout=30.0, headers=api_headers(api_key)) as client:
        try:
            configs = put_overlay(client, target, overlay)
        except httpx.HTTPError as exc:
            typer.echo(f"cannot reach the cloud API at {api}: {exc}", err=True)
            raise typer.Exit(1) from None
    _print(config_table(configs, title="remote configuration set"))


@app.command("show")
def show(
    agent: Annotated[
        list[str] | None, typer.Argument(help="Agent ids (default: every agent).")
    ] = None,
    api: ApiOption = DEFAULT_API,
    api_key: KeyOption = None,
) -> None:
    """Show the desired and the reported remote configuration of agents."""
    import httpx

    with httpx.Client(base_url=api, timeout=30.0, headers=api_headers(api_key)) as client:
        try:
            configs = get_configs(client, agent or [])
        except httpx.HTTPError as exc:
            typer.echo(f"cannot reach the cloud API at {api}: {exc}", err=True)
            raise typer.Exit(1) from None
    _print(config_table(configs, title="remote configuration"))


def build_overlay(file: Path | None, pairs: list[str]) -> dict[str, Any]:
    """The overlay from a JSON/YAML file and ``key.path=value`` pairs; exit 2 if malformed."""
    import yaml

    overlay: dict[str, Any] = {}
    if file is not None:
        try:
            loaded = yaml.safe_load(file.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            _usage(f"{file}: cannot read an overlay: {exc}")
        if not isinstance(loaded, dict):
            _usage(f"{file}: an overlay is a mapping of keys, not {type(loaded).__name__}")
        overlay = loaded
    for pair in pairs:
        path, sep, text = pair.partition("=")
        keys = path.split(".")
        if not sep or not all(keys):
            _usage(f"--set takes KEY.PATH=VALUE, not {pair!r}")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            _usage(f"--set {path}: {text!r} is not a YAML value")
        _put(overlay, keys, value, pair)
    return overlay


def _put(overlay: dict[str, Any], keys: list[str], value: Any, pair: str) -> None:
    node = overlay
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            _usage(f"--set {pair}: {key} already holds a value, not a mapping")
        node = child
    node[keys[-1]] = value


def put_overlay(
    client: httpx.Client, target: dict[str, Any], overlay: dict[str, Any]
) -> list[dict[str, Any]]:
    """PUT the overlay for one agent or a target; exit 2 with the server's reason on a 4xx."""
    agent_ids = target.get("agent_ids", [])
    if len(agent_ids) == 1:
        response = client.put(f"/api/v1/agents/{agent_ids[0]}/config", json={"overlay": overlay})
        refused(response)
        return [response.json()]
    response = client.put("/api/v1/agent-configs", json={"target": target, "overlay": overlay})
    refused(response)
    configs: list[dict[str, Any]] = response.json()
    return configs


def get_configs(client: httpx.Client, agent_ids: list[str]) -> list[dict[str, Any]]:
    """The remote configuration of the named agents (every agent's without names)."""
    if not agent_ids:
        configs: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": 1000}
        while True:
            response = client.get("/api/v1/agent-configs", params=params)
            refused(response)
            configs += response.json()["items"]
            if response.json()["next_cursor"] is None:
                return configs
            params["cursor"] = response.json()["next_cursor"]
    out = []
    for agent_id in agent_ids:
        response = client.get(f"/api/v1/agents/{agent_id}/config")
        refused(response)
        out.append(response.json())
    return out


def config_table(configs: list[dict[str, Any]], *, title: str) -> Table:
    """One row per agent: state, desired version and overlay, applied version, refusal."""
    import json

    from rich.table import Table
    from rich.text import Text

    table = Table(title=title)
    for column in ("agent", "state", "desired", "overlay", "applied", "refused"):
        table.add_column(column)
    for config in configs:
        desired, reported = config["desired"] or {}, config["reported"] or {}
        # Text, not markup: an overlay and a refusal may hold brackets.
        table.add_row(
            Text(config["agent_id"]),
            Text(config["state"], style=STATE_STYLE.get(config["state"], "")),
            str(desired.get("version", "-")),
            Text(json.dumps(desired.get("overlay", {}), sort_keys=True)),
            str(reported.get("applied_version") or "-"),
            Text(reported.get("refused", "")),
        )
    return table


def _print(table: Table) -> None:
    from rich.console import Console

    Console().print(table)


def _usage(message: str) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(2)
