"""`aiot cloud train` (queue a training job) and `aiot cloud train-worker` (run them).

Both talk to the database directly, as the other operator commands of ``aiot cloud`` do; a
worker also needs the API's data directory (artifacts and the signing key), shared with
the API (a volume in Kubernetes, deploy/k8s/50-train-worker.yaml).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from cli import configure_logging
from cli.signals import stop_event_on_stop_signals
from cli.startup import open_database

log = logging.getLogger(__name__)

DbOption = Annotated[
    str | None, typer.Option("--db", help="SQLAlchemy URL (default: $AIOT_DATABASE_URL or SQLite).")
]
DataDirOption = Annotated[
    Path | None,
    typer.Option(
        help="The API's data directory: artifacts, signing key (default: $AIOT_DATA_DIR)."
    ),
]


def register(app: typer.Typer) -> None:
    """Add the training commands to ``aiot cloud``."""
    app.command()(train)
    app.command("train-worker")(train_worker)


def _json(text: str | None, option: str) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        typer.echo(f"{option}: not JSON ({exc})", err=True)
        raise typer.Exit(2) from None
    if not isinstance(value, dict):
        typer.echo(f"{option}: give a JSON object, e.g. '{{\"seed\": 1}}'", err=True)
        raise typer.Exit(2)
    return value


def train(
    pipeline: Annotated[str, typer.Option(help="The pipeline whose samples train the model.")],
    base_model: Annotated[str, typer.Option(help="The serving model's name.")],
    base_version: Annotated[str, typer.Option(help="The serving version to beat.")],
    trainer: Annotated[str, typer.Option(help="A trainer (vibration-classifier).")],
    version: Annotated[str | None, typer.Option(help="The candidate's version.")] = None,
    agent: Annotated[
        list[str] | None, typer.Option(help="An agent whose samples to use (repeat; default all).")
    ] = None,
    label_source: Annotated[
        list[str] | None, typer.Option(help="A trusted label source: person, cloud, edge (repeat).")
    ] = None,
    options: Annotated[str | None, typer.Option(help="The trainer's options as JSON.")] = None,
    gate: Annotated[str | None, typer.Option(help="The gate as JSON.")] = None,
    db: DbOption = None,
) -> None:
    """Queue a training job; prints its id. Workers (the API's, or `train-worker`) run it."""
    from pydantic import ValidationError

    from cloud_api.config import load_settings
    from cloud_api.db import create_sessionmaker
    from cloud_api.training import jobs
    from cloud_api.training.spec import JobSpec
    from cloud_api.training.trainers import trainer_named
    from shared.errors import AiotError

    selector: dict[str, Any] = {}
    if agent:
        selector["agents"] = agent
    if label_source:
        selector["label_sources"] = label_source
    try:
        spec = JobSpec.model_validate(
            {
                "pipeline": pipeline, "trainer": trainer, "base_model": base_model,
                "base_version": base_version, "version": version, "selector": selector,
                "options": _json(options, "--options"), "gate": _json(gate, "--gate"),
            }
        )  # fmt: skip
        trainer_named(spec.trainer).parse_options(spec.options)
        settings = load_settings(**({"database_url": db} if db else {}))
    except ValidationError as exc:
        error = exc.errors(include_url=False, include_input=False)[0]
        typer.echo(f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}", err=True)
        raise typer.Exit(2) from None
    except AiotError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    engine = open_database(settings.database_url)
    try:
        with create_sessionmaker(engine)() as session:
            row = jobs.create_job(session, spec, created_by="cli")
    except AiotError as exc:  # a candidate version that could never be registered
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    finally:
        engine.dispose()
    typer.echo(row.id)


def train_worker(
    db: DbOption = None,
    data_dir: DataDirOption = None,
    poll_s: Annotated[float, typer.Option(min=0.05, help="Seconds between looks for jobs.")] = 2.0,
    lease_s: Annotated[
        float, typer.Option(min=3, help="A job's lease; renewed every third of it while it runs.")
    ] = 300.0,
    name: Annotated[str | None, typer.Option(help="This worker's name in jobs.")] = None,
) -> None:
    """Run training jobs from the database one at a time until SIGTERM or Ctrl-C."""
    from cloud_api.config import load_settings
    from cloud_api.db import create_sessionmaker
    from cloud_api.registry import FileArtifactStore, load_or_create_signing_key
    from cloud_api.training.worker import TrainingWorker, training_context
    from shared.errors import AiotError

    given: dict[str, Any] = {"database_url": db, "data_dir": data_dir}
    given.update(training_poll_s=poll_s, training_lease_s=lease_s)
    try:
        settings = load_settings(
            **{key: value for key, value in given.items() if value is not None}
        )
        signing_key = load_or_create_signing_key(settings.data_dir)
    except AiotError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    engine = open_database(settings.database_url)
    configure_logging()
    context = training_context(
        settings, sessions=create_sessionmaker(engine),
        store=FileArtifactStore(settings.data_dir / "artifacts"), signing_key=signing_key,
    )  # fmt: skip
    worker = TrainingWorker(context, poll_s=settings.training_poll_s, name=name)
    with stop_event_on_stop_signals() as stop:
        worker.start()
        typer.echo(f"training worker {worker.name} started", err=True)
        stop.wait()
    worker.stop()
    engine.dispose()
    typer.echo(f"training worker {worker.name} stopped", err=True)
