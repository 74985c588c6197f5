"""The worker's Celery application, built from settings (never at import time)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from celery import Celery, signals
from celery.concurrency.prefork import TaskPool as PreforkPool
from kombu.entity import Queue

from compat.folder_queue import transport_for
from db.engine import Engine, check_revision, create_engine_for, make_session_factory
from db.errors import DatabaseAccessError, SchemaRevisionError
from model.device import use_one_thread
from worker.config import WorkerConfig, WorkerRuntime
from worker.context import WorkerContext
from worker.metrics import serve_metrics
from worker.monitoring import start_heartbeat
from worker.pool_models import LoadedChildren
from worker.routing import cuda_available, worker_queues
from worker.sweeper import ExportSweeper
from worker.tasks import register_tasks
from worker.warm_up import warm_up_or_log

log = logging.getLogger(__name__)


def create_celery_app(config: WorkerConfig, runtime: WorkerRuntime) -> Celery:
    """A Celery app with our queues, safety settings and tasks, bound to one worker context.

    A worker started from it also consumes the GPU queue where it has CUDA, loads the model at
    start-up (``warm_up``) and drains the export outbox in a background thread.
    """
    app = Celery("stroke-triage", broker=runtime.broker_url, set_as_current=False)
    queues = [runtime.task_queue]
    if config.gpu_queue and config.gpu_queue != runtime.task_queue:
        queues.append(config.gpu_queue)
    app.conf.update(
        broker_transport=transport_for(runtime.broker_url),  # the folder queue's, made safe
        broker_transport_options=runtime.broker_transport_options,
        broker_connection_retry_on_startup=True,
        task_queues=[Queue(name) for name in queues],  # type: ignore[no-untyped-call]
        task_default_queue=runtime.task_queue,
        task_ignore_result=True,
        # The work is idempotent, so a task is acknowledged only once it is done and is
        # given to another worker if this one dies mid-way.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_send_task_events=False,
        enable_utc=True,
    )
    ctx = WorkerContext(config=config, runtime=runtime)
    register_tasks(app, ctx)
    _connect_worker_signals(app, ctx)
    return app


def _connect_worker_signals(app: Celery, ctx: WorkerContext) -> None:
    """Hooks that run only in a worker started from ``app`` (signals are process-wide)."""
    state: dict[str, Any] = {}
    # Prefork children load their own models; the parent, which answers /ready, knows which
    # live ones have (shared memory made before the pool forks).
    children = LoadedChildren()

    def after_setup(sender: str, instance: Any, **_: Any) -> None:
        if instance.app is not app:
            return
        state["worker"] = True
        state["prefork"] = _is_prefork(instance.pool_cls)
        selected = worker_queues(ctx.config, ctx.runtime.task_queue, cuda=cuda_available())
        for name in selected[1:]:
            instance.app.amqp.queues.select_add(name)
        log.info("Worker %s consumes %s", sender, ", ".join(selected))

    def process_init(**_: Any) -> None:
        # A forked pool child: it runs the tasks, so it loads its own model.
        if not state.get("worker"):
            return
        # The parent built the network (its start-up check of the checkpoint) before the pool
        # forked: torch's OpenMP threads exist there, not here, and a parallel op in this child
        # would wait for them forever. One thread per child (one child per core) runs inline.
        use_one_thread()
        if ctx.config.warm_up:
            warm_up_or_log(ctx)
            if ctx.model_loaded:
                children.add(os.getpid())

    def task_done(**_: Any) -> None:
        # A child without warm-up loads its model with its first series.
        if state.get("prefork") and ctx.model_loaded:
            children.add(os.getpid())

    def process_shutdown(**_: Any) -> None:
        if state.get("worker"):
            children.remove(os.getpid())

    def ready(sender: Any, **_: Any) -> None:
        if not state.get("worker"):
            return
        if ctx.config.warm_up and not state["prefork"]:
            warm_up_or_log(ctx)
        engine = create_engine_for(ctx.runtime.database_url)
        sessions = make_session_factory(engine)
        sweeper = ExportSweeper(
            sessions,
            ctx.config,
            interval_s=ctx.config.export_sweep_interval_s,
            storage_dir=ctx.runtime.storage_dir,
        )
        sweeper.start()
        state["sweeper"] = sweeper
        state["heartbeat"] = start_heartbeat(
            ctx,
            sessions,
            node=getattr(sender, "hostname", None),
            model_loaded=children.any_alive if state["prefork"] else (lambda: ctx.model_loaded),
        )
        state["metrics"] = serve_metrics(
            host=ctx.config.metrics_host,
            port=ctx.config.metrics_port,
            sessions=sessions,
            problems=lambda: readiness_problems(
                ctx,
                app,
                engine,
                model_loaded=children.any_alive if state["prefork"] else None,
            ),
        )

    def shutdown(**_: Any) -> None:
        heartbeat = state.pop("heartbeat", None)
        if heartbeat is not None:
            heartbeat.stop()
        sweeper = state.pop("sweeper", None)
        if sweeper is not None:
            sweeper.stop()
        stop_metrics = state.pop("metrics", None)
        if stop_metrics is not None:
            stop_metrics()

    signals.celeryd_after_setup.connect(after_setup, weak=False)
    signals.worker_process_init.connect(process_init, weak=False)
    signals.worker_ready.connect(ready, weak=False)
    signals.task_postrun.connect(task_done, weak=False)
    signals.worker_process_shutdown.connect(process_shutdown, weak=False)
    signals.worker_shutdown.connect(shutdown, weak=False)


def _is_prefork(pool_cls: Any) -> bool:
    return isinstance(pool_cls, type) and issubclass(pool_cls, PreforkPool)


def readiness_problems(
    ctx: WorkerContext,
    app: Celery,
    engine: Engine,
    *,
    model_loaded: Callable[[], bool] | None = None,
) -> list[str]:
    """Why this worker is not ready to take a series (empty when it is): for ``/ready``.

    ``model_loaded`` says whether a process that runs tasks has its model; by default this
    process (a solo worker), for prefork whether a child has loaded one.
    """
    problems = []
    if not (model_loaded() if model_loaded is not None else ctx.model_loaded):
        problems.append("the model is not loaded yet")
    try:
        check_revision(engine)
    except SchemaRevisionError as exc:
        problems.append(str(exc))
    except DatabaseAccessError as exc:
        problems.append(f"the database is not reachable ({type(exc).__name__})")
    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
    except Exception as exc:  # kombu raises its own and the transport's errors
        problems.append(f"the broker is not reachable ({type(exc).__name__})")
    return problems
