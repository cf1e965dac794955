"""Ingest's acknowledgements, both kinds, sent only after the batch's commit.

To the broker: manual acks (``manual_ack``; the session is persistent, so whatever was not
acknowledged is redelivered after a restart), and only on the connection that delivered the
message, since a message id means nothing on the next one. To each agent, on its ``acks``
topic: the batch ids committed (``stored``, resends included) and dead-lettered
(``rejected``). That ack, not the broker's PUBACK, is what lets an agent delete a batch from
its outbox (DESIGN §3).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator

import paho.mqtt.client as mqtt

from cloud_api.ingest.parse import Inbound
from shared.messages import MAX_EVENTS_PER_BATCH, Acks, BatchAck, encode
from shared.topics import Channel, Topic


def agent_acks(acks: Iterable[tuple[str, BatchAck]]) -> Iterator[tuple[str, Acks]]:
    """(topic, message) for each agent's settled batches, in messages of the contract's size."""
    by_agent: dict[str, list[BatchAck]] = {}
    for agent_id, ack in acks:
        by_agent.setdefault(agent_id, []).append(ack)
    for agent_id, settled in by_agent.items():
        topic = str(Topic(agent_id, Channel.ACKS))
        for start in range(0, len(settled), MAX_EVENTS_PER_BATCH):
            yield topic, Acks(agent_id=agent_id, acks=settled[start : start + MAX_EVENTS_PER_BATCH])


class Acknowledger:
    """Acks committed messages to the broker and settled batches to their agents."""

    def __init__(self, client: mqtt.Client) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._connection = 0
        self._sent = 0

    @property
    def connection(self) -> int:
        """The broker connection messages arrive on now; each ``Inbound`` carries it."""
        return self._connection

    @property
    def sent(self) -> int:
        """Batch acks published to agents (stored and rejected)."""
        return self._sent

    def connection_lost(self) -> None:
        """Message ids of this connection mean nothing on the next one: never ack them there."""
        with self._lock:
            self._connection += 1

    def ack_broker(self, batch: Iterable[Inbound]) -> None:
        """Acknowledge ``batch`` to the broker, what of it came on the current connection."""
        with self._lock:
            current = self._connection
            for message in batch:
                if message.qos > 0 and message.connection == current:
                    self._client.ack(message.mid, message.qos)

    def publish(self, acks: list[tuple[str, BatchAck]]) -> None:
        """Tell each agent which of its batches are settled (QoS 1, after the commit)."""
        for topic, message in agent_acks(acks):
            # Lost (broker down): the agent sends the batch again and gets a new ack.
            self._client.publish(topic, encode(message), qos=1)
            self._sent += len(message.acks)
