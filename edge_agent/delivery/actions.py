"""Local actions: what each kind does with an event, and ``ACTIONS``, the table of them.

A pipeline's ``actions:`` list says what to do on which events (``on`` states, optional
``labels``); ``ACTIONS`` builds each from its config ``type``:

* ``mqtt``: publish a small JSON of the event to a topic on a local broker (a siren, a PLC
  gateway), with its own paho client (``edge_agent.mqtt_client.make_client``) that connects in the
  background;
* ``webhook``: POST that JSON to a URL (stdlib ``urllib``: the edge has no HTTP client
  dependency), one retry on a connection error or a 5xx, none on a 4xx;
* ``command``: run an argv list, never through a shell, with the event's fields in
  ``AIOT_EVENT_*`` environment variables.

An action raises ``ActionError`` when it does not complete (third-party errors are mapped in
each action). ``edge_agent.delivery.action_workers.Actions`` runs them off the pipelines'
threads.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, Protocol

import paho.mqtt.client as mqtt

from edge_agent.delivery.action_config import (
    CommandActionConfig,
    MqttActionConfig,
    WebhookActionConfig,
)
from edge_agent.mqtt_client import make_client
from shared.errors import AiotError
from shared.messages import Event

log = logging.getLogger(__name__)


class ActionError(AiotError):
    """A local action did not complete; the message says why."""


def event_payload(event: Event) -> dict[str, Any]:
    """The small JSON an action sends: what a siren or a PLC needs, with the event's
    attributes (a zone's occupancy, a line's count and direction, a machine's levels)."""
    return {
        "id": event.id,
        "pipeline": event.pipeline,
        "kind": event.kind,
        "state": event.state,
        "label": event.label,
        "score": event.score,
        "ts": event.ts.isoformat(),
        "seq": event.seq,
        "model": event.model.name,
        "model_version": event.model.version,
        "attributes": dict(event.attributes),
    }


class Action(Protocol):
    """One configured action; ``run`` is called from a worker thread, one event at a time."""

    def start(self) -> None:
        """Open what the action needs (a connection), without blocking."""
        ...

    def run(self, event: Event) -> None:
        """Act on one event; raises ActionError."""
        ...

    def stop(self) -> None:
        """Close what ``start`` opened."""
        ...


class MqttAction:
    """Publish to a local broker; QoS 1 completes at the PUBACK, QoS 0 once sent."""

    def __init__(self, config: MqttActionConfig, name: str) -> None:
        self._config = config
        broker = config.endpoint()
        self._host = broker.host
        self._port = broker.port
        self._connected = False
        self._client = make_client(broker, client_id=name, protocol="3.1.1", tls=config.tls_files())
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect

    @property
    def connected(self) -> bool:
        return self._connected

    def start(self) -> None:
        self._client.connect_async(self._host, self._port, keepalive=30)
        self._client.loop_start()

    def run(self, event: Event) -> None:
        if not self._connected:
            raise ActionError(f"not connected to {self._host}:{self._port}")
        cfg = self._config
        payload = json.dumps(event_payload(event), separators=(",", ":"))
        info = self._client.publish(cfg.topic, payload, qos=cfg.qos, retain=cfg.retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise ActionError(f"publish to {cfg.topic} failed: {mqtt.error_string(info.rc)}")
        info.wait_for_publish(timeout=cfg.timeout_s)
        if not info.is_published():
            raise ActionError(f"no acknowledgement for {cfg.topic} within {cfg.timeout_s} s")

    def stop(self) -> None:
        self._connected = False  # our own disconnect is not worth a warning
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        self._connected = not reason.is_failure
        if self._connected:
            log.info("action broker %s:%s connected", self._host, self._port)

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if self._connected:
            log.warning("action broker %s:%s disconnected: %s", self._host, self._port, reason)
        self._connected = False


class _Unconnected:
    """An action that opens nothing between events: start and stop have nothing to do."""

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class WebhookAction(_Unconnected):
    """POST the event's JSON; a 2xx completes it."""

    def __init__(self, config: WebhookActionConfig, name: str) -> None:
        self._config = config

    def run(self, event: Event) -> None:
        cfg = self._config
        body = json.dumps(event_payload(event)).encode()
        headers = {"Content-Type": "application/json", **cfg.headers}
        error = ""
        # The config only accepts http(s) URLs, so urllib's file: and custom schemes are out.
        for _attempt in range(2):  # one retry, for what a retry can fix
            request = urllib.request.Request(cfg.url, body, headers, method="POST")  # noqa: S310
            try:
                with urllib.request.urlopen(request, timeout=cfg.timeout_s) as response:  # noqa: S310
                    response.read()
                return
            except urllib.error.HTTPError as exc:
                if exc.code < 500:
                    raise ActionError(f"POST {cfg.url}: HTTP {exc.code}") from None
                error = f"HTTP {exc.code}"
            except (urllib.error.URLError, OSError) as exc:  # refused, unreachable, timed out
                error = str(getattr(exc, "reason", exc))
        raise ActionError(f"POST {cfg.url}: {error}")


class CommandAction(_Unconnected):
    """Run ``argv`` with AIOT_EVENT_* set; exit status 0 completes it."""

    def __init__(self, config: CommandActionConfig, name: str) -> None:
        self._config = config

    def run(self, event: Event) -> None:
        cfg = self._config
        env = dict(os.environ)
        payload = event_payload(event)
        attributes = payload.pop("attributes")
        env.update({f"AIOT_EVENT_{k.upper()}": str(v) for k, v in payload.items()})
        env.update({f"AIOT_EVENT_ATTR_{_env_name(k)}": str(v) for k, v in attributes.items()})
        payload["attributes"] = attributes
        env["AIOT_EVENT_JSON"] = json.dumps(payload)
        try:
            done = subprocess.run(
                cfg.argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                timeout=cfg.timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise ActionError(f"{cfg.argv[0]}: killed after {cfg.timeout_s} s") from None
        except OSError as exc:
            raise ActionError(f"{cfg.argv[0]}: {exc.strerror}") from None
        if done.returncode != 0:
            tail = done.stderr.decode(errors="replace").strip()[-200:]
            raise ActionError(f"{cfg.argv[0]}: exit status {done.returncode}: {tail}")


ActionFactory = Callable[[Any, str], Action]

ACTIONS: dict[str, ActionFactory] = {
    "mqtt": MqttAction,
    "webhook": WebhookAction,
    "command": CommandAction,
}
"""Every action by its config ``type``."""


def _env_name(attribute: str) -> str:
    """An attribute name as an environment variable suffix: ``track_id`` -> ``TRACK_ID``."""
    return "".join(c if c.isalnum() else "_" for c in attribute).upper()
