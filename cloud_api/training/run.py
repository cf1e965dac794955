"""One training job from claim to verdict: freeze the dataset, train, evaluate, register.

Each step reports progress and a log line, which also tells the runner whether the job is
still its own (a cancel, or a lease lost to another worker, stops it at the next step; its
worker also ends the whole process then, ``cloud_api.training.process``). Bad
input ends the job ``failed`` with the reason; a candidate below the gate ends it
``rejected`` with the report; only a candidate that passes is registered, through the
registry's normal path, in one transaction with its lineage and the job's ``succeeded``.
"""

from __future__ import annotations

import io
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.orm import Session, sessionmaker

from cloud_api import registry
from cloud_api.queries.models import get_model_version
from cloud_api.training import datasets, images, jobs
from cloud_api.training.evaluate import Report, judge
from cloud_api.training.spec import JobSpec, JobState
from cloud_api.training.tables import TrainedVersionRow, TrainingJobRow
from cloud_api.training.trainers import ImageOptions, ImageTrainer, Trainer, trainer_named
from shared.errors import ContractError, ModelError
from shared.messages import utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Context:
    """What a runner needs from its process: the database, the store, the signing key."""

    database_url: str
    """The database ``sessions`` open (a job's child process opens its own)."""
    sessions: sessionmaker[Session]
    store: registry.ArtifactStore
    signing_key: Ed25519PrivateKey
    tmp_dir: Path
    max_model_bytes: int
    lease: timedelta


class LostError(Exception):
    """The job is no longer this runner's: it was cancelled, or its lease was lost."""


class RefusedError(Exception):
    """The job ends in ``state`` with this reason (bad input, or the gate not met)."""

    def __init__(self, state: JobState, reason: str, report: Report | None = None) -> None:
        super().__init__(reason)
        self.state = state
        self.report = report


