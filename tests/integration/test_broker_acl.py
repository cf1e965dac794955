"""Broker credentials on a real Mosquitto, from the files `broker-config` writes.

Agents A and B and the ingest user come from the database; Mosquitto runs with the
password and ACL files written from it. With MQTT 5 the broker says "Not authorized"
(reason code 135) in the PUBACK of a refused QoS 1 publish, so refusals are asserted on the
broker's own answer. Subscriptions are the exception (see the test on reading).
"""

from __future__ import annotations

import queue
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from cloud_api.broker_config import write_broker_config
from cloud_api.credentials import create_broker_user, enroll_agent, revoke_agent_credentials
from cloud_api.db import create_db_engine, create_sessionmaker, migrate
from cloud_api.ingest.worker import IngestWorker
from cloud_api.tables import EventRow
from shared.messages import encode
from shared.topics import Channel
from tests.cloud.helpers import make_batch, topic, wait_until
from tests.services import Mosquitto, free_port, wait_for_port

pytestmark = pytest.mark.integration

COMPOSE_BROKER_CONF = (
    Path(__file__).resolve().parents[2] / "deploy" / "mosquitto" / "mosquitto.conf"
)

NOT_AUTHORIZED = 135
ACCEPTED = {0, 16}
"""Success, and "no matching subscribers" (a PUBACK says so when nobody listens)."""


@dataclass
class Client:
    """A paho MQTT 5 client that hands back the broker's CONNACK, PUBACK and SUBACK codes."""

    port: int
    username: str
    password: str
    connacks: queue.Queue[ReasonCode] = field(default_factory=queue.Queue)
    acks: queue.Queue[tuple[int, Any]] = field(default_factory=queue.Queue)
    messages: queue.Queue[mqtt.MQTTMessage] = field(default_factory=queue.Queue)

    def __post_init__(self) -> None:
        self.mqtt = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{self.username}-{uuid.uuid4().hex[:6]}",
            protocol=mqtt.MQTTv5,
            reconnect_on_failure=False,
        )
        self.mqtt.username_pw_set(self.username, self.password)
        self.mqtt.on_connect = lambda _c, _u, _f, code, _p: self.connacks.put(code)
        self.mqtt.on_publish = lambda _c, _u, mid, code, _p: self.acks.put((mid, code))
        self.mqtt.on_subscribe = lambda _c, _u, mid, codes, _p: self.acks.put((mid, codes[0]))
        self.mqtt.on_message = lambda _c, _u, message: self.messages.put(message)

    def connect(self) -> ReasonCode:
        self.mqtt.connect("127.0.0.1", self.port)
        self.mqtt.loop_start()
        return self.connacks.get(timeout=10)

    def publish(self, topic_name: str, payload: bytes = b"{}", *, retain: bool = False) -> int:
        """Publish at QoS 1 and return the PUBACK's reason code."""
        info = self.mqtt.publish(topic_name, payload, qos=1, retain=retain)
        return self._ack(info.mid)

    def subscribe(self, topic_filter: str) -> int:
        """Subscribe at QoS 1 and return the SUBACK's reason code."""
        _, mid = self.mqtt.subscribe(topic_filter, qos=1)
        assert mid is not None
        return self._ack(mid)

    def next_message(self) -> mqtt.MQTTMessage:
        return self.messages.get(timeout=10)

    def _ack(self, mid: int) -> int:
        got, code = self.acks.get(timeout=10)
        assert got == mid
        return int(code.value)

    def close(self) -> None:
        self.mqtt.disconnect()
        self.mqtt.loop_stop()


