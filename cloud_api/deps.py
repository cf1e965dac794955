"""Request dependencies, declared once as ``Annotated`` aliases."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import Depends, Request
from sqlalchemy.orm import Session

from cloud_api.config import Settings
from cloud_api.registry import ArtifactStore


def get_session(request: Request) -> Iterator[Session]:
    """A session per request from the app's own sessionmaker."""
    with request.app.state.sessionmaker() as session:
        yield session


def get_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    settings: Settings = request.app.state.settings
    return settings


def get_artifact_store(request: Request) -> ArtifactStore:
    """The store the app keeps model artifacts in."""
    store: ArtifactStore = request.app.state.artifacts
    return store


def get_signing_key(request: Request) -> Ed25519PrivateKey:
    """The cloud's manifest signing key, loaded (or generated) at start-up."""
    key: Ed25519PrivateKey = request.app.state.signing_key
    return key


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
ArtifactStoreDep = Annotated[ArtifactStore, Depends(get_artifact_store)]
SigningKeyDep = Annotated[Ed25519PrivateKey, Depends(get_signing_key)]
