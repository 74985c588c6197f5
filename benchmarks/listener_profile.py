"""Where one association's time goes: the listener's CPU per slice, step by step.

Usage::

    .venv/bin/python benchmarks/listener_profile.py [--count 200] [--rounds 3]

Starts the listener in this process (embedded defaults, a temporary folder, one receiving
process), replaces its C-STORE handler by the real one cut short after each step, and sends
``--count`` 512 x 512 phantom slices with DCMTK ``storescu`` (``TCP_NODELAY=1``) over one
association, once per step and round (the steps alternate within a round). For each step it
prints the images per second, the CPU time of this process (every thread: pynetdicom's, the
handler's, the recorder's) per slice, whose difference between two rows is what that step
costs, the CPU time of the handler's own thread (median per slice), and the flushes to
disk (``fsync`` calls) per slice: a new study's and series' folders are flushed into their
parents once, the file and its folder at every slice. CPU time, not wall time, so that the
figures hold better on a shared machine (medians of ``--rounds``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from dicom_edge.durable import move_into_place  # noqa: E402
from listener import incoming, server  # noqa: E402
from listener.handlers import StoreContext, handle_store, read_while_flushing  # noqa: E402
from listener.incoming import start as start_incoming  # noqa: E402
from listener.inspection import inspect_file  # noqa: E402
from listener.server import start_listener  # noqa: E402
from listener.status import StoreStatus  # noqa: E402
from model.phantom import write_phantom_series  # noqa: E402
from stroke_triage.settings import Settings  # noqa: E402

Handler = Callable[[Any, StoreContext], Any]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _nothing(event: Any, context: StoreContext) -> Any:
    return StoreStatus.SUCCESS


def _checked(event: Any, context: StoreContext) -> Any:
    request = event.request
    context.guard.check_disk()
    inspect_file(
        Path(event.dataset_path),
        transfer_syntax_uid=str(event.context.transfer_syntax),
        sop_class_uid=str(request.AffectedSOPClassUID),
        sop_instance_uid=str(request.AffectedSOPInstanceUID),
        max_image_pixels=context.max_image_pixels,
    )
    return StoreStatus.SUCCESS


def _moved(event: Any, context: StoreContext) -> Any:
    received = Path(event.dataset_path)
    context.guard.check_disk()
    syntax = str(event.context.transfer_syntax)
    instance, _ = read_while_flushing(context, received, event.request, syntax)
    target = context.storage_dir / instance.relpath
    move_into_place(received, target, fsync=context.fsync, flushed=True)
    return StoreStatus.SUCCESS


def _in_memory(event: Any, storage_dir: Path) -> None:
    """EVT_CONN_OPEN without an incoming folder: pynetdicom keeps data sets in memory."""


#: The handler cut short after each step, in order (and whether data sets go to files as they
#: arrive); the last is the real one.
STEPS: list[tuple[str, Handler, bool]] = [
    ("nothing (answers success); data set kept in memory", _nothing, False),
    ("nothing; pynetdicom writes the data set to a file as it arrives", _nothing, True),
    ("+ header read from that file, and the checks", _checked, True),
    ("+ flush (the header read beside it), rename into place, flush of the folder", _moved, True),
    ("+ record queued, association noted (the whole handler)", handle_store, True),
]


@dataclasses.dataclass
class Run:
    """One storescu run against one step."""

    images_per_s: float
    cpu_ms_per_slice: float
    handler_cpu_ms: float
    """The median CPU time of the handler's own thread per slice (the handler alone)."""
    fsyncs_per_slice: float
    """``os.fsync`` calls in this process per slice (files and folders flushed)."""


