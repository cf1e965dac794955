"""The agent: start-up and shutdown order, written once.

``start()`` reads as the order things come up: outbox and its writer, local actions, model
slots and pipelines, metrics, uplink, pipeline threads. ``stop()`` undoes it in reverse:
pipelines stop and drain into the outbox's writer and the actions, the writer stores the
rest, the actions run what is queued (briefly), the uplink gets a short grace period to flush
the outbox, then metrics and outbox close.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType

from prometheus_client import CollectorRegistry

from edge_agent import __version__
from edge_agent.config import AgentConfig
from edge_agent.delivery.action_workers import Actions
from edge_agent.delivery.escalation import EscalationDesk
from edge_agent.delivery.outbox import Outbox
from edge_agent.delivery.outbox_writer import OutboxWriter
from edge_agent.delivery.spool import Spool
from edge_agent.delivery.uplink import Uplink
from edge_agent.delivery.uploader import Uploader, UploadTarget
from edge_agent.health import AgentCollector, MetricsServer, UpdateHealth, UplinkHealth
from edge_agent.inference.slot import load_slot
from edge_agent.pipelines.base import Pipeline
from edge_agent.pipelines.sensor import SensorPipeline
from edge_agent.pipelines.vision import VisionPipeline
from edge_agent.remote_config import RemoteConfig
from edge_agent.systemd_notify import Notifier, Watchdog, watchdog_interval
from edge_agent.updates.download import DownloadPolicy
from edge_agent.updates.installer import read_password
from edge_agent.updates.updater import Updater
from shared.messages import AgentStatus, PipelineStatus, utcnow

log = logging.getLogger(__name__)


class Agent:
    """The edge daemon: pipelines feeding a durable outbox, drained to MQTT by the uplink."""

    def __init__(self, config: AgentConfig, *, flush_grace_s: float = 3.0) -> None:
        self.config = config
        self.registry = CollectorRegistry()
        self._flush_grace_s = flush_grace_s
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started_at = 0.0
        self.outbox: Outbox | None = None
        self.writer: OutboxWriter | None = None
        self.pipelines: list[Pipeline] = []
        self.uplink: Uplink | None = None
        self.metrics: MetricsServer | None = None
        self.actions: Actions | None = None
        self.updater: Updater | None = None
        self.remote_config: RemoteConfig | None = None
        self.spool: Spool | None = None
        self.uploader: Uploader | None = None
        self.escalations: EscalationDesk | None = None

    def start(self) -> None:
        """Bring the agent up; raises ConfigError, ModelError or StorageError if it cannot."""
        cfg = self.config
        self._started_at = time.monotonic()
        self.outbox = Outbox(
            cfg.outbox.path,
            max_bytes=cfg.outbox.max_bytes,
            max_age_s=cfg.outbox.max_age_s,
            sync=cfg.outbox.sync,
        )
        self.writer = OutboxWriter(self.outbox)
        self.writer.start()
        self.actions = Actions(
            cfg.agent_id, {p.name: p.actions for p in cfg.pipelines}, self.registry
        )
        self.actions.start()
        self._start_samples()
        self._start_escalations(self.outbox)
        self.pipelines = [
            (VisionPipeline if p.is_camera else SensorPipeline)(
                p,
                load_slot(p.model, p.runtime),
                agent_id=cfg.agent_id,
                actions=self.actions,
                spool=self.spool,
                escalations=self.escalations,
            )
            for p in cfg.pipelines
        ]
        if cfg.cloud is not None:
            # Before the pipelines run: a version installed before a restart takes over now.
            self.updater = Updater(cfg, self.pipelines, on_change=self._status_changed)
            self.updater.restore()
        self.remote_config = RemoteConfig.restored(cfg, self.pipelines, self._status_changed)
        self._start_metrics()
        updater = self.updater
        self.uplink = Uplink(
            cfg,
            self.outbox,
            self.status,
            desired=updater.submit if updater is not None else None,
            refused=updater.refuse_message if updater is not None else None,
            overlay=self.remote_config.submit,
            answered=self.escalations.answered if self.escalations is not None else None,
        )
        self.uplink.start()
        if updater is not None:
            updater.start()
        for pipeline in self.pipelines:
            thread = threading.Thread(
                target=self._run_pipeline, args=(pipeline,), name=f"pipeline-{pipeline.name}"
            )
            thread.start()
            self._threads.append(thread)
        log.info(
            "agent %s started: %s", cfg.agent_id,
            ", ".join(f"{p.name} ({p.slot.current().ref.name} {p.slot.current().ref.version})"
                      for p in self.pipelines),
        )  # fmt: skip

    def _start_metrics(self) -> None:
        """The agent's collector and its exporter (with the liveness and readiness probes)."""
        self.registry.register(
            AgentCollector(self.status, self._uplink_health, self._dropped, self._update_health)
        )
        metrics = self.config.metrics
        self.metrics = MetricsServer(
            self.registry, metrics.host, metrics.port, live=self.problem, ready=self.unready
        )
        self.metrics.start()

    def stop(self) -> None:
        """Stop in reverse order; every thread is joined. Safe to call more than once."""
        if self.updater is not None:
            self.updater.stop()  # first: no swap while the pipelines wind down
        self._stop.set()
        for thread in self._threads:
            thread.join()
        self._threads.clear()
        if self.writer is not None:
            self.writer.close()  # stores what the pipelines handed over last
            self.writer = None
        if self.actions is not None:
            self.actions.stop()  # after the pipelines, so their closing events still act
            self.actions = None
        if self.escalations is not None:
            self.escalations.stop()  # stores what the pipelines escalated last
        if self.spool is not None:
            self.spool.stop()  # writes what the pipelines kept last
        if self.uploader is not None:
            self.uploader.stop()  # what it has not sent waits in the spool for the next run
            self.uploader = None
        if self.uplink is not None:
            self.uplink.stop(self._flush_grace_s)
            self.uplink = None
        if self.metrics is not None:
            self.metrics.stop()
            self.metrics = None
        if self.outbox is not None:
            depth = self.outbox.depth()
            self.outbox.close()
            self.outbox = None
            log.info("agent %s stopped; %d items wait in the outbox", self.config.agent_id, depth)

    def _start_samples(self) -> None:
        """The sample spool and its writer when a pipeline collects or keeps thumbnails; the
        uploader when the
        agent knows the cloud API (with the credentials model downloads use)."""
        cfg = self.config
        if not any(p.collect is not None or p.keeps_thumbnails for p in cfg.pipelines):
            return
        spool = cfg.spool
        self.spool = Spool(
            cfg.spool_dir,
            max_bytes=spool.max_bytes,
            max_files=spool.max_files,
            queue_size=spool.queue,
        )
        self.spool.start()
        if cfg.cloud is not None:
            credentials = DownloadPolicy(
                username=cfg.cloud.username, password=read_password(cfg.cloud)
            )
            target = UploadTarget(
                cfg.cloud.base_url,
                credentials.headers(),
                tls=cfg.cloud.tls.files() if cfg.cloud.tls is not None else None,
                timeout_s=spool.upload_timeout_s,
                backoff_s=spool.upload_backoff_s,
                backoff_max_s=spool.upload_backoff_max_s,
            )
            self.uploader = Uploader(self.spool, target)
            self.uploader.start()

    def _start_escalations(self, outbox: Outbox) -> None:
        """The escalation desk, when a pipeline escalates (it stores into the outbox)."""
        if any(p.escalate is not None for p in self.config.pipelines):
            self.escalations = EscalationDesk(
                self.config.agent_id, outbox, self._online, self.spool,
                max_waiting=max(1, self.config.outbox.max_unacked_batches // 2),
            )  # fmt: skip
            self.escalations.start()

    def problem(self) -> str | None:
        """None while the agent works, else why not: the liveness probe's and systemd
        watchdog's check. The status snapshot reads every part (outbox included), so a
        wedged database or a lost thread shows here."""
        if self.outbox is None or self._stop.is_set():
            return "not running"
        try:
            self.status()
        except Exception as exc:  # whatever broke, the probe reports it rather than dying
            return f"status unavailable: {exc}"
        return None

    def unready(self) -> str | None:
        """None once the agent is running and connected to its broker, else why not."""
        uplink = self.uplink
        if self.outbox is None or uplink is None:
            return "not started"
        return None if uplink.connected else "not connected to the broker"

    def sources_done(self) -> bool:
        """Whether every pipeline's source has ended (finite sources only).

        Before the pipeline threads start nothing has ended: an agent that is still
        starting must not report "sources finished".
        """
        return bool(self._threads) and all(not t.is_alive() for t in self._threads)

    def done(self) -> bool:
        """Sources exhausted and every event acknowledged by the cloud."""
        writer = self.writer
        return (
            self.sources_done()
            and (writer is None or writer.flush(0))
            and self.outbox is not None
            and self.outbox.depth() == 0
        )

    def status(self) -> AgentStatus:
        """What the agent runs and has done: the retained heartbeat's payload."""
        outbox = self.outbox
        updater = self.updater
        uplink = self.uplink
        rtt = uplink.ack_rtt() if uplink is not None else None
        reason = "running" if not self.sources_done() else "sources finished"
        if updater is not None and updater.counters.last_refusal:
            reason = f"{reason}; refused a desired state: {updater.counters.last_refusal}"[:256]
        return AgentStatus(
            agent_id=self.config.agent_id,
            state="online",
            reason=reason,
            ts=utcnow(),
            agent_version=__version__,
            uptime_s=time.monotonic() - self._started_at,
            heartbeat_s=self.config.mqtt.heartbeat_s,
            pipelines=[
                self._uploads(
                    p.status(updater.status(p.name), updater.shadow(p.name))
                    if updater is not None
                    else p.status()
                )
                for p in self.pipelines
            ],
            outbox_depth=outbox.depth() if outbox is not None else 0,
            outbox_oldest_age_s=outbox.oldest_age_s() if outbox is not None else 0.0,
            unacked_batches=uplink.unacked_batches if uplink is not None else 0,
            ack_rtt_p50_s=rtt[0] if rtt is not None else None,
            ack_rtt_p99_s=rtt[1] if rtt is not None else None,
            link_mbps_measured=uplink.link_mbps() if uplink is not None else None,
            config=self.remote_config.status() if self.remote_config is not None else None,
            spool_depth=self.spool.depth() if self.spool is not None else 0,
            spool_bytes=self.spool.bytes if self.spool is not None else 0,
            spool_dropped=self.spool.counters.dropped if self.spool is not None else 0,
        )

    def _uploads(self, status: PipelineStatus) -> PipelineStatus:
        """A pipeline's status with what the uploader delivered of its samples."""
        uploader = self.uploader
        if uploader is None:
            return status
        c = uploader.counters
        return status.model_copy(
            update={
                "samples_uploaded": c.uploaded[status.name],
                "sample_bytes_uploaded": c.bytes_uploaded[status.name],
            }
        )

    def _run_pipeline(self, pipeline: Pipeline) -> None:
        assert self.writer is not None
        try:
            pipeline.run(self.writer, self._stop)
        except Exception:
            # A source that breaks ends its pipeline, not the agent; the status shows it.
            pipeline.counters.errors += 1
            log.exception("pipeline %s stopped on an error", pipeline.name)

    def _uplink_health(self) -> UplinkHealth | None:
        uplink = self.uplink
        if uplink is None:
            return None
        c = uplink.counters
        return UplinkHealth(
            uplink.connected,
            c.batches_published,
            c.events_acked,
            c.publish_failures,
            uplink.inflight_batches,
            c.summaries_acked,
            uplink.unacked_batches,
            c.resends,
            c.rejected,
            c.no_subscribers,
        )

    def _status_changed(self) -> None:
        uplink = self.uplink
        if uplink is not None:
            uplink.publish_status_now()

    def _update_health(self) -> UpdateHealth | None:
        updater = self.updater
        if updater is None:
            return None
        c = updater.counters
        return UpdateHealth(dict(c.outcomes), c.swaps, c.refused_messages)

    def _online(self) -> bool:
        return self.uplink is not None and self.uplink.connected

    def _dropped(self) -> int:
        return self.outbox.dropped if self.outbox is not None else 0


def run(config: AgentConfig, *, exit_when_done: bool = False) -> None:
    """Run an agent until SIGTERM/SIGINT (or, with ``exit_when_done``, until all is sent).

    Under systemd (``Type=notify``) it says READY=1 once started, pings the watchdog while
    ``Agent.problem`` finds nothing wrong, and says STOPPING=1 when it begins to stop.
    """
    stop = threading.Event()
    notifier = Notifier.from_environ()
    interval = watchdog_interval()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    agent = Agent(config)
    watchdog = None
    if interval is not None and notifier.enabled:
        watchdog = Watchdog(notifier, agent.problem, interval)
    try:
        agent.start()
        notifier.ready(f"agent {config.agent_id} running")
        if watchdog is not None:
            watchdog.start()
        while not stop.wait(0.2):
            if exit_when_done and agent.done():
                log.info("all sources finished and every event was delivered")
                break
    finally:
        notifier.stopping()
        if watchdog is not None:
            watchdog.stop()
        agent.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
