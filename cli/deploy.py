"""`aiot deploy MODEL VERSION --pipeline P`: roll a registered version out, optionally watch it.

Talks to the cloud's REST API (``POST /api/v1/deployments``). With ``--wait`` it polls the
deployment and shows each agent's state until it ends: exit 0 when it succeeded, 1 when it
halted or was cancelled, 2 when the API refused the request (the reason is printed).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.models import DEFAULT_API, api_headers, refused

if TYPE_CHECKING:
    import httpx
    from rich.table import Table

ENDED = ("succeeded", "halted", "cancelled", "discarded")
STATE_STYLE = {
    "pending": "dim",
    "updating": "yellow",
    "healthy": "green",
    "failed": "red",
    "rolled_back": "red",
    "cancelled": "dim",
}


QualityGateOption = Annotated[
    bool,
    typer.Option(
        help="Judge the canary's model quality (alarm rate and time in alarm against the "
        "agents still on the old version) before the rest update, not only its errors."
    ),
]
ShadowOption = Annotated[
    bool,
    typer.Option(
        help="Run the version in shadow first: beside the serving model, never acting; it "
        "is promoted into the canary, or discarded, when the shadow window ends."
    ),
]
ShadowShareOption = Annotated[
    float, typer.Option(min=0.0, max=1.0, help="Share of the inputs shadowed (--shadow).")
]
ShadowWindowOption = Annotated[
    float, typer.Option(min=0.0, help="Seconds each agent shadows (--shadow).")
]
PromoteAgreementOption = Annotated[
    float | None,
    typer.Option(
        min=0.0, max=1.0,
        help="Promote automatically if the labels agree on at least this share, else "
        "discard (--shadow; without it an operator decides).",
    ),
]  # fmt: skip


def deploy(
    model: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[str, typer.Argument(help="Registered version to roll out.")],
    pipeline: Annotated[str, typer.Option(help="Pipeline that should run it.")],
    canary: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of the targets updated first (0-1].")
    ] = 0.2,
    healthy_s: Annotated[
        float, typer.Option(min=0.0, help="Seconds the canary must stay healthy before the rest.")
    ] = 60.0,
    agent_timeout_s: Annotated[
        float, typer.Option(min=0.0, help="Seconds an agent may take to run the version.")
    ] = 600.0,
    quality_gate: QualityGateOption = True,
    shadow: ShadowOption = False,
    shadow_share: ShadowShareOption = 1.0,
    shadow_window_s: ShadowWindowOption = 300.0,
    promote_agreement: PromoteAgreementOption = None,
    agent: Annotated[
        list[str] | None, typer.Option(help="Target agent id (repeat for several).")
    ] = None,
    label: Annotated[
        list[str] | None, typer.Option(help="Target agents with label KEY=VALUE (repeatable).")
    ] = None,
    api: Annotated[str, typer.Option(envvar="AIOT_API_URL", help="Cloud API base URL.")] = (
        DEFAULT_API
    ),
    api_key: Annotated[
        str | None, typer.Option(envvar="AIOT_API_KEY", help="Sent as a Bearer token.")
    ] = None,
    wait: Annotated[bool, typer.Option(help="Watch the deployment until it ends.")] = False,
    poll_s: Annotated[float, typer.Option(min=0.05, help="Seconds between polls (--wait).")] = 1.0,
) -> None:
    """Roll MODEL VERSION out to PIPELINE of some agents: a canary first, then the rest
    (with --shadow, a shadow evaluation on every target before the canary)."""
    import httpx

    body = deployment_request(
        model=model, version=version, pipeline=pipeline, agents=agent or [],
        labels=label or [], canary=canary, healthy_s=healthy_s, agent_timeout_s=agent_timeout_s,
        quality_gate=quality_gate,
        shadow=shadow_strategy(shadow, shadow_share, shadow_window_s, promote_agreement),
    )  # fmt: skip
    headers = api_headers(api_key)
    with httpx.Client(base_url=api, timeout=30.0, headers=headers) as client:
        try:
            created = create(client, body)
            typer.echo(
                f"deployment {created['id']}: {model} {version} to {pipeline} on "
                f"{len(created['agents'])} agents ({created['state']})"
            )
            if not wait:
                return
            final = watch(client, created["id"], poll_s=poll_s)
        except httpx.HTTPError as exc:
            typer.echo(f"cannot reach the cloud API at {api}: {exc}", err=True)
            raise typer.Exit(1) from None
    typer.echo(f"deployment {final['id']} {final['state']}" + _because(final["reason"]))
    raise typer.Exit(0 if final["state"] == "succeeded" else 1)


def deployment_request(
    *, model: str, version: str, pipeline: str, agents: list[str], labels: list[str],
    canary: float, healthy_s: float, agent_timeout_s: float, quality_gate: bool = True,
    shadow: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The JSON body of ``POST /api/v1/deployments``; exit 2 for a target given wrong."""
    return {
        "model": model,
        "version": version,
        "pipeline": pipeline,
        "target": target_of(agents, labels),
        "strategy": {
            "canary_fraction": canary,
            "canary_healthy_s": healthy_s,
            "agent_timeout_s": agent_timeout_s,
            # Absent: the server's default gate; null: errors only.
            **({} if quality_gate else {"quality": None}),
            **({} if shadow is None else {"kind": "shadow", "shadow": shadow}),
        },
    }


