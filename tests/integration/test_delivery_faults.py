"""Delivery under faults (issue 9): every event an agent creates is stored exactly once.

A small fleet of agents (`aiot edge run`), one ingest (`aiot cloud ingest`) on SQLite or
PostgreSQL and a broker, each a child process ended by its pid. The faults are real: the
broker is SIGKILLed and restarted on the same port with the shipped persistence config (so it
comes back without ingest's session, and still PUBACKs what reaches nobody), ingest is
SIGSTOPped and SIGCONTed, agents are SIGKILLed with a backlog and restarted on the same outbox.

How "created" is counted: an event's ``seq`` is gap-free per (agent, pipeline) for the agent's
whole life, and the next one is persisted in the outbox file (table ``sequences``). After a
scenario the sources end, the agents drain their outboxes, stop on SIGTERM, and the database
must hold, for each (agent, pipeline), exactly the seqs ``0 .. next_seq - 1`` once each, with
unique ids. The counts are printed (``pytest -s``) and appended to
``build/test-artifacts/delivery-faults.jsonl``.
"""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import ValidationError
from sqlalchemy import Engine, text

from cloud_api.db import create_db_engine
from shared.messages import AgentStatus
from shared.topics import Channel, subscription
from tests.integration.conftest import MANIFEST, AgentProcess, IngestProcess, wait_until
from tests.services import AmqttProcess, CrashableBroker, CrashableMosquitto

# Runs of half a minute each (brokers killed, agents killed, ingest paused): the second phase.
pytestmark = [pytest.mark.integration, pytest.mark.slow]

AGENTS = 4
PIPELINES = ("spindle", "gearbox")
SPEED = 12.0
"""Simulated seconds per wall-clock second: about 10 events/s per pipeline."""
ACK_TIMEOUT_S = 2.0
FAULTS = ["imbalance", "misalignment", "bearing_outer_race", "bearing_inner_race", "impact"]
FAULT_EVERY_S = 2.5
FAULT_LASTS_S = 1.2
START_TIMEOUT_S = 60.0
DRAIN_TIMEOUT_S = 90.0
"""Sources ended and every outbox empty (on the cloud's acks) after the last fault."""
STORE_TIMEOUT_S = 60.0
"""After the agents stopped: everything they created must be in the database by then."""
INGEST_TOTALS = re.compile(
    r"stopped: (messages=\d+ events_stored=\d+ duplicates=\d+ dead_letters=(\d+))"
)
ARTIFACTS = Path(__file__).resolve().parents[2] / "build" / "test-artifacts"

Pair = tuple[str, str]
"""(agent_id, pipeline)."""


# -- what the agents created and what the cloud stored ---------------------------------------


def created(outbox: Path) -> dict[str, int]:
    """Each pipeline's next seq as the agent persisted it: how many events it has created."""
    if not outbox.exists():
        return {}
    db = sqlite3.connect(f"file:{outbox}?mode=ro", uri=True, timeout=10)
    try:
        rows = db.execute("SELECT pipeline, next_seq FROM sequences").fetchall()
    except sqlite3.OperationalError as exc:
        raise AssertionError(
            f"{outbox} has no persisted event counter (table sequences): {exc}"
        ) from None
    finally:
        db.close()
    return {pipeline: int(next_seq) for pipeline, next_seq in rows}


def waiting(outbox: Path) -> dict[str, dict[int, str]]:
    """The events still in an outbox file, per pipeline: seq -> id (a diagnostic only)."""
    db = sqlite3.connect(f"file:{outbox}?mode=ro", uri=True, timeout=10)
    try:
        rows = db.execute("SELECT payload FROM outbox WHERE kind = 'event'").fetchall()
    except sqlite3.Error:
        return {}
    finally:
        db.close()
    held: dict[str, dict[int, str]] = defaultdict(dict)
    for (payload,) in rows:
        event = json.loads(payload)
        held[event["pipeline"]][event["seq"]] = event["id"]
    return held


def stored(engine: Engine) -> dict[Pair, list[tuple[int, str]]]:
    """Every stored event as (seq, id), per (agent, pipeline)."""
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT agent_id, pipeline, seq, id FROM events")).all()
    found: dict[Pair, list[tuple[int, str]]] = defaultdict(list)
    for agent_id, pipeline, seq, event_id in rows:
        found[(agent_id, pipeline)].append((int(seq), str(event_id)))
    return found


