"""Where a password comes from: a file (``password_file``) or an environment variable
(``password_env``), never the YAML itself, so the config can be world-readable and the secret
not (``aiot edge validate-config`` warns when a secret's file is readable by others)."""

from __future__ import annotations

import os
from typing import Annotated

from pydantic import Field, StringConstraints, model_validator

from edge_agent.config_types import FilePath, StrictConfig
from shared.errors import ConfigError

EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class PasswordConfig(StrictConfig):
    """A user name and where its password is read from at start-up."""

    username: str | None = None
    password_file: FilePath | None = Field(
        default=None, description="a file holding the password (one line; keep it mode 0600)"
    )
    password_env: EnvName | None = Field(
        default=None, description="an environment variable holding the password"
    )

    @model_validator(mode="after")
    def _one_source(self) -> PasswordConfig:
        if self.password_file is not None and self.password_env is not None:
            raise ValueError("give password_file or password_env, not both")
        return self

    @property
    def has_password_source(self) -> bool:
        return self.password_file is not None or self.password_env is not None

    def read_password(self) -> str | None:
        """The password from its file or variable (None without either); ConfigError naming
        the file or variable when it cannot be read or is empty. The password itself is
        never part of an error."""
        if self.password_file is not None:
            try:
                text = self.password_file.read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as exc:
                raise ConfigError(
                    f"password_file {self.password_file}: cannot read it: {exc.strerror}"
                ) from None
            except UnicodeDecodeError:
                raise ConfigError(f"password_file {self.password_file}: not UTF-8 text") from None
            if not text:
                raise ConfigError(f"password_file {self.password_file}: the file is empty")
            return text
        if self.password_env is not None:
            value = os.environ.get(self.password_env)
            if not value:
                raise ConfigError(f"password_env {self.password_env}: the variable is not set")
            return value
        return None