def shadow_strategy(
    shadow: bool, share: float, window_s: float, agreement: float | None
) -> dict[str, Any] | None:
    """The strategy's ``shadow`` part (None: no shadow); exit 2 for shadow options without
    ``--shadow``."""
    if not shadow:
        if agreement is not None:
            typer.echo("--promote-agreement needs --shadow", err=True)
            raise typer.Exit(2)
        return None
    rule = None if agreement is None else {"agreement_min": agreement}
    return {"share": share, "window_s": window_s, "promote_if": rule}


def target_of(agents: list[str], labels: list[str]) -> dict[str, Any]:
    """A ``DeploymentTarget`` from ``--agent ID ...`` or ``--label KEY=VALUE ...``; exit 2
    for a target given wrong."""
    if bool(agents) == bool(labels):
        typer.echo("give the target as --agent ID ... or as --label KEY=VALUE ...", err=True)
        raise typer.Exit(2)
    if agents:
        return {"agent_ids": agents}
    pairs = [item.partition("=") for item in labels]
    bad = [key + sep + value for key, sep, value in pairs if not key or not sep or not value]
    if bad:
        typer.echo(f"labels must be KEY=VALUE, not {', '.join(bad)}", err=True)
        raise typer.Exit(2)
    return {"labels": {key: value for key, _, value in pairs}}


def create(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    """POST the deployment; exit code 2 with the server's reason on a 4xx."""
    response = client.post("/api/v1/deployments", json=body)
    refused(response)
    created: dict[str, Any] = response.json()
    return created


def watch(
    client: httpx.Client, deployment_id: int, *, poll_s: float, max_polls: int | None = None
) -> dict[str, Any]:
    """Poll the deployment, showing every agent's state, until it ends (or ``max_polls``)."""
    from rich.console import Console
    from rich.live import Live

    console = Console()
    current = _get(client, deployment_id)
    polls = 1
    with Live(agent_table(current), console=console, auto_refresh=False) as live:
        while current["state"] not in ENDED and (max_polls is None or polls < max_polls):
            time.sleep(poll_s)
            current = _get(client, deployment_id)
            polls += 1
            live.update(agent_table(current), refresh=True)
    return current


def _get(client: httpx.Client, deployment_id: int) -> dict[str, Any]:
    response = client.get(f"/api/v1/deployments/{deployment_id}")
    refused(response)
    body: dict[str, Any] = response.json()
    return body


def agent_table(deployment: dict[str, Any]) -> Table:
    """One row per agent: phase, state, running version, reason."""
    from rich.table import Table
    from rich.text import Text

    counts = ", ".join(f"{n} {state}" for state, n in deployment["counts"].items() if n)
    table = Table(
        title=f"deployment {deployment['id']}: {deployment['model']} {deployment['version']} "
        f"on {deployment['pipeline']} - {deployment['state']} ({counts})",
        caption=Text(deployment["reason"]) if deployment["reason"] else None,
    )
    for column in ("agent", "phase", "state", "running", "reason"):
        table.add_column(column)
    for agent in deployment["agents"]:
        style = STATE_STYLE.get(agent["state"], "")
        # Text, not markup: a reason comes from an agent and may hold brackets.
        table.add_row(
            Text(agent["agent_id"]),
            agent["phase"],
            Text(agent["state"], style=style),
            Text(agent["running_version"] or "-"),
            Text(agent["reason"]),
        )
    return table


def _because(reason: str) -> str:
    return f": {reason}" if reason else ""
