"""The FastAPI app: ``create_app(settings)``; start-up and shutdown order live in ``lifespan``."""

from __future__ import annotations

import gc
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy import Engine

from cloud_api import errors
from cloud_api.analytics.cloud_times import CloudTimes
from cloud_api.config import Settings, load_settings
from cloud_api.db import create_db_engine, create_sessionmaker, migrate
from cloud_api.escalation.worker import EscalationWorker, escalation_worker
from cloud_api.guard import Guard
from cloud_api.ingest.worker import IngestWorker
from cloud_api.limits import LimitBodies
from cloud_api.metrics import CountRequests, FleetCollector, Metrics
from cloud_api.registry import ArtifactStore, FileArtifactStore, load_or_create_signing_key
from cloud_api.retention import Retention
from cloud_api.rollout.worker import RolloutWorker
from cloud_api.routes import (
    agent_config,
    agents,
    aggregates,
    cloud_models,
    dashboard,
    dead_letters,
    deployments,
    enrollment,
    escalations,
    events,
    feedback,
    health,
    keys,
    models,
    placement,
    samples,
    shadow,
    signals,
    signing_key,
    stats,
    stream,
    training_jobs,
)
from cloud_api.training.worker import start_training


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Signing key, artifact store, database (migrated), ingest, rollouts, escalations,
    retention; reversed."""
    settings: Settings = app.state.settings
    app.state.signing_key = load_or_create_signing_key(settings.data_dir)
    app.state.artifacts = FileArtifactStore(settings.data_dir / "artifacts")
    app.state.cloud_times = CloudTimes(app.state.artifacts)
    engine = create_db_engine(settings.database_url)
    try:
        migrate(engine)
        app.state.engine = engine
        app.state.sessionmaker = create_sessionmaker(engine)
        app.state.ingest = worker = _start_ingest(settings, engine, app.state.metrics)
        app.state.rollout = rollout = _start_rollout(settings, engine, app.state.metrics)
        app.state.escalations = runner = _start_escalations(
            settings, engine, app.state.artifacts, app.state.metrics
        )
        retention = app.state.retention = _start_retention(
            settings, engine, app.state.metrics, app.state.artifacts
        )
        training = app.state.training = start_training(
            settings,
            sessions=app.state.sessionmaker,
            store=app.state.artifacts,
            signing_key=app.state.signing_key,
        )
        app.state.metrics.watch_fleet(
            FleetCollector(app.state.sessionmaker, grace=settings.heartbeat_grace)
        )
        try:
            yield
        finally:
            app.state.metrics.unwatch_fleet()
            if training is not None:
                training.stop()
            if retention is not None:
                retention.stop()
            if runner is not None:
                runner.stop()
            if rollout is not None:
                rollout.stop()
            if worker is not None:
                worker.stop()
    finally:
        engine.dispose()


def _start_ingest(settings: Settings, engine: Engine, metrics: Metrics) -> IngestWorker | None:
    """The in-process ingest worker, started (None when ingest runs elsewhere)."""
    if not settings.ingest_enabled:
        return None
    worker = IngestWorker(
        engine=engine,
        mqtt_url=settings.ingest_broker(),
        tls=settings.mqtt_tls(),
        protocol=settings.mqtt_protocol,
        client_id=settings.ingest_client_id,
        share_group=settings.ingest_share_group,
        batch_max=settings.ingest_batch_max,
        flush_s=settings.ingest_flush_s,
        session_expiry_s=settings.ingest_session_expiry_s,
        observer=metrics.observe_batch,
    )
    worker.start()
    return worker


def _start_rollout(settings: Settings, engine: Engine, metrics: Metrics) -> RolloutWorker | None:
    """The rollout worker, started (None when rollouts are off)."""
    if not settings.rollout_enabled:
        return None
    rollout = RolloutWorker(
        engine=engine,
        mqtt_url=settings.control_broker(),
        tls=settings.mqtt_tls(),
        protocol=settings.mqtt_protocol,
        client_id=settings.rollout_client_id or f"aiot-rollout-{uuid.uuid4().hex[:12]}",
        tick_s=settings.rollout_tick_s,
        grace=settings.heartbeat_grace,
        observer=metrics.rollout.observe_tick,
    )
    rollout.start()
    return rollout


def _start_escalations(
    settings: Settings, engine: Engine, artifacts: ArtifactStore, metrics: Metrics
) -> EscalationWorker | None:
    """The cloud model runner, started (None when it is off or runs elsewhere)."""
    enabled = settings.escalation_enabled
    if not (settings.ingest_enabled if enabled is None else enabled):
        return None
    runner = escalation_worker(settings, engine, artifacts, observer=metrics.escalations.observe)
    runner.start()
    return runner


def _start_retention(
    settings: Settings, engine: Engine, metrics: Metrics, artifacts: ArtifactStore
) -> Retention | None:
    """Retention's thread, when the settings ask for one."""
    if not settings.retention_days:
        return None
    retention = Retention(
        engine=engine,
        days=settings.retention_days,
        batch=settings.retention_batch,
        interval_s=settings.retention_interval_s,
        observer=metrics.observe_retention,
        artifacts=artifacts,
    )
    retention.start()
    return retention


