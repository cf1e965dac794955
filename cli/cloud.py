"""`aiot cloud ...`: the API server, stand-alone ingest workers and escalation runners
(credentials: cloud_auth)."""

from __future__ import annotations

import gc
import logging
import os
import shutil
import tempfile
import threading
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli import cloud_auth, configure_logging, training
from cli.signals import stop_event_on_stop_signals
from cli.startup import check_broker_login, ensure_port_free, open_database, wait_for_broker
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
    from prometheus_client import CollectorRegistry

    from cloud_api.config import Settings as CloudSettings
    from cloud_api.ingest.worker import IngestWorker
    from shared.probes import ProbeServer

log = logging.getLogger(__name__)

app = typer.Typer(
    help="The cloud API, its ingest and training workers, API keys and broker credentials.",
    no_args_is_help=True,
)
cloud_auth.register(app)
training.register(app)

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


DEFAULT_INGEST_METRICS_PORT = 9465
DEFAULT_ESCALATION_METRICS_PORT = 9466
MQTT_URL_OPTION = "--mqtt (or $AIOT_MQTT_URL)"
MetricsPortOption = Annotated[
    int,
    typer.Option(
        min=0,
        max=65535,
        help="Port of this worker's /metrics, /livez and /readyz (0: none). Each worker on "
        "one host needs its own.",
    ),
]
MetricsHostOption = Annotated[
    str, typer.Option(help="Address of the metrics port (0.0.0.0 in a container).")
]

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
    """Serve the REST API (and, by default, ingest events from the broker in-process).

    SIGTERM and Ctrl-C stop it the same way: requests in flight finish, the workers stop.
    """
    import uvicorn

    check_https(ssl_certfile, ssl_keyfile)
    tls = broker_settings(mqtt_ca_file, mqtt_cert_file, mqtt_key_file, mqtt_password_file)
    _refuse_workers_with_ingest(workers, ingest)
    settings = _settings(db, mqtt, mqtt_protocol, ingest_enabled=ingest, **tls)
    ensure_port_free(host, port, option="--port")
    # Once here, before logging is set up (Alembic's chatter): a database that does not
    # answer is one line, and workers starting together find the schema up to date.
    open_database(settings.database_url).dispose()
    _check_logins(settings)
    configure_logging()
    served: dict[str, Any] = {"host": host, "port": port, "log_level": "info"}
    served.update(ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile)
    # uvicorn stops on both signals, then raises the one it caught again: ours only notes it.
    with stop_event_on_stop_signals(announce=False):
        if workers == 1:
            from cloud_api.main import create_serving_app

            uvicorn.run(create_serving_app(settings), **served)
        else:
            _serve_workers(settings, workers, served)
    typer.echo("stopped")


def _refuse_workers_with_ingest(workers: int, ingest: bool) -> None:
    if workers > 1 and ingest:
        # A per-worker ingest would need a client id per process; ids that change on every
        # restart leave persistent sessions behind on the broker, still queueing messages.
        typer.echo(
            "--workers > 1 needs --no-ingest: run `aiot cloud ingest --share-group ingest` "
            "processes beside the API",
            err=True,
        )
        raise typer.Exit(2)


def _check_logins(settings: CloudSettings) -> None:
    """The broker logins the API's workers will use (ingest's, the rollout's), each once."""
    logins = {}
    if settings.rollout_enabled:
        logins[settings.control_broker()] = "$AIOT_MQTT_CONTROL_URL (else --mqtt)"
    if settings.ingest_enabled:
        logins[settings.ingest_broker()] = MQTT_URL_OPTION
    for broker, option in logins.items():
        check_broker_login(broker, settings.mqtt_protocol, tls=settings.mqtt_tls(), option=option)


def _serve_workers(settings: CloudSettings, workers: int, served: dict[str, Any]) -> None:
    """uvicorn's worker processes, each building its app from the environment; their
    metrics summed through prometheus-client's multiprocess directory."""
    import uvicorn

    from cloud_api.metrics import MULTIPROC_ENV

    for key, variable in _SERVE_ENV.items():
        if getattr(settings, key) is not None:
            os.environ[variable] = str(getattr(settings, key))
    os.environ["AIOT_INGEST_ENABLED"] = "false"
    own_dir = None
    if not os.environ.get(MULTIPROC_ENV):
        own_dir = tempfile.mkdtemp(prefix="aiot-metrics-")
        os.environ[MULTIPROC_ENV] = own_dir
    try:
        uvicorn.run("cloud_api.main:create_app_from_env", factory=True, workers=workers, **served)
    finally:
        if own_dir is not None:
            shutil.rmtree(own_dir, ignore_errors=True)


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
    metrics_port: MetricsPortOption = DEFAULT_INGEST_METRICS_PORT,
    metrics_host: MetricsHostOption = "127.0.0.1",
) -> None:
    """Run an ingest worker as its own process until SIGTERM or Ctrl-C."""
    from prometheus_client import CollectorRegistry

    from cloud_api.ingest.worker import IngestWorker
    from cloud_api.metrics import IngestMetrics

    tls = broker_settings(mqtt_ca_file, mqtt_cert_file, mqtt_key_file, mqtt_password_file)
    settings = _settings(db, mqtt, mqtt_protocol, ingest_share_group=share_group, **tls)
    ensure_port_free(metrics_host, metrics_port, option="--metrics-port")
    engine = open_database(settings.database_url)
    configure_logging()
    worker_id = client_id or settings.ingest_client_id
    registry = CollectorRegistry(auto_describe=True)
    worker = IngestWorker(
        engine=engine,
        mqtt_url=settings.ingest_broker(),
        tls=settings.mqtt_tls(),
        protocol=settings.mqtt_protocol,
        client_id=worker_id,
        share_group=settings.ingest_share_group,
        batch_max=settings.ingest_batch_max,
        flush_s=settings.ingest_flush_s,
        observer=IngestMetrics(registry).observe_batch,
    )
    exporter = _probes(worker, registry, metrics_host, metrics_port)
    with stop_event_on_stop_signals() as stop:
        if metrics_port:
            exporter.start()
        gc.freeze()  # start-up objects out of the collector's walks (parse: 9.1 -> 6.7 us/event)
        worker.start()
        try:
            if _subscribed(worker, settings.mqtt_url, stop):
                log.info("ingest worker %s subscribed (share group: %s)", worker_id, share_group)
            stop.wait()
        finally:  # in order: no new messages, the batch in hand committed, then the rest
            worker.stop()
            exporter.stop()
            engine.dispose()
    _log_share(worker_id, worker)
    typer.echo("stopped")


