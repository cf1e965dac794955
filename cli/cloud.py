"""`aiot cloud ...`: the API server and stand-alone ingest workers (credentials: cloud_auth)."""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli import cloud_auth, configure_logging
from cli.tls_options import (
    MqttCaFile,
    MqttCertFile,
    MqttKeyFile,
    MqttPasswordFile,
    SslCertFile,
    SslKeyFile,
    broker_settings,
    check_https,
)

if TYPE_CHECKING:
    from cloud_api.config import Settings as CloudSettings

log = logging.getLogger(__name__)

app = typer.Typer(
    help="The cloud API, its ingest workers, API keys and broker credentials.",
    no_args_is_help=True,
)
cloud_auth.register(app)

DbOption = Annotated[
    str | None, typer.Option("--db", help="SQLAlchemy URL (default: $AIOT_DATABASE_URL or SQLite).")
]
MqttOption = Annotated[
    str | None,
    typer.Option("--mqtt", help="Broker URL mqtt://host:port (default: $AIOT_MQTT_URL)."),
]
ProtocolOption = Annotated[
    str | None, typer.Option("--mqtt-protocol", help="MQTT protocol: 5 or 3.1.1.")
]


def _settings(
    db: str | None, mqtt: str | None, protocol: str | None, **more: object
) -> CloudSettings:
    """Settings from the environment, overridden by the options given; errors exit with 2."""
    from cloud_api.config import load_settings
    from shared.errors import ConfigError

    given = {"database_url": db, "mqtt_url": mqtt, "mqtt_protocol": protocol, **more}
    try:
        return load_settings(**{key: value for key, value in given.items() if value is not None})
    except ConfigError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(2) from None


# Each option of `serve` that becomes an AIOT_* variable for uvicorn's worker processes.
_SERVE_ENV = {
    "database_url": "AIOT_DATABASE_URL",
    "mqtt_url": "AIOT_MQTT_URL",
    "mqtt_protocol": "AIOT_MQTT_PROTOCOL",
    "mqtt_ca_file": "AIOT_MQTT_CA_FILE",
    "mqtt_cert_file": "AIOT_MQTT_CERT_FILE",
    "mqtt_key_file": "AIOT_MQTT_KEY_FILE",
    "mqtt_password_file": "AIOT_MQTT_PASSWORD_FILE",
}


@app.command()
def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    db: DbOption = None,
    mqtt: MqttOption = None,
    mqtt_protocol: ProtocolOption = None,
    ingest: Annotated[
        bool,
        typer.Option(
            help="Run one ingest worker in the API process. With --workers > 1 this must be "
            "--no-ingest: run `aiot cloud ingest --share-group ...` processes beside the API."
        ),
    ] = True,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="API worker processes (uvicorn). More than one needs --no-ingest, so that "
            "ingest runs as its own processes with stable client ids.",
        ),
    ] = 1,
    mqtt_ca_file: MqttCaFile = None,
    mqtt_cert_file: MqttCertFile = None,
    mqtt_key_file: MqttKeyFile = None,
    mqtt_password_file: MqttPasswordFile = None,
    ssl_certfile: SslCertFile = None,
    ssl_keyfile: SslKeyFile = None,
) -> None:
    """Serve the REST API (and, by default, ingest events from the broker in-process)."""
    import uvicorn

    check_https(ssl_certfile, ssl_keyfile)
    tls = broker_settings(mqtt_ca_file, mqtt_cert_file, mqtt_key_file, mqtt_password_file)
    if workers > 1 and ingest:
        # A per-worker ingest would need a client id per process; ids that change on every
        # restart leave persistent sessions behind on the broker, still queueing messages.
        typer.echo(
            "--workers > 1 needs --no-ingest: run `aiot cloud ingest --share-group ingest` "
            "processes beside the API",
            err=True,
        )
        raise typer.Exit(2)
    settings = _settings(db, mqtt, mqtt_protocol, ingest_enabled=ingest, **tls)
    configure_logging()
    served: dict[str, Any] = {"host": host, "port": port, "log_level": "info"}
    served.update(ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile)
    if workers == 1:
        from cloud_api.main import create_serving_app

        uvicorn.run(create_serving_app(settings), **served)
        return
    _serve_workers(settings, workers, served)


def _serve_workers(settings: CloudSettings, workers: int, served: dict[str, Any]) -> None:
    """uvicorn with ``workers`` processes, each building its app from the environment."""
    import uvicorn

    from cloud_api.db import create_db_engine, migrate

    # Once here, so that the workers starting together find the schema up to date.
    engine = create_db_engine(settings.database_url)
    migrate(engine)
    engine.dispose()
    # Worker processes build their own app from the environment: hand the options down there.
    for key, variable in _SERVE_ENV.items():
        if getattr(settings, key) is not None:
            os.environ[variable] = str(getattr(settings, key))
    os.environ["AIOT_INGEST_ENABLED"] = "false"
    uvicorn.run("cloud_api.main:create_app_from_env", factory=True, workers=workers, **served)


@app.command()
def ingest(
    db: DbOption = None,
    mqtt: MqttOption = None,
    mqtt_protocol: ProtocolOption = None,
    client_id: Annotated[str, typer.Option(help="MQTT client id (unique per worker).")] = "",
    share_group: Annotated[
        str | None, typer.Option(help="MQTT 5 shared subscription group, to run several workers.")
    ] = None,
    mqtt_ca_file: MqttCaFile = None,
    mqtt_cert_file: MqttCertFile = None,
    mqtt_key_file: MqttKeyFile = None,
    mqtt_password_file: MqttPasswordFile = None,
) -> None:
    """Run an ingest worker as its own process until SIGTERM or Ctrl-C."""
    from cloud_api.db import create_db_engine, migrate
    from cloud_api.ingest.worker import IngestWorker

    tls = broker_settings(mqtt_ca_file, mqtt_cert_file, mqtt_key_file, mqtt_password_file)
    settings = _settings(db, mqtt, mqtt_protocol, ingest_share_group=share_group, **tls)
    configure_logging()
    engine = create_db_engine(settings.database_url)
    migrate(engine)
    worker_id = client_id or settings.ingest_client_id
    worker = IngestWorker(
        engine=engine,
        mqtt_url=settings.ingest_broker(),
        tls=settings.mqtt_tls(),
        protocol=settings.mqtt_protocol,
        client_id=worker_id,
        share_group=settings.ingest_share_group,
        batch_max=settings.ingest_batch_max,
        flush_s=settings.ingest_flush_s,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    worker.start()
    while not stop.is_set() and not worker.connected:
        stop.wait(0.1)
    if worker.connected:
        log.info("ingest worker %s subscribed (share group: %s)", worker_id, share_group)
    stop.wait()
    worker.stop()
    engine.dispose()
    # One line a supervisor (or the scale-out test) can read to see this worker's share.
    log.info(
        "ingest worker %s stopped: messages=%d events_stored=%d duplicates=%d dead_letters=%d",
        worker_id,
        worker.messages,
        worker.events_stored,
        worker.duplicates,
        worker.dead_letters,
    )
