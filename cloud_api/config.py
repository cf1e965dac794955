"""Settings of the cloud API: one typed tree read from ``AIOT_*`` environment variables.

Broker passwords come from ``AIOT_MQTT_PASSWORD_FILE`` / ``AIOT_MQTT_PASSWORD`` (and the
``CONTROL`` pair for the rollout's broker user); one inside a URL still works, with a warning.
TLS files (``AIOT_MQTT_CA_FILE``, client ``..._CERT_FILE`` and ``..._KEY_FILE``) serve every
``mqtts://`` connection of the cloud.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.errors import ConfigError, ContractError
from shared.tls import TlsFiles, client_context
from shared.urls import MqttUrl
from shared.urls import parse_mqtt_url as shared_parse_mqtt_url

log = logging.getLogger(__name__)

MqttProtocol = Literal["5", "3.1.1"]


class Settings(BaseSettings):
    """What the API and its in-process ingest worker need; validated once at start-up."""

    model_config = SettingsConfigDict(env_prefix="AIOT_", extra="forbid", frozen=True)

    database_url: str = "sqlite:///./data/aiot.db"
    mqtt_url: str = "mqtt://127.0.0.1:1883"
    mqtt_protocol: MqttProtocol = "5"
    mqtt_password: SecretStr | None = Field(
        default=None, description="the ingest broker user's password (instead of the URL's)"
    )
    mqtt_password_file: Path | None = Field(default=None, description="a file holding it")
    mqtt_control_password: SecretStr | None = Field(
        default=None, description="the password of AIOT_MQTT_CONTROL_URL's user"
    )
    mqtt_control_password_file: Path | None = None
    mqtt_ca_file: Path | None = Field(
        default=None, description="PEM CA certificate(s) of mqtts:// brokers; unset: the system's"
    )
    mqtt_cert_file: Path | None = Field(default=None, description="client certificate (mTLS)")
    mqtt_key_file: Path | None = Field(default=None, description="its key (PEM, no passphrase)")
    mqtt_tls_insecure: bool = Field(
        default=False, description="verify no broker certificate (a lab only; warned about)"
    )
    ingest_enabled: bool = True
    auth_enabled: bool = Field(
        default=True,
        description="false makes every request an admin: only for a laptop on localhost",
    )
    ingest_client_id: str = Field(default="aiot-cloud-ingest", min_length=1, max_length=64)
    ingest_share_group: str | None = None
    ingest_batch_max: int = Field(default=200, ge=1, le=10_000)
    ingest_flush_s: float = Field(default=0.05, gt=0, le=10)
    ingest_session_expiry_s: int = Field(default=7 * 24 * 3600, ge=0)
    # Rollouts (cloud_api/rollout/): a worker advances deployments every tick and publishes
    # desired states with its own client, on the control broker (default: AIOT_MQTT_URL).
    rollout_enabled: bool = True
    rollout_tick_s: float = Field(default=1.0, gt=0, le=60)
    mqtt_control_url: str | None = None
    rollout_client_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="the rollout worker's MQTT client id; default aiot-rollout-<random>, so "
        "that replicas never take each other's connection",
    )
    # The cloud model runner (cloud_api/escalation/): on the ingest broker, as the ingest user.
    escalation_enabled: bool | None = Field(
        default=None, description="run the runner in the API; default: where ingest runs"
    )
    escalation_client_id: str | None = Field(
        default=None, min_length=1, max_length=64, description="default: <ingest id>-esc"
    )
    escalation_share_group: str | None = None
    escalation_batch_max: int = Field(default=32, ge=1, le=1024)
    escalation_wait_ms: float = Field(default=10.0, ge=0, le=10_000)
    escalation_quota_per_min: float = Field(default=600.0, gt=0)
    escalation_quota_burst: int = Field(default=100, ge=1)
    heartbeat_grace: float = Field(default=3.0, ge=1, le=100)
    data_dir: Path = Path("./data")
    max_model_bytes: int = Field(
        default=200 * 1024 * 1024,
        ge=1,
        description="the largest ONNX file an upload may carry; the upload's request body may "
        "be this plus room for the form around it",
    )
    max_sample_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1,
        description="the largest blob a sample upload may carry (a window or a JPEG)",
    )
    max_body_bytes: int = Field(
        default=64 * 1024,
        ge=1,
        le=64 * 1024 * 1024,
        description="the largest request body of every other route (JSON); larger bodies get "
        "413, counted while they arrive",
    )
    # The live stream (SSE) polls the database, so any replica can serve any dashboard.
    stream_poll_s: float = Field(default=0.5, gt=0, le=60)
    stream_heartbeat_s: float = Field(default=15.0, gt=0, le=3600)
    stream_page: int = Field(default=500, ge=1, le=10_000)
    stream_max: int = Field(default=100, ge=1, le=100_000)
    stream_recheck_s: float = Field(
        default=2.0,
        gt=0,
        le=60,
        description="how often an open stream checks that its caller's key or credentials are "
        "still valid: a revoked caller's streams end within this long",
    )
    stream_settle_s: float = Field(
        default=1.0,
        ge=0,
        le=60,
        description="events become visible to streams this long after received_at, so that "
        "a batch another ingest process commits late is not skipped by the keyset",
    )

    # Training (cloud_api/training/): a worker thread in the API claims queued jobs.
    training_enabled: bool = True
    training_poll_s: float = Field(default=2.0, gt=0, le=3600)
    training_lease_s: float = Field(default=300.0, ge=3, le=86_400)

    retention_days: int | None = Field(
        default=None,
        ge=0,
        description="delete events, rollups, summaries and dead letters older than this many "
        "days (cut to the hour); None or 0 keeps everything",
    )
    retention_batch: int = Field(
        default=5000, ge=1, le=1_000_000, description="rows per DELETE transaction"
    )
    retention_interval_s: float = Field(
        default=300.0, gt=0, le=86_400, description="seconds between retention rounds"
    )

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        scheme = value.partition("://")[0]
        if scheme not in {"sqlite", "postgresql", "postgresql+psycopg"}:
            raise ValueError(
                f"AIOT_DATABASE_URL must start with sqlite:// or postgresql:// (got {scheme!r})"
            )
        return value

    @field_validator("mqtt_url", "mqtt_control_url")
    @classmethod
    def _known_broker(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            parse_mqtt_url(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return value

    @property
    def control_url(self) -> str:
        """Where desired states are published: AIOT_MQTT_CONTROL_URL, else AIOT_MQTT_URL."""
        return self.mqtt_control_url or self.mqtt_url

    @model_validator(mode="after")
    def _credentials_and_tls(self) -> Settings:
        for url, secret, file, name in (
            (self.mqtt_url, self.mqtt_password, self.mqtt_password_file, "MQTT"),
            (self.mqtt_control_url, self.mqtt_control_password, self.mqtt_control_password_file,
             "MQTT_CONTROL"),
        ):  # fmt: skip
            if secret is not None and file is not None:
                raise ValueError(
                    f"give AIOT_{name}_PASSWORD or AIOT_{name}_PASSWORD_FILE, not both"
                )
            if (secret is not None or file is not None) and url is None:
                raise ValueError(f"AIOT_{name}_PASSWORD* is given without AIOT_{name}_URL")
            if (secret is not None or file is not None) and parse_mqtt_url(url or "").password:
                raise ValueError(
                    f"AIOT_{name}_URL holds a password and AIOT_{name}_PASSWORD* another"
                )
        if (self.mqtt_cert_file is None) != (self.mqtt_key_file is None):
            raise ValueError("give AIOT_MQTT_CERT_FILE and AIOT_MQTT_KEY_FILE together")
        # Read once here, so that a missing file stops the start with its name (ConfigError).
        if self.mqtt_password_file is not None:
            _read_password_file(self.mqtt_password_file, "AIOT_MQTT")
        if self.mqtt_control_password_file is not None:
            _read_password_file(self.mqtt_control_password_file, "AIOT_MQTT_CONTROL")
        if any(parse_mqtt_url(url).tls for url in (self.mqtt_url, self.control_url)):
            try:
                client_context(self.mqtt_tls())  # a TLS file that cannot be used, named now
            except ConfigError as exc:  # "ca_file ...", "cert_file ...": the setting's name
                key = str(exc).partition(" ")[0]
                name = f"AIOT_MQTT_{key.upper()}" if key.endswith("_file") else "AIOT_MQTT_KEY_FILE"
                raise ConfigError(f"{name}: {exc}") from None
        return self

    def mqtt_tls(self) -> TlsFiles:
        """The TLS files of every mqtts:// connection (ingest, rollout)."""
        return TlsFiles(
            ca_file=self.mqtt_ca_file,
            cert_file=self.mqtt_cert_file,
            key_file=self.mqtt_key_file,
            insecure=self.mqtt_tls_insecure,
        )

    def ingest_broker(self) -> MqttUrl:
        """AIOT_MQTT_URL with its password resolved; ConfigError naming what cannot be read."""
        return _with_password(
            self.mqtt_url, self.mqtt_password, self.mqtt_password_file, "AIOT_MQTT"
        )

    def control_broker(self) -> MqttUrl:
        """The control broker's URL (desired states) with its password resolved."""
        if self.mqtt_control_url is None:  # the same broker, the same user
            return self.ingest_broker()
        return _with_password(
            self.control_url,
            self.mqtt_control_password,
            self.mqtt_control_password_file,
            "AIOT_MQTT_CONTROL",
        )

    @model_validator(mode="after")
    def _share_group_needs_mqtt5(self) -> Settings:
        for key in ("ingest_share_group", "escalation_share_group"):
            if getattr(self, key) is not None and self.mqtt_protocol != "5":
                raise ValueError(
                    f"AIOT_{key.upper()} needs AIOT_MQTT_PROTOCOL=5: "
                    "shared subscriptions do not exist in MQTT 3.1.1"
                )
        return self