@dataclass
class Fleet:
    """The database, the broker configured from it, and the passwords it issued."""

    engine: Engine
    broker: Mosquitto
    config_dir: Path
    passwords: dict[str, str]
    clients: list[Client] = field(default_factory=list)

    def session(self) -> Session:
        return create_sessionmaker(self.engine)()

    def enroll(self, agent_id: str) -> None:
        with self.session() as session:
            _, self.passwords[agent_id] = enroll_agent(session, agent_id=agent_id, labels={})

    def write_config(self) -> None:
        with self.session() as session:
            write_broker_config(session, self.config_dir)

    def client(self, username: str, password: str | None = None) -> Client:
        client = Client(self.broker.port, username, password or self.passwords[username])
        self.clients.append(client)
        return client

    def connected(self, username: str) -> Client:
        client = self.client(username)
        code = client.connect()
        assert not code.is_failure, f"{username} refused: {code}"
        return client


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'cloud.db'}")
    migrate(engine)
    config_dir = tmp_path / "broker"
    broker = Mosquitto(
        tmp_path,
        allow_anonymous=False,
        extra_config=f"password_file {config_dir / 'passwd'}\nacl_file {config_dir / 'acl'}\n",
    )
    fleet = Fleet(engine, broker, config_dir, passwords={})
    fleet.enroll("agent-a")
    fleet.enroll("agent-b")
    with fleet.session() as session:
        _, fleet.passwords["ingest"], _ = create_broker_user(
            session, username="ingest", role="ingest"
        )
        _, fleet.passwords["control"], _ = create_broker_user(
            session, username="control", role="control"
        )
    fleet.write_config()
    broker.start()
    yield fleet
    for client in fleet.clients:
        client.close()
    broker.stop()
    engine.dispose()


def test_agent_publishes_only_under_its_own_topics(fleet: Fleet) -> None:
    ingest = fleet.connected("ingest")
    assert ingest.subscribe("aiot/v1/agents/+/events") == 1
    agent_a = fleet.connected("agent-a")

    assert agent_a.publish(topic("agent-a", Channel.EVENTS), b"mine") in ACCEPTED
    assert ingest.next_message().payload == b"mine"

    assert agent_a.publish(topic("agent-b", Channel.EVENTS), b"forged") == NOT_AUTHORIZED
    assert agent_a.publish(topic("agent-a", Channel.DESIRED), b"self-made") == NOT_AUTHORIZED
    # Published after the forged one on the same connection: had the broker delivered the
    # forgery, the ingest user would have received it first.
    assert agent_a.publish(topic("agent-a", Channel.EVENTS), b"marker") in ACCEPTED
    assert ingest.next_message().payload == b"marker"


def test_agent_receives_nothing_of_another_agents_topics(fleet: Fleet) -> None:
    """Mosquitto 2.0's ``acl_file`` does not check SUBSCRIBE at all (every SUBACK grants the
    filter); it checks READ on every message it would deliver, retained ones included. So A
    may subscribe to B's topics, and the broker hands it nothing from them."""
    control = fleet.connected("control")
    assert (
        control.publish(topic("agent-b", Channel.DESIRED), b"retained-b", retain=True) in ACCEPTED
    )
    agent_a, agent_b = fleet.connected("agent-a"), fleet.connected("agent-b")
    for topic_filter in (
        topic("agent-b", Channel.DESIRED),
        topic("agent-b", Channel.EVENTS),
        "aiot/v1/agents/agent-b/#",
    ):
        agent_a.subscribe(topic_filter)
    assert agent_a.subscribe(topic("agent-a", Channel.DESIRED)) == 1

    assert agent_b.publish(topic("agent-b", Channel.EVENTS), b"event-b") in ACCEPTED
    assert control.publish(topic("agent-b", Channel.DESIRED), b"desired-b") in ACCEPTED
    assert control.publish(topic("agent-a", Channel.DESIRED), b"desired-a") in ACCEPTED
    # Everything of B was routed before A's own desired state: the first message A gets is
    # its own, so none of B's was delivered.
    assert agent_a.next_message().payload == b"desired-a"
    assert agent_a.messages.empty()


def test_wrong_or_unknown_credentials_are_refused_at_connect(fleet: Fleet) -> None:
    assert fleet.client("agent-a", "not-the-password").connect().is_failure
    assert fleet.client("agent-c", "whatever").connect().is_failure
    # Our hash of a service user's password is what the broker checks.
    assert not fleet.client("ingest").connect().is_failure


def test_ingest_user_may_only_read(fleet: Fleet) -> None:
    ingest = fleet.connected("ingest")
    assert ingest.publish(topic("agent-a", Channel.EVENTS)) == NOT_AUTHORIZED
    assert ingest.publish(topic("agent-a", Channel.DESIRED)) == NOT_AUTHORIZED
    assert ingest.publish(topic("agent-a", Channel.STATUS), retain=True) == NOT_AUTHORIZED


