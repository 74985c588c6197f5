"""db.tokens, db.audit and db.overview on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest

import db.audit
import db.exports
import db.overview
import db.results
import db.statistics
import db.tokens
from db.engine import SessionFactory
from db.enums import ExportStatus, JobStatus, TokenScope
from db.errors import NotFoundError
from db.overview import SeriesState
from tests.api.seed import T0, seed


def test_tokens_store_hash_and_revoke(factory: SessionFactory) -> None:
    with factory() as session:
        db.tokens.create_token(
            session=session, name="ops", scope=TokenScope.ADMIN, token_sha256="1" * 64
        )
        session.commit()
    with factory() as session:
        with pytest.raises(db.tokens.TokenNameTakenError):
            db.tokens.create_token(
                session=session, name="ops", scope=TokenScope.READ, token_sha256="2" * 64
            )
        session.rollback()
        found = db.tokens.find_active_token(session=session, token_sha256="1" * 64)
        assert found is not None and found.scope is TokenScope.ADMIN
        assert db.tokens.find_active_token(session=session, token_sha256="3" * 64) is None
        db.tokens.revoke_token(session=session, name="ops")
        session.commit()
        assert db.tokens.find_active_token(session=session, token_sha256="1" * 64) is None
        assert [t.name for t in db.tokens.list_tokens(session=session)] == ["ops"]
        with pytest.raises(NotFoundError):
            db.tokens.revoke_token(session=session, name="nobody")


def test_a_token_use_is_written_at_most_once_a_minute(factory: SessionFactory) -> None:
    with factory() as session:
        token = db.tokens.create_token(
            session=session, name="wall", scope=TokenScope.READ, token_sha256="4" * 64
        )
        session.commit()
        token_id = token.id
    for offset_s, written in [(0, True), (30, False), (59, False), (61, True)]:
        with factory() as session:
            now = T0 + timedelta(seconds=offset_s)
            assert db.tokens.touch_token(session=session, token_id=token_id, now=now) is written
            session.commit()
    with factory() as session:
        (stored,) = db.tokens.list_tokens(session=session)
        assert stored.last_used_at == T0 + timedelta(seconds=61)


def test_audit_newest_first(factory: SessionFactory) -> None:
    with factory() as session:
        for n in range(3):
            db.audit.record_action(
                session=session,
                actor="ops",
                action="job.requeue",
                target=f"job {n}",
                result="ok",
                now=T0 + timedelta(minutes=n),
            )
        session.commit()
        entries = db.audit.list_actions(session=session, limit=2)
    assert [e.target for e in entries] == ["job 2", "job 1"]
    assert entries[0].at == T0 + timedelta(minutes=2)


def test_overview_rows_filters_and_detail(factory: SessionFactory) -> None:
    seeded = seed(factory)
    with factory() as session:
        rows = db.overview.list_series(session=session)
        assert [r.series_instance_uid for r in rows] == [
            seeded.skipped_series,
            seeded.failed_series,
            seeded.done_series,
        ]
        done = rows[2]
        assert done.suspected is True and done.probability == pytest.approx(0.91)
        assert done.job_status is JobStatus.DONE and done.export_status is ExportStatus.SENT
        assert done.latency_s == pytest.approx(7.0)  # complete at +5 s, reported at +12 s
        assert done.finding_name == "stroke" and done.dead_exports == 1  # its SC is dead
        assert rows[1].job_status is JobStatus.FAILED and rows[1].probability is None
        assert rows[0].status is SeriesState.SKIPPED and rows[0].skip_reason == "too few slices"
        assert db.overview.count_series(session=session) == 3

        def uids(filters: db.overview.Filters) -> list[str]:
            return [
                r.series_instance_uid
                for r in db.overview.list_series(session=session, filters=filters)
            ]

        F = db.overview.Filters  # noqa: N806
        assert uids(F(suspected=True)) == [seeded.done_series]
        assert uids(F(suspected=False)) == []
        assert uids(F(calling_ae_title="SCANNER2")) == [seeded.failed_series]
        assert uids(F(series_status=SeriesState.SKIPPED)) == [seeded.skipped_series]
        assert uids(F(without_result=True)) == [seeded.skipped_series, seeded.failed_series]
        assert uids(F(model_version="1.0.0")) == [seeded.done_series]
        assert uids(F(with_result=True)) == [seeded.done_series]
        assert uids(F(since=T0 + timedelta(seconds=30))) == [
            seeded.skipped_series,
            seeded.failed_series,
        ]
        assert uids(F(until=T0 + timedelta(seconds=30))) == [seeded.done_series]
        page = db.overview.list_series(session=session, limit=1, offset=1)
        assert [r.series_instance_uid for r in page] == [seeded.failed_series]

        detail = db.overview.series_detail(session=session, series_instance_uid=seeded.done_series)
        assert [s.rank for s in sorted(detail.slice_scores, key=lambda s: s.sop_instance_uid)] == [
            3,
            1,
            2,
        ]
        assert {e.status for e in detail.exports} == {ExportStatus.SENT, ExportStatus.DEAD}
        assert [s.name for s in detail.stages][:3] == ["received", "last instance", "completed"]
        assert len(detail.instance_paths) == 3
        with pytest.raises(NotFoundError):
            db.overview.series_detail(session=session, series_instance_uid="9.9")

        failed = db.overview.list_jobs(session=session, filters=F(job_status=JobStatus.FAILED))
        assert [j.id for j in failed] == [seeded.failed_job]
        dead = db.overview.list_exports(session=session, filters=F(export_status=ExportStatus.DEAD))
        assert [e.id for e in dead] == [seeded.dead_export]

        stats = db.statistics.stats(
            session=session, since=T0 - timedelta(days=1), now=T0 + timedelta(hours=1)
        )
        assert stats.series_per_day == [("2026-02-28", 0), ("2026-03-01", 3)]
        assert stats.results == 1 and stats.suspected == 1 and stats.suspected_share == 1.0
        assert stats.latency_p50_s == pytest.approx(7.0)
        assert stats.suspected_by_finding == {"stroke": 1}
        assert stats.failed_jobs == 1 and stats.dead_exports == 1
        assert stats.failed_jobs_now == 1 and stats.dead_exports_now == 1
        # A window after the failures: none of its own, but the dead letters still wait.
        later = db.statistics.stats(
            session=session, since=T0 + timedelta(days=1), now=T0 + timedelta(days=2)
        )
        assert later.failed_jobs == 0 and later.dead_exports == 0
        assert later.failed_jobs_now == 1 and later.dead_exports_now == 1
        assert stats.skipped_by_reason == {"too few slices": 1}


def test_one_filter_builder_serves_jobs_and_exports(factory: SessionFactory) -> None:
    seeded = seed(factory)
    F = db.overview.Filters  # noqa: N806
    with factory() as session:

        def jobs(filters: db.overview.Filters) -> list[int]:
            return [j.id for j in db.overview.list_jobs(session=session, filters=filters)]

        def exports(filters: db.overview.Filters) -> list[int]:
            return [e.id for e in db.overview.list_exports(session=session, filters=filters)]

        assert jobs(F(calling_ae_title="SCANNER2")) == [seeded.failed_job]
        assert jobs(F(suspected=True)) == [seeded.done_job]
        assert jobs(F(model_version="1.0.0", job_status=JobStatus.DONE)) == [seeded.done_job]
        assert jobs(F(series_status=SeriesState.SKIPPED)) == []
        assert exports(F(calling_ae_title="SCANNER1", export_status=ExportStatus.SENT)) == [
            seeded.sent_export
        ]
        assert exports(F(calling_ae_title="SCANNER2")) == []
        assert exports(F(suspected=True, job_status=JobStatus.DONE)) == [
            seeded.dead_export,
            seeded.sent_export,
        ]
        with pytest.raises(ValueError, match="export status"):
            db.overview.list_series(session=session, filters=F(export_status=ExportStatus.DEAD))


def test_results_and_overview_rank_a_report_the_same_way(factory: SessionFactory) -> None:
    """A dead SR with a sent heat map is a report NOT delivered, in every list."""
    seeded = seed(factory)
    with factory() as session:
        sr = db.exports.get_export(session=session, export_id=seeded.sent_export)
        sc = db.exports.get_export(session=session, export_id=seeded.dead_export)
        sr.status, sc.status = ExportStatus.DEAD, ExportStatus.SENT
        session.commit()
    with factory() as session:
        (result,) = db.results.list_results(session=session)
        row = db.overview.series_detail(session=session, series_instance_uid=seeded.done_series).row
        listed = db.overview.list_series(
            session=session, filters=db.overview.Filters(suspected=True)
        )
    assert result.export_status is ExportStatus.DEAD
    assert row.export_status is ExportStatus.DEAD and listed[0].export_status is ExportStatus.DEAD
    assert db.overview.report_status({ExportStatus.DEAD, ExportStatus.SENT}) is ExportStatus.SENT
    assert db.overview.report_status({ExportStatus.DEAD, ExportStatus.PENDING}) is ExportStatus.DEAD
    assert db.overview.report_status({ExportStatus.FAILED}) is ExportStatus.FAILED
    assert db.overview.report_status(set()) is None


def test_last_days_one_is_today(factory: SessionFactory) -> None:
    seed(factory, base=T0 + timedelta(hours=2))  # received 10:00 on 2026-03-01
    noon = T0 + timedelta(hours=4)
    assert db.statistics.last_days(1, noon) == T0.replace(hour=0)
    assert db.statistics.last_days(7, noon) == T0.replace(hour=0) - timedelta(days=6)
    with factory() as session:
        today = db.statistics.stats(
            session=session, since=db.statistics.last_days(1, noon), now=noon
        )
    assert today.series_per_day == [("2026-03-01", 3)] and today.results == 1
