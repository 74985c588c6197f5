"""Where one association's time goes: the C-STORE handler versus everything between handlers.

Usage::

    .venv/bin/python benchmarks/listener_profile.py [--count 200]

Starts the listener in this process (embedded defaults, a temporary folder), wraps its
C-STORE handler with a timer, sends ``--count`` 512 x 512 phantom slices with DCMTK
``storescu`` (``TCP_NODELAY=1``) over one association, and prints the median time inside the
handler and between two handlers, once with ``durability = fsync`` (the default) and once
with ``durability = os``.
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
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from listener import server  # noqa: E402
from listener.handlers import StoreContext, handle_store  # noqa: E402
from listener.server import start_listener  # noqa: E402
from model.phantom import write_phantom_series  # noqa: E402
from stroke_triage.settings import Settings  # noqa: E402


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def profile(files: list[Path], workdir: Path, *, fsync: bool) -> tuple[float, float, float]:
    """Images per second, median handler ms, median ms between handlers."""
    inside: list[float] = []
    between: list[float] = []
    last: list[float] = []

    def timed(event: Any, context: StoreContext) -> Any:
        start = time.perf_counter()
        if last:
            between.append(start - last[0])
        status = handle_store(event, dataclasses.replace(context, fsync=fsync))
        end = time.perf_counter()
        inside.append(end - start)
        last[:] = [end]
        return status

    server.handle_store = timed  # type: ignore[attr-defined]
    settings = Settings(
        data_dir=workdir / f"data-{int(fsync)}",
        # One receiving process: the timed handler is patched into this process only.
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
    try:
        start = time.perf_counter()
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
    finally:
        running.stop()
        server.handle_store = handle_store  # type: ignore[attr-defined]
    return (len(files) / seconds, statistics.median(inside) * 1e3, statistics.median(between) * 1e3)


def main(argv: list[str] | None = None) -> int:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument(
        "--durability",
        choices=("both", "fsync", "os"),
        default="both",
        help="profile one durability only (e.g. under py-spy)",
    )
    args = parser.parse_args(argv)
    if shutil.which("storescu") is None:
        parser.error("DCMTK storescu is not installed (apt-get install dcmtk).")
    with tempfile.TemporaryDirectory(prefix="listener-profile-") as temp:
        workdir = Path(temp)
        files = sorted(write_phantom_series(workdir / "slices", n_slices=args.count, size=512))
        print(f"{args.count} slices of 512x512 CT, one association\n")
        print("| writes | img/s | handler (median ms) | between handlers (median ms) |")
        print("| --- | --- | --- | --- |")
        modes = {"both": (True, False), "fsync": (True,), "os": (False,)}[args.durability]
        for fsync in modes:
            rate, inside, between = profile(files, workdir, fsync=fsync)
            label = "durable (fsync)" if fsync else "os (no fsync)"
            print(f"| {label} | {rate:.0f} | {inside:.2f} | {between:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
