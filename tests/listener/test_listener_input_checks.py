"""Instances the worker could only misread are refused at the door, with a documented status.

A CT image without what HU conversion and geometry rely on (issue 11, item 4), and pixel data
whose encapsulation does not match the transfer syntax (item 6), are answered with a failure
status instead of success, so the sender knows and nothing half-usable reaches the worker.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.tag import Tag
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEGLSLossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)
from pynetdicom import AE, build_context
from pynetdicom.dsutils import encode, encode_file_meta, split_dataset

from listener.errors import InvalidInstanceError
from listener.inspection import inspect_dataset
from listener.status import StoreStatus
from tests.listener.helpers import RunningListener, ct_dataset, scu

Start = Callable[..., RunningListener]

#: What HU conversion and geometry rely on, and a way each one goes wrong.
BROKEN: dict[str, Callable[[Dataset], None]] = {
    "RescaleSlope": lambda ds: delattr(ds, "RescaleSlope"),
    "RescaleIntercept": lambda ds: delattr(ds, "RescaleIntercept"),
    "PixelSpacing": lambda ds: delattr(ds, "PixelSpacing"),
    "ImageOrientationPatient": lambda ds: delattr(ds, "ImageOrientationPatient"),
    "ImagePositionPatient": lambda ds: delattr(ds, "ImagePositionPatient"),
    "BitsStored": lambda ds: delattr(ds, "BitsStored"),
    "PixelRepresentation": lambda ds: delattr(ds, "PixelRepresentation"),
    "PhotometricInterpretation": lambda ds: delattr(ds, "PhotometricInterpretation"),
}


def _send(running: RunningListener, dataset: Dataset | Path, syntax: str | None = None) -> Dataset:
    ae = scu()
    if syntax is not None:
        ae = AE(ae_title="PYSCU")
        ae.requested_contexts = [build_context(CTImageStorage, [syntax])]
    assoc = ae.associate("127.0.0.1", running.port, ae_title="STROKETRIAGE")
    assert assoc.is_established
    try:
        answer = assoc.send_c_store(dataset)
    finally:
        assoc.release()
    assert "Status" in answer
    return answer


def test_ct_image_without_hu_or_geometry_attributes_is_refused(
    start_listener_for_test: Start,
) -> None:
    assert int(StoreStatus.MISSING_CT_ATTRIBUTE) == 0xA901  # as documented in the README
    running = start_listener_for_test()
    study, series = generate_uid(), generate_uid()
    for number, (keyword, breaks) in enumerate(BROKEN.items(), start=1):
        dataset = ct_dataset(study_uid=study, series_uid=series, number=number)
        breaks(dataset)
        answer = _send(running, dataset)
        assert answer.Status == StoreStatus.MISSING_CT_ATTRIBUTE, keyword
        assert keyword in str(answer.ErrorComment), keyword
        offending = answer.OffendingElement
        offending = offending if isinstance(offending, list) else [offending]
        assert Tag(keyword) in offending, keyword

    # Rows and Columns are checked for every image first: 0xA900, "no rows or columns".
    no_columns = ct_dataset(study_uid=study, series_uid=series, number=40)
    del no_columns.Columns
    answer = _send(running, no_columns)
    assert answer.Status == StoreStatus.NOT_AN_IMAGE
    assert "columns" in str(answer.ErrorComment)

    zero_slope = ct_dataset(study_uid=study, series_uid=series, number=50)
    zero_slope.RescaleSlope = 0
    assert _send(running, zero_slope).Status == StoreStatus.MISSING_CT_ATTRIBUTE
    skewed = ct_dataset(study_uid=study, series_uid=series, number=51)
    skewed.ImageOrientationPatient = [1, 0, 0, 1, 0, 0]  # row and column parallel
    assert _send(running, skewed).Status == StoreStatus.MISSING_CT_ATTRIBUTE
    assert running.stored_files() == []
    assert running.instance_count() == 0

    complete = ct_dataset(study_uid=study, series_uid=series, number=60)
    assert _send(running, complete).Status == StoreStatus.SUCCESS


def test_other_objects_without_those_attributes_are_stored_as_before(
    start_listener_for_test: Start,
) -> None:
    running = start_listener_for_test()
    study, series = generate_uid(), generate_uid()
    localizer = ct_dataset(study_uid=study, series_uid=series, number=1)
    localizer.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    del localizer.RescaleSlope, localizer.ImageOrientationPatient
    assert _send(running, localizer).Status == StoreStatus.SUCCESS

    capture = ct_dataset(study_uid=study, series_uid=generate_uid(), number=2)
    capture.SOPClassUID = SecondaryCaptureImageStorage
    capture.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    del capture.RescaleSlope, capture.RescaleIntercept, capture.PixelSpacing
    assert _send(running, capture).Status == StoreStatus.SUCCESS
    assert running.instance_count() == 2


def _spliced(folder: Path, body_of: Dataset, claimed_syntax: str, name: str) -> Path:
    """A file whose data set is encoded as ``body_of`` is, with a meta naming another syntax."""
    native = folder / f"{name}-source.dcm"
    body_of.save_as(native, enforce_file_format=True)
    raw = native.read_bytes()
    _, meta_end = split_dataset(native)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = body_of.SOPClassUID
    meta.MediaStorageSOPInstanceUID = body_of.SOPInstanceUID
    meta.TransferSyntaxUID = UID(claimed_syntax)
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    path = folder / f"{name}.dcm"
    path.write_bytes(b"\x00" * 128 + b"DICM" + encode_file_meta(meta) + raw[meta_end:])
    return path


def _encapsulated(number: int, study: str, series: str) -> Dataset:
    """A CT slice whose pixel data is encapsulated (one fragment, not a real JPEG-LS stream)."""
    dataset = ct_dataset(study_uid=study, series_uid=series, number=number)
    dataset.file_meta.TransferSyntaxUID = JPEGLSLossless
    dataset.PixelData = encapsulate([b"\xff\xd8" + bytes(1000) + b"\xff\xd9"])
    dataset["PixelData"].VR = "OB"
    dataset["PixelData"].is_undefined_length = True
    return dataset


def test_pixel_data_encapsulation_must_match_the_transfer_syntax(
    start_listener_for_test: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pynetdicom import _config as pynetdicom_config

    # Send the files' bytes as they are, never re-encoded by the sender.
    monkeypatch.setattr(pynetdicom_config, "STORE_SEND_CHUNKED_DATASET", True)
    running = start_listener_for_test()
    study, series = generate_uid(), generate_uid()

    native_as_jpeg_ls = _spliced(
        tmp_path, ct_dataset(study_uid=study, series_uid=series, number=1), JPEGLSLossless, "n"
    )
    answer = _send(running, native_as_jpeg_ls, JPEGLSLossless)
    assert answer.Status == StoreStatus.CANNOT_UNDERSTAND
    assert str(answer.ErrorComment).startswith("Native pixel data")

    compressed_as_native = _spliced(
        tmp_path, _encapsulated(2, study, series), ExplicitVRLittleEndian, "c"
    )
    answer = _send(running, compressed_as_native, ExplicitVRLittleEndian)
    assert answer.Status == StoreStatus.CANNOT_UNDERSTAND
    assert str(answer.ErrorComment).startswith("Encapsulated pixel data")
    assert running.stored_files() == []

    # The same encapsulated bytes, correctly labelled, are taken (they are not decoded here).
    labelled = _spliced(tmp_path, _encapsulated(3, study, series), JPEGLSLossless, "ok")
    assert _send(running, labelled, JPEGLSLossless).Status == StoreStatus.SUCCESS
    assert running.instance_count() == 1


def test_malformed_item_structure_is_refused() -> None:
    dataset = _encapsulated(1, generate_uid(), generate_uid())
    good = encode(dataset, False, True)
    assert good is not None
    arguments = {
        "transfer_syntax_uid": JPEGLSLossless,
        "sop_class_uid": CTImageStorage,
        "sop_instance_uid": str(dataset.SOPInstanceUID),
        "max_image_pixels": 10**6,
    }
    inspect_dataset(good, **arguments)  # type: ignore[arg-type]
    # Only the Basic Offset Table, then the sequence delimiter: no fragment at all.
    dataset.PixelData = b"\xfe\xff\x00\xe0\x00\x00\x00\x00"
    no_fragment = encode(dataset, False, True)
    assert no_fragment is not None
    no_fragment = no_fragment.replace(
        b"\xfe\xff\x00\xe0\x00\x00\x00\x00", b"\xfe\xff\x00\xe0\x00\x00\x00\x00\xfe\xff\xdd\xe0"
    )
    with pytest.raises(InvalidInstanceError, match="at least one fragment"):
        inspect_dataset(no_fragment, **arguments)  # type: ignore[arg-type]
    with pytest.raises(InvalidInstanceError, match="truncated"):
        inspect_dataset(good[:-12], **arguments)  # type: ignore[arg-type]
