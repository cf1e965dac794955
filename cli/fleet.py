"""`aiot agents` and `aiot events [--follow]`: the fleet from the terminal, over the REST API.

They are clients of the cloud's public API (base URL and API key as options or
``$AIOT_API_URL`` / ``$AIOT_API_KEY``), with the same filters as ``GET /api/v1/agents`` and
``GET /api/v1/events``; the API checks them and its refusal is shown as it gives it.
``--follow`` reads the live stream (``GET /api/v1/events/stream``, Server-Sent Events) and
resumes after a lost connection from the last event shown (``Last-Event-ID``).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from cli.signals import interrupt_on_stop_signals

if TYPE_CHECKING:
    import httpx

ApiUrl = Annotated[
    str, typer.Option("--api-url", envvar="AIOT_API_URL", help="The cloud API's base URL.")
]
ApiKey = Annotated[
    str,
    typer.Option("--api-key", envvar="AIOT_API_KEY", help="An API key with the read scope."),
]
Filter = Annotated[str | None, typer.Option(show_default=False)]
PAGE = 500
DEFAULT_LIMIT = 50
RETRY_S = 2.0
EVENT_COLUMNS = ("ts", "agent", "pipeline", "kind", "state", "label", "score", "model")
EVENT_WIDTHS = (23, 20, 20, 9, 6, 20, 6, 28)


def _refuse(message: str, fix: str) -> NoReturn:
    typer.echo(f"{message}: {fix}", err=True)
    raise typer.Exit(2)


def _client(api_url: str, api_key: str) -> httpx.Client:
    import httpx

    if not api_key:
        _refuse("no API key", "pass --api-key or set $AIOT_API_KEY (aiot cloud create-key)")
    headers = {"Authorization": f"Bearer {api_key}"}
    return httpx.Client(base_url=api_url.rstrip("/"), headers=headers, timeout=30)


def _answer(response: httpx.Response) -> Any:
    """The JSON body of a 2xx; anything else exits with the API's own reason."""
    if response.is_success:
        return response.json()
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    if isinstance(detail, list):  # 422: one issue per parameter
        detail = "; ".join(f"{'.'.join(map(str, i['loc']))}: {i['msg']}" for i in detail)
    if response.status_code in (401, 403):
        _refuse(f"the API refused the key ({response.status_code}: {detail})",
                "check --api-key or $AIOT_API_KEY (it needs the read scope)")  # fmt: skip
    _refuse(f"the API refused the request ({response.status_code}: {detail})",
            "check the options")  # fmt: skip


def _get(client: httpx.Client, path: str, params: dict[str, Any] | None = None) -> Any:
    import httpx

    try:
        response = client.get(path, params=params)
    except httpx.HTTPError as exc:
        _refuse(f"cannot reach the cloud API at {client.base_url} ({exc})",
                "check --api-url or $AIOT_API_URL, and that `aiot cloud serve` runs")  # fmt: skip
    return _answer(response)


def agents(
    api_url: ApiUrl = "http://127.0.0.1:8000",
    api_key: ApiKey = "",
) -> None:
    """Every agent: online, or offline and why; what it runs; its outbox."""
    with _client(api_url, api_key) as client:
        rows = _get(client, "/api/v1/agents")
    table = Table(title=f"{len(rows)} agents")
    for column in ("agent", "state", "reason", "last seen", "version", "outbox", "pipelines"):
        table.add_column(column, justify="right" if column == "outbox" else "left")
    for agent in rows:
        state = "[green]online[/]" if agent["state"] == "online" else "[red]offline[/]"
        pipelines = ", ".join(
            f"{p['name']} ({p['model']['name']} {p['model']['version']})"
            if p.get("model") else p["name"]
            for p in agent["pipelines"]
        )  # fmt: skip
        table.add_row(
            agent["agent_id"], state, agent["reason"],
            _when(agent["last_seen"], "%Y-%m-%d %H:%M:%S") if agent["last_seen"] else "never",
            agent["agent_version"], str(agent["outbox_depth"]), pipelines,
        )  # fmt: skip
    Console().print(table)


