"""Agents report status over MQTT; the API says online, or offline and why."""

from __future__ import annotations

import socket
from datetime import timedelta
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion

from shared.messages import encode, utcnow
from shared.topics import Channel
from tests.cloud.conftest import AppFactory
from tests.cloud.helpers import Publisher, make_status, topic, unique_agent_id, wait_until

pytestmark = pytest.mark.integration


def agent_view(api: TestClient, agent_id: str) -> dict[str, Any] | None:
    response = api.get(f"/api/v1/agents/{agent_id}")
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_status_makes_agent_online_with_model_versions(
    api: TestClient, publisher: Publisher
) -> None:
    agent = unique_agent_id()
    assert agent_view(api, agent) is None
    publisher.publish(topic(agent, Channel.STATUS), encode(make_status(agent)), retain=True)

    view = wait_until(lambda: agent_view(api, agent), what="the agent to appear")

    assert view["state"] == "online"
    assert view["outbox_depth"] == 7
    assert view["agent_version"] == "0.1.0"
    assert [(p["name"], p["model"]["name"], p["model"]["version"]) for p in view["pipelines"]] == [
        ("spindle-vibration", "vibration-anomaly", "1.0.0")
    ]
    assert agent in {a["agent_id"] for a in api.get("/api/v1/agents").json()}


def test_last_will_makes_agent_offline_with_reason(
    api: TestClient, broker: Any, publisher: Publisher
) -> None:
    agent = unique_agent_id()
    status_topic = topic(agent, Channel.STATUS)
    will = make_status(agent, state="offline", reason="connection lost")
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=agent, protocol=mqtt.MQTTv5,
        reconnect_on_failure=False,
    )  # fmt: skip
    client.will_set(status_topic, encode(will), qos=1, retain=True)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    client.publish(status_topic, encode(make_status(agent)), qos=1, retain=True).wait_for_publish(
        10
    )
    wait_until(lambda: (v := agent_view(api, agent)) and v["state"] == "online", what="online")

    sock = client.socket()
    assert isinstance(sock, socket.socket)
    sock.shutdown(socket.SHUT_RDWR)  # the gateway vanishes without a DISCONNECT
    client.loop_stop()

    view = wait_until(
        lambda: (v := agent_view(api, agent)) and v["state"] == "offline" and v, what="offline"
    )
    assert view["reason"] == "connection lost"
    assert view["last_seen"] is not None, "offline keeps when it was last seen online"


def test_stopped_agent_is_offline_with_its_reason(api: TestClient, publisher: Publisher) -> None:
    agent = unique_agent_id()
    status_topic = topic(agent, Channel.STATUS)
    publisher.publish(status_topic, encode(make_status(agent)), retain=True)
    publisher.publish(status_topic, encode(make_status(agent, state="offline", reason="stopped")))

    view = wait_until(
        lambda: (v := agent_view(api, agent)) and v["state"] == "offline" and v, what="offline"
    )
    assert view["reason"] == "stopped"


def test_retained_old_heartbeat_means_heartbeat_missed(
    make_api: AppFactory, publisher: Publisher
) -> None:
    agent = unique_agent_id()
    old = make_status(agent, ts=utcnow() - timedelta(hours=1), heartbeat_s=10.0)
    publisher.publish(topic(agent, Channel.STATUS), encode(old), retain=True)

    with make_api() as api:  # ingest subscribes now: the broker replays the retained status
        view = wait_until(lambda: agent_view(api, agent), what="the retained status")

    assert view["state"] == "offline"
    assert view["reason"] == "heartbeat missed"


def test_silent_agent_goes_offline_after_grace_heartbeats(
    api: TestClient, publisher: Publisher
) -> None:
    agent = unique_agent_id()
    publisher.publish(topic(agent, Channel.STATUS), encode(make_status(agent, heartbeat_s=0.1)))

    wait_until(lambda: agent_view(api, agent), what="the agent to appear")
    view = wait_until(
        lambda: (v := agent_view(api, agent)) and v["state"] == "offline" and v,
        what="heartbeat missed",
    )
    assert view["reason"] == "heartbeat missed"


def test_unknown_agent_is_404(api: TestClient) -> None:
    response = api.get(f"/api/v1/agents/{unique_agent_id()}")
    assert response.status_code == 404
