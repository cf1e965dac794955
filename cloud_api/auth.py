"""API keys with scopes for dashboards and operators: created, verified, listed, revoked.

A token reads ``aiot_<12 hex key id>_<secret>``. The key id finds the row; the row keeps
only the sha256 (hex) of the whole token. A fast hash is right here: the secret is 32 random
bytes, so there is nothing to guess and nothing a slow hash would protect, and every request
pays for the check. Scopes are ordered, admin ⊃ operate ⊃ read: a key holds one level.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from datetime import timedelta
from typing import Literal, get_args

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud_api.tables import ApiKeyRow
from shared.errors import ConfigError
from shared.messages import utcnow

Scope = Literal["read", "operate", "admin"]
SCOPES: tuple[Scope, ...] = get_args(Scope)
"""Every scope, weakest first: a key may do what its scope and every weaker one allow."""

TOKEN_PREFIX = "aiot"  # noqa: S105 (the tokens' fixed prefix, not a secret)
_TOKEN = re.compile(rf"{TOKEN_PREFIX}_[0-9a-f]{{12}}_[A-Za-z0-9_-]{{1,128}}")
"""What a token looks like: anything else is refused before a query is made of it."""
LAST_USED_EVERY = timedelta(minutes=1)
"""``last_used_at`` is written at most this often, not on every request."""


def scope_allows(has: Scope, needs: Scope) -> bool:
    """Whether a key with scope ``has`` may use a route that needs ``needs``."""
    return SCOPES.index(has) >= SCOPES.index(needs)


def key_scope(row: ApiKeyRow) -> Scope:
    """The strongest scope the key holds."""
    held = [scope for scope in SCOPES if scope in row.scopes]
    return held[-1] if held else "read"


def token_hash(token: str) -> str:
    """What is stored of a token: sha256 hex of the whole token."""
    return hashlib.sha256(token.encode()).hexdigest()


def create_api_key(session: Session, *, name: str, scope: Scope) -> tuple[ApiKeyRow, str]:
    """A new key (committed) and its token, which is shown once and never stored."""
    if scope not in SCOPES:
        raise ConfigError(f"unknown scope {scope!r}: expected one of {', '.join(SCOPES)}")
    if not name or len(name) > 64:
        raise ConfigError(f"key name {name!r} must be 1-64 characters")
    key_id = secrets.token_hex(6)
    token = f"{TOKEN_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
    row = ApiKeyRow(
        key_id=key_id,
        name=name,
        scopes=[scope],
        secret_hash=token_hash(token),
        created_at=utcnow(),
    )
    session.add(row)
    session.commit()
    return row, token


def revoke_api_key(session: Session, key_id: str) -> ApiKeyRow | None:
    """Revoke a key from now on (committed); None if there is no such key."""
    row = session.scalars(select(ApiKeyRow).where(ApiKeyRow.key_id == key_id)).one_or_none()
    if row is None:
        return None
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.commit()
    return row


def list_api_keys(session: Session) -> Sequence[ApiKeyRow]:
    """Every key, revoked ones too, oldest first."""
    return session.scalars(select(ApiKeyRow).order_by(ApiKeyRow.id)).all()


def is_well_formed(token: str) -> bool:
    """Whether ``token`` has the shape of a token: prefix, 12 hex digits, a URL-safe secret."""
    return _TOKEN.fullmatch(token) is not None


def authenticate_api_key(session: Session, token: str) -> ApiKeyRow | None:
    """The key ``token`` belongs to (check ``revoked_at``), or None if malformed or unknown."""
    if not is_well_formed(token):
        return None
    key_id = token.split("_")[1]
    row = session.scalars(select(ApiKeyRow).where(ApiKeyRow.key_id == key_id)).one_or_none()
    if row is None or not hmac.compare_digest(row.secret_hash, token_hash(token)):
        return None
    if row.revoked_at is not None:
        return row
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_EVERY:
        row.last_used_at = now
        session.commit()
    return row
