"""The platform's exception tree. Third-party errors are translated into these at the boundary.

AiotError
├── ConfigError          a config file or setting is invalid (names key, file and line)
├── ContractError        a wire message or topic does not follow the contract
├── TransportError       the broker or an HTTP peer cannot be reached or refused us
├── ModelError           an ONNX model cannot be loaded, verified or run
└── StorageError         the outbox or the database failed
"""

from __future__ import annotations


class AiotError(Exception):
    """Base of every error the platform raises on purpose."""


class ConfigError(AiotError):
    """A configuration file or setting is invalid."""


class ContractError(AiotError):
    """A message or topic does not follow the wire contract."""


class TransportError(AiotError):
    """The broker or an HTTP peer cannot be reached, or refused the request."""


class ModelError(AiotError):
    """An ONNX model cannot be loaded, verified or run."""


class StorageError(AiotError):
    """The outbox or the database failed."""
