"""The listener's fast header scan agrees with pydicom, and its file meta with pynetdicom's.

``listener.header_scan`` reads the few attributes it needs with ``struct`` on little endian
data sets and leaves anything unusual to pydicom; both paths must give the same answer.
"""

from __future__ import annotations

from io import BytesIO

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
def test_fast_scan_matches_pydicom(syntax: str, nested: bool) -> None:
    ds = ct_dataset(study_uid=generate_uid(), series_uid=generate_uid(), number=3)
    if nested:
        _with_sequences(ds)
    encoded = encode(ds, syntax == ImplicitVRLittleEndian, True)
    assert encoded is not None
    fast, fast_pixels = header_scan.scan(
        BytesIO(encoded), implicit=syntax == ImplicitVRLittleEndian
    )
    slow, slow_pixels = header_scan.parse_with_pydicom(BytesIO(encoded), UID(syntax))
    assert fast == slow
    assert fast["StudyInstanceUID"] == ds.StudyInstanceUID
    assert fast["ImageType"] == ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert fast["Rows"] == ds.Rows
    assert fast_pixels is not None and slow_pixels is not None
    assert (fast_pixels.tag, fast_pixels.length, fast_pixels.value_offset) == (
        slow_pixels.tag,
        slow_pixels.length,
        slow_pixels.value_offset,
    )


def test_unusual_elements_fall_back_to_pydicom() -> None:
    ds = ct_dataset(study_uid=generate_uid(), series_uid=generate_uid(), number=1)
    encoded = encode(ds, False, True) or b""
    # Re-label Rows (0028,0010) US as UN: the fast scan hands the data set to pydicom.
    at = encoded.find(b"\x28\x00\x10\x00US")
    assert at > 0
    relabelled = (
        encoded[:at]
        + b"\x28\x00\x10\x00UN\x00\x00"
        + (2).to_bytes(4, "little")
        + encoded[at + 8 : at + 10]
        + encoded[at + 10 :]
    )
    with pytest.raises(header_scan.UnusualError):
        header_scan.scan(BytesIO(relabelled), implicit=False)
    header, pixels = header_scan.parse_header(relabelled, UID(ExplicitVRLittleEndian))
    assert header["Rows"] == ds.Rows
    assert pixels is not None


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
