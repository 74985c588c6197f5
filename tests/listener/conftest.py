"""Fixtures for the listener: a real listener on a free port, small CT series, real clients."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, StoragePresentationContexts
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from db.engine import create_engine_for, make_session_factory
from db.models import Instance
from listener.config import ListenerConfig, ListenerRuntime
from listener.server import Listener, start_listener
from tests.conftest import free_port

LISTENER_AE = "STROKETRIAGE"
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


@dataclass
class RunningListener:
    """A listener started for one test, with its folders and database."""

    listener: Listener
    config: ListenerConfig
    runtime: ListenerRuntime
    sessions: sessionmaker[Session]

    @property
    def port(self) -> int:
        return self.listener.port

    @property
    def storage_dir(self) -> Path:
        return self.runtime.storage_dir

    def instance_count(self) -> int:
        self.listener.recorder.flush(30)
        with self.sessions() as session:
            return int(session.execute(select(func.count(Instance.id))).scalar_one())

    def stored_files(self) -> list[Path]:
        return sorted(self.storage_dir.glob("*/*/*.dcm"))

    def partial_files(self) -> list[Path]:
        return sorted(self.storage_dir.rglob("*.part"))


@pytest.fixture
def start_listener_for_test(tmp_path: Path) -> Iterator[Callable[..., RunningListener]]:
    """A factory: start a listener with config overrides; all are stopped at the end."""
    started: list[tuple[Listener, Any]] = []

    def start(*, broker_url: str = "memory://", **overrides: Any) -> RunningListener:
        values: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": free_port(),
            "quiet_period_s": 3600.0,
            "check_interval_s": 0.1,
            "min_free_disk_mb": 0.0,
            "min_slices": 3,
        }
        values.update(overrides)
        config = ListenerConfig(**values)
        runtime = ListenerRuntime(
            storage_dir=tmp_path / "storage",
            database_url=f"sqlite:///{tmp_path / 'listener.db'}",
            broker_url=broker_url,
            task_queue="listener-test",
        )
        listener = start_listener(config, runtime)
        engine = create_engine_for(runtime.database_url)
        started.append((listener, engine))
        return RunningListener(listener, config, runtime, make_session_factory(engine))

    yield start
    for listener, engine in started:
        listener.stop()
        engine.dispose()


def ct_dataset(
    *,
    study_uid: str,
    series_uid: str,
    number: int,
    size: int = 64,
    description: str = "HEAD AXIAL",
) -> FileDataset:
    """One small axial head CT slice, valid enough for every receiver."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\x00" * 128)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = generate_uid(entropy_srcs=[series_uid, "frame of reference"])
    ds.Modality = "CT"
    ds.PatientID = "TEST"
    ds.BodyPartExamined = "HEAD"
    ds.SeriesDescription = description
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.InstanceNumber = number
    ds.ImagePositionPatient = [0.0, 0.0, 5.0 * number]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [0.5, 0.5]
    ds.SliceThickness = 5.0
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    pixels = (np.arange(size * size, dtype=np.uint16).reshape(size, size) + number) % 2000
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    return ds


def write_series(
    folder: Path, count: int, *, study_uid: str | None = None, series_uid: str | None = None
) -> list[Path]:
    """Write ``count`` small CT slices of one series; return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    paths = []
    for number in range(1, count + 1):
        path = folder / f"{number:04d}.dcm"
        ct_dataset(study_uid=study_uid, series_uid=series_uid, number=number).save_as(
            path, enforce_file_format=True
        )
        paths.append(path)
    return paths


def dcmtk(tool: str) -> str:
    """The path of a DCMTK tool, or skip."""
    binary = shutil.which(tool)
    if binary is None:
        pytest.skip(f"DCMTK {tool} is not installed (apt-get install dcmtk)")
    return binary


def storescu(
    files: list[Path], port: int, *extra: str, calling_ae: str = "SCANNER"
) -> subprocess.CompletedProcess[str]:
    """Send files with DCMTK storescu (TCP_NODELAY on), the way a scanner does."""
    return subprocess.run(
        [
            dcmtk("storescu"),
            *extra,
            "-aet",
            calling_ae,
            "-aec",
            LISTENER_AE,
            "127.0.0.1",
            str(port),
            *map(str, files),
        ],
        capture_output=True,
        text=True,
        check=False,
        env=DCMTK_ENV,
        timeout=120,
    )


def echoscu(port: int, *, calling_ae: str = "SCANNER") -> subprocess.CompletedProcess[str]:
    """C-ECHO with DCMTK echoscu."""
    return subprocess.run(
        [dcmtk("echoscu"), "-aet", calling_ae, "-aec", LISTENER_AE, "127.0.0.1", str(port)],
        capture_output=True,
        text=True,
        check=False,
        env=DCMTK_ENV,
        timeout=60,
    )


def scu(calling_ae: str = "PYSCU") -> AE:
    """A pynetdicom SCU proposing every storage class (uncompressed syntaxes) and C-ECHO."""
    ae = AE(ae_title=calling_ae)
    ae.requested_contexts = StoragePresentationContexts[:127]
    ae.add_requested_context("1.2.840.10008.1.1")
    return ae


def wait_until(predicate: Callable[[], bool], timeout_s: float = 30.0) -> None:
    """Poll ``predicate`` until true; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"condition not met within {timeout_s} s")


def read_header(path: Path) -> pydicom.Dataset:
    """The header of a stored file."""
    return pydicom.dcmread(path, stop_before_pixels=True)