def ranges(seqs: list[int]) -> str:
    """``[3, 4, 5, 9]`` -> ``"3-5,9"``."""
    runs: list[list[int]] = []
    for seq in sorted(seqs):
        if runs and seq == runs[-1][-1] + 1:
            runs[-1].append(seq)
        else:
            runs.append([seq])
    return ",".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


@dataclass(frozen=True)
class PairCount:
    """Created against stored for one (agent, pipeline)."""

    agent_id: str
    pipeline: str
    created: int
    stored: int
    missing: list[int]
    duplicated: dict[int, int]
    unexpected: list[int]
    duplicate_ids: int
    still_in_outbox: list[int]

    @property
    def exact(self) -> bool:
        return (
            self.created == self.stored
            and not self.missing
            and not self.duplicated
            and not self.unexpected
            and not self.duplicate_ids
        )

    def line(self) -> str:
        text = f"{self.agent_id}/{self.pipeline}: created {self.created} stored {self.stored}"
        if self.missing:
            lost = sorted(set(self.missing) - set(self.still_in_outbox))
            text += f"; missing seqs {ranges(self.missing)} ({len(self.missing)})"
            text += f", of which lost (not in the outbox either) {ranges(lost) or 'none'}"
        if self.duplicated:
            text += f"; seqs stored more than once {self.duplicated}"
        if self.unexpected:
            text += f"; seqs never created {ranges(self.unexpected)}"
        if self.duplicate_ids:
            text += f"; {self.duplicate_ids} ids stored twice"
        return text


@dataclass
class Delivery:
    """The outcome of one scenario: created against stored, pair by pair."""

    scenario: str
    pairs: list[PairCount]
    seconds: float
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def created(self) -> int:
        return sum(p.created for p in self.pairs)

    @property
    def stored(self) -> int:
        return sum(p.stored for p in self.pairs)

    def render(self) -> str:
        head = (
            f"delivery [{self.scenario}]: created {self.created}, stored {self.stored} "
            f"over {len(self.pairs)} (agent, pipeline) pairs in {self.seconds:.0f} s"
        )
        notes = "".join(f"\n  {key}: {value}" for key, value in self.notes.items())
        return head + notes + "".join(f"\n  {p.line()}" for p in self.pairs)

    def record(self) -> None:
        """Print the counts and append them to build/test-artifacts/delivery-faults.jsonl."""
        print("\n" + self.render())
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        with (ARTIFACTS / "delivery-faults.jsonl").open("a") as out:
            line = {
                "scenario": self.scenario,
                "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "seconds": round(self.seconds, 1),
                "created": self.created,
                "stored": self.stored,
                "exact": all(p.exact for p in self.pairs),
                "notes": self.notes,
                "pairs": [p.line() for p in self.pairs],
            }
            out.write(json.dumps(line) + "\n")

    def assert_exactly_once(self) -> None:
        assert self.pairs, "no agent created any event"
        assert all(p.exact for p in self.pairs), self.render()


def count(
    expected: dict[Pair, int], found: dict[Pair, list[tuple[int, str]]], outboxes: dict[str, Path]
) -> list[PairCount]:
    """Compare each pair's stored seqs with 0..created-1; name what is missing or extra."""
    pairs: list[PairCount] = []
    for (agent_id, pipeline), n in sorted(expected.items()):
        rows = found.get((agent_id, pipeline), [])
        seqs = Counter(seq for seq, _ in rows)
        missing = [s for s in range(n) if s not in seqs]
        held = waiting(outboxes[agent_id]).get(pipeline, {}) if missing else {}
        pairs.append(
            PairCount(
                agent_id=agent_id,
                pipeline=pipeline,
                created=n,
                stored=len(rows),
                missing=missing,
                duplicated={s: c for s, c in sorted(seqs.items()) if c > 1},
                unexpected=sorted(s for s in seqs if not 0 <= s < n),
                duplicate_ids=len(rows) - len({event_id for _, event_id in rows}),
                still_in_outbox=sorted(s for s in missing if s in held),
            )
        )
    for agent_id, pipeline in sorted(set(found) - set(expected)):
        rows = found[(agent_id, pipeline)]
        pairs.append(
            PairCount(agent_id, pipeline, 0, len(rows), [], {}, [s for s, _ in rows], 0, [])
        )
    return pairs


# -- the fleet ------------------------------------------------------------------------------


