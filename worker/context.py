"""What one worker process holds: its settings, a database session factory, the model.

The model is loaded lazily, once per process, on the first task (so forked pool children
each load their own copy after the fork).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

import db.outcomes
import worker.metrics
from db.engine import SessionFactory, create_engine_for, make_session_factory
from db.site_key import site_key
from model.checkpoint import DEFAULT_CHECKPOINT_DIR, LoadedModel, load_checkpoint
from model.inference import Classifier
from worker.config import WorkerConfig, WorkerRuntime

log = logging.getLogger(__name__)


def checkpoint_dir(config: WorkerConfig) -> Path:
    """The checkpoint folder this worker uses: configured, or the shipped default."""
    return config.checkpoint if config.checkpoint is not None else DEFAULT_CHECKPOINT_DIR


def build_classifier(config: WorkerConfig, loaded: LoadedModel, *, source: Path) -> Classifier:
    """Wrap a loaded checkpoint as the worker does (device, precision, batch size from config).

    ``stroke-triage validate`` calls this too, so that it classifies exactly as the worker.
    """
    classifier = Classifier(
        loaded,
        device=config.device,
        precision=config.precision,
        batch_size=config.batch_size,
    )
    spec = classifier.spec
    log.info(
        "Loaded model %s %s (sha256 %s) on %s, %s",
        spec.name,
        spec.version,
        classifier.sha256[:12],
        classifier.device,
        classifier.precision,
    )
    if not spec.trained:
        log.warning("The model in %s is randomly initialised: its verdicts mean nothing.", source)
    if not spec.threshold_calibrated:
        log.warning(
            "The threshold of the model in %s was set by hand, not calibrated: run "
            "`stroke-triage calibrate` on the site's own labelled series before clinical use.",
            source,
        )
    return classifier


@dataclass
class WorkerContext:
    """Per-process state of a worker, created once and passed to every task."""

    config: WorkerConfig
    runtime: WorkerRuntime
    _sessions: SessionFactory | None = field(default=None, init=False, repr=False)
    _classifier: Classifier | None = field(default=None, init=False, repr=False)
    _challenger: Classifier | None = field(default=None, init=False, repr=False)
    _network: nn.Module | None = field(default=None, init=False, repr=False)
    _accession_key: bytes | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @property
    def sessions(self) -> SessionFactory:
        """The session factory (engine created on first use, after any fork)."""
        with self._lock:
            if self._sessions is None:
                self._sessions = make_session_factory(create_engine_for(self.runtime.database_url))
            return self._sessions

    @property
    def classifier(self) -> Classifier:
        """The classifier, loaded on first use."""
        with self._lock:
            if self._classifier is None:
                loaded = load_checkpoint(checkpoint_dir(self.config))
                # The classifier moves this very module to its device; heat maps reuse it.
                self._network = loaded.network
                self._classifier = build_classifier(
                    self.config, loaded, source=checkpoint_dir(self.config)
                )
                spec = self._classifier.spec
                worker.metrics.model_loaded(
                    name=spec.name, version=spec.version, sha256=self._classifier.sha256
                )
            return self._classifier

    @property
    def challenger(self) -> Classifier | None:
        """The challenger classifier (``challenger_checkpoint``), loaded on first use; or None."""
        directory = self.config.challenger_checkpoint
        if directory is None:
            return None
        with self._lock:
            if self._challenger is None:
                self._challenger = build_classifier(
                    self.config, load_checkpoint(directory), source=directory
                )
            return self._challenger

    @property
    def accession_key(self) -> bytes:
        """The data folder's site key (made on first use); stored accession sha256 values
        left from before revision 0010 are rekeyed with it the first time."""
        with self._lock:
            if self._accession_key is None:
                key = site_key(self.runtime.data_dir)
                sessions = self._sessions or make_session_factory(
                    create_engine_for(self.runtime.database_url)
                )
                self._sessions = sessions
                with sessions() as session:
                    db.outcomes.rekey_legacy_accessions(session=session, key=key)
                    session.commit()
                self._accession_key = key
            return self._accession_key

    @property
    def model_loaded(self) -> bool:
        """Whether this process has loaded its model (at start with ``warm_up``, else on the
        first series; in a prefork worker the children load theirs, not the parent)."""
        return self._classifier is not None

    @property
    def network(self) -> nn.Module:
        """The classifier's network (on its device), for heat maps."""
        classifier = self.classifier
        assert self._network is not None, classifier
        return self._network
