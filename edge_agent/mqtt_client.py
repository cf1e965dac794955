"""The edge's one paho client factory: the uplink, MQTT actions and the ``mqtt`` source.

A leaf (paho and ``shared`` only), so a source can use it without importing the delivery
wing. One place decides protocol, session kind, TLS and credentials from a parsed URL and its
TLS files (``shared.tls`` builds the context); a certificate that fails is logged here, once
per series, naming the certificate and why.
"""

from __future__ import annotations

import logging

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from shared.tls import INSECURE, TlsFiles, client_context
from shared.urls import MqttUrl

log = logging.getLogger(__name__)


def make_client(
    broker: MqttUrl,
    *,
    client_id: str,
    protocol: str,
    tls: TlsFiles | None = None,
    reconnect_min_s: int = 1,
    reconnect_max_s: int = 30,
) -> mqtt.Client:
    """A paho client for ``broker``, not connected yet; ``protocol`` is "5" or "3.1.1".

    The session is clean (MQTT 5: a clean start on the first connect only): what the edge must
    not lose waits in its outbox, not in the broker. paho reconnects by itself, waiting
    ``reconnect_min_s`` doubling up to ``reconnect_max_s`` between attempts. An ``mqtts://``
    broker is verified against ``tls`` (default: the system's CAs, host name checked);
    ConfigError if a TLS file cannot be used.
    """
    v5 = protocol == "5"
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        clean_session=None if v5 else True,
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
    client.reconnect_delay_set(reconnect_min_s, reconnect_max_s)
    return client