class StatusBoard:
    """The latest status of every agent, and when it came: how a test sees agents reconnect.

    It subscribes to statuses only, so it never becomes a subscriber of anyone's events.
    """

    def __init__(self, broker: CrashableBroker) -> None:
        self._lock = threading.Lock()
        self._latest: dict[str, tuple[float, AgentStatus]] = {}
        v5 = broker.protocol == "5"
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"board-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        )
        self._client.on_connect = lambda client, *_: client.subscribe(
            subscription(Channel.STATUS), qos=1
        )
        self._client.on_message = self._on_message
        self._client.reconnect_delay_set(1, 1)
        self._client.connect("127.0.0.1", broker.port)
        self._client.loop_start()

    def _on_message(self, _client: Any, _userdata: Any, msg: Any) -> None:
        try:
            status = AgentStatus.model_validate_json(msg.payload)
        except ValidationError:
            return
        with self._lock:
            self._latest[status.agent_id] = (time.monotonic(), status)

    def latest(self, agent_id: str, since: float) -> AgentStatus | None:
        """The agent's last status if it arrived after ``since`` (a ``time.monotonic()``)."""
        with self._lock:
            arrived, status = self._latest.get(agent_id, (0.0, None))
        return status if arrived > since else None

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def agent_config(
    workdir: Path, agent_id: str, index: int, broker: CrashableBroker, wall_s: float
) -> Path:
    """Two simulated vibration pipelines with a fault every few simulated seconds."""
    duration = wall_s * SPEED
    schedule = [
        {"at_s": 1.0 + i * FAULT_EVERY_S, "duration_s": FAULT_LASTS_S, "fault": fault}
        for i, fault in enumerate(FAULTS * int(duration / FAULT_EVERY_S / len(FAULTS) + 1))
        if 1.0 + i * FAULT_EVERY_S + FAULT_LASTS_S < duration
    ]
    config = {
        "agent_id": agent_id,
        "mqtt": {
            "url": broker.url,
            "protocol": broker.protocol,
            "heartbeat_s": 1,
            "reconnect_min_s": 1,
            "reconnect_max_s": 2,
        },
        "outbox": {
            "path": str(workdir / f"{agent_id}-outbox.db"),
            "batch_max_events": 2,
            "ack_timeout_s": ACK_TIMEOUT_S,
        },
        "pipelines": [
            {
                "name": pipeline,
                "source": {
                    "type": "simulated_vibration",
                    "seed": 100 * index + n,
                    "speed": SPEED,
                    "duration_s": duration,
                    "schedule": schedule,
                },
                "model": {"name": "vibration-anomaly", "manifest": str(MANIFEST)},
            }
            for n, pipeline in enumerate(PIPELINES)
        ],
    }
    path = workdir / f"{agent_id}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class Fleet:
    """Agents, one ingest and a broker, all processes; what a scenario starts, breaks and counts."""

    def __init__(
        self, broker: CrashableBroker, database_url: str, workdir: Path, *, wall_s: float
    ) -> None:
        self.broker = broker
        self.workdir = workdir
        self.engine = create_db_engine(database_url)
        self.ingest = IngestProcess(
            database_url, broker.url, workdir / "ingest.log", protocol=broker.protocol
        )
        tag = uuid.uuid4().hex[:6]
        self.agent_ids = [f"fault-{tag}-{n}" for n in range(AGENTS)]
        self.agents = {
            agent_id: AgentProcess(
                agent_config(workdir, agent_id, n, broker, wall_s), workdir / f"{agent_id}.log"
            )
            for n, agent_id in enumerate(self.agent_ids)
        }
        self.outboxes = {a: workdir / f"{a}-outbox.db" for a in self.agent_ids}
        self.started_at: dict[str, float] = {}
        self.board: StatusBoard | None = None
        self.notes: dict[str, Any] = {}
        self._t0 = time.monotonic()

    # -- moves ---------------------------------------------------------------------------

    def start(self) -> None:
        """Ingest first, then the agents; returns once every agent has an event stored."""
        self._t0 = time.monotonic()
        self.ingest.start()
        self.board = StatusBoard(self.broker)
        for agent_id in self.agent_ids:
            self.start_agent(agent_id)
        wait_until(
            lambda: self._alive() and all(self.stored_per_agent().get(a) for a in self.agent_ids),
            START_TIMEOUT_S,
            "every agent to have an event stored",
        )

    def start_agent(self, agent_id: str) -> None:
        self.started_at[agent_id] = time.monotonic()
        self.agents[agent_id].start()

    def kill_agent(self, agent_id: str) -> None:
        assert self.agents[agent_id].kill(signal.SIGKILL) == -signal.SIGKILL

    def restart_broker(self) -> float:
        """SIGKILL the broker and start it again on the same port; returns when it was back."""
        self.broker.kill()
        self.broker.start()
        return time.monotonic()

    def mark(self, what: str) -> None:
        """Note the seqs the pipelines are at now, so a gap can be placed on the timeline."""
        at = [n for a in self.agent_ids for n in created(self.outboxes[a]).values()] or [0]
        self.notes[what] = f"t={time.monotonic() - self._t0:.1f}s, next seqs {min(at)}-{max(at)}"

    # -- waits ---------------------------------------------------------------------------

    def wait_agents_connected(self, since: float, agent_ids: list[str] | None = None) -> None:
        """Each agent has published a status after ``since``: it is connected again."""
        board = self.board
        assert board is not None
        wanted = agent_ids or self.agent_ids
        wait_until(
            lambda: self._alive() and all(board.latest(a, since) for a in wanted),
            START_TIMEOUT_S,
            "the agents to reconnect",
        )

    def wait_created(self, more: int, agent_ids: list[str] | None = None) -> int:
        """Each agent creates ``more`` events from now on; returns how many the fleet created."""
        wanted = agent_ids or self.agent_ids
        before = self.created_per_agent()
        wait_until(
            lambda: (
                self._alive()
                and all(
                    self.created_per_agent().get(a, 0) >= before.get(a, 0) + more for a in wanted
                )
            ),
            START_TIMEOUT_S,
            f"each agent to create {more} more events",
        )
        after = self.created_per_agent()
        return sum(after.values()) - sum(before.values())

    def wait_ingest_reconnected(self, connects_before: int) -> None:
        """Ingest has connected again since it had ``connects_before`` connects, and stores."""
        wait_until(
            lambda: self._alive() and self.ingest.connects() > connects_before,
            START_TIMEOUT_S,
            "ingest to reconnect",
        )
        before = sum(self.stored_per_agent().values())
        wait_until(
            lambda: sum(self.stored_per_agent().values()) > before,
            START_TIMEOUT_S,
            "ingest to store events again",
        )

    # -- the count -----------------------------------------------------------------------

    def finish(self, scenario: str) -> Delivery:
        """Let the sources end and the outboxes drain, stop the agents, count and record."""
        board = self.board
        assert board is not None

        def drained() -> bool:
            for agent_id in self.agent_ids:
                status = board.latest(agent_id, self.started_at[agent_id])
                if status is None or not status.reason.startswith("sources finished"):
                    return False
                if status.outbox_depth:
                    return False
            return True

        try:
            wait_until(lambda: self._alive() and drained(), DRAIN_TIMEOUT_S, "drained outboxes")
            self.mark("sources ended, outboxes empty")
        except AssertionError as exc:
            self.notes["not drained"] = str(exc)  # the count below says what is missing
        codes = {a: self.agents[a].kill(signal.SIGTERM) for a in self.agent_ids}
        expected = {
            (agent_id, pipeline): n
            for agent_id in self.agent_ids
            for pipeline, n in created(self.outboxes[agent_id]).items()
        }
        deadline = time.monotonic() + STORE_TIMEOUT_S
        while True:
            found = stored(self.engine)
            if all(len(found.get(pair, [])) >= n for pair, n in expected.items()):
                break
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
        time.sleep(1.0)  # a duplicate still on its way would show now
        ingest_code = self.ingest.stop()
        totals = INGEST_TOTALS.search(self.ingest.output())
        self.notes["ingest"] = totals.group(1) if totals else "no totals logged"
        self.notes["ingest's connects (session present)"] = ", ".join(
            re.findall(r"ingest connected to \S+ \(session present: (\w+)\)", self.ingest.output())
        )
        self.notes["agent log lines at WARNING or above"] = sum(
            line.split(" ", 3)[2] in ("WARNING", "ERROR", "CRITICAL")
            for agent in self.agents.values()
            for line in agent.log.read_text(errors="replace").splitlines()
            if line.count(" ") >= 3
        )
        delivery = Delivery(
            scenario,
            count(expected, stored(self.engine), self.outboxes),
            time.monotonic() - self._t0,
            self.notes,
        )
        delivery.record()
        assert all(code == 0 for code in codes.values()), f"agents' exit codes on SIGTERM {codes}"
        assert ingest_code == 0, self.ingest.output()[-3000:]
        assert totals is not None, self.ingest.output()[-3000:]
        assert totals.group(2) == "0", f"ingest dead-lettered messages: {totals.group(1)}"
        return delivery

    def created_per_agent(self) -> dict[str, int]:
        return {a: sum(created(self.outboxes[a]).values()) for a in self.agent_ids}

    def stored_per_agent(self) -> dict[str, int]:
        per_agent: dict[str, int] = defaultdict(int)
        for (agent_id, _pipeline), rows in stored(self.engine).items():
            per_agent[agent_id] += len(rows)
        return per_agent

    def events_by_seq(self) -> dict[Pair, list[dict[str, Any]]]:
        """Stored events' state and attributes in seq order, per (agent, pipeline)."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                text("SELECT agent_id, pipeline, seq, state, attributes FROM events ORDER BY seq")
            ).all()
        events: dict[Pair, list[dict[str, Any]]] = defaultdict(list)
        for agent_id, pipeline, seq, state, attributes in rows:
            if isinstance(attributes, str):
                attributes = json.loads(attributes)
            events[(agent_id, pipeline)].append({"seq": seq, "state": state, **attributes})
        return events

    def _alive(self) -> bool:
        """Fail at once, with its log, if an agent or ingest died on its own."""
        for agent_id, agent in self.agents.items():
            process = agent.process
            if process is not None and process.poll() is not None:
                raise AssertionError(
                    f"agent {agent_id} exited with {process.returncode}:\n"
                    + agent.log.read_text(errors="replace")[-3000:]
                )
        ingest = self.ingest.process
        if ingest is not None and ingest.poll() is not None:
            raise AssertionError(
                f"ingest exited with {ingest.returncode}:\n" + self.ingest.output()[-3000:]
            )
        return True

    def close(self) -> None:
        for agent in self.agents.values():
            if agent.process is not None and agent.process.poll() is None:
                agent.kill(signal.SIGKILL)
            elif agent.process is not None:
                agent.process.wait()
        self.ingest.stop()
        if self.board is not None:
            self.board.close()
        self.engine.dispose()


# -- fixtures -------------------------------------------------------------------------------

Build = Callable[..., Fleet]
"""``fleet(broker_kind, db, wall_s=...)``: a started broker and a fleet not started yet."""


@pytest.fixture
def fleet(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Build]:
    """Builds the scenario's broker and fleet; ends every process it started, by pid."""
    brokers: list[CrashableBroker] = []
    built: list[Fleet] = []

    def build(broker_kind: str, db: str, *, wall_s: float) -> Fleet:
        broker: CrashableBroker = (
            CrashableMosquitto(tmp_path) if broker_kind == "mosquitto" else AmqttProcess(tmp_path)
        )
        broker.start()
        brokers.append(broker)
        if db == "sqlite":
            database_url = f"sqlite:///{tmp_path / 'cloud.db'}"
        else:
            database_url = request.getfixturevalue("postgres_url")
        one = Fleet(broker, database_url, tmp_path, wall_s=wall_s)
        built.append(one)
        return one

    yield build
    for one in built:
        one.close()
    for broker in brokers:
        broker.kill()


