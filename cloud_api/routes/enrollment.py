"""``/api/v1/agents`` (admin): enroll agents, rotate and revoke their credentials.

The password is in the answer once and never again. After a change, run
``aiot cloud broker-config`` and send SIGHUP to Mosquitto so that the broker agrees.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Response

from cloud_api import credentials
from cloud_api.deps import SessionDep, SigningKeyDep, require
from cloud_api.params import AgentIdPath
from cloud_api.responses import AUTHENTICATED, problems
from cloud_api.schemas import AgentCredentialsOut, EnrollmentIn, SigningKeyOut
from cloud_api.tables import AgentRow
from shared.errors import ConflictError
from shared.signing import encode_public_key, key_id
from shared.topics import agent_subtree

router = APIRouter(
    prefix="/api/v1/agents",
    tags=["agents"],
    dependencies=[Depends(require("admin"))],
    responses=problems(*AUTHENTICATED, 422),
)


@router.post("", status_code=201, response_model=AgentCredentialsOut, responses=problems(409, 413))
def enroll(body: EnrollmentIn, session: SessionDep, key: SigningKeyDep) -> AgentCredentialsOut:
    """Issue an agent's credentials (HTTP Basic and MQTT); 409 if it has some already."""
    try:
        row, password = credentials.enroll_agent(
            session, agent_id=body.agent_id, labels=dict(body.labels)
        )
    except ConflictError as exc:
        raise HTTPException(409, str(exc)) from None
    return _answer(row, password, key)


@router.post("/{agent_id}/credentials", response_model=AgentCredentialsOut, responses=problems(404))
def rotate(agent_id: AgentIdPath, session: SessionDep, key: SigningKeyDep) -> AgentCredentialsOut:
    """A new password for an enrolled agent; the old one stops working at once over HTTP."""
    rotated = credentials.rotate_agent_credentials(session, agent_id=agent_id)
    if rotated is None:
        raise HTTPException(404, f"agent {agent_id!r} is not enrolled: POST /api/v1/agents")
    return _answer(*rotated, key)


@router.delete("/{agent_id}/credentials", status_code=204, responses=problems(404))
def revoke(agent_id: AgentIdPath, session: SessionDep) -> Response:
    """Revoke an agent's credentials; its data stays."""
    if credentials.revoke_agent_credentials(session, agent_id=agent_id) is None:
        raise HTTPException(404, f"agent {agent_id!r} is not enrolled")
    return Response(status_code=204)


def _answer(row: AgentRow, password: str, key: SigningKeyDep) -> AgentCredentialsOut:
    public = key.public_key()
    return AgentCredentialsOut(
        agent_id=row.agent_id,
        username=row.agent_id,
        password=password,
        topics=agent_subtree(row.agent_id),
        public_key=SigningKeyOut(key_id=key_id(public), public_key=encode_public_key(public)),
    )
