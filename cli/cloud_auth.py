"""`aiot cloud create-key | revoke-key | list-keys | enroll-agent | create-broker-user |
broker-config`: credentials, straight against the database (``AIOT_DATABASE_URL``).

Each command migrates the schema first, so it works on a fresh database before the API has
ever started (the compose stack's init service relies on that). Secrets go to stdout alone,
so that ``TOKEN=$(aiot cloud create-key ...)`` captures just the secret; the rest goes to
stderr.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli.tls_options import ListenerFile, listener_tls

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

DbOption = Annotated[
    str | None, typer.Option("--db", help="SQLAlchemy URL (default: $AIOT_DATABASE_URL or SQLite).")
]
PasswordFile = Annotated[
    Path | None,
    typer.Option(
        "--password-file",
        dir_okay=False,
        help="Read the password from this file (or /dev/stdin) instead of generating one.",
    ),
]


def register(app: typer.Typer) -> None:
    """Add the credential commands to ``aiot cloud``."""
    for command in (
        create_key,
        revoke_key,
        list_keys,
        enroll_agent,
        create_broker_user,
        broker_config,
    ):
        app.command()(command)


@contextmanager
def _session(db: str | None) -> Iterator[Session]:
    from cloud_api.config import load_settings
    from cloud_api.db import create_db_engine, create_sessionmaker, migrate
    from shared.errors import AiotError

    try:
        settings = load_settings(**({"database_url": db} if db else {}))
        engine = create_db_engine(settings.database_url)
        migrate(engine)
    except AiotError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(2) from None
    try:
        with create_sessionmaker(engine)() as session:
            yield session
    finally:
        engine.dispose()


def _read_password(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        password = path.read_text().strip("\r\n")
    except OSError as error:
        typer.echo(f"cannot read the password file {path}: {error}", err=True)
        raise typer.Exit(2) from None
    if not password:
        typer.echo(f"the password file {path} is empty", err=True)
        raise typer.Exit(2)
    return password


def create_key(
    name: Annotated[str, typer.Option(help="Who or what uses the key (e.g. dashboard).")],
    scope: Annotated[str, typer.Option(help="read, operate or admin (admin ⊃ operate ⊃ read).")],
    db: DbOption = None,
) -> None:
    """Create an API key; its token is printed once, on stdout, and never stored."""
    from cloud_api.auth import SCOPES, create_api_key

    if scope not in SCOPES:
        typer.echo(f"unknown scope {scope!r}: expected one of {', '.join(SCOPES)}", err=True)
        raise typer.Exit(2)
    with _session(db) as session:
        row, token = create_api_key(session, name=name, scope=scope)
    typer.echo(f"created key {row.key_id} ({name}, scope {scope}); token (shown once):", err=True)
    typer.echo(token)


def revoke_key(
    key_id: Annotated[str, typer.Argument(help="The key id (the 12 hex digits after aiot_).")],
    db: DbOption = None,
) -> None:
    """Revoke an API key: requests with it get 401 from now on."""
    from cloud_api.auth import revoke_api_key

    with _session(db) as session:
        row = revoke_api_key(session, key_id)
    if row is None:
        typer.echo(f"no API key {key_id!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked key {row.key_id} ({row.name})")


def list_keys(db: DbOption = None) -> None:
    """Every API key with its scope and use; never a secret."""
    from rich.console import Console
    from rich.table import Table

    from cloud_api.auth import key_scope, list_api_keys

    table = Table(title="API keys")
    for column in ("key id", "name", "scope", "created", "last used", "revoked"):
        table.add_column(column)
    with _session(db) as session:
        for row in list_api_keys(session):
            table.add_row(
                row.key_id,
                row.name,
                key_scope(row),
                f"{row.created_at:%Y-%m-%d %H:%M}",
                f"{row.last_used_at:%Y-%m-%d %H:%M}" if row.last_used_at else "-",
                f"{row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "-",
            )
    Console().print(table)


def enroll_agent(
    agent_id: Annotated[str, typer.Argument(help="The agent's id: its MQTT username.")],
    label: Annotated[
        list[str] | None, typer.Option(help="A label key=value (repeat for more).")
    ] = None,
    password_file: PasswordFile = None,
    exist_ok: Annotated[
        bool, typer.Option(help="An agent enrolled already is left as it is (exit 0).")
    ] = False,
    db: DbOption = None,
) -> None:
    """Enroll an agent (as POST /api/v1/agents does); its password is printed once, on stdout."""
    from cloud_api.credentials import enroll_agent as enroll
    from cloud_api.tables import AgentRow
    from shared.errors import ConflictError, ContractError

    labels: dict[str, str] = {}
    for item in label or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            typer.echo(f"label {item!r} must be key=value", err=True)
            raise typer.Exit(2)
        labels[key] = value
    password = _read_password(password_file)
    with _session(db) as session:
        row = session.get(AgentRow, agent_id)
        if exist_ok and row is not None and row.enrolled_at and not row.credentials_revoked_at:
            typer.echo(f"{agent_id} is enrolled already; left as it is", err=True)
            return
        try:
            _, password = enroll(session, agent_id=agent_id, labels=labels, password=password)
        except (ConflictError, ContractError) as error:
            typer.echo(str(error), err=True)
            raise typer.Exit(1) from None
    typer.echo(f"enrolled {agent_id}; run broker-config and SIGHUP the broker", err=True)
    if password_file is None:
        typer.echo(password)


def create_broker_user(
    username: Annotated[str, typer.Argument(help="MQTT username of the service.")],
    role: Annotated[
        str, typer.Option(help="ingest (reads agents' uplink) or control (writes desired state).")
    ],
    password_file: PasswordFile = None,
    db: DbOption = None,
) -> None:
    """Create an MQTT service user, or give an existing one a new password and role."""
    from cloud_api.credentials import BROKER_ROLES
    from cloud_api.credentials import create_broker_user as create
    from shared.errors import ConflictError, ContractError

    if role not in BROKER_ROLES:
        typer.echo(f"unknown role {role!r}: expected one of {', '.join(BROKER_ROLES)}", err=True)
        raise typer.Exit(2)
    given = _read_password(password_file)
    with _session(db) as session:
        try:
            _, password, created = create(
                session,
                username=username,
                role=role,
                password=given,
            )
        except (ConflictError, ContractError) as error:
            typer.echo(str(error), err=True)
            raise typer.Exit(1) from None
    typer.echo(f"{'created' if created else 'updated'} broker user {username} ({role})", err=True)
    if given is None:
        typer.echo(password)


def broker_config(
    out: Annotated[Path, typer.Option(file_okay=False, help="Directory for the three files.")],
    port: Annotated[int, typer.Option(help="Listener port in mosquitto.conf.")] = 1883,
    host: Annotated[str, typer.Option(help="Listener address in mosquitto.conf.")] = "0.0.0.0",
    broker_dir: Annotated[
        Path | None,
        typer.Option(help="Where the broker sees OUT, if elsewhere (a container's mount)."),
    ] = None,
    owner: Annotated[
        str | None, typer.Option(help="UID:GID to own the files (the broker's user).")
    ] = None,
    db: DbOption = None,
    cafile: ListenerFile = None,
    certfile: ListenerFile = None,
    keyfile: ListenerFile = None,
    require_certificate: Annotated[
        bool, typer.Option(help="Mutual TLS: every client shows a certificate from --cafile.")
    ] = False,
) -> None:
    """Write passwd (0600), acl and mosquitto.conf for every enrolled agent and service user.

    Run it again after enrolling or revoking agents and send SIGHUP to Mosquitto: it re-reads
    the password and ACL files without dropping anyone. With --cafile, --certfile and
    --keyfile (paths as the broker sees them) the listener speaks TLS only.
    """
    from cloud_api.broker_config import write_broker_config

    tls = listener_tls(cafile, certfile, keyfile, require_certificate)

    ids: tuple[int, int] | None = None
    if owner is not None:
        uid, sep, gid = owner.partition(":")
        if not (sep and uid.isdigit() and gid.isdigit()):
            typer.echo(f"--owner {owner!r} must be UID:GID in digits", err=True)
            raise typer.Exit(2)
        ids = int(uid), int(gid)
    with _session(db) as session:
        files = write_broker_config(
            session, out, port=port, host=host, broker_dir=broker_dir, owner=ids, tls=tls
        )
    typer.echo(
        f"wrote {out}/passwd, acl, mosquitto.conf: {files.agents} agent(s), "
        f"{files.service_users} service user(s)"
    )
