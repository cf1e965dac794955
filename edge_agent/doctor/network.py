"""The links: the broker (DNS, TCP, TLS, login, and the ACL by a publish on the agent's own
status topic) and the cloud API (reachable, the agent's credentials, the clock against its
``Date`` header).

The broker is reached with the edge's own paho factory (``edge_agent.mqtt_client``) and TLS
context builder (``shared.tls``), so TLS and credentials are exactly the uplink's, and a TLS
failure is explained as the agent explains it; the client id is the agent's with ``-doctor``,
so a running agent is not disconnected. The ACL probe is a non-retained ``offline`` status saying
the doctor sent it: a running agent's next heartbeat puts its own status back.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any

import paho.mqtt.client as mqtt

from edge_agent.config import AgentConfig
from edge_agent.doctor.check import Check
from edge_agent.mqtt_client import make_client
from edge_agent.updates.download import DownloadPolicy
from edge_agent.updates.installer import read_password
from shared.errors import ConfigError
from shared.messages import AgentStatus, encode, utcnow
from shared.tls import TlsFiles, client_context, explain
from shared.topics import Channel, Topic

MAX_SKEW_S = 10.0
"""Clock skew the doctor accepts: event times and certificate checks tolerate this much."""


def broker_checks(config: AgentConfig, *, timeout_s: float) -> list[Check]:
    """DNS, TCP, then TLS, login and the ACL through paho; stops at the first failure."""
    mqtt_config = config.mqtt
    host, port = mqtt_config.host, mqtt_config.port
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return [
            Check.failed(
                "broker DNS",
                f"{host}: {exc.strerror}",
                "correct mqtt.url's host, or the gateway's DNS (/etc/resolv.conf)",
            )
        ]
    checks = [Check.passed("broker DNS", f"{host} is {addresses[0][4][0]}")]
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as exc:
        checks.append(
            Check.failed(
                "broker TCP",
                f"{host}:{port}: {exc.strerror or exc}",
                "start the broker, or open the port in the firewall",
            )
        )
        return checks
    checks.append(Check.passed("broker TCP", f"{host}:{port} accepts connections"))
    if mqtt_config.broker.tls:
        tls = _tls_check(mqtt_config.tls_files() or TlsFiles(), host, port, timeout_s)
        checks.append(tls)
        if not tls.ok:
            return checks
    return checks + _session_checks(config, timeout_s)


def _tls_check(files: TlsFiles, host: str, port: int, timeout_s: float) -> Check:
    """A TLS handshake of its own, so a failure is told apart from the login's."""
    peer = f"the broker {host}:{port}"
    try:
        context = client_context(files, peer=peer)
    except ConfigError as exc:
        return Check.failed("broker TLS", f"mqtt.tls.{exc}", "correct the file the key names")
    try:
        with (
            socket.create_connection((host, port), timeout=timeout_s) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            version = tls.version()
    except OSError as exc:  # ssl.SSLError too
        reason = explain(exc, files=files, peer=peer, address=(host, port))
        return Check.failed("broker TLS", reason, _tls_fix(exc))
    return Check.passed("broker TLS", f"certificate verified ({version})")


def _session_checks(config: AgentConfig, timeout_s: float) -> list[Check]:
    mqtt_config = config.mqtt
    try:
        endpoint = mqtt_config.endpoint()
    except ConfigError as exc:
        return [Check.failed("broker login", str(exc), "make the password file readable")]
    client = make_client(
        endpoint,
        tls=mqtt_config.tls_files(),
        client_id=f"{config.client_id}-doctor",
        protocol=mqtt_config.protocol,
    )
    probe = _Probe(client)
    try:
        client.connect(mqtt_config.host, mqtt_config.port, keepalive=max(5, int(timeout_s)))
    except OSError as exc:  # ssl.SSLError too: the handshake just worked, so it is rare
        return [Check.failed("broker MQTT", str(exc), "check the port speaks MQTT")]
    checks: list[Check] = []
    client.loop_start()
    try:
        checks += probe.login_and_publish(config, timeout_s)
    finally:
        client.disconnect()
        client.loop_stop()
    return checks


class _Probe:
    """paho's callbacks for one login and one publish, waited on from the caller's thread."""

    def __init__(self, client: mqtt.Client) -> None:
        self._connected = threading.Event()
        self._published = threading.Event()
        self.reason: Any = None
        self.puback: Any = None
        client.on_connect = self._on_connect
        client.on_publish = self._on_publish
        self._client = client

    def _on_connect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.reason = reason
        self._connected.set()

    def _on_publish(self, _c: mqtt.Client, _u: Any, _mid: int, reason: Any, _p: Any) -> None:
        self.puback = reason
        self._published.set()

    def login_and_publish(self, config: AgentConfig, timeout_s: float) -> list[Check]:
        user = config.mqtt.username or "(anonymous)"
        if not self._connected.wait(timeout_s):
            return [
                Check.failed(
                    "broker login",
                    f"no CONNACK in {timeout_s:g} s",
                    "check the broker's logs for why it stays silent",
                )
            ]
        if self.reason.is_failure:
            return [
                Check.failed(
                    "broker login",
                    f"user {user}: {self.reason}",
                    "correct mqtt.password_file (or the user), or enroll the "
                    "agent again (aiot cloud enroll)",
                )
            ]
        checks = [Check.passed("broker login", f"user {user} logged in")]
        topic = str(Topic(config.agent_id, Channel.STATUS))
        status = AgentStatus(
            agent_id=config.agent_id,
            state="offline",
            ts=utcnow(),
            reason="aiot edge doctor checked the broker ACL",
        )
        self._client.publish(topic, encode(status), qos=1)
        if not self._published.wait(timeout_s):
            fail = Check.failed(
                "broker ACL",
                f"no PUBACK for {topic} in {timeout_s:g} s",
                "give the agent's user write access to its own topics",
            )
            return [*checks, fail]
        if self.puback is not None and self.puback.is_failure:
            fail = Check.failed(
                "broker ACL",
                f"publish on {topic} refused: {self.puback}",
                "give the agent's user write access to its own topics (aiot cloud broker-config)",
            )
            return [*checks, fail]
        return [*checks, Check.passed("broker ACL", f"may publish on {topic}")]


def _tls_fix(exc: OSError) -> str:
    message = getattr(exc, "verify_message", "") or ""
    if "hostname" in message or "IP address mismatch" in message:
        return "use the host name the certificate was issued for in mqtt.url"
    if "expired" in message:
        return "renew the broker's certificate"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "give the CA that signed the broker's certificate in mqtt.tls.ca_file"
    return "check the broker's TLS listener and mqtt.tls (client certificate and key)"


def cloud_checks(
    config: AgentConfig, *, timeout_s: float, clock: Callable[[], float] = time.time
) -> list[Check]:
    """The API answers, accepts the agent's credentials, and agrees on the time."""
    cloud = config.cloud
    if cloud is None:
        return [Check.skipped("cloud API", "no cloud: section (models come from the file only)")]
    try:
        password = read_password(cloud)
        files = cloud.tls.files() if cloud.tls is not None else TlsFiles()
        context = client_context(files, peer="the cloud API") if cloud.tls is not None else None
    except ConfigError as exc:
        return [Check.failed("cloud credentials", str(exc), "correct the file the key names")]
    headers = DownloadPolicy(username=cloud.username, password=password).headers()
    # api_url is http(s):// by validation (HttpUrlText).
    url = f"{cloud.base_url}/api/v1/agents/{config.agent_id}"
    request = urllib.request.Request(url, headers=headers)  # noqa: S310
    asked = clock()
    try:
        with urllib.request.urlopen(request, timeout=timeout_s, context=context) as response:  # noqa: S310
            status, date = response.status, response.headers.get("Date")
    except urllib.error.HTTPError as exc:
        status, date = exc.code, exc.headers.get("Date")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, ssl.SSLError):
            address = (urllib.parse.urlsplit(url).hostname or "", _port(url))
            reason = explain(reason, files=files, peer="the cloud API", address=address)
        fix = "correct cloud.api_url (and cloud.tls), or start the API"
        return [Check.failed("cloud API", f"{cloud.base_url}: {reason}", fix)]
    checks = [Check.passed("cloud API", f"{cloud.base_url} answers")]
    checks.append(_credentials(status, cloud.username))
    checks.append(_skew(date, (asked + clock()) / 2))
    return checks


def _port(url: str) -> int:
    parts = urllib.parse.urlsplit(url)
    return parts.port or (443 if parts.scheme == "https" else 80)


def _credentials(status: int, username: str | None) -> Check:
    who = f"user {username}" if username else "no credentials"
    if status in (401, 403):
        return Check.failed(
            "cloud credentials",
            f"{who}: refused ({status})",
            "correct cloud.username / cloud.password_file, or enroll the agent again",
        )
    if status >= 500:
        return Check.failed("cloud credentials", f"the API answered {status}", "see the API logs")
    return Check.passed("cloud credentials", f"{who}: accepted")


def _skew(date: str | None, local: float) -> Check:
    if date is None:
        return Check.skipped("clock", "the API sent no Date header")
    try:
        remote = parsedate_to_datetime(date).timestamp()
    except (TypeError, ValueError):
        return Check.skipped("clock", f"the API's Date header {date!r} is not a date")
    skew = local - remote
    detail = f"{abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'} the cloud"
    if abs(skew) <= MAX_SKEW_S:
        return Check.passed("clock", detail)
    return Check.failed("clock", detail, "synchronise the clock (NTP: timedatectl set-ntp true)")
