"""The config of delivery: the broker the uplink talks to, the outbox, the cloud API."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator

from edge_agent.broker import BrokerConfig
from edge_agent.config_types import FilePath, HttpUrlText, StrictConfig
from edge_agent.passwords import PasswordConfig
from edge_agent.tls import TlsConfig
from shared.fields import MAX_HEARTBEAT_S
from shared.messages import MAX_EVENTS_PER_BATCH


def _protocol_as_str(value: Any) -> Any:
    # YAML reads `protocol: 5` as an int; both spellings mean the same thing.
    return str(value) if isinstance(value, int | float) else value


MqttProtocol = Annotated[Literal["5", "3.1.1"], BeforeValidator(_protocol_as_str)]


class MqttConfig(BrokerConfig):
    """How to reach the broker (URL, ``tls:`` and credentials: ``edge_agent.broker``)."""

    protocol: MqttProtocol = "5"
    keepalive: int = Field(default=30, ge=5, le=65535)
    client_id: str | None = None
    heartbeat_s: float = Field(default=10.0, gt=0, le=MAX_HEARTBEAT_S)
    reconnect_min_s: int = Field(default=1, ge=1)
    reconnect_max_s: int = Field(default=30, ge=1)


class OutboxConfig(StrictConfig):
    """The durable queue between pipelines and the broker; bounded, oldest low-priority first."""

    path: FilePath = Path("outbox.db")
    max_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    max_age_s: float = Field(default=7 * 24 * 3600.0, gt=0)
    sync: Literal["normal", "full"] = Field(
        default="normal",
        description="normal: survives a crash or kill -9; full: also a power cut (fsync per put)",
    )
    batch_max_events: int = Field(default=100, ge=1, le=MAX_EVENTS_PER_BATCH)
    max_inflight_batches: int = Field(
        default=10, ge=1, le=1000, description="batches published and not yet PUBACKed"
    )
    max_unacked_batches: int = Field(
        # More than ingest takes in one transaction (200 messages), so that the agent keeps
        # sending while the cloud commits: with 50 one agent drained at 0.78 of the rate.
        default=256,
        ge=1,
        le=10_000,
        description="batches published and not yet acknowledged by the cloud (on acks)",
    )
    ack_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="a batch the cloud has not acknowledged in this time is sent again",
    )


class CloudConfig(PasswordConfig):
    """The cloud API the agent downloads model versions from, and the key that signs them.

    Without this section the agent does not subscribe to desired states: it runs the models
    of this file only. HTTP Basic credentials: ``username`` with ``password_file`` or
    ``password_env``; an https:// ``api_url`` is verified against ``tls.ca_file``.
    """

    api_url: HttpUrlText
    public_key: str | None = Field(
        default=None, description="base64 of the cloud's Ed25519 public key (32 raw bytes)"
    )
    public_key_file: FilePath | None = None
    tls: TlsConfig | None = None

    @model_validator(mode="after")
    def _one_key_and_credentials(self) -> CloudConfig:
        if self.public_key is not None and self.public_key_file is not None:
            raise ValueError("give public_key or public_key_file, not both")
        if (self.username is None) != (not self.has_password_source):
            raise ValueError("give username with password_file or password_env")
        if self.tls is not None and not self.api_url.startswith("https://"):
            raise ValueError("tls: is given but api_url is http://; use https:// for TLS")
        return self

    @property
    def base_url(self) -> str:
        """``api_url`` without a trailing slash (artifact paths start with one)."""
        return self.api_url.rstrip("/")
