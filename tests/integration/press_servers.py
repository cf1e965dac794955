"""The simulated press (``cli.modbus_machine``'s physics) behind the two other protocols a
plant speaks: published on MQTT topics as JSON, and served as OPC UA variables. Each runs in
its own thread; ``forced_fault`` makes the press faulty until cleared."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from datetime import UTC

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from cli.modbus_machine import CHANNELS, press_values

TICK_S = 0.05
NAMESPACE = "urn:aiot:press"


class _Press:
    def __init__(self) -> None:
        self.forced_fault = False
        self._rng = np.random.default_rng(5)
        self._start = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def values(self) -> tuple[float, list[float]]:
        t = time.monotonic() - self._start
        return time.time(), press_values(t, self._rng.standard_normal(3), faulty=self.forced_fault)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


class MqttPress(_Press):
    """Publishes ``{"ts": ..., "values": {name: value}}`` on ``topic`` every 50 ms."""

    def __init__(self, host: str, port: int, topic: str) -> None:
        super().__init__()
        self.topic = topic
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"press-{id(self)}")
        self._client.connect(host, port)
        self._client.loop_start()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._publish, daemon=True)
        self._thread.start()

    def _publish(self) -> None:
        while not self._stop.wait(TICK_S):
            ts, values = self.values()
            payload = {"ts": ts, "values": dict(zip(CHANNELS, values, strict=True))}
            self._client.publish(self.topic, json.dumps(payload))

    def stop(self) -> None:
        super().stop()
        self._client.loop_stop()
        self._client.disconnect()


class OpcuaPress(_Press):
    """Variables ``ns=2;s=Press.<channel>`` on ``opc.tcp://127.0.0.1:port/press/``."""

    def __init__(self, port: int) -> None:
        super().__init__()
        self.endpoint = f"opc.tcp://127.0.0.1:{port}/press/"
        self.node_ids: dict[str, str] = {}
        self._ready = threading.Event()

    def start(self) -> None:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the OPC UA press did not start")

    async def _serve(self) -> None:
        from asyncua import ua
        from asyncua.server.server import Server

        server = Server()
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        ns = await server.register_namespace(NAMESPACE)
        press = await server.nodes.objects.add_object(ns, "Press")
        variables = {}
        for name in CHANNELS:
            node_id = ua.NodeId.from_string(f"ns={ns};s=Press.{name}")
            variables[name] = await press.add_variable(node_id, name, 0.0)
            self.node_ids[name] = f"ns={ns};s=Press.{name}"
        async with server:
            self._ready.set()
            while not self._stop.is_set():
                # Like a PLC: the three values of one tick carry that tick's source time.
                ts, values = self.values()
                stamp = ua.DateTime.fromtimestamp(ts, UTC)
                for name, value in zip(CHANNELS, values, strict=True):
                    value_at = ua.DataValue(
                        ua.Variant(value, ua.VariantType.Double), SourceTimestamp=stamp
                    )
                    await variables[name].write_value(value_at)
                await asyncio.sleep(TICK_S)
