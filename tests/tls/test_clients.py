"""Every other MQTT client over mutual TLS: the ``mqtt`` source reads, an ``mqtt`` action
publishes, the rollout worker connects; each with a ``tls:`` block or the cloud's TLS files."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from cloud_api.db import create_db_engine, migrate
from cloud_api.mqtt import make_client
from cloud_api.rollout.worker import RolloutWorker
from edge_agent.delivery.actions import MqttAction
from edge_agent.sources.mqtt import MqttSource
from shared.tls import TlsFiles
from shared.urls import parse_mqtt_url
from tests.edge.delivery.test_actions import ACTION, event
from tests.edge.sources.collect import Collector
from tests.edge.sources.test_mqtt import config as source_config
from tests.integration.conftest import wait_until
from tests.tls.certs import Pki
from tests.tls.conftest import StartBroker

pytestmark = pytest.mark.integration


def _tls_block(pki: Pki) -> dict[str, str]:
    return {
        "ca_file": str(pki.ca),
        "cert_file": str(pki.client_cert),
        "key_file": str(pki.client_key),
    }


def _cloud_client(url: str, pki: Pki) -> mqtt.Client:
    files = TlsFiles(ca_file=pki.ca, cert_file=pki.client_cert, key_file=pki.client_key)
    return make_client(
        parse_mqtt_url(url), client_id=f"t-{uuid.uuid4().hex[:8]}", protocol="5", tls=files
    )


def test_the_mqtt_source_reads_over_mutual_tls(tls_broker: StartBroker, pki: Pki) -> None:
    broker = tls_broker(mutual=True)
    topic = f"hall/{uuid.uuid4().hex[:8]}/climate"
    source = MqttSource(
        source_config(
            url=broker.url, topic=topic, channels={"temp": "t"}, qos=1, tls=_tls_block(pki)
        )
    )
    publisher = _cloud_client(broker.url, pki)
    publisher.connect("127.0.0.1", broker.port)
    publisher.loop_start()
    try:
        with Collector(source) as run:
            assert source.subscribed.wait(15)
            publisher.publish(topic, json.dumps({"t": 21.5}), qos=1).wait_for_publish(timeout=10)
            run.wait_for(lambda: len(run.ts) == 1)
    finally:
        publisher.disconnect()
        publisher.loop_stop()
    assert run.values[:, 0].tolist() == [21.5]


def test_an_mqtt_action_publishes_over_mutual_tls(tls_broker: StartBroker, pki: Pki) -> None:
    broker = tls_broker(mutual=True)
    topic = f"plant/{uuid.uuid4().hex[:8]}/siren"
    received: list[bytes] = []
    subscribed = threading.Event()
    subscriber = _cloud_client(broker.url, pki)
    subscriber.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
    subscriber.on_subscribe = lambda *a: subscribed.set()
    subscriber.on_message = lambda c, u, msg: received.append(bytes(msg.payload))
    subscriber.connect("127.0.0.1", broker.port)
    subscriber.loop_start()
    config = ACTION.validate_python(
        {"type": "mqtt", "url": broker.url, "topic": topic, "tls": _tls_block(pki)}
    )
    action = MqttAction(config, "siren")  # type: ignore[arg-type]
    try:
        assert subscribed.wait(15)
        action.start()
        wait_until(lambda: action.connected, 15, "the action's connection")
        action.run(event())
        wait_until(lambda: len(received) == 1, 15, "the action's message")
    finally:
        action.stop()
        subscriber.disconnect()
        subscriber.loop_stop()
    assert json.loads(received[0])["label"] == "impact"


def test_the_rollout_worker_connects_over_mutual_tls(
    tls_broker: StartBroker, pki: Pki, tmp_path: Path
) -> None:
    broker = tls_broker(mutual=True)
    engine = create_db_engine(f"sqlite:///{tmp_path / 'cloud.db'}")
    migrate(engine)
    worker = RolloutWorker(
        engine=engine,
        mqtt_url=broker.url,
        tls=TlsFiles(ca_file=pki.ca, cert_file=pki.client_cert, key_file=pki.client_key),
        client_id="rollout-tls",
    )
    worker.start()
    try:
        worker.wait_connected(timeout=30)
    finally:
        worker.stop()
        engine.dispose()
