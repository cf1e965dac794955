"""The one paho client factory of the cloud: ingest workers and the rollout worker.

One place decides the protocol, the session kind, TLS and credentials from a parsed broker
URL, so a change there (client certificates, a CA file) reaches every cloud connection.
"""

from __future__ import annotations

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from shared.urls import MqttUrl


def make_client(
    broker: MqttUrl,
    *,
    client_id: str,
    protocol: str,
    persistent_session: bool = False,
    manual_ack: bool = False,
) -> mqtt.Client:
    """A paho client for ``broker``, not connected yet; ``protocol`` is "5" or "3.1.1".

    ``persistent_session`` keeps the broker's session (and queued QoS 1 messages) across
    reconnects on MQTT 3.1.1 (``clean_session=False``); on MQTT 5 the session expiry is a
    CONNECT property the caller sets. ``manual_ack`` leaves PUBACKs to the caller, who sends
    them after its commit.
    """
    v5 = protocol == "5"
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=None if v5 else not persistent_session,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        manual_ack=manual_ack,
    )
    if broker.tls:  # mqtts://: the system's CAs, hostname checked
        client.tls_set()
    if broker.username is not None:
        client.username_pw_set(broker.username, broker.password)
    client.reconnect_delay_set(min_delay=1, max_delay=10)
    return client