def events(
    api_url: ApiUrl = "http://127.0.0.1:8000",
    api_key: ApiKey = "",
    agent_id: Filter = None,
    pipeline: Filter = None,
    label: Filter = None,
    kind: Filter = None,
    since: Annotated[str | None, typer.Option(help="ISO 8601 with offset, inclusive.")] = None,
    until: Annotated[str | None, typer.Option(help="ISO 8601 with offset, exclusive.")] = None,
    limit: Annotated[
        int, typer.Option(min=1, max=100_000, help="Events to show (not with --follow).")
    ] = DEFAULT_LIMIT,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Show new events as they arrive, from now.")
    ] = False,
) -> None:
    """Events newest first, with the filters of GET /api/v1/events; --follow streams."""
    given = {"agent_id": agent_id, "pipeline": pipeline, "label": label, "kind": kind}
    filters = {key: value for key, value in given.items() if value is not None}
    if follow and (since or until):
        _refuse("--since and --until do not apply to --follow", "the stream starts now")
    if follow and limit != DEFAULT_LIMIT:
        _refuse("--limit does not apply to --follow", "the stream shows every new event")
    console = Console()
    with _client(api_url, api_key) as client:
        if not follow:
            rows = list(_pages(client, {**filters, "since": since, "until": until}, limit))
            table = _event_table(f"{len(rows)} events, newest first")
            for event in rows:
                table.add_row(*_event_cells(event))
            console.print(table)
            return
        with interrupt_on_stop_signals(), contextlib.suppress(KeyboardInterrupt):
            _follow(console, client, filters)
    console.print("stopped")


def _pages(client: httpx.Client, params: dict[str, Any], limit: int) -> Iterator[dict[str, Any]]:
    """Up to ``limit`` events, walking the keyset pages."""
    query = {key: value for key, value in params.items() if value is not None}
    shown = 0
    while shown < limit:
        page = _get(client, "/api/v1/events", {**query, "limit": min(PAGE, limit - shown)})
        for event in page["items"]:
            yield event
            shown += 1
        if page["next_cursor"] is None:
            return
        query["cursor"] = page["next_cursor"]


def _event_table(title: str | None, *, fixed: bool = False, header: bool = True) -> Table:
    """The events' columns; ``fixed`` widths line rows printed one by one up (``--follow``)."""
    table = Table(title=title, show_header=header, box=None if fixed else box.SIMPLE_HEAD)
    for column, width in zip(EVENT_COLUMNS, EVENT_WIDTHS, strict=True):
        table.add_column(
            column,
            width=width if fixed else None,
            no_wrap=True,
            justify="right" if column == "score" else "left",
        )
    return table


def _when(iso: str, layout: str) -> str:
    """An API time (ISO 8601, UTC) as the tables show it."""
    return datetime.fromisoformat(iso).strftime(layout)


def _event_cells(event: dict[str, Any]) -> tuple[str, ...]:
    return (
        _when(event["ts"], "%Y-%m-%d %H:%M:%S.%f")[:-3], event["agent_id"], event["pipeline"],
        event["kind"], event["state"],
        event["label"], f"{event['score']:.2f}", f"{event['model_name']} {event['model_version']}",
    )  # fmt: skip


def _follow(console: Console, client: httpx.Client, filters: dict[str, str]) -> None:
    """Print each streamed event as a row; reconnect after a lost connection, resuming."""
    import httpx

    last_id: str | None = None
    failing = False
    heading = True
    while True:
        headers = {"Last-Event-ID": last_id} if last_id else {}
        try:
            with client.stream(
                "GET", "/api/v1/events/stream", params=filters, headers=headers, timeout=None
            ) as response:
                if not response.is_success:
                    response.read()
                    _answer(response)
                if heading:  # once the stream is open: what follows is new
                    console.print(_event_table("following new events (Ctrl-C stops)", fixed=True))
                    heading = False
                if failing:
                    console.print("[green]reconnected[/]")
                    failing = False
                for event in _sse_events(response.iter_lines()):
                    row = _event_table(None, fixed=True, header=False)
                    row.add_row(*_event_cells(event))
                    console.print(row)
                    last_id = event["id"]
        except httpx.HTTPError as exc:
            if not failing:
                console.print(f"[red]stream lost ({exc}); reconnecting every {RETRY_S:.0f} s[/]")
                failing = True
        time.sleep(RETRY_S)


def _sse_events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """The ``data`` of each ``event: event`` message of a Server-Sent Events stream."""
    data: list[str] = []
    kind = "message"
    for line in lines:
        if not line:  # a blank line ends a message
            if data and kind == "event":
                yield json.loads("\n".join(data))
            data, kind = [], "message"
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif line.startswith("event:"):
            kind = line[6:].strip()
