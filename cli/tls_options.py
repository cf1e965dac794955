"""The TLS and secret options of `aiot cloud serve`, `ingest` and `broker-config`: the broker's
CA, a client certificate, the password's file, the API's own certificate for HTTPS, and the
files of the broker's TLS listener."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from cloud_api.broker_config import ListenerTls

_FILE = {"exists": True, "dir_okay": False, "readable": True}

MqttCaFile = Annotated[
    Path | None,
    typer.Option("--mqtt-ca-file", help="CA certificate(s) of an mqtts:// broker (PEM).", **_FILE),
]
MqttCertFile = Annotated[
    Path | None,
    typer.Option("--mqtt-cert-file", help="Client certificate for mutual TLS (PEM).", **_FILE),
]
MqttKeyFile = Annotated[
    Path | None,
    typer.Option("--mqtt-key-file", help="The client certificate's key (PEM).", **_FILE),
]
MqttPasswordFile = Annotated[
    Path | None,
    typer.Option(
        "--mqtt-password-file",
        help="A file holding the broker user's password (or $AIOT_MQTT_PASSWORD).",
        **_FILE,
    ),
]
SslCertFile = Annotated[
    Path | None,
    typer.Option("--ssl-certfile", help="Serve HTTPS with this certificate (PEM).", **_FILE),
]
SslKeyFile = Annotated[
    Path | None,
    typer.Option("--ssl-keyfile", help="The HTTPS certificate's key (PEM).", **_FILE),
]


def broker_settings(
    ca_file: Path | None, cert_file: Path | None, key_file: Path | None, password_file: Path | None
) -> dict[str, object]:
    """The cloud settings these options give (those left out come from the environment)."""
    given = {
        "mqtt_ca_file": ca_file,
        "mqtt_cert_file": cert_file,
        "mqtt_key_file": key_file,
        "mqtt_password_file": password_file,
    }
    return {key: value for key, value in given.items() if value is not None}


def check_https(certfile: Path | None, keyfile: Path | None) -> None:
    """Exit 2 unless both HTTPS files or neither are given."""
    if (certfile is None) != (keyfile is None):
        typer.echo("give --ssl-certfile and --ssl-keyfile together", err=True)
        raise typer.Exit(2)


ListenerFile = Annotated[
    Path | None,
    typer.Option(help="A TLS file of the broker's listener (PEM), as the broker sees it."),
]


def listener_tls(
    cafile: Path | None, certfile: Path | None, keyfile: Path | None, require_certificate: bool
) -> ListenerTls | None:
    """broker-config's TLS listener: all three files or none (exit 2 otherwise)."""
    from cloud_api.broker_config import ListenerTls

    given = [cafile, certfile, keyfile]
    if all(path is None for path in given) and not require_certificate:
        return None
    if cafile is None or certfile is None or keyfile is None:
        typer.echo("a TLS listener needs --cafile, --certfile and --keyfile", err=True)
        raise typer.Exit(2)
    return ListenerTls(cafile, certfile, keyfile, require_certificate)
