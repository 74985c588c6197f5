"""How long `stroke-triage performance` takes, and where the time goes.

Seeds a SQLite database with ``--series`` series (half of them strokes, every one with an
outcome) scored by a live model and a challenger, then runs `stroke-triage performance` in fresh
processes ``--runs`` times and prints the median and range beside the interpreter alone and the
import of the command's module (``validation.performance``), with the load average.
``--baseline DIR`` times the same commands with another source tree (say ``git archive`` of an
older commit unpacked in DIR) on the same database, the runs interleaved, and prints the ratios.

    .venv/bin/python benchmarks/performance_command.py [--series 200] [--runs 3] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import db.challengers  # noqa: E402
import db.jobs  # noqa: E402
import db.outcomes  # noqa: E402
import db.receiving  # noqa: E402
import db.results  # noqa: E402
from db.engine import SessionFactory, create_engine_for, make_session_factory, migrate  # noqa: E402
from db.enums import OutcomeKey  # noqa: E402
from model.spec import STROKE  # noqa: E402

TIMEOUT_S = 180.0


def _verdict(probability: float, version: str, sha256: str) -> db.results.Verdict:
    return db.results.Verdict(
        probability=probability,
        suspected=probability >= 0.5,
        threshold=0.5,
        model_name="bench",
        model_version=version,
        model_sha256=sha256,
        input_fingerprint="f" * 64,
        precision="fp32",
        device="cpu",
        finding_scheme=STROKE.scheme,
        finding_value=STROKE.value,
        finding_meaning=STROKE.meaning,
        finding_name=STROKE.short_name,
    )


def seed(sessions: SessionFactory, n_series: int) -> None:
    """``n_series`` series with a live and a challenger verdict and an outcome each."""
    for i in range(n_series):
        study, series = f"1.2.826.0.1.{i}", f"1.2.826.0.1.{i}.1"
        stroke = i % 2 == 0
        with sessions() as session:
            db.receiving.record_instances(
                session=session,
                study_instance_uid=study,
                series_instance_uid=series,
                modality="CT",
                series_description=None,
                calling_ae_title="SCANNER",
                instances=[
                    db.receiving.InstanceRecord(
                        f"{series}.1",
                        "1.2.840.10008.5.1.4.1.1.2",
                        f"{i}",
                        "1.2",
                        1,
                        datetime.now(UTC),
                    )
                ],
            )
            job = db.jobs.create_job(session=session, series_instance_uid=series)
            live = (0.7 if stroke else 0.3) + ((i * 37) % 20 - 10) / 50
            db.results.record_result(
                session=session,
                job_id=job.id,
                verdict=_verdict(live, "v1", "a" * 64),
                slice_scores=[],
                shadow=False,
            )
            db.challengers.record_challenger_result(
                session=session, job_id=job.id, verdict=_verdict(1 - live, "v2", "b" * 64)
            )
            db.outcomes.import_outcomes(
                session=session,
                records=[db.outcomes.OutcomeRecord(OutcomeKey.STUDY, study, stroke)],
                source="benchmark",
            )
            session.commit()


def timed_run(args: list[str], env: dict[str, str], tree: Path) -> float:
    """Seconds for a process to run in ``tree`` to completion (it must succeed).

    In ``tree``: ``-c`` and ``-m`` put the working folder first on the import path.
    """
    start = time.perf_counter()
    subprocess.run(args, env=env, cwd=tree, check=True, capture_output=True, timeout=TIMEOUT_S)
    return time.perf_counter() - start


def main() -> None:
    """Seed, run, print."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--series", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline", type=Path, default=None, help="another source tree")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-performance-") as tmp:
        data_dir = Path(tmp)
        url = f"sqlite:///{data_dir / 'stroke-triage.db'}"
        engine = create_engine_for(url)
        migrate(engine)
        seed(make_session_factory(engine), args.series)
        engine.dispose()
        clean = {k: v for k, v in os.environ.items() if not k.startswith("STROKE_TRIAGE_")}
        trees = {"this tree": REPO, **({"baseline": args.baseline} if args.baseline else {})}
        envs = {
            name: {**clean, "STROKE_TRIAGE_DATA_DIR": str(data_dir), "PYTHONPATH": str(tree)}
            for name, tree in trees.items()
        }
        python = sys.executable
        cases = {
            "python -c pass": [python, "-c", "pass"],
            "import validation.performance": [python, "-c", "import validation.performance"],
            f"performance ({args.series} series, 2 models)": [
                python,
                "-m",
                "stroke_triage",
                "performance",
            ],
        }
        print(f"load average before: {os.getloadavg()[0]:.2f}")
        for case, command in cases.items():
            times: dict[str, list[float]] = {name: [] for name in trees}
            for _ in range(args.runs):
                for name, tree in trees.items():
                    times[name].append(timed_run(command, envs[name], tree))
            medians = {name: statistics.median(values) for name, values in times.items()}
            for name, values in times.items():
                print(
                    f"{case:40s} {name:10s} median {medians[name]:6.2f} s "
                    f"(range {min(values):.2f}-{max(values):.2f}, {args.runs} runs)"
                )
            if args.baseline:
                ratio = medians["baseline"] / medians["this tree"]
                print(f"{case:40s} baseline / this tree: {ratio:.2f}x")
        print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
