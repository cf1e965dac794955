"""The one paho client factory of the cloud (ingest, escalation and rollout workers), how
the workers that keep a broker session connect, and the topic filters they may subscribe to.

One place decides the protocol, the session kind, TLS and credentials from a parsed broker
URL and its TLS files (``shared.tls`` builds the context), so a change there reaches every
cloud connection. A certificate that fails is logged here, once per series, naming the
certificate and why.
"""

from __future__ import annotations

import logging

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from shared.errors import ConfigError, ContractError
from shared.tls import INSECURE, TlsFiles, client_context
from shared.topics import Channel, subscription
from shared.urls import MqttUrl

log = logging.getLogger(__name__)


def make_client(
    broker: MqttUrl,
    *,
    client_id: str,
    protocol: str,
    tls: TlsFiles | None = None,
    persistent_session: bool = False,
    manual_ack: bool = False,
) -> mqtt.Client:
    """A paho client for ``broker``, not connected yet; ``protocol`` is "5" or "3.1.1".

    ``persistent_session`` keeps the broker's session (and queued QoS 1 messages) across
    reconnects on MQTT 3.1.1 (``clean_session=False``); on MQTT 5 the session expiry is a
    CONNECT property the caller sets. ``manual_ack`` leaves PUBACKs to the caller, who sends
    them after its commit. An ``mqtts://`` broker is verified against ``tls`` (default: the
    system's CAs, host name checked); ConfigError if a TLS file cannot be used.
    """
    v5 = protocol == "5"
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=None if v5 else not persistent_session,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        manual_ack=manual_ack,
    )
    if broker.tls:
        if tls is not None and tls.insecure:
            log.warning(INSECURE, f"the broker {broker}")
        client.tls_set_context(
            client_context(
                tls or TlsFiles(),
                peer=f"the broker {broker.host}:{broker.port}",
                on_failure=lambda reason: log.error("TLS: %s", reason),
            )
        )
    if broker.username is not None:
        client.username_pw_set(broker.username, broker.password)
    client.reconnect_delay_set(min_delay=1, max_delay=10)
    return client


def connect_persistent(
    client: mqtt.Client, host: str, port: int, *, v5: bool, session_expiry_s: int
) -> None:
    """Start connecting ``client`` (made with ``persistent_session``) in the background: the
    broker keeps its subscriptions and queues QoS 1 messages while it is away (on MQTT 5 for
    ``session_expiry_s``), and paho reconnects by itself."""
    properties = None
    if v5:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = session_expiry_s
    client.connect_async(
        host,
        port,
        keepalive=30,
        clean_start=False if v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
        properties=properties,
    )
    client.loop_start()


def check_protocol(protocol: str, share_group: str | None) -> None:
    """ConfigError unless a worker can subscribe with ``protocol`` and ``share_group``: a
    shared subscription on MQTT 3.1.1 would be an ordinary filter that matches nothing."""
    if protocol not in {"5", "3.1.1"}:
        raise ConfigError(f"MQTT protocol must be '5' or '3.1.1', not {protocol!r}")
    if share_group is not None and protocol != "5":
        raise ConfigError(
            f"share group {share_group!r} needs MQTT 5: shared subscriptions do not exist "
            "in MQTT 3.1.1"
        )


def worker_filter(channel: Channel, share_group: str | None) -> str:
    """Every agent's ``channel``, shared by ``share_group`` when one is given; ConfigError
    for a group name the broker would refuse."""
    try:
        return subscription(channel, share_group=share_group)
    except ContractError as exc:
        raise ConfigError(str(exc)) from None