def _log_share(worker_id: str, worker: IngestWorker) -> None:
    """One line a supervisor (or the scale-out test) can read to see this worker's share."""
    log.info(
        "ingest worker %s stopped: messages=%d events_stored=%d duplicates=%d dead_letters=%d",
        worker_id,
        worker.messages,
        worker.events_stored,
        worker.duplicates,
        worker.dead_letters,
    )


def _probes(worker: IngestWorker, registry: CollectorRegistry, host: str, port: int) -> ProbeServer:
    """The worker's /metrics; live while its writer runs, ready while it is subscribed."""
    from shared.probes import ProbeServer

    return ProbeServer(
        registry,
        host=host,
        port=port,
        live=lambda: None if worker.alive else "the writer thread has stopped",
        ready=lambda: None if worker.connected else "not subscribed to the broker",
    )


def _subscribed(worker: IngestWorker, mqtt_url: str, stop: threading.Event) -> bool:
    """Whether the worker subscribed before a stop (or a timeout: it keeps retrying); exits
    with one line if the broker refuses the login."""
    from cloud_api.config import parse_mqtt_url

    broker = parse_mqtt_url(mqtt_url)
    return wait_for_broker(
        lambda: worker.connected,
        lambda: worker.refusal,
        where=f"{broker.host}:{broker.port}",
        option=MQTT_URL_OPTION,
        stop=stop.is_set,
    )


@app.command()
def escalations(
    db: DbOption = None,
    mqtt: MqttOption = None,
    mqtt_protocol: ProtocolOption = None,
    client_id: Annotated[str, typer.Option(help="MQTT client id (unique per runner).")] = "",
    share_group: Annotated[
        str | None, typer.Option(help="MQTT 5 shared subscription group, to run several runners.")
    ] = None,
    mqtt_ca_file: MqttCaFile = None,
    mqtt_cert_file: MqttCertFile = None,
    mqtt_key_file: MqttKeyFile = None,
    mqtt_password_file: MqttPasswordFile = None,
    metrics_port: MetricsPortOption = DEFAULT_ESCALATION_METRICS_PORT,
    metrics_host: MetricsHostOption = "127.0.0.1",
) -> None:
    """Run the cloud model runner (answers escalations) as its own process until SIGTERM or
    Ctrl-C; the models come from the artifact store under $AIOT_DATA_DIR."""
    from prometheus_client import CollectorRegistry

    from cloud_api.escalation.metrics import EscalationMetrics
    from cloud_api.escalation.worker import escalation_worker
    from cloud_api.registry import FileArtifactStore
    from shared.probes import ProbeServer

    tls = broker_settings(mqtt_ca_file, mqtt_cert_file, mqtt_key_file, mqtt_password_file)
    more: dict[str, object] = {"escalation_share_group": share_group, **tls}
    if client_id:
        more["escalation_client_id"] = client_id
    settings = _settings(db, mqtt, mqtt_protocol, **more)
    ensure_port_free(metrics_host, metrics_port, option="--metrics-port")
    engine = open_database(settings.database_url)
    configure_logging()
    registry = CollectorRegistry(auto_describe=True)
    artifacts = FileArtifactStore(settings.data_dir / "artifacts")
    observer = EscalationMetrics(registry).observe
    runner = escalation_worker(settings, engine, artifacts, observer=observer)
    exporter = ProbeServer(
        registry, host=metrics_host, port=metrics_port,
        live=lambda: None if runner.alive else "the runner thread has stopped",
        ready=lambda: None if runner.connected else "not subscribed to the broker",
    )  # fmt: skip
    with stop_event_on_stop_signals() as stop:
        if metrics_port:
            exporter.start()
        runner.start()
        try:
            stop.wait()
        finally:  # the batch in hand answered, then disconnected
            runner.stop()
            exporter.stop()
            engine.dispose()
    totals = runner.totals
    log.info(
        "escalation runner stopped: answered=%d refused=%d repeats=%d dead_letters=%d",
        *(totals.answered, totals.refused, totals.repeats, totals.dead_letters),
    )
    typer.echo("stopped")