def scenario_name(request: pytest.FixtureRequest) -> str:
    name: str = request.node.name
    return name.removeprefix("test_")


def on_postgres(*more: pytest.MarkDecorator) -> Any:
    return pytest.param("postgres", marks=[pytest.mark.postgres, *more], id="postgres")


# -- the scenarios --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("broker_kind", "db"),
    [
        ("mosquitto", "sqlite"),
        pytest.param("mosquitto", "postgres", marks=pytest.mark.postgres),
        ("amqtt", "sqlite"),
        pytest.param("amqtt", "postgres", marks=[pytest.mark.postgres, pytest.mark.soak]),
    ],
)
def test_ingest_paused_while_the_broker_crashes_and_agents_reconnect_first(
    fleet: Build, request: pytest.FixtureRequest, broker_kind: str, db: str
) -> None:
    """Agents come back to a broker without ingest's session and publish to nobody; the
    broker PUBACKs that (Mosquitto with MQTT 5 reason 16, amqtt as MQTT 3.1.1 can say
    nothing). Ingest, resumed later, must still get every event."""
    f = fleet(broker_kind, db, wall_s=20)
    f.start()
    f.ingest.pause()
    f.mark("ingest paused, broker killed")
    back = f.restart_broker()
    f.wait_agents_connected(back)
    f.notes["created after the agents reconnected"] = f.wait_created(4)
    time.sleep(2 * ACK_TIMEOUT_S)  # the agents' resends reach nobody too
    f.mark("ingest resumed")
    f.ingest.resume()
    f.finish(scenario_name(request)).assert_exactly_once()


