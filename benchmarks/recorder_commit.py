"""The listener's record commit: CPU per batch of instance records, this tree and another.

Usage::

    .venv/bin/python benchmarks/recorder_commit.py [--baseline-tree DIR] [--rounds 7]

Commits batches of 1, 30 and 200 records of one series (what the recorder's 0.2 s window
gathers at a few to a few hundred images per second) with ``listener.recorder.commit_records``
into a new SQLite database (embedded defaults: WAL, ``synchronous = NORMAL``), and prints the CPU
time of each commit (median of ``--rounds``, new SOP Instance UIDs every time). The recorder
shares the GIL with the receiving threads, so this CPU is theirs too. With ``--baseline-tree``,
the same measurement runs from that checkout's code in the same run, one after the other per
round. Each tree runs in a process of its own, so that its modules are its own.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SIZES = (1, 30, 200)


def measure(tree: Path, rounds: int) -> dict[int, float]:
    """CPU ms per commit, by batch size, of the code in ``tree`` (in a fresh process)."""
    output = subprocess.run(
        [sys.executable, __file__, "--measure", str(tree), "--rounds", str(rounds)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {int(size): float(ms) for size, ms in json.loads(output).items()}


def _measure_here(rounds: int) -> dict[int, float]:
    """Run in the child: the code on ``sys.path[0]`` commits, timed by CPU."""
    import db.receiving
    from db.engine import create_engine_for, make_session_factory, migrate
    from listener.inspection import ReceivedInstance
    from listener.recorder import PendingRecord, commit_records

    with tempfile.TemporaryDirectory() as folder:
        engine = create_engine_for(f"sqlite:///{folder}/records.db")
        migrate(engine)
        sessions = make_session_factory(engine)
        serial = 0

        def batch(size: int) -> list[PendingRecord]:
            nonlocal serial
            records = []
            for _ in range(size):
                serial += 1
                uid = f"1.2.826.0.1.3680043.10.99.1.{serial}"
                instance = ReceivedInstance(
                    study_instance_uid="1.2.826.0.1.3680043.10.99",
                    series_instance_uid="1.2.826.0.1.3680043.10.99.1",
                    sop_instance_uid=uid,
                    sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                    modality="CT",
                    series_description="HEAD",
                    relpath=Path(f"study/series/{uid}.dcm"),
                )
                record = db.receiving.InstanceRecord(
                    sop_instance_uid=uid,
                    sop_class_uid=instance.sop_class_uid,
                    path=instance.relpath.as_posix(),
                    transfer_syntax_uid="1.2.840.10008.1.2.1",
                    size_bytes=525_000,
                    received_at=datetime.now(UTC),
                )
                records.append(PendingRecord(instance, "SCANNER", record))
            return records

        commit_records(sessions, batch(1))  # the series' first commit creates its rows
        timings: dict[int, list[float]] = {size: [] for size in SIZES}
        for _ in range(rounds):
            for size in SIZES:
                pending = batch(size)
                start = time.process_time()
                assert commit_records(sessions, pending) == []
                timings[size].append((time.process_time() - start) * 1e3)
        engine.dispose()
    return {size: statistics.median(values) for size, values in timings.items()}


def main(argv: list[str] | None = None) -> int:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-tree", type=Path, help="another checkout, measured beside")
    parser.add_argument("--rounds", type=int, default=7, help="commits per batch size; median")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # the child's tree
    args = parser.parse_args(argv)
    if args.measure is not None:
        sys.path.insert(0, str(args.measure.resolve()))
        print(json.dumps(_measure_here(args.rounds)))
        return 0
    trees = {"this tree": REPO_ROOT}
    if args.baseline_tree is not None:
        trees[f"baseline ({args.baseline_tree})"] = args.baseline_tree
    results = {name: measure(tree, args.rounds) for name, tree in trees.items()}
    sizes = " | ".join(f"{size} record(s)" for size in SIZES)
    print(f"CPU ms per commit of one series' records, SQLite, median of {args.rounds}\n")
    print(f"| code | {sizes} |\n| --- |{' --- |' * len(SIZES)}")
    for name, timings in results.items():
        print(f"| {name} | {' | '.join(f'{timings[size]:.1f}' for size in SIZES)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
