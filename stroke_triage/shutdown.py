"""A prompt exit on SIGTERM: the service stops in about a second, and loses nothing.

Two things made `up` take 5-10 s to exit after SIGTERM, and neither did any work:

* Celery's warm shutdown with a polling broker (the embedded folder queue). The worker's loop
  only checks its stop flag between calls of ``drain_events(timeout=2.0)``, and then drains once
  more for up to 2 s before it stops (``celery.worker.loops.synloop``): 2-4 s of sleeping.
  :func:`wake_idle_worker_on_term` stops the idle worker at once instead.
* The interpreter's own finalization: after every thread has stopped, collecting the millions
  of objects of torch, timm and scipy took 1-3 s. :func:`end_process` skips it.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import sys
from types import FrameType
from typing import Any, NoReturn

log = logging.getLogger(__name__)


def wake_idle_worker_on_term() -> None:
    """Once the Celery worker is ready, make SIGTERM and SIGINT stop an idle worker at once.

    Celery's own handler runs first and sets the warm-shutdown flag. If the signal interrupted
    the worker between messages, sleeping in kombu's polling loop, the flag is acted on there
    and then, exactly as at the end of that sleep. Anywhere else, a task that runs included,
    nothing changes: the task finishes, and then the worker stops as Celery would.
    """
    from celery import signals

    signals.worker_ready.connect(_wrap_term_handlers, weak=False, dispatch_uid=__name__)


def _wrap_term_handlers(**_: Any) -> None:
    from celery.worker import state

    from compat import is_idle_in_kombu_polling

    for signum in (signal.SIGTERM, signal.SIGINT):
        celery_handler = signal.getsignal(signum)
        if not callable(celery_handler):
            continue

        def handler(
            number: int, frame: FrameType | None, celery_handler: Any = celery_handler
        ) -> None:
            celery_handler(number, frame)
            if is_idle_in_kombu_polling(frame):
                # Idle: no message is being fetched or run (those have frames of their own).
                state.maybe_shutdown()  # raises WorkerShutdown (or WorkerTerminate)

        signal.signal(signum, handler)


def end_process(code: int) -> NoReturn:
    """End the process of a service that has stopped: exit handlers, flushed logs, no teardown.

    Call it only when everything the service started has stopped and committed (threads
    joined, child processes reaped, the data folder's lock released). The exit handlers still
    run (multiprocessing reaps its children there, logging flushes its handlers); only the
    interpreter's garbage collection of every module is skipped, which has nothing left to save.
    """
    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # closed or broken: nothing to say there
            stream.flush()
    os._exit(code)