@pytest.mark.parametrize("db", ["sqlite", on_postgres(pytest.mark.soak)])
def test_broker_killed_twice_under_load(
    fleet: Build, request: pytest.FixtureRequest, db: str
) -> None:
    """Ingest and agents race to reconnect after each crash; nothing published meanwhile may
    go missing. The first crash hits a broker that never saved (it comes back empty), the
    second one a broker that saved ingest's session on a clean restart before (it comes back
    with that older state, as after an autosave)."""
    f = fleet("mosquitto", db, wall_s=15)
    f.start()
    for crash in (1, 2):
        if crash == 2:
            f.mark("clean broker restart (saves the sessions)")
            connects = f.ingest.connects()
            f.broker.stop()
            f.broker.start()
            back = time.monotonic()
            f.wait_agents_connected(back)
            f.wait_ingest_reconnected(connects)
            f.wait_created(2)
        f.mark(f"broker killed ({crash})")
        connects = f.ingest.connects()
        back = f.restart_broker()
        f.wait_agents_connected(back)
        f.wait_ingest_reconnected(connects)
        f.mark(f"all reconnected ({crash})")
        f.wait_created(2)
    f.finish(scenario_name(request)).assert_exactly_once()


@pytest.mark.parametrize("db", ["sqlite", on_postgres(pytest.mark.soak)])
@pytest.mark.parametrize("backlog", ["ingest-stopped", "broker-down"])
def test_agents_killed_with_a_backlog_resend_it_after_restart(
    fleet: Build, request: pytest.FixtureRequest, backlog: str, db: str
) -> None:
    """Half the fleet is SIGKILLed while events wait for the cloud, then restarted with the
    same config and outbox: what they held is stored once, and an incident open at the crash
    is closed on the next start (``closed_by: restart``) by the first event of the new life."""
    f = fleet("mosquitto", db, wall_s=15)
    f.start()
    victims = f.agent_ids[::2]
    f.mark(f"backlog starts ({backlog})")
    if backlog == "ingest-stopped":
        f.ingest.pause()
    else:
        f.broker.kill()
    f.wait_created(6, victims)
    for agent_id in victims:
        f.kill_agent(agent_id)
    at_kill = {agent_id: created(f.outboxes[agent_id]) for agent_id in victims}
    f.mark("victims killed")
    f.notes["events in the victims' outboxes at the kill"] = sum(
        len(held) for a in victims for held in waiting(f.outboxes[a]).values()
    )
    if backlog == "broker-down":
        f.broker.start()
    back = time.monotonic()
    for agent_id in victims:
        f.start_agent(agent_id)
    f.wait_agents_connected(back, victims)
    if backlog == "ingest-stopped":
        time.sleep(2 * ACK_TIMEOUT_S)  # the restarted agents resend to a paused ingest
        f.mark("ingest resumed")
        f.ingest.resume()
    delivery = f.finish(scenario_name(request))
    delivery.assert_exactly_once()

    # Exactly once holds, so each pair's events are its seqs 0..n-1 in order.
    events = f.events_by_seq()
    for pair, pair_events in events.items():
        states = [e["state"] for e in pair_events if e["state"] in ("start", "end")]
        assert states == ["start", "end"] * (len(states) // 2), (pair, states)
    open_at_kill = {
        (agent_id, pipeline, n)
        for agent_id, counts in at_kill.items()
        for pipeline, n in counts.items()
        if n and events[(agent_id, pipeline)][n - 1]["state"] != "end"
    }
    closed_by_restart = {
        (agent_id, pipeline, e["seq"])
        for (agent_id, pipeline), pair_events in events.items()
        for e in pair_events
        if e.get("closed_by") == "restart"
    }
    print(f"incidents open at the kill (agent, pipeline, first seq after): {sorted(open_at_kill)}")
    assert closed_by_restart == open_at_kill
