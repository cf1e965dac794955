"""`aiot models ...`: build the models the platform ships with, push versions to the registry,
set the cloud model of each pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    import httpx

app = typer.Typer(help="Models: build the shipped ones, push versions.", no_args_is_help=True)

DEFAULT_API = "http://127.0.0.1:8000"


@app.command()
def build(
    out: Annotated[
        Path | None, typer.Option(help="Target dir (default: the models package).")
    ] = None,
    if_missing: Annotated[bool, typer.Option(help="Only build what is missing or stale.")] = False,
) -> None:
    """Train and export the shipped ONNX models and write their manifest (deterministic)."""
    import models
    from models.build import build_all, ensure_built

    target = out or Path(models.__file__).resolve().parent
    manifest = ensure_built(target) if if_missing else build_all(target)
    typer.echo(f"models ready: {manifest}")


@app.command("fit-normal")
def fit_normal(
    csv: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Normal operation.")],
    name: Annotated[str, typer.Option(help="Model name (the pipeline's model.name).")],
    window: Annotated[int, typer.Option(help="Readings per window (per channel).")],
    version: Annotated[str, typer.Option(help="Model version.")] = "1.0.0",
    hop: Annotated[
        int | None, typer.Option(help="Readings between windows (default: window).")
    ] = None,
    timestamp: Annotated[str | None, typer.Option(help="The time column.")] = None,
    rate_hz: Annotated[float | None, typer.Option(help="Rows per second (no time column).")] = None,
    channels: Annotated[
        str | None, typer.Option(help="Comma-separated columns (default: all).")
    ] = None,
    false_alarm_rate: Annotated[float, typer.Option(help="Calibrated on held-out normal.")] = 0.005,
    out: Annotated[Path, typer.Option(help="Directory for the model and manifest.json.")] = Path(
        "."
    ),
) -> None:
    """Learn one machine's normal from a CSV of normal operation; write an ONNX scorer with
    its calibrated threshold into OUT (model file plus an entry in OUT/manifest.json)."""
    from pydantic import ValidationError

    from edge_agent.sources.csv import CsvSourceConfig
    from models.normal import fit_normal as fit
    from models.normal_files import read_normal_csv, write_model
    from models.window_features import WindowSpec
    from shared.errors import ConfigError, ModelError

    try:
        source = CsvSourceConfig(
            type="csv",
            path=csv,
            timestamp=timestamp,
            rate_hz=rate_hz,
            channels=channels.split(",") if channels else None,
        )
        columns, values, rate = read_normal_csv(source)
        spec = WindowSpec(columns, size=window, hop=hop or window, rate_hz=rate)
        result = fit(values, spec, name=name, version=version, false_alarm_rate=false_alarm_rate)
        path, _ = write_model(result, out)
    except (ValidationError, ConfigError, ModelError) as exc:
        typer.echo(f"cannot fit: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"wrote {path} ({len(result.model)} bytes) and its entry in {out / 'manifest.json'}")
    typer.echo(f"{result.windows} normal windows of {window} readings x {len(columns)} channels")
    typer.echo(f"threshold {result.threshold:.4f}; {result.reason}")


@app.command()
def push(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="The ONNX file.")],
    name: Annotated[str, typer.Option(help="Model name.")],
    version: Annotated[str, typer.Option(help="Version to register (never replaced).")],
    api: Annotated[str, typer.Option(envvar="AIOT_API_URL", help="Cloud API base URL.")] = (
        DEFAULT_API
    ),
    task: Annotated[str, typer.Option(help="Pipeline task the model serves.")] = "",
    labels: Annotated[str, typer.Option(help="Comma-separated output labels.")] = "",
    api_key: Annotated[
        str | None,
        typer.Option(envvar="AIOT_API_KEY", help="An API key with scope operate (or admin)."),
    ] = None,
) -> None:
    """Register FILE in the cloud's model registry; prints its sha256 and signing key id."""
    import httpx

    timeout = httpx.Timeout(30.0, write=300.0)
    with httpx.Client(base_url=api, timeout=timeout, headers=api_headers(api_key)) as client:
        try:
            record = push_model(client, file, name=name, version=version, task=task, labels=labels)
        except httpx.HTTPError as exc:
            typer.echo(f"cannot reach the cloud API at {api}: {exc}", err=True)
            raise typer.Exit(1) from None
    manifest = record["signed_manifest"]
    typer.echo(f"registered {name} {version}")
    typer.echo(f"sha256 {record['sha256']}")
    typer.echo(f"signed by key {manifest['key_id']}")


