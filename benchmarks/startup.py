"""Start-up times, side by side: what a user waits for before each command does something.

Measures, in fresh processes of this venv's Python: the interpreter alone, `stroke-triage
--help`, the read-only commands `settings` and `jobs`, the first answered C-ECHO of `listen` and
of `up`, a loaded worker (`up` logs "Loaded model"), how long `up` takes to exit after SIGTERM
(idle, model loaded), and, for reference, `import torch` and `import torch, timm`. Each is run
``--runs`` times; the median and the range are printed, with the load average.

    .venv/bin/python benchmarks/startup.py [--runs 3]
"""

from __future__ import annotations

import argparse
import functools
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dicom_edge.peers import echo  # noqa: E402

TIMEOUT_S = 180.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service_env(data_dir: Path, port: int, checkpoint: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STROKE_TRIAGE_")}
    env.update(
        {
            "STROKE_TRIAGE_DATA_DIR": str(data_dir),
            "STROKE_TRIAGE_LISTENER__HOST": "127.0.0.1",
            "STROKE_TRIAGE_LISTENER__PORT": str(port),
            "STROKE_TRIAGE_API__PORT": str(free_port()),
            "STROKE_TRIAGE_WORKER__CHECKPOINT": str(checkpoint),
            "STROKE_TRIAGE_TASK_QUEUE": f"bench-startup-{os.getpid()}",
        }
    )
    return env


def timed_run(args: list[str], env: dict[str, str] | None = None) -> float:
    """Seconds for a process to run to completion (it must succeed)."""
    start = time.perf_counter()
    subprocess.run(args, env=env, cwd=REPO, check=True, capture_output=True, timeout=TIMEOUT_S)
    return time.perf_counter() - start


def service_times(command: str, checkpoint: Path) -> tuple[float, float | None, float | None]:
    """Seconds from starting ``command`` to its first C-ECHO, to "Loaded model" (``up``), and
    from SIGTERM to its exit once loaded (``up``)."""
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        port = free_port()
        log_path = Path(tmp) / "service.log"
        with log_path.open("wb") as log:
            start = time.perf_counter()
            process = subprocess.Popen(
                [sys.executable, "-m", "stroke_triage", command],
                env=service_env(Path(tmp) / "data", port, checkpoint),
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            answers = functools.partial(
                echo, host="127.0.0.1", port=port, called_ae_title="STROKETRIAGE"
            )
            echoed = wait(answers, process, log_path, start)
            loaded = stopped = None
            if command == "up":
                loaded = wait(
                    lambda: "Loaded model" in log_path.read_text(), process, log_path, start
                )
                time.sleep(1.0)  # let the worker settle into its idle polling
                signalled = time.perf_counter()
                process.terminate()
                process.wait(timeout=TIMEOUT_S)
                stopped = time.perf_counter() - signalled
            return echoed, loaded, stopped
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait(
    predicate: Callable[[], bool], process: subprocess.Popen[bytes], log: Path, start: float
) -> float:
    while not predicate():
        if process.poll() is not None:
            raise SystemExit(f"the service exited early:\n{log.read_text()[-3000:]}")
        if time.perf_counter() - start > TIMEOUT_S:
            raise SystemExit(f"nothing after {TIMEOUT_S} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.02)
    return time.perf_counter() - start


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):7.2f} s  ({min(values):.2f}-{max(values):.2f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    from model.checkpoint import create_random_checkpoint

    results: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        results.setdefault(name, []).append(value)

    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        checkpoint = create_random_checkpoint(Path(tmp) / "tiny", seed=0)
        migrated = service_env(Path(tmp) / "data", free_port(), checkpoint)
        cli = [sys.executable, "-m", "stroke_triage"]
        timed_run([*cli, "migrate"], migrated)
        for run in range(args.runs):
            print(f"run {run + 1}/{args.runs} ...", file=sys.stderr)
            add("python -c pass (the interpreter)", timed_run([sys.executable, "-c", "pass"]))
            add("stroke-triage --help", timed_run([*cli, "--help"]))
            add("stroke-triage settings", timed_run([*cli, "settings"], migrated))
            add("stroke-triage jobs (read-only)", timed_run([*cli, "jobs"], migrated))
            add("listen: first answered C-ECHO", service_times("listen", checkpoint)[0])
            echoed, loaded, stopped = service_times("up", checkpoint)
            add("up: first answered C-ECHO", echoed)
            assert loaded is not None and stopped is not None
            add("up: worker has loaded the model", loaded)
            add("up: SIGTERM to exit (idle)", stopped)
            add("python -c 'import torch'", timed_run([sys.executable, "-c", "import torch"]))
            add(
                "python -c 'import torch, timm'",
                timed_run([sys.executable, "-c", "import torch, timm"]),
            )

    load = " / ".join(f"{value:.1f}" for value in os.getloadavg())
    print(
        f"\nStart-up times, {args.runs} runs each (median, range), {os.cpu_count()} CPUs, "
        f"load average at the end {load} (1/5/15 min):"
    )
    width = max(map(len, results))
    for name, values in results.items():
        print(f"  {name.ljust(width)}  {summary(values)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
