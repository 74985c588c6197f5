"""Every transfer syntax a scanner uses arrives, in its own syntax, with real files and clients."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

import db.receiving
from listener.status import StoreStatus
from tests.listener.helpers import RunningListener, ct_dataset, dcmtk, scu, storescu

Start = Callable[..., RunningListener]


def _convert(tool: str, args: list[str], source: Path, target: Path) -> Path:
    subprocess.run([dcmtk(tool), *args, str(source), str(target)], check=True, capture_output=True)
    return target


def _eight_bit(folder: Path) -> Path:
    """An 8-bit derived CT slice: JPEG Baseline (process 1) carries 8-bit samples only."""
    ds = ct_dataset(study_uid=generate_uid(), series_uid=generate_uid(), number=1)
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.PixelData = (np.arange(64 * 64) % 256).astype(np.uint8).tobytes()
    path = folder / "eight-bit.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def sources(tmp_path: Path, shared_data: Path) -> dict[str, Path]:
    """One file per transfer syntax, made with DCMTK from real CT where DCMTK can."""
    slices = shared_data / "dicom" / "single-slices"
    base = slices / "CT_small.dcm"
    return {
        ImplicitVRLittleEndian: _convert("dcmconv", ["+ti"], base, tmp_path / "implicit.dcm"),
        ExplicitVRLittleEndian: base,
        DeflatedExplicitVRLittleEndian: _convert("dcmconv", ["+td"], base, tmp_path / "df.dcm"),
        JPEGBaseline8Bit: _convert("dcmcjpeg", ["+eb"], _eight_bit(tmp_path), tmp_path / "jb.dcm"),
        JPEGLosslessSV1: _convert("dcmcjpeg", ["+e1"], base, tmp_path / "jpeg-ll.dcm"),
        JPEGLSLossless: _convert("dcmcjpls", [], base, tmp_path / "jls.dcm"),
        RLELossless: _convert("dcmcrle", [], base, tmp_path / "rle.dcm"),
        JPEG2000Lossless: slices / "693_J2KR.dcm",
        JPEG2000: slices / "693_J2KI.dcm",
        "quirk": slices / "J2K_pixelrep_mismatch.dcm",
    }


#: storescu's option that proposes each syntax (with the uncompressed ones as fallback).
PROPOSE = {
    ImplicitVRLittleEndian: "-xi",
    ExplicitVRLittleEndian: "-xe",
    DeflatedExplicitVRLittleEndian: "-xd",
    JPEGBaseline8Bit: "-xy",
    JPEGLosslessSV1: "-xs",
    JPEGLSLossless: "-xt",
    RLELossless: "-xr",
    JPEG2000Lossless: "-xv",
    JPEG2000: "-xw",
}


def test_each_transfer_syntax_is_stored_as_sent(
    start_listener_for_test: Start, sources: dict[str, Path]
) -> None:
    running = start_listener_for_test()
    expected: dict[str, str] = {}
    for syntax, path in sources.items():
        header = pydicom.dcmread(path, stop_before_pixels=True)
        actual = str(header.file_meta.TransferSyntaxUID)
        if syntax != "quirk":
            assert actual == syntax, f"{path.name} is {actual}, not {syntax}"
        # -R: only the file's SOP class; the option puts the file's own syntax first.
        sent = storescu([path], running.port, "-R", PROPOSE[actual])
        assert sent.returncode == 0, sent.stderr
        expected[str(header.SOPInstanceUID)] = actual

    with running.sessions() as session:
        running.listener.recorder.flush(30)
        recorded = {
            instance.sop_instance_uid: instance
            for uid in {str(pydicom.dcmread(p).SeriesInstanceUID) for p in sources.values()}
            for instance in db.receiving.series_instances(session=session, series_instance_uid=uid)
        }
    assert {uid: recorded[uid].transfer_syntax_uid for uid in expected} == expected
    for instance in recorded.values():
        stored = pydicom.dcmread(running.storage_dir / instance.path)
        assert stored.file_meta.TransferSyntaxUID == instance.transfer_syntax_uid
        assert stored.pixel_array.size > 0  # whole and decodable


def _enhanced_ct(frames: int = 3) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = EnhancedCTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.BodyPartExamined = "HEAD"
    ds.NumberOfFrames = frames
    ds.Rows = ds.Columns = 32
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    orientation = Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared = Dataset()
    shared.PlaneOrientationSequence = Sequence([orientation])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    ds.PixelData = np.zeros((frames, 32, 32), dtype=np.uint16).tobytes()
    return ds


def _dose_report() -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.67"  # X-Ray Radiation Dose SR
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "SR"
    ds.ValueType = "CONTAINER"
    return ds


def test_enhanced_ct_and_other_classes_are_stored(
    start_listener_for_test: Start, shared_data: Path
) -> None:
    running = start_listener_for_test()
    enhanced = _enhanced_ct()
    dose = _dose_report()
    assoc = scu().associate("127.0.0.1", running.port, ae_title="STROKETRIAGE")
    assert assoc.is_established
    assert assoc.send_c_store(enhanced).Status == StoreStatus.SUCCESS
    assert assoc.send_c_store(dose).Status == StoreStatus.SUCCESS
    assoc.release()
    philips = shared_data / "dicom" / "philips-head-phantom"
    others = [philips / "localizer" / "I10", philips / "exam-summary" / "I10"]
    sent = storescu(others, running.port, "-R")
    assert sent.returncode == 0, sent.stderr

    assert running.instance_count() == 4
    stored = pydicom.dcmread(
        running.storage_dir
        / enhanced.StudyInstanceUID
        / enhanced.SeriesInstanceUID
        / f"{enhanced.SOPInstanceUID}.dcm"
    )
    assert stored.pixel_array.shape == (3, 32, 32)
