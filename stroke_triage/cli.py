"""The `stroke-triage` command line. Each command parses, builds settings, calls one function."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from db.enums import ExportStatus, JobStatus
from stroke_triage.settings import Settings, load_settings

log = logging.getLogger(__name__)


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config)
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return settings


def cmd_listen(args: argparse.Namespace) -> int:
    from stroke_triage.service import run_listener

    return run_listener(_settings(args))


def cmd_work(args: argparse.Namespace) -> int:
    from stroke_triage.service import run_worker

    return run_worker(_settings(args))


def cmd_up(args: argparse.Namespace) -> int:
    from stroke_triage.service import run_all

    return run_all(_settings(args))


def cmd_demo(args: argparse.Namespace) -> int:
    from stroke_triage.demo import print_result, run_demo

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
    result = run_demo(series_dir=args.series, workdir=args.workdir)
    print_result(result)
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    from stroke_triage.admin import print_results

    return print_results(_settings(args), limit=args.limit)


def cmd_jobs(args: argparse.Namespace) -> int:
    from stroke_triage.admin import print_jobs

    return print_jobs(_settings(args), status=args.status, limit=args.limit)


def cmd_requeue(args: argparse.Namespace) -> int:
    from stroke_triage.admin import requeue

    return requeue(_settings(args), job_id=args.job_id)


def cmd_exports(args: argparse.Namespace) -> int:
    from stroke_triage.admin import print_exports

    return print_exports(_settings(args), status=args.status, limit=args.limit)


def cmd_retry_export(args: argparse.Namespace) -> int:
    from stroke_triage.admin import retry_exports

    return retry_exports(_settings(args), export_ids=args.export_ids, all_dead=args.all_dead)


def cmd_purge(args: argparse.Namespace) -> int:
    from stroke_triage.admin import purge

    return purge(_settings(args), older_than_days=args.older_than_days, dry_run=args.dry_run)


def cmd_phantom(args: argparse.Namespace) -> int:
    from model.phantom import Lesion, write_phantom_series

    lesion = Lesion(args.lesion) if args.lesion else None
    files = write_phantom_series(args.output, n_slices=args.slices, lesion=lesion, seed=args.seed)
    print(f"Wrote {len(files)} slices to {args.output}")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from db.engine import migrate

    settings = _settings(args)
    settings.ensure_dirs()
    migrate(settings.resolved_database_url)
    print("Database is at the latest schema.")
    return 0


def cmd_settings(args: argparse.Namespace) -> int:
    from stroke_triage.settings_doc import settings_table

    print(settings_table())
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every command."""
    parser = argparse.ArgumentParser(
        prog="stroke-triage",
        description="Flags suspected stroke on brain CT received over DICOM. Not for clinical use.",
    )
    parser.add_argument(
        "--config", type=Path, default=None, help="TOML settings file (also STROKE_TRIAGE_CONFIG)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser("listen", help="run the DICOM listener").set_defaults(func=cmd_listen)
    commands.add_parser("work", help="run a worker").set_defaults(func=cmd_work)
    commands.add_parser("up", help="run listener and worker in one process").set_defaults(
        func=cmd_up
    )
    commands.add_parser("migrate", help="create or upgrade the database schema").set_defaults(
        func=cmd_migrate
    )

    commands.add_parser("settings", help="print every setting as a Markdown table").set_defaults(
        func=cmd_settings
    )

    demo = commands.add_parser("demo", help="send a head CT through the whole path once")
    demo.add_argument(
        "--series",
        type=Path,
        default=None,
        help="folder of a real CT series (default: a synthetic phantom)",
    )
    demo.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep the demo's files here (default: a new temporary folder)",
    )
    demo.set_defaults(func=cmd_demo)

    results = commands.add_parser("results", help="list stored results")
    results.add_argument("--limit", type=int, default=50)
    results.set_defaults(func=cmd_results)

    jobs = commands.add_parser("jobs", help="list jobs (failed ones are the dead letters)")
    jobs.add_argument(
        "--status",
        default=None,
        choices=[s.value for s in JobStatus],
        help="only jobs in this state (failed = dead letters)",
    )
    jobs.add_argument("--limit", type=int, default=50)
    jobs.set_defaults(func=cmd_jobs)

    requeue = commands.add_parser("requeue", help="send a failed job to the workers again")
    requeue.add_argument("job_id", type=int)
    requeue.set_defaults(func=cmd_requeue)

    exports = commands.add_parser("exports", help="list exports (dead ones are the dead letters)")
    exports.add_argument(
        "--status",
        default=None,
        choices=[s.value for s in ExportStatus],
        help="only exports in this state (dead = dead letters)",
    )
    exports.add_argument("--limit", type=int, default=50)
    exports.set_defaults(func=cmd_exports)

    retry_export = commands.add_parser("retry-export", help="send dead exports to the PACS again")
    retry_export.add_argument("export_ids", type=int, nargs="*", metavar="EXPORT")
    retry_export.add_argument("--all-dead", action="store_true", help="every dead export")
    retry_export.set_defaults(func=cmd_retry_export)

    purge = commands.add_parser(
        "purge",
        help="delete the stored DICOM of finished series (retention; run it daily from cron)",
    )
    purge.add_argument(
        "--older-than-days",
        type=float,
        required=True,
        help="keep a finished series this long after its last instance arrived",
    )
    purge.add_argument("--dry-run", action="store_true", help="count, delete nothing")
    purge.set_defaults(func=cmd_purge)

    phantom = commands.add_parser("phantom", help="write a synthetic head CT series")
    phantom.add_argument("--output", type=Path, required=True)
    phantom.add_argument("--slices", type=int, default=24)
    phantom.add_argument("--lesion", choices=["infarct", "haemorrhage"], default=None)
    phantom.add_argument("--seed", type=int, default=0)
    phantom.set_defaults(func=cmd_phantom)

    try:
        from stroke_triage import model_commands
    except ImportError:  # pragma: no cover - the training commands are optional
        pass
    else:
        model_commands.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `stroke-triage`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ValidationError as exc:
        print(f"stroke-triage: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from stroke_triage.errors import user_facing

        message = user_facing(exc)
        if message is None:
            raise
        print(f"stroke-triage: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
