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

from db.engine import SessionFactory, create_engine_for, make_session_factory
from model.checkpoint import DEFAULT_CHECKPOINT_DIR, load_checkpoint
from model.inference import Classifier
from worker.config import WorkerConfig, WorkerRuntime

log = logging.getLogger(__name__)


def checkpoint_dir(config: WorkerConfig) -> Path:
    """The checkpoint folder this worker uses: configured, or the shipped default."""
    return config.checkpoint if config.checkpoint is not None else DEFAULT_CHECKPOINT_DIR


@dataclass
class WorkerContext:
    """Per-process state of a worker, created once and passed to every task."""

    config: WorkerConfig
    runtime: WorkerRuntime
    _sessions: SessionFactory | None = field(default=None, init=False, repr=False)
    _classifier: Classifier | None = field(default=None, init=False, repr=False)
    _network: nn.Module | None = field(default=None, init=False, repr=False)
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
                directory = checkpoint_dir(self.config)
                loaded = load_checkpoint(directory)
                # The classifier moves this very module to its device; heat maps reuse it.
                self._network = loaded.network
                self._classifier = Classifier(
                    loaded,
                    device=self.config.device,
                    precision=self.config.precision,
                    batch_size=self.config.batch_size,
                )
                spec = self._classifier.spec
                log.info(
                    "Loaded model %s %s (sha256 %s) on %s, %s",
                    spec.name,
                    spec.version,
                    self._classifier.sha256[:12],
                    self._classifier.device,
                    self._classifier.precision,
                )
                if not spec.trained:
                    log.warning(
                        "The model in %s is randomly initialised: its verdicts mean nothing.",
                        directory,
                    )
            return self._classifier

    @property
    def network(self) -> nn.Module:
        """The classifier's network (on its device), for heat maps."""
        classifier = self.classifier
        assert self._network is not None, classifier
        return self._network

    def warm_up(self) -> None:
        """Load the model now, so that the first series does not wait for it."""
        try:
            _ = self.classifier
        except Exception:  # the first task will raise it again, where it is recorded
            log.exception("The model could not be loaded at start-up")
