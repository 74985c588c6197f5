"""The receiving children's log lines, written by the listener's own handlers.

A fork server starts the children, so they inherit no logging set-up: without this their INFO
lines (one per association) were lost and their warnings printed bare. Each child sends its
records over a queue, and the listener's process writes them with its own handlers, as the
logging cookbook's QueueHandler and QueueListener do ("logging to a single file from multiple
processes").
"""

from __future__ import annotations

import logging
import multiprocessing
from dataclasses import dataclass
from logging.handlers import QueueHandler, QueueListener
from typing import Any


@dataclass(frozen=True)
class ChildLogging:
    """What a child needs to log through its parent: the queue, and the parent's levels."""

    queue: Any
    """A multiprocessing queue of the fork server's context."""
    levels: dict[str, int]
    """Levels set in the parent: ``""`` for the root logger, and every logger given its own."""


def forward_child_logs(
    context: multiprocessing.context.BaseContext,
) -> tuple[ChildLogging, QueueListener]:
    """Start writing children's records with this process's handlers; stop the listener after
    the children have stopped."""
    queue = context.Queue()
    root = logging.getLogger()
    writer = QueueListener(queue, *root.handlers, respect_handler_level=True)
    writer.start()
    levels = {"": root.level}
    for name, logger in logging.root.manager.loggerDict.items():
        if isinstance(logger, logging.Logger) and logger.level != logging.NOTSET:
            levels[name] = logger.level
    return ChildLogging(queue=queue, levels=levels), writer


def log_through_parent(setup: ChildLogging) -> None:
    """In a child: send every record to the parent, filtered by the parent's levels."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(QueueHandler(setup.queue))
    for name, level in setup.levels.items():
        logging.getLogger(name or None).setLevel(level)
