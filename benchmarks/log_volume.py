"""How many lines `stroke-triage up` logs for a few series, and whose they are.

Starts `stroke-triage up` (log level INFO, a random checkpoint, a folder PACS), sends
``--series`` phantom series of ``--slices`` slices, waits for every SR to reach the PACS, stops
the service, and prints the number of log lines, the lines per logger name (ours and the
third-party ones), and the lines per series.

    .venv/bin/python benchmarks/log_volume.py [--series 6] [--slices 8]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dicom_edge.peers import FolderPacs, echo, send_files  # noqa: E402
from model.checkpoint import create_random_checkpoint  # noqa: E402
from model.phantom import write_phantom_series  # noqa: E402

TIMEOUT_S = 300.0
LOG_LINE = re.compile(r"^\S+ \S+ (?P<level>[A-Z]+) (?P<name>[\w.]+): ")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: object, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"Timed out waiting for {what}.")
        time.sleep(0.3)


def main() -> None:
    """Run the service, send the series, count the lines."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--series", type=int, default=6)
    parser.add_argument("--slices", type=int, default=8)
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--show-other", action="store_true", help="print the unparsed lines")
    parser.add_argument(
        "--secondary-capture", action="store_true", help="also send the heat-map capture"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-log-") as tmp:
        root = Path(tmp)
        checkpoint = create_random_checkpoint(root / "checkpoint")
        pacs = FolderPacs(root / "pacs")
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("STROKE_TRIAGE_")}
        env.update(
            {
                "PYTHONPATH": str(REPO),
                "STROKE_TRIAGE_DATA_DIR": str(root / "data"),
                "STROKE_TRIAGE_LOG_LEVEL": args.log_level,
                "STROKE_TRIAGE_LISTENER__HOST": "127.0.0.1",
                "STROKE_TRIAGE_LISTENER__PORT": str(port),
                "STROKE_TRIAGE_LISTENER__QUIET_PERIOD_S": "1",
                "STROKE_TRIAGE_API__PORT": str(free_port()),
                "STROKE_TRIAGE_WORKER__CHECKPOINT": str(checkpoint),
                "STROKE_TRIAGE_WORKER__SECONDARY_CAPTURE": str(args.secondary_capture).lower(),
                "STROKE_TRIAGE_WORKER__PACS": json.dumps(
                    [{"ae_title": pacs.ae_title, "host": "127.0.0.1", "port": pacs.port}]
                ),
            }
        )
        log_path = root / "up.log"
        with log_path.open("wb") as log_file:
            service = subprocess.Popen(
                [sys.executable, "-m", "stroke_triage", "up"],
                env=env,
                cwd=root,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
            try:
                wait_until(
                    lambda: echo(
                        host="127.0.0.1", port=port, called_ae_title="STROKETRIAGE", timeout_s=1
                    ),
                    "the listener",
                )
                for index in range(args.series):
                    files = write_phantom_series(
                        root / f"series{index}", n_slices=args.slices, size=64, seed=index
                    )
                    send_files(files, host="127.0.0.1", port=port, called_ae_title="STROKETRIAGE")
                expected = args.series * (2 if args.secondary_capture else 1)
                wait_until(lambda: len(pacs.received()) >= expected, "the reports")
                time.sleep(2.0)
            finally:
                service.send_signal(signal.SIGTERM)
                service.wait(timeout=60)
                pacs.stop()
        lines = log_path.read_text(errors="replace").splitlines()
        if service.returncode not in (0, -signal.SIGTERM):
            print("\n".join(lines[-40:]))
    names: Counter[str] = Counter()
    for line in lines:
        match = LOG_LINE.match(line)
        names[f"{match['level']} {match['name']}" if match else "(other)"] += 1
    print(
        f"{len(lines)} lines for {args.series} series ({len(lines) / args.series:.1f} a series, "
        f"secondary capture {'on' if args.secondary_capture else 'off'})"
    )
    for name, count in names.most_common():
        print(f"{count:5d}  {name}")
    if args.show_other:
        print("\n".join(line for line in lines if not LOG_LINE.match(line)))


if __name__ == "__main__":
    main()
