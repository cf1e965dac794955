"""The ``tls:`` block of every link the edge opens (a broker, the cloud API's downloads).

One class, reused wherever a broker URL or the cloud API is configured; ``files()`` hands it
to ``shared.tls``, the one builder of TLS contexts.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from edge_agent.config_types import FilePath, StrictConfig
from shared.tls import TlsFiles


class TlsConfig(StrictConfig):
    """Whom to trust (``ca_file``, else the system's CAs) and, for mutual TLS, who we are."""

    ca_file: FilePath | None = Field(
        default=None, description="PEM CA certificate(s) the server's must chain to"
    )
    cert_file: FilePath | None = Field(default=None, description="our client certificate (PEM)")
    key_file: FilePath | None = Field(
        default=None, description="its private key (PEM, no passphrase; keep it mode 0600)"
    )
    check_hostname: bool = Field(
        default=True, description="the certificate must name the host of the URL"
    )
    insecure: bool = Field(
        default=False,
        description="verify nothing (a lab only: anyone on the path can read and change the "
        "traffic); logged as a warning",
    )

    @model_validator(mode="after")
    def _cert_with_key(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("give cert_file and key_file together (a client certificate)")
        return self

    def files(self) -> TlsFiles:
        """The files and checks, as ``shared.tls`` takes them."""
        return TlsFiles(
            ca_file=self.ca_file,
            cert_file=self.cert_file,
            key_file=self.key_file,
            check_hostname=self.check_hostname,
            insecure=self.insecure,
        )