def test_enrolled_agent_connects_after_broker_config_and_sighup(fleet: Fleet) -> None:
    fleet.enroll("agent-c")
    assert fleet.client("agent-c").connect().is_failure  # the broker has not heard yet
    with fleet.session() as session:
        revoke_agent_credentials(session, agent_id="agent-b")
    fleet.write_config()
    fleet.broker.reload()

    def connects(username: str) -> bool:
        return not fleet.client(username).connect().is_failure

    wait_until(lambda: connects("agent-c"), what="agent-c to be let in after SIGHUP")
    assert not connects("agent-b"), "revoked credentials still work"
    agent_c = fleet.connected("agent-c")
    assert agent_c.publish(topic("agent-c", Channel.EVENTS)) in ACCEPTED


def test_ingest_worker_with_its_credentials_stores_an_agents_events(fleet: Fleet) -> None:
    worker = IngestWorker(
        engine=fleet.engine,
        mqtt_url=f"mqtt://ingest:{fleet.passwords['ingest']}@127.0.0.1:{fleet.broker.port}",
        client_id="ingest-acl-test",
        share_group="ingest",
        session_expiry_s=0,
        flush_s=0.01,
    )
    worker.start()
    try:
        worker.wait_connected()
        agent_a = fleet.connected("agent-a")
        batch = make_batch("agent-a", 3)
        assert agent_a.publish(topic("agent-a", Channel.EVENTS), encode(batch)) in ACCEPTED
        worker.wait_processed(1)
    finally:
        worker.stop()
    with fleet.session() as session:
        stored = set(session.scalars(select(EventRow.id).where(EventRow.agent_id == "agent-a")))
    assert stored == {event.id for event in batch.events}


def test_compose_broker_config_refuses_anonymous_and_admits_the_ingest_user(
    tmp_path: Path,
) -> None:
    """deploy/mosquitto/mosquitto.conf with the files broker-config writes for it."""
    engine = create_db_engine(f"sqlite:///{tmp_path / 'cloud.db'}")
    migrate(engine)
    port = free_port()
    with create_sessionmaker(engine)() as session:
        _, password, _ = create_broker_user(session, username="ingest", role="ingest")
        write_broker_config(session, tmp_path / "auth", port=port, host="127.0.0.1")
    engine.dispose()
    (tmp_path / "data").mkdir()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        COMPOSE_BROKER_CONF.read_text()
        .replace("/mosquitto/auth", str(tmp_path / "auth"))
        .replace("/mosquitto/data/", f"{tmp_path / 'data'}/")
        + "user root\n"
    )
    with (tmp_path / "mosquitto.log").open("wb") as log:
        process = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=log, stderr=log)
    clients: list[Client] = []
    try:
        wait_for_port(port)
        anonymous = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        codes: queue.Queue[ReasonCode] = queue.Queue()
        anonymous.on_connect = lambda _c, _u, _f, code, _p: codes.put(code)
        anonymous.connect("127.0.0.1", port)
        anonymous.loop_start()
        assert codes.get(timeout=10).is_failure
        anonymous.loop_stop()
        ingest = Client(port, "ingest", password)
        clients.append(ingest)
        assert not ingest.connect().is_failure
        # What the compose health check reads.
        assert ingest.subscribe("$SYS/broker/version") == 1
        assert ingest.next_message().payload.startswith(b"mosquitto version")
    finally:
        for client in clients:
            client.close()
        process.terminate()
        process.wait(timeout=10)


def test_the_escalation_runner_as_the_ingest_user_reads_escalations_and_answers_them(
    fleet: Fleet,
) -> None:
    """The runner (cloud_api/escalation) connects as the ingest user: it reads every agent's
    escalations and writes their answers, and the answer reaches only its own agent."""
    ingest, agent_a = fleet.connected("ingest"), fleet.connected("agent-a")
    assert ingest.subscribe("aiot/v1/agents/+/escalations") == 1
    assert agent_a.subscribe(topic("agent-a", Channel.ESCALATION_RESULT)) == 1
    assert agent_a.publish(topic("agent-a", Channel.ESCALATIONS), b"escalation") in ACCEPTED
    assert ingest.next_message().payload == b"escalation"
    assert ingest.publish(topic("agent-a", Channel.ESCALATION_RESULT), b"answer") in ACCEPTED
    assert agent_a.next_message().payload == b"answer"
    assert ingest.publish(topic("agent-a", Channel.ESCALATIONS)) == NOT_AUTHORIZED