def push_model(
    client: httpx.Client, file: Path, *, name: str, version: str, task: str, labels: str
) -> dict[str, Any]:
    """POST the file (streamed from disk); exit code 2 with the server's reason on a 4xx."""
    with file.open("rb") as content:
        response = client.post(
            f"/api/v1/models/{name}/versions",
            data={"version": version, "task": task, "labels": labels},
            files={"file": (file.name, content, "application/octet-stream")},
        )
    refused(response)
    record: dict[str, Any] = response.json()
    return record


def api_headers(api_key: str | None) -> dict[str, str]:
    """``Authorization: Bearer <key>`` when an API key is given (``--api-key``/AIOT_API_KEY)."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def refused(response: httpx.Response) -> None:
    """Exit code 2 with the server's reason on a 4xx; raise for a 5xx."""
    if 400 <= response.status_code < 500:
        typer.echo(f"refused ({response.status_code}): {_reason(response)}", err=True)
        raise typer.Exit(2)
    response.raise_for_status()


def _reason(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text
    detail = body.get("detail") if isinstance(body, dict) else body
    return detail if isinstance(detail, str) else str(detail)


ApiOption = Annotated[str, typer.Option(envvar="AIOT_API_URL", help="Cloud API base URL.")]
ApiKeyOption = Annotated[
    str | None,
    typer.Option(envvar="AIOT_API_KEY", help="An API key (operate to set, read to list)."),
]


@app.command("cloud")
def cloud(
    pipeline: Annotated[str | None, typer.Argument(help="Set this pipeline's cloud model.")] = None,
    model: Annotated[str | None, typer.Option(help="Registered model name.")] = None,
    version: Annotated[str | None, typer.Option(help="Its version.")] = None,
    normal_label: Annotated[
        str | None, typer.Option(help="A classifier's healthy label (score = 1 - p(normal)).")
    ] = None,
    api: ApiOption = DEFAULT_API,
    api_key: ApiKeyOption = None,
) -> None:
    """The model that answers each pipeline's escalations: list them, or with PIPELINE
    --model --version set one."""
    import httpx

    with httpx.Client(base_url=api, timeout=30.0, headers=api_headers(api_key)) as client:
        try:
            rows = set_cloud_model(client, pipeline, model, version, normal_label)
        except httpx.HTTPError as exc:
            typer.echo(f"cannot reach the cloud API at {api}: {exc}", err=True)
            raise typer.Exit(1) from None
    for row in rows:
        normal = f" (normal: {row['normal_label']})" if row["normal_label"] else ""
        typer.echo(f"{row['pipeline']}: {row['model']} {row['version']}{normal}")


def set_cloud_model(
    client: httpx.Client,
    pipeline: str | None,
    model: str | None,
    version: str | None,
    normal_label: str | None,
) -> list[dict[str, Any]]:
    """Every cloud model, or (with ``pipeline``) the one just set; exit 2 on a refusal."""
    if pipeline is None:
        response = client.get("/api/v1/cloud-models")
        refused(response)
        listed: list[dict[str, Any]] = response.json()
        return listed
    if model is None or version is None:
        typer.echo("setting a pipeline's cloud model needs --model and --version", err=True)
        raise typer.Exit(2)
    body = {"model": model, "version": version, "normal_label": normal_label}
    response = client.put(f"/api/v1/cloud-models/{pipeline}", json=body)
    refused(response)
    return [response.json()]
