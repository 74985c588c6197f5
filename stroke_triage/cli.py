"""The `stroke-triage` command line. Each command parses, builds settings, calls one function."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from db.enums import ExportStatus, JobStatus
from stroke_triage.settings import Settings, load_settings
from stroke_triage.settings_errors import SettingsError

log = logging.getLogger(__name__)

#: Libraries whose INFO lines describe their own workings (each association's presentation
#: contexts, each SR content item, each migration plugin): WARNING unless log_level is DEBUG.
CHATTY_LIBRARIES = ("pynetdicom", "highdicom", "alembic")


def configure_logging(level: str) -> None:
    """Our loggers at ``level``; the chatty libraries at WARNING unless ``level`` is DEBUG."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet = (
        logging.NOTSET if level == "DEBUG" else max(logging.WARNING, logging.getLevelName(level))
    )
    for name in CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(quiet)


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config)
    configure_logging(settings.log_level)
    return settings


# The service commands end their process once stopped (stroke_triage.shutdown.end_process):
# the interpreter's teardown of torch and the rest took 1-3 s and had nothing left to save.


def cmd_listen(args: argparse.Namespace) -> int:
    from stroke_triage.service import run_listener
    from stroke_triage.shutdown import end_process

    end_process(run_listener(_settings(args)))


def cmd_work(args: argparse.Namespace) -> int:
    from stroke_triage.service import run_worker
    from stroke_triage.shutdown import end_process

    end_process(run_worker(_settings(args)))


def cmd_up(args: argparse.Namespace) -> int:
    from stroke_triage.service import run_all
    from stroke_triage.shutdown import end_process

    end_process(run_all(_settings(args)))


def cmd_demo(args: argparse.Namespace) -> int:
    from stroke_triage.demo import print_result, run_demo

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
    result = run_demo(series_dir=args.series, workdir=args.workdir)
    print_result(result)
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    if args.format != "table":
        from console.commands import print_result_records

        return print_result_records(
            _settings(args).console_runtime(), limit=args.limit, fmt=args.format
        )
    from console.admin import print_results

    return print_results(_settings(args).console_runtime(), limit=args.limit)


def cmd_api(args: argparse.Namespace) -> int:
    from console.server import run_api

    return run_api(_settings(args).console_runtime())


def cmd_token(args: argparse.Namespace) -> int:
    from console import commands

    runtime = _settings(args).console_runtime()
    if args.token_command == "create":
        return commands.create_token(runtime, name=args.name, scope=args.scope)
    if args.token_command == "revoke":
        return commands.revoke_token(runtime, name=args.name)
    return commands.list_tokens(runtime)


def cmd_audit(args: argparse.Namespace) -> int:
    from console.commands import print_audit

    return print_audit(_settings(args).console_runtime(), limit=args.limit)


def cmd_jobs(args: argparse.Namespace) -> int:
    from console.admin import print_jobs

    return print_jobs(_settings(args).console_runtime(), status=args.status, limit=args.limit)


def cmd_requeue(args: argparse.Namespace) -> int:
    from console.admin import requeue

    return requeue(_settings(args).console_runtime(), job_id=args.job_id)


def cmd_exports(args: argparse.Namespace) -> int:
    from console.admin import print_exports

    return print_exports(_settings(args).console_runtime(), status=args.status, limit=args.limit)


def cmd_retry_export(args: argparse.Namespace) -> int:
    from console.admin import retry_outbox

    return retry_outbox(
        _settings(args).console_runtime(),
        export_ids=args.export_ids,
        notification_ids=args.notification,
        all_dead=args.all_dead,
    )


def cmd_notifications(args: argparse.Namespace) -> int:
    from console.admin import print_notifications

    return print_notifications(
        _settings(args).console_runtime(), status=args.status, limit=args.limit
    )


def cmd_purge(args: argparse.Namespace) -> int:
    from console.admin import purge

    return purge(
        _settings(args).console_runtime(),
        older_than_days=args.older_than_days,
        dry_run=args.dry_run,
    )


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
    if args.table:
        from stroke_triage.settings_doc import settings_table

        print(settings_table())
        return 0
    from stroke_triage.settings_effective import effective_settings

    print(effective_settings(load_settings(args.config)))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from validation.validate import run_validate

    settings = _settings(args)
    return run_validate(
        settings.worker,
        min_slices=settings.listener.min_slices,
        series_dir=args.series,
        labels_csv=args.labels,
        output_dir=args.output,
        checkpoint=args.checkpoint,
        progress=not args.no_progress,
    )


def cmd_calibrate(args: argparse.Namespace) -> int:
    from validation.calibrate import run_calibrate

    settings = _settings(args)
    return run_calibrate(
        settings.worker,
        min_slices=settings.listener.min_slices,
        checkpoint=args.checkpoint,
        series_dir=args.series,
        labels_csv=args.labels,
        output=args.output,
        target_sensitivity=args.target_sensitivity,
        max_interval_width=args.max_interval_width,
        progress=not args.no_progress,
        version=args.version,
    )