@dataclass
class Runner:
    """Runs one claimed job (``job_id`` with its ``token``) in ``session``."""

    context: Context
    session: Session
    job_id: int
    token: str

    def step(self, progress: float, line: str) -> None:
        """Report progress and a log line; LostError if the job is no longer ours."""
        ok = jobs.report(
            self.session, self.job_id, self.token, lease=self.context.lease,
            progress=progress, line=line,
        )  # fmt: skip
        if not ok:
            raise LostError(f"training job {self.job_id} is no longer this worker's")

    def run(self) -> None:
        """The whole job; its end is always written (unless it is no longer ours)."""
        row = jobs.get_job(self.session, self.job_id)
        assert row is not None
        try:
            self._run(jobs.spec_of(row))
        except LostError as exc:
            log.info("%s", exc)
        except RefusedError as exc:
            report = exc.report.as_dict() if exc.report is not None else None
            self._end(exc.state, str(exc), report=report)
        except (ContractError, ModelError, ValueError) as exc:
            self._end("failed", str(exc))
        except Exception as exc:  # a trainer's own bug ends its job, never the worker
            log.exception("training job %s: the trainer failed", self.job_id)
            self._end("failed", f"the trainer failed: {type(exc).__name__}: {exc}")

    def _end(self, state: JobState, reason: str, report: dict[str, Any] | None = None) -> None:
        self.session.rollback()
        jobs.finish(
            self.session, self.job_id, self.token, state=state, reason=reason, report=report
        )

    def _run(self, spec: JobSpec) -> None:
        trainer = trainer_named(spec.trainer)
        options = trainer.parse_options(spec.options)
        base = get_model_version(self.session, name=spec.base_model, version=spec.base_version)
        if base is None:
            raise ContractError(
                f"base model {spec.base_model} {spec.base_version} is not registered"
            )
        version = registry.check_name(
            spec.version or f"{spec.base_version}-job{self.job_id}", what="candidate version"
        )
        # Before hours of training, not after (the registry still refuses it at the end).
        if get_model_version(self.session, name=spec.base_model, version=version) is not None:
            raise ContractError(f"model {spec.base_model} version {version} exists already")
        self.step(0.05, "selecting samples")
        base_model = self.context.store.get(registry.artifact_key(base.name, base.version))
        if isinstance(trainer, ImageTrainer):
            assert isinstance(options, ImageOptions)
            candidate, report = self._train_frames(
                spec, trainer, options, base_model, labels=base.labels, version=version
            )
        else:
            candidate, report = self._train_windows(
                spec, trainer, options, base_model, window_shape(base.inputs)
            )
        if not report.passed:
            raise RefusedError("rejected", f"gate not met: {report.failures()}", report)
        self.step(0.9, f"gate passed; registering {spec.base_model} {version}")
        self._register(spec, version, candidate, report, task=base.task, labels=base.labels)

    def _train_windows(
        self, spec: JobSpec, trainer: Trainer, options: Any, base_model: bytes,
        shape: tuple[int, ...],
    ) -> tuple[bytes, Report]:  # fmt: skip
        """A trainer of windows: its candidate and the report against the base."""
        items = self._dataset(spec, trainer, shape, options.test_share)
        train = [item for item in items if item.split == "train"]
        test = [item for item in items if item.split == "test"]
        train_x, train_y = datasets.load_windows(self.context.store, train, trainer.index_of)
        test_x, test_y = datasets.load_windows(self.context.store, test, trainer.index_of)
        self.step(0.2, f"training on {len(train)} fleet windows ({len(test)} held out)")
        candidate = trainer.train(train_x, train_y, options)
        self.step(0.7, "evaluating the candidate against the serving version")
        sets = {"held_out": (test_x, test_y)}
        if (shipped := trainer.test_set(options)) is not None:
            sets["shipped"] = shipped
        report = judge(
            {name: trainer.evaluate(base_model, *data, options) for name, data in sets.items()},
            {name: trainer.evaluate(candidate, *data, options) for name, data in sets.items()},
            spec.gate,
        )
        return candidate, report

    def _train_frames(
        self, spec: JobSpec, trainer: ImageTrainer, options: ImageOptions, base_model: bytes, *,
        labels: list[str], version: str,
    ) -> tuple[bytes, Report]:  # fmt: skip
        """A trainer of frames (cloud_api/training/images.py): the candidate fine-tuned from
        the base, and the report on the held-out frames and the shipped test frames."""
        items, skipped = images.select_frames(
            self.session, pipeline=spec.pipeline, selector=spec.selector, classes=labels,
            test_share=options.test_share, min_score=options.min_score,
        )  # fmt: skip
        images.check(items, skipped)
        self._freeze(spec, items, skipped)
        train = [item for item in items if item.split == "train"]
        test = [item for item in items if item.split == "test"]
        train_frames = images.load_frames(self.context.store, train, labels)
        test_frames = images.load_frames(self.context.store, test, labels)
        self.step(
            0.2,
            f"fine-tuning on {len(train)} collected frames ({len(test)} held out) "
            f"on {trainer.device()}",
        )
        candidate = trainer.train(base_model, train_frames, spec.base_model, version, options)
        self.step(0.7, "evaluating the candidate against the serving version")
        sets = {"held_out": test_frames, "shipped": trainer.test_set()}
        report = judge(
            {name: trainer.evaluate(base_model, frames) for name, frames in sets.items()},
            {name: trainer.evaluate(candidate, frames) for name, frames in sets.items()},
            spec.gate,
        )
        return candidate, report

    def _dataset(
        self, spec: JobSpec, trainer: Trainer, shape: tuple[int, ...], test_share: float
    ) -> list[datasets.Item]:
        """The items, checked and frozen as a version recorded on the job."""
        items, skipped = datasets.select_items(
            self.session, pipeline=spec.pipeline, selector=spec.selector,
            window_shape=shape, test_share=test_share,
        )  # fmt: skip
        _check_classes(items, skipped, trainer)
        if len({trainer.index_of(item.label) for item in items if item.split == "train"}) < 2:
            raise RefusedError(
                "failed",
                f"the training split of {len(items)} samples has one label only; add samples "
                "or lower options.test_share",
            )
        self._freeze(spec, items, skipped)
        return items

    def _freeze(self, spec: JobSpec, items: Sequence[datasets.Item], skipped: Counter[str]) -> None:
        """Freeze the items as a dataset version recorded on the job."""
        frozen = datasets.freeze(
            self.session, job_id=self.job_id, pipeline=spec.pipeline, selector=spec.selector,
            items=items, skipped=skipped,
        )  # fmt: skip
        job = self.session.get(TrainingJobRow, self.job_id)
        assert job is not None
        job.dataset_version_id = frozen.id
        self.step(0.1, f"froze dataset version {frozen.id} (sha256 {frozen.sha256[:12]})")

    def _register(
        self, spec: JobSpec, version: str, model: bytes, report: Report, *, task: str,
        labels: list[str],
    ) -> None:  # fmt: skip
        """The job's success, the version and its lineage: one transaction, or none of them.

        The registry inspects the model first, holding no lock; the job's row is written (and
        checked to be still this runner's) only with the version, just before the commit."""
        job = self.session.get(TrainingJobRow, self.job_id)
        assert job is not None
        assert job.dataset_version_id is not None
        dataset_version_id = job.dataset_version_id
        stored = report.as_dict()

        def record() -> None:
            if not jobs.finish(
                self.session, self.job_id, self.token, state="succeeded", commit=False,
                reason=f"registered {spec.base_model} {version}", result_version=version,
                report=stored,
            ):  # fmt: skip
                raise LostError(f"training job {self.job_id} was cancelled before it registered")
            self.session.add(
                TrainedVersionRow(
                    name=spec.base_model, version=version, parent_version=spec.base_version,
                    job_id=self.job_id, dataset_version_id=dataset_version_id, report=stored,
                    created_at=utcnow(),
                )
            )  # fmt: skip

        self.session.commit()  # nothing of this job's is held while the model is inspected
        registry.register_model(
            self.session, store=self.context.store, signing_key=self.context.signing_key,
            name=spec.base_model, version=version, source=io.BytesIO(model),
            tmp_dir=self.context.tmp_dir, max_bytes=self.context.max_model_bytes, task=task,
            labels=labels, also=record,
        )  # fmt: skip


def window_shape(inputs: list[dict[str, Any]]) -> tuple[int, ...]:
    """The shape of one window the base model reads: its input's shape without the batch."""
    dims = inputs[0]["shape"][1:] if len(inputs) == 1 else []
    if not dims or not all(isinstance(dim, int) and dim > 0 for dim in dims):
        raise ContractError(f"the base model's input {inputs} has no fixed window shape")
    return tuple(dims)


def _check_classes(items: list[datasets.Item], skipped: Counter[str], trainer: Trainer) -> None:
    """RefusedError (failed) for an empty or one-class dataset, with what was left out and why."""
    why = "; ".join(f"{count} {reason}" for reason, count in skipped.most_common(3))
    left_out = f" (left out: {why})" if why else ""
    if not items:
        raise RefusedError(
            "failed", f"the dataset is empty: no sample matches the selector{left_out}"
        )
    for item in items:
        trainer.index_of(item.label)  # a label the trainer cannot learn: ContractError
    labels = Counter(trainer.index_of(item.label) for item in items)
    if len(labels) < 2:
        label = items[0].label
        raise RefusedError(
            "failed",
            f"the dataset has one class only: all {len(items)} samples are {label!r}{left_out}",
        )
