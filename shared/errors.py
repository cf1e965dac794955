"""The platform's exception tree. Third-party errors are translated into these at the boundary.

AiotError
├── ConfigError          a config file or setting is invalid (names key, file and line)
├── ContractError        a wire message or topic does not follow the contract
│   ├── SignatureError   a signed manifest's signature or key does not match its content
│   └── TooLargeError    an upload is over its size limit
├── ConflictError        the thing to create already exists (a model name and version)
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


class SignatureError(ContractError):
    """A signed manifest was not signed by the expected key, or was changed after signing."""


class TooLargeError(ContractError):
    """An upload is over its size limit."""


class ConflictError(AiotError):
    """The thing to create already exists; creating it again would overwrite history."""


class TransportError(AiotError):
    """The broker or an HTTP peer cannot be reached, or refused the request."""


class ModelError(AiotError):
    """An ONNX model cannot be loaded, verified or run."""


class StorageError(AiotError):
    """The outbox or the database failed."""