def create_app(settings: Settings | None = None) -> FastAPI:
    """A new app with its own settings, metrics registry, engine and ingest worker."""
    app = FastAPI(
        title="AIoT cloud API",
        version="0.1.0",
        summary="Events, summaries, agents and dead letters from the edge; the model registry "
        "and rollouts.",
        lifespan=lifespan,
    )
    app.state.settings = settings if settings is not None else load_settings()
    app.state.metrics = Metrics()
    app.state.ingest = None
    app.state.rollout = None
    app.state.escalations = None
    app.state.retention = None
    app.state.training = None
    app.state.stream_slots = stream.StreamSlots(app.state.settings.stream_max)
    # /events/stream before any /events/{...} route, which would otherwise capture "stream".
    app.include_router(stream.router)
    # Every /api/v1 caller is authenticated (cloud_api/guard.py) and every route checks its
    # scope (cloud_api/deps.py); /healthz, /metrics, /docs and /openapi.json stay open for
    # load balancers, Prometheus and people reading the contract.
    routers = (
        events,
        feedback,
        samples,
        agents,
        agent_config,
        enrollment,
        aggregates,
        signals,
        stats,
        placement,
        dead_letters,
        models,
        training_jobs,
        cloud_models,
        escalations,
        deployments,
        shadow,
        keys,
    )
    for module in (*routers, signing_key, health):
        app.include_router(module.router)
    # The page at exactly "/" and its files under /static: neither shadows /api, /docs or /healthz.
    app.include_router(dashboard.router)
    app.mount("/static", dashboard.static_files(), name="static")

    # The HTTP boundary; the middleware added last runs first. Every request is counted; /api/
    # callers are authenticated from their headers before anything is read (401), and their
    # route's scope is checked before its body is (403); a body is bounded by its route's
    # limit as it is read (413). Errors leave in one shape, without the server's insides.
    app.add_middleware(Guard)
    app.add_middleware(LimitBodies)
    app.add_middleware(CountRequests, metrics=app.state.metrics.http)
    errors.install(app, app.state.settings)
    return app


def create_serving_app(settings: Settings) -> FastAPI:
    """The app for a process that does nothing but serve it (``aiot cloud serve``).

    What the process has built so far (modules, the app, ~130 k objects) lives as long as it
    does: ``gc.freeze`` moves it out of the collector's reach, or every full collection walks
    it, an ~80 ms stall of whichever request triggers it (the p99 of large aggregate answers).
    """
    app = create_app(settings)
    gc.freeze()
    return app


def create_app_from_env() -> FastAPI:
    """The app with settings from ``AIOT_*`` only: uvicorn's factory for several workers."""
    return create_serving_app(load_settings())