def load_settings(**values: object) -> Settings:
    """Read settings from the environment (and ``values``); raise ConfigError naming the key."""
    try:
        return Settings(**values)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"AIOT_{'_'.join(str(part) for part in error['loc']).upper() or '*'}: {error['msg']}"
            for error in exc.errors()
        )
        raise ConfigError(f"invalid cloud settings: {problems}") from None


_WARNED_URLS: set[tuple[str, str]] = set()
"""Settings whose URL's password was warned about already: once a process is enough."""


def _with_password(url: str, secret: SecretStr | None, file: Path | None, name: str) -> MqttUrl:
    broker = parse_mqtt_url(url)
    if broker.password is not None:
        if (name, str(broker)) not in _WARNED_URLS:
            _WARNED_URLS.add((name, str(broker)))
            log.warning(
                "%s_URL %s: the password is written in the URL; use %s_PASSWORD_FILE",
                name,
                broker,
                name,
            )
        return broker
    if file is not None:
        return dataclasses.replace(broker, password=_read_password_file(file, name))
    if secret is not None:
        return dataclasses.replace(broker, password=secret.get_secret_value())
    return broker


def _read_password_file(file: Path, name: str) -> str:
    """The password in ``file``; ConfigError naming the setting and file (never the text)."""
    try:
        password = file.read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise ConfigError(f"{name}_PASSWORD_FILE {file}: cannot read it: {reason}") from None
    if not password:
        raise ConfigError(f"{name}_PASSWORD_FILE {file}: the file is empty")
    return password


def parse_mqtt_url(url: str) -> MqttUrl:
    """The broker URL, parsed by the one parser both sides use; ConfigError if it is not one."""
    try:
        return shared_parse_mqtt_url(url)
    except ContractError as exc:
        raise ConfigError(str(exc)) from None
