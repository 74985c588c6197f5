"""The listener's header read finds values and pixel data; its file meta is pynetdicom's.

``listener.header_scan`` has pydicom keep only the attributes the checks need and stop at the
pixel data; the values and the pixel data's position must be those of a full read.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)
from pynetdicom.dsutils import create_file_meta, encode, encode_file_meta

from listener import header_scan
from listener.errors import InvalidInstanceError
from listener.inspection import inspect_dataset, inspect_file
from listener.storage import PREAMBLE, file_meta_bytes
from tests.listener.helpers import ct_dataset


def _with_sequences(ds: Dataset) -> Dataset:
    """Nested sequences (undefined lengths when encoded) before the wanted attributes."""
    inner = Dataset()
    inner.CodeValue = "T-A0100"
    inner.CodingSchemeDesignator = "SRT"
    item = Dataset()
    item.ReferencedSOPClassUID = CTImageStorage
    item.ReferencedSOPInstanceUID = generate_uid()
    item.PurposeOfReferenceCodeSequence = [inner]
    ds.ReferencedImageSequence = [item, item]
    ds.AnatomicRegionSequence = [inner]
    return ds


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
@pytest.mark.parametrize("nested", [False, True])
def test_header_read_matches_a_full_read(syntax: str, nested: bool) -> None:
    ds = ct_dataset(study_uid=generate_uid(), series_uid=generate_uid(), number=3)
    if nested:
        _with_sequences(ds)
    encoded = encode(ds, syntax == ImplicitVRLittleEndian, True)
    assert encoded is not None
    header, pixels = header_scan.parse_header(encoded, UID(syntax))
    assert header["StudyInstanceUID"] == ds.StudyInstanceUID
    assert header["ImageType"] == ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert header["Rows"] == ds.Rows and header["Columns"] == ds.Columns
    assert header["RescaleSlope"] == str(ds.RescaleSlope)
    assert pixels is not None and pixels.tag == 0x7FE00010
    pixels.source.seek(pixels.value_offset)
    assert pixels.source.read(pixels.length) == ds.PixelData


@pytest.mark.parametrize(
    ("sop_class", "sop_instance", "syntax"),
    [
        (CTImageStorage, "1.2.3.4", ExplicitVRLittleEndian),
        ("1.2.840.10008.5.1.4.1.1.2.1", "1.2.33", ImplicitVRLittleEndian),
    ],
)
def test_file_meta_bytes_match_pynetdicom(sop_class: str, sop_instance: str, syntax: str) -> None:
    expected = PREAMBLE + encode_file_meta(
        create_file_meta(
            sop_class_uid=UID(sop_class),
            sop_instance_uid=UID(sop_instance),
            transfer_syntax=UID(syntax),
        )
    )
    assert (
        file_meta_bytes(
            sop_class_uid=sop_class, sop_instance_uid=sop_instance, transfer_syntax_uid=syntax
        )
        == expected
    )


@pytest.mark.parametrize("charset", ["ISO_IR 100", "ISO_IR 192"])
def test_header_read_decodes_text_in_the_data_sets_character_set(charset: str) -> None:
    ds = ct_dataset(study_uid=generate_uid(), series_uid=generate_uid(), number=1)
    ds.SpecificCharacterSet = charset
    ds.SeriesDescription = "Schädel nativ"
    encoded = encode(ds, False, True)
    assert encoded is not None
    header, _ = header_scan.parse_header(encoded, UID(ExplicitVRLittleEndian))
    assert header["SeriesDescription"] == "Schädel nativ"


@pytest.mark.parametrize("head_bytes", [header_scan.HEAD_BYTES, 300, 1000])
@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_a_received_file_is_inspected_as_its_bytes_are(
    syntax: str, head_bytes: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file pynetdicom writes (preamble, file meta, data set) reads like the data set.

    Also when the header does not end within the bytes read first (it is read from the file).
    """
    monkeypatch.setattr(header_scan, "HEAD_BYTES", head_bytes)
    ds = _with_sequences(ct_dataset(study_uid=generate_uid(), series_uid=generate_uid(), number=2))
    encoded = encode(ds, syntax == ImplicitVRLittleEndian, True)
    assert encoded is not None
    meta = file_meta_bytes(
        sop_class_uid=CTImageStorage,
        sop_instance_uid=str(ds.SOPInstanceUID),
        transfer_syntax_uid=syntax,
    )
    received = tmp_path / ".c-store.1.x.part"
    received.write_bytes(meta + encoded)
    arguments = {
        "transfer_syntax_uid": syntax,
        "sop_class_uid": CTImageStorage,
        "sop_instance_uid": str(ds.SOPInstanceUID),
        "max_image_pixels": 10**6,
    }

    from_file, size = inspect_file(received, **arguments)  # type: ignore[arg-type]

    assert from_file == inspect_dataset(encoded, **arguments)  # type: ignore[arg-type]
    assert size == len(meta) + len(encoded)
    with received.open("rb") as file:
        header_scan.skip_file_meta(file)
        assert file.tell() == len(meta)
        _, pixels = header_scan.parse_header(file, UID(syntax))
        assert pixels is not None
        file.seek(pixels.value_offset)
        assert file.read(pixels.length) == ds.PixelData
    # Cut short: the pixel data is found truncated, as it is in memory.
    received.write_bytes(meta + encoded[:-10])
    with pytest.raises(InvalidInstanceError, match="truncated"):
        inspect_file(received, **arguments)  # type: ignore[arg-type]
    received.write_bytes(b"\x00" * 128 + b"NOPE" + encoded)
    with pytest.raises(InvalidInstanceError, match="cannot be read"):
        inspect_file(received, **arguments)  # type: ignore[arg-type]
