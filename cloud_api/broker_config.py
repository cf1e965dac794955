"""The broker's password and ACL files, written from the database (``aiot cloud broker-config``).

Each agent gets its own ``user`` block naming its own topics, rather than one ``pattern``
line with ``%u``: Mosquitto applies pattern lines to every user, so a pattern would also give
the service users (``ingest``, ``control``) write rights under ``aiot/v1/agents/ingest/...``,
and the ingest user must only read the uplink (and write ``acks``). Blocks cost one short
paragraph per agent, which Mosquitto reads in milliseconds for thousands of agents.

After enrolling or revoking agents, write the files again and send SIGHUP to Mosquitto: it
re-reads both files without dropping connections (a revoked agent is refused at its next
CONNECT; disconnect it by restarting the broker if it must go at once).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from cloud_api.credentials import BrokerRole, broker_users, enrolled_agents
from shared.topics import ROOT, Channel

AGENT_WRITES = (
    Channel.EVENTS,
    Channel.SUMMARY,
    Channel.STATUS,
    Channel.SAMPLES,
    Channel.ESCALATIONS,
)
AGENT_READS = (Channel.ACKS, Channel.DESIRED, Channel.ESCALATION_RESULT, Channel.CONFIG)
ROLE_RIGHTS: dict[BrokerRole, list[tuple[str, str]]] = {
    "ingest": [
        *(("read", f"{ROOT}/+/{channel.value}") for channel in AGENT_WRITES),
        # Ingest tells each agent which of its batches are committed (end-to-end delivery).
        ("write", f"{ROOT}/+/{Channel.ACKS.value}"),
        ("write", f"{ROOT}/+/{Channel.ESCALATION_RESULT.value}"),  # the escalation runner's
        # Lets a health check (compose) log in and read one harmless topic.
        ("read", "$SYS/broker/version"),
    ],
    "control": [
        ("write", f"{ROOT}/+/{Channel.DESIRED.value}"),
        ("write", f"{ROOT}/+/{Channel.CONFIG.value}"),
        ("write", f"{ROOT}/+/{Channel.ESCALATION_RESULT.value}"),
        ("read", f"{ROOT}/+/{Channel.STATUS.value}"),
        ("read", "$SYS/broker/version"),
    ],
}
HEADER = (
    "# Written by `aiot cloud broker-config` from the database: do not edit by hand.\n"
    "# Re-run it after enrolling or revoking agents, then send SIGHUP to mosquitto.\n"
)


@dataclass(frozen=True)
class BrokerFiles:
    """The text of the password and ACL files, and who is in them."""

    passwd: str
    acl: str
    agents: int
    service_users: int


def render_broker_files(session: Session) -> BrokerFiles:
    """Password file lines (``user:$7$...``) and ACL blocks for every live credential."""
    users = broker_users(session)
    agents = enrolled_agents(session)
    passwd = [f"{user.username}:{user.password_hash}" for user in users]
    acl = [HEADER]
    for user in users:
        rights = ROLE_RIGHTS[user.role]  # type: ignore[index]
        acl.append(_block(user.username, rights, f"service user, role {user.role}"))
    for agent in agents:
        assert agent.password_hash is not None
        passwd.append(f"{agent.agent_id}:{agent.password_hash}")
        acl.append(_block(agent.agent_id, agent_rights(agent.agent_id), "agent"))
    return BrokerFiles(
        passwd="".join(line + "\n" for line in passwd),
        acl="\n".join(acl),
        agents=len(agents),
        service_users=len(users),
    )


def agent_rights(agent_id: str) -> list[tuple[str, str]]:
    """An agent writes its own outbound channels and reads its own inbound ones, nothing else."""
    prefix = f"{ROOT}/{agent_id}"
    return [
        *(("write", f"{prefix}/{channel.value}") for channel in AGENT_WRITES),
        *(("read", f"{prefix}/{channel.value}") for channel in AGENT_READS),
    ]


def _block(username: str, rights: list[tuple[str, str]], what: str) -> str:
    lines = [f"# {what}", f"user {username}", *(f"topic {mode} {topic}" for mode, topic in rights)]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class ListenerTls:
    """The files of a TLS listener, as the broker sees them; ``require_certificate`` makes
    every client show a certificate signed by ``cafile`` (mutual TLS)."""

    cafile: Path
    certfile: Path
    keyfile: Path
    require_certificate: bool = False


def listener_conf(port: int, host: str, tls: ListenerTls | None = None) -> str:
    """Mosquitto's ``listener`` block: plain MQTT, or TLS (1.2 at least) with ``tls``."""
    lines = [f"listener {port} {host}"]
    if tls is not None:
        lines += [
            f"cafile {tls.cafile}",
            f"certfile {tls.certfile}",
            f"keyfile {tls.keyfile}",
            "tls_version tlsv1.2",
            f"require_certificate {str(tls.require_certificate).lower()}",
        ]
    return "".join(line + "\n" for line in lines)


def mosquitto_conf(
    *, config_dir: Path, port: int = 1883, host: str = "0.0.0.0", tls: ListenerTls | None = None
) -> str:
    """A config snippet that turns authentication on with the two files in ``config_dir``."""
    return (
        HEADER
        + listener_conf(port, host, tls)
        + "allow_anonymous false\n"
        + f"password_file {config_dir / 'passwd'}\n"
        + f"acl_file {config_dir / 'acl'}\n"
    )


def write_broker_config(
    session: Session,
    out: Path,
    *,
    port: int = 1883,
    host: str = "0.0.0.0",
    broker_dir: Path | None = None,
    owner: tuple[int, int] | None = None,
    tls: ListenerTls | None = None,
) -> BrokerFiles:
    """Write ``passwd`` (0600), ``acl`` (0644) and ``mosquitto.conf`` into ``out`` atomically.

    ``broker_dir`` is where the broker sees ``out`` (another mount point in a container);
    ``owner`` (uid, gid) hands the files to the broker's user, which re-reads them on SIGHUP.
    With ``tls`` the listener speaks TLS only (its paths are the broker's, like ``broker_dir``).
    """
    files = render_broker_files(session)
    out.mkdir(parents=True, exist_ok=True)
    conf = mosquitto_conf(config_dir=broker_dir or out.resolve(), port=port, host=host, tls=tls)
    for name, text, mode in (
        ("passwd", files.passwd, 0o600),
        ("acl", files.acl, 0o644),
        ("mosquitto.conf", conf, 0o644),
    ):
        _write_atomically(out / name, text, mode, owner)
    return files


def _write_atomically(path: Path, text: str, mode: int, owner: tuple[int, int] | None) -> None:
    # Mode and owner are set on the temp file, so the broker never sees a readable half-file
    # nor a password file with a wider mode than 0600.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        if owner is not None:
            os.fchown(fd, *owner)
        with os.fdopen(fd, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
