"""Helpers for the worker tests: a counting Storage SCP, worker contexts, received series.

Fixtures (``checkpoint``, ``runtime``) live in ``tests/worker/conftest.py``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pydicom
import torch
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt

import db.jobs
import db.receiving
from dicom_edge import PacsDestination
from model.checkpoint import random_spec, save_checkpoint
from model.network import build_network
from model.phantom import write_phantom_series
from model.spec import INTRACRANIAL_HAEMORRHAGE, CodedFinding, ModelSpec
from worker.config import WorkerConfig, WorkerRuntime
from worker.context import WorkerContext

__all__ = [
    "ACCESSION",
    "EPIDURAL",
    "SUBDURAL",
    "Pacs",
    "multi_label_checkpoint",
    "notify_context",
    "receive_accessioned_series",
    "receive_late",
    "receive_series",
    "receive_thin_series",
    "thin_slice_checkpoint",
    "worker_context",
]

EPIDURAL = CodedFinding(
    scheme="SCT", value="262300005", meaning="Epidural hemorrhage", short_name="EDH"
)
SUBDURAL = CodedFinding(
    scheme="SCT", value="35486000", meaning="Subdural hemorrhage", short_name="SDH"
)


def multi_label_checkpoint(directory: Path, *, seed: int = 0) -> Path:
    """A tiny random ViT with a sigmoid head of three outputs: any haemorrhage (the verdict),
    epidural and subdural, each mapped to its SNOMED CT finding."""
    spec = ModelSpec.model_validate(
        {
            **random_spec().model_dump(),
            "class_names": ["any", "epidural", "subdural"],
            "positive_class": "any",
            "activation": "sigmoid",
            "finding": INTRACRANIAL_HAEMORRHAGE.model_dump(),
            "outputs": [
                {"index": 0, "finding": INTRACRANIAL_HAEMORRHAGE.model_dump()},
                {"index": 1, "finding": EPIDURAL.model_dump()},
                {"index": 2, "finding": SUBDURAL.model_dump()},
            ],
            "version": "random-multi-label",
        }
    )
    torch.manual_seed(seed)
    return save_checkpoint(directory, build_network(spec), spec)


def thin_slice_checkpoint(directory: Path, *, seed: int = 0) -> Path:
    """The tiny random ViT, trained (it says) on 5 mm slices: thinner ones become slabs."""
    spec = random_spec().model_copy(update={"slice_thickness_mm": 5.0, "version": "random-5mm"})
    torch.manual_seed(seed)
    return save_checkpoint(directory, build_network(spec), spec)


#: The accession number ``receive_accessioned_series`` writes into every slice.
ACCESSION = "ACC20261130"


class Pacs:
    """A Storage SCP on a given port that counts what it receives, by SOP Instance UID."""

    def __init__(self, port: int = 0, ae_title: str = "TESTPACS") -> None:
        self.received: list[pydicom.Dataset] = []
        ae = AE(ae_title=ae_title)
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        self.server = ae.start_server(
            ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)]
        )
        self.port = int(self.server.server_address[1])
        self.ae_title = ae_title

    def _on_store(self, event: evt.Event) -> int:
        self.received.append(event.dataset)
        return 0x0000

    @property
    def destination(self) -> PacsDestination:
        return PacsDestination(ae_title=self.ae_title, host="127.0.0.1", port=self.port)

    def uids(self, modality: str) -> list[str]:
        return [str(ds.SOPInstanceUID) for ds in self.received if ds.Modality == modality]

    def stop(self) -> None:
        self.server.shutdown()


def worker_context(runtime: WorkerRuntime, checkpoint: Path, **config: Any) -> WorkerContext:
    """A worker context for ``checkpoint`` with the given config overrides."""
    return WorkerContext(config=WorkerConfig(checkpoint=checkpoint, **config), runtime=runtime)


def notify_context(runtime: WorkerRuntime, checkpoint: Path, **config: Any) -> WorkerContext:
    """As ``worker_context``, with a short export back-off (0.05 s) unless one is given."""
    config.setdefault("export_backoff_s", 0.05)
    return worker_context(runtime, checkpoint, **config)


def receive_series(ctx: WorkerContext, n_slices: int = 6, *, hold_back: int = 0) -> tuple[int, str]:
    """Write a phantom series into storage, record it and create its job.

    ``hold_back`` slices are written but not recorded: ``receive_late`` delivers them later.
    """
    folder = ctx.runtime.storage_dir / "series"
    paths = write_phantom_series(folder, n_slices=n_slices, size=64)
    return _record(ctx, paths[: len(paths) - hold_back])


def receive_thin_series(ctx: WorkerContext, n_slices: int = 48) -> tuple[int, str]:
    """A 0.625 mm phantom series (48 slices: 6 slabs of 5 mm), recorded; its job."""
    folder = ctx.runtime.storage_dir / "series"
    paths = write_phantom_series(folder, n_slices=n_slices, size=32, slice_thickness_mm=0.625)
    return _record(ctx, paths)


def receive_late(ctx: WorkerContext) -> tuple[int, str]:
    """Record every slice of the phantom series (the held-back ones arrive late); a new job."""
    return _record(ctx, sorted((ctx.runtime.storage_dir / "series").glob("*.dcm")))


def receive_accessioned_series(ctx: WorkerContext) -> tuple[int, str]:
    """A 5-slice phantom series with the accession number ``ACCESSION``, recorded; its job."""
    paths = write_phantom_series(ctx.runtime.storage_dir / "series", n_slices=5, size=32)
    for path in paths:
        dataset = pydicom.dcmread(path)
        dataset.AccessionNumber = ACCESSION
        dataset.save_as(path)
    return _record(ctx, paths)


def _record(ctx: WorkerContext, paths: list[Path]) -> tuple[int, str]:
    headers = [pydicom.dcmread(path, stop_before_pixels=True) for path in paths]
    now = datetime.now(UTC)
    records = [
        db.receiving.InstanceRecord(
            sop_instance_uid=str(ds.SOPInstanceUID),
            sop_class_uid=str(ds.SOPClassUID),
            path=str(path.relative_to(ctx.runtime.storage_dir)),
            transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
            size_bytes=path.stat().st_size,
            received_at=now,
        )
        for path, ds in zip(paths, headers, strict=True)
    ]
    series_uid = str(headers[0].SeriesInstanceUID)
    with ctx.sessions() as session:
        db.receiving.record_instances(
            session=session,
            study_instance_uid=str(headers[0].StudyInstanceUID),
            series_instance_uid=series_uid,
            modality="CT",
            series_description="phantom",
            calling_ae_title="SCANNER",
            instances=records,
        )
        job = db.jobs.create_job(session=session, series_instance_uid=series_uid)
        db.jobs.mark_job_queued(session=session, job_id=job.id, task_id="t")
        session.commit()
        return job.id, series_uid
