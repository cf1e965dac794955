"""How the edge reaches a broker: one config shape for the uplink, MQTT actions and the
``mqtt`` source (the URL, its ``tls:`` block and where the password comes from).

``endpoint()`` is the URL with its credentials resolved, what ``edge_agent.mqtt_client``
takes. A password written inside the URL still works, with a warning at every start: the
config file then holds a secret.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from pydantic import model_validator

from edge_agent.config_types import MqttUrlText
from edge_agent.passwords import PasswordConfig
from edge_agent.tls import TlsConfig
from shared.errors import ContractError
from shared.tls import TlsFiles
from shared.urls import MqttUrl, parse_mqtt_url

log = logging.getLogger(__name__)


class BrokerConfig(PasswordConfig):
    """A broker's URL (``mqtt://`` or ``mqtts://``), TLS files and credentials."""

    url: MqttUrlText = "mqtt://127.0.0.1:1883"
    tls: TlsConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _user_of_the_url(cls, data: Any) -> Any:
        """``username`` is the user to log in as, from the URL when it names one."""
        if isinstance(data, dict) and data.get("username") is None:
            try:
                user = parse_mqtt_url(data.get("url", "")).username
            except (ContractError, TypeError, AttributeError):
                return data  # the url's own validator says what is wrong
            if user is not None:
                return {**data, "username": user}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> BrokerConfig:
        url = parse_mqtt_url(self.url)
        if self.tls is not None and not url.tls:
            raise ValueError("tls: is given but the URL is mqtt://; use mqtts:// for TLS")
        if url.password is not None and self.has_password_source:
            raise ValueError("the URL holds a password and password_file/password_env another")
        if url.username is not None and self.username not in (None, url.username):
            raise ValueError(f"username {self.username!r} differs from the URL's user")
        if self.has_password_source and (url.username or self.username) is None:
            raise ValueError("a password needs a username (in the URL or as username)")
        return self

    @property
    def broker(self) -> MqttUrl:
        """The URL parsed, without the credentials of password_file/password_env."""
        return parse_mqtt_url(self.url)

    @property
    def host(self) -> str:
        return self.broker.host

    @property
    def port(self) -> int:
        return self.broker.port

    def endpoint(self) -> MqttUrl:
        """The URL with the user and password to log in with (read now from their file or
        variable); ConfigError naming the file or variable that cannot be read."""
        url = self.broker
        if url.password is not None:
            log.warning(
                "broker %s: the password is written in the URL, so the config file holds a "
                "secret; use password_file or password_env",
                url,
            )
            return url
        return dataclasses.replace(
            url, username=url.username or self.username, password=self.read_password()
        )

    def tls_files(self) -> TlsFiles | None:
        """The TLS files of an mqtts:// URL (None: the system's CAs)."""
        return self.tls.files() if self.tls is not None else None