def cmd_outcomes_import(args: argparse.Namespace) -> int:
    from validation.outcomes import run_outcomes_import

    settings = _settings(args)
    return run_outcomes_import(
        args.file, database_url=settings.resolved_database_url, data_dir=settings.data_dir
    )


def cmd_performance(args: argparse.Namespace) -> int:
    from validation.performance import print_performance

    settings = _settings(args)
    return print_performance(
        settings.resolved_database_url,
        checkpoints=[settings.worker.checkpoint, settings.worker.challenger_checkpoint],
        since=args.since,
        model_version=args.model,
    )


def _add_site_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """validate, calibrate, outcomes import, performance (issue 13)."""
    for name, help_text in (
        ("validate", "score a model on labelled DICOM series as the worker would; write a report"),
        ("calibrate", "choose the threshold on labelled series; write a NEW checkpoint"),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--series", type=Path, required=True, help="DICOM files, any layout")
        command.add_argument("--labels", type=Path, required=True, help="labels.csv")
        command.add_argument("--output", type=Path, required=True)
        command.add_argument("--checkpoint", type=Path, default=None, help="default: the worker's")
        command.add_argument("--no-progress", action="store_true", help="no progress bar")
    validate = commands.choices["validate"]
    validate.set_defaults(func=cmd_validate)
    calibrate = commands.choices["calibrate"]
    calibrate.add_argument("--target-sensitivity", type=float, default=0.95)
    calibrate.add_argument(
        "--max-interval-width",
        type=float,
        default=0.3,
        help="refuse if the achieved sensitivity's 95 %% interval is wider",
    )
    calibrate.add_argument(
        "--version",
        default=None,
        help="version label of the new checkpoint (default: SOURCE+calYYYYMMDD)",
    )
    calibrate.set_defaults(func=cmd_calibrate)
    outcomes = commands.add_parser("outcomes", help="the radiologists' ground truth")
    actions = outcomes.add_subparsers(dest="action", required=True, metavar="ACTION")
    importer = actions.add_parser("import", help="import outcomes from a CSV file (idempotent)")
    importer.add_argument("file", type=Path)
    importer.set_defaults(func=cmd_outcomes_import)
    performance = commands.add_parser(
        "performance", help="live accuracy per model version, and drift"
    )
    performance.add_argument(
        "--since", type=datetime.fromisoformat, default=None, help="ISO date, e.g. 2026-01-31"
    )
    performance.add_argument("--model", default=None, help="only this model version")
    performance.set_defaults(func=cmd_performance)


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

    settings = commands.add_parser("settings", help="print the effective settings (secrets masked)")
    settings.add_argument(
        "--table", action="store_true", help="every setting and its default, as a Markdown table"
    )
    settings.set_defaults(func=cmd_settings)

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
    results.add_argument(
        "--format",
        choices=["table", "csv", "json"],
        default="table",
        help="csv and json give the same rows as GET /api/results",
    )
    results.set_defaults(func=cmd_results)

    commands.add_parser("api", help="serve the admin console (REST API, dashboard)").set_defaults(
        func=cmd_api
    )
    token = commands.add_parser("token", help="create, list or revoke admin console tokens")
    token_commands = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    token_create = token_commands.add_parser("create", help="create a token and print it once")
    token_create.add_argument("--name", required=True)
    token_create.add_argument("--scope", choices=["read", "admin"], default="read")
    token_commands.add_parser("list", help="list tokens (never their secrets)")
    token_revoke = token_commands.add_parser("revoke", help="revoke a token by name")
    token_revoke.add_argument("name")
    token.set_defaults(func=cmd_token)
    audit = commands.add_parser("audit", help="print the audit log of admin actions")
    audit.add_argument("--limit", type=int, default=100)
    audit.set_defaults(func=cmd_audit)

    jobs = commands.add_parser("jobs", help="list jobs (failed ones are the dead letters)")
    jobs.add_argument(
        "--status",
        default=None,
        choices=[s.value for s in JobStatus],
        help="only jobs in this state (failed = dead letters, with export_failed jobs)",
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
    retry_export.add_argument(
        "--all-dead", action="store_true", help="every dead export and notification"
    )
    retry_export.add_argument(
        "--notification",
        type=int,
        action="append",
        default=[],
        metavar="ID",
        help="a notification to send again (repeatable; ids from `notifications`)",
    )
    retry_export.set_defaults(func=cmd_retry_export)

    notifications = commands.add_parser(
        "notifications", help="list webhook, e-mail and HL7 notifications (dead = dead letters)"
    )
    notifications.add_argument(
        "--status", default=None, choices=[s.value for s in ExportStatus], help="only this state"
    )
    notifications.add_argument("--limit", type=int, default=50)
    notifications.set_defaults(func=cmd_notifications)

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

    _add_site_commands(commands)

    try:
        from model.training import commands as model_commands
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
    except SettingsError as exc:
        for line in str(exc).splitlines():
            print(f"stroke-triage: {line}", file=sys.stderr)
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
