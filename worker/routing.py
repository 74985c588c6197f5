"""Which queues a worker consumes, and where inference tasks go.

Every worker consumes the general task queue. When ``gpu_queue`` is set, series are sent to
that queue instead, and only workers that can run the model on CUDA consume it: a dedicated
GPU queue. A worker pinned to the CPU, or without CUDA, never takes from it.
"""

from __future__ import annotations

import logging

from worker.config import WorkerConfig

log = logging.getLogger(__name__)


def cuda_available() -> bool:
    """Whether this process can use CUDA (imports torch)."""
    import torch

    return bool(torch.cuda.is_available())


def consumes_gpu_queue(config: WorkerConfig, *, cuda: bool) -> bool:
    """Whether a worker with these settings takes tasks from the GPU queue."""
    if config.gpu_queue is None:
        return False
    if config.device == "cpu":
        return False
    if not cuda:
        log.warning(
            "No CUDA on this worker: it leaves the GPU queue %s to workers with a GPU.",
            config.gpu_queue,
        )
        return False
    return True


def worker_queues(config: WorkerConfig, task_queue: str, *, cuda: bool) -> list[str]:
    """The queues a worker consumes: the task queue, and the GPU queue where it has CUDA."""
    queues = [task_queue]
    if consumes_gpu_queue(config, cuda=cuda) and config.gpu_queue not in queues:
        queues.append(str(config.gpu_queue))
    return queues


def inference_queue(config: WorkerConfig, task_queue: str) -> str:
    """The queue a series is sent to for inference (the publisher's choice)."""
    return config.gpu_queue or task_queue
