"""Helpers for the listener tests: small CT series, real DICOM clients, a started listener."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, StoragePresentationContexts
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Instance
from listener.config import ListenerConfig, ListenerRuntime
from listener.server import Listener
from tests.helpers import require_tool, wait_until

__all__ = [
    "DCMTK_ENV",
    "LISTENER_AE",
    "RunningListener",
    "ct_dataset",
    "dcmtk",
    "echoscu",
    "read_header",
    "scu",
    "storescu",
    "wait_until",
    "write_series",
]

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
        """The instances stored in study/series folders.

        Not the hidden ``.incoming`` folder, whose per-association folders come and go while
        an association closes (globbing into one as it goes raises FileNotFoundError).
        """
        if not self.storage_dir.is_dir():
            return []
        return sorted(
            path
            for study in self.storage_dir.iterdir()
            if study.is_dir() and not study.name.startswith(".")
            for path in study.glob("*/*.dcm")
        )

    def partial_files(self) -> list[Path]:
        """Every ``.part`` file under the storage, ``.incoming`` included.

        :func:`os.walk` passes over a folder that goes while it walks (an association's).
        """
        return sorted(
            Path(folder, name)
            for folder, _, names in os.walk(self.storage_dir)
            for name in names
            if name.endswith(".part")
        )


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
    """The path of a DCMTK tool (skip, or fail in CI, where it is missing)."""
    return require_tool(tool, "dcmtk")


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


def read_header(path: Path) -> pydicom.Dataset:
    """The header of a stored file."""
    return pydicom.dcmread(path, stop_before_pixels=True)


def established_on(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds an established TCP connection on local ``port``."""
    return established_count(pid, port) > 0


def established_count(pid: int, port: int, *, peer_port: int | None = None) -> int:
    """How many established TCP connections on local ``port`` process ``pid`` holds.

    With ``peer_port``, only the connection from that port of the peer counts.
    """
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if peer_port is not None and remote_port != peer_port:
                continue
            if local_port == port and fields[3] == "01" and fields[9] in inodes:
                count += 1
    return count