def run_step(
    files: list[Path], workdir: Path, handler: Handler, *, to_files: bool, fsync: bool
) -> Run:
    """Send ``files`` once to a listener whose C-STORE handler is ``handler``."""
    handler_cpu: list[float] = []
    fsyncs: list[int] = []  # one entry per call (list.append is atomic across threads)
    real_fsync = os.fsync

    def counted_fsync(fd: Any) -> None:
        fsyncs.append(1)
        real_fsync(fd)

    def timed(event: Any, context: StoreContext) -> Any:
        start = time.thread_time()
        try:
            return handler(event, context)
        finally:
            handler_cpu.append(time.thread_time() - start)

    server.handle_store = timed  # type: ignore[attr-defined]
    if not to_files:
        incoming.start = _in_memory
    settings = Settings(
        data_dir=workdir,
        # One receiving process: the handler is patched into this process only.
        listener={
            "host": "127.0.0.1",
            "port": free_port(),
            "quiet_period_s": 3600,
            "processes": 1,
            "durability": "fsync" if fsync else "os",
        },
    )
    settings.ensure_dirs()
    running = start_listener(settings.listener, settings.listener_runtime())
    os.fsync = counted_fsync
    try:
        cpu, start = time.process_time(), time.perf_counter()
        subprocess.run(
            [
                "storescu",
                "-aec",
                settings.listener.ae_title,
                "127.0.0.1",
                str(running.port),
                *map(str, files),
            ],
            env={**os.environ, "TCP_NODELAY": "1"},
            check=True,
            capture_output=True,
        )
        seconds = time.perf_counter() - start
        running.recorder.flush(30)  # the records' commits count too
        cpu = time.process_time() - cpu
    finally:
        os.fsync = real_fsync
        running.stop()
        server.handle_store = handle_store  # type: ignore[attr-defined]
        incoming.start = start_incoming
    return Run(
        len(files) / seconds,
        cpu / len(files) * 1e3,
        statistics.median(handler_cpu) * 1e3,
        len(fsyncs) / len(files),
    )


def main(argv: list[str] | None = None) -> int:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3, help="runs of every step; medians")
    parser.add_argument(
        "--durability",
        choices=("both", "fsync", "os"),
        default="fsync",
        help="which durability to profile (fsync, the default, is what is shipped)",
    )
    args = parser.parse_args(argv)
    if shutil.which("storescu") is None:
        parser.error("DCMTK storescu is not installed (apt-get install dcmtk).")
    modes = {"both": (True, False), "fsync": (True,), "os": (False,)}[args.durability]
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="listener-profile-") as temp:
        workdir = Path(temp)
        files = sorted(write_phantom_series(workdir / "slices", n_slices=args.count, size=512))
        results: dict[tuple[bool, str], list[Run]] = {}
        for round_number in range(args.rounds):
            for fsync in modes:
                for index, (label, handler, to_files) in enumerate(STEPS):
                    folder = workdir / f"data-{round_number}-{int(fsync)}-{index}"
                    results.setdefault((fsync, label), []).append(
                        run_step(files, folder, handler, to_files=to_files, fsync=fsync)
                    )
    end = os.getloadavg()
    print(
        f"{args.count} slices of 512x512 CT, one association, median of {args.rounds} rounds; "
        f"load average {load[0]:.2f} at the start, {end[0]:.2f} at the end, "
        f"on {os.cpu_count()} CPUs\n"
    )
    print(
        "| durability | the handler does | img/s | listener CPU ms per slice | step's CPU ms "
        "| handler thread CPU ms | fsyncs per slice |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for fsync in modes:
        previous: float | None = None
        for label, _, _ in STEPS:
            runs = results[fsync, label]
            rate = statistics.median(run.images_per_s for run in runs)
            cpu = statistics.median(run.cpu_ms_per_slice for run in runs)
            handler_cpu = statistics.median(run.handler_cpu_ms for run in runs)
            fsyncs = statistics.median(run.fsyncs_per_slice for run in runs)
            step = "-" if previous is None else f"{cpu - previous:+.2f}"
            previous = cpu
            print(
                f"| {'fsync' if fsync else 'os'} | {label} | {rate:.0f} | {cpu:.2f} | {step} "
                f"| {handler_cpu:.2f} | {fsyncs:.3f} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
