"""A truncated file, as a sender delivers it: which status the listener answers, and why.

Two senders, two outcomes (the operations docs say the same):

- DCMTK's ``storescu`` reads the file first and refuses to send a truncated one: nothing
  reaches the listener.
- pynetdicom's ``storescu`` (installed in the virtualenv, where it shadows DCMTK's) reads it
  with pydicom, which keeps what is there, and re-encodes it: the listener receives a
  well-formed data set whose pixel data is shorter than its Rows x Columns x Bits Allocated.
  That data set does not match its SOP class: 0xA900 (PS3.4 Table B.2-1, "Error: Data Set does
  not match SOP Class"), not 0xC210 ("Cannot understand"), which is for a stream that ends
  inside an element (as pynetdicom's own Storage SCP answers a data set it cannot decode; see
  ``test_listener_refusals``).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
from pydicom.uid import generate_uid

from listener.inspection import ReceivedInstance
from listener.status import StoreStatus
from tests.listener.helpers import DCMTK_ENV, LISTENER_AE, RunningListener, ct_dataset, dcmtk

PYNETDICOM_STORESCU = Path(sys.executable).parent / "storescu"


def test_a_truncated_file_is_refused_by_dcmtk_and_answered_0xa900_after_pydicom(
    start_listener_for_test: Callable[..., RunningListener], tmp_path: Path
) -> None:
    running = start_listener_for_test()
    dataset = ct_dataset(study_uid=generate_uid(), series_uid=generate_uid(), number=1)
    whole = tmp_path / "whole.dcm"
    dataset.save_as(whole, enforce_file_format=True)
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(whole.read_bytes()[:-3000])  # cut inside the pixel data
    target = ["-aec", LISTENER_AE, "127.0.0.1", str(running.port), str(truncated)]

    by_dcmtk = subprocess.run(
        [dcmtk("storescu"), "-v", *target],
        env=DCMTK_ENV,
        capture_output=True,
        text=True,
        check=False,
    )
    assert by_dcmtk.returncode != 0
    assert "Received Store Response" not in by_dcmtk.stdout + by_dcmtk.stderr

    by_pynetdicom = subprocess.run(
        [str(PYNETDICOM_STORESCU), "-v", *target], capture_output=True, text=True, check=False
    )
    output = by_pynetdicom.stdout + by_pynetdicom.stderr
    assert f"Status: 0x{StoreStatus.NOT_AN_IMAGE:04X}" in output, output
    assert running.stored_files() == []


def test_a_data_set_cut_anywhere_before_its_pixels_is_a_refusal_never_an_error() -> None:
    """Every cut point of a data set's header gives one of the listener's refusals.

    An exception of any other type escapes the handler and pynetdicom answers 0xC211
    ("Cannot understand", unspecified processing failure) with a traceback in the log: pydicom
    raised BytesLengthException or struct.error at some cut points.
    """
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    from listener.errors import ListenerError
    from listener.inspection import inspect_dataset

    ds = ct_dataset(study_uid=generate_uid(), series_uid=generate_uid(), number=1)
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, ds)
    encoded = buffer.getvalue()
    pixels_at = encoded.index(b"\xe0\x7f\x10\x00")  # (7FE0,0010) Pixel Data
    escaped: dict[str, list[int]] = {}
    for cut in range(pixels_at + 12):
        try:
            inspect_dataset(
                encoded[:cut],
                transfer_syntax_uid=ds.file_meta.TransferSyntaxUID,
                sop_class_uid=ds.SOPClassUID,
                sop_instance_uid=ds.SOPInstanceUID,
                max_image_pixels=10**8,
            )
        except ListenerError:
            continue
        except Exception as exc:  # what the handler would not turn into a DICOM status
            escaped.setdefault(type(exc).__name__, []).append(cut)
        else:
            escaped.setdefault("accepted", []).append(cut)
    assert escaped == {}, f"cut points not refused by the listener's checks: {escaped}"


def _cut_points(size: int, pixels_at: int, *, around: tuple[int, ...]) -> list[int]:
    """Every byte near each point of ``around`` and before the pixels; every 499th elsewhere."""
    near = {cut for point in around for cut in range(point - 300, point + 300)}
    return sorted(
        cut
        for cut in {*range(0, pixels_at + 12, 499), *near, *range(pixels_at - 400, pixels_at + 13)}
        if 0 <= cut < size
    )


@pytest.mark.parametrize("header", ["small", "longer than the first read"])
def test_a_file_cut_anywhere_before_its_pixels_is_a_refusal_never_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, header: str
) -> None:
    """The production path: pynetdicom wrote the data set to a file (preamble, file meta, data
    set), read by :func:`inspect_file` (its first 64 KiB at once, the rest from the file when
    the header is longer: a large private group, as some scanners write)."""
    from listener import header_scan
    from listener.errors import ListenerError
    from listener.inspection import inspect_file

    ds = ct_dataset(study_uid=generate_uid(), series_uid=generate_uid(), number=1)
    if header != "small":
        block = ds.private_block(0x0029, "STROKE TRIAGE TEST", create=True)
        block.add_new(0x10, "OB", bytes(header_scan.HEAD_BYTES + 5000))
    whole = tmp_path / "whole.dcm"
    ds.save_as(whole, enforce_file_format=True)
    encoded = whole.read_bytes()
    pixels_at = encoded.index(b"\xe0\x7f\x10\x00OW")  # (7FE0,0010) Pixel Data
    assert (pixels_at > header_scan.HEAD_BYTES) is (header != "small")

    from_file: list[int] = []  # one entry per read through the fallback (from the file)
    real_parse_header = header_scan.parse_header

    def counting_parse_header(*args: Any, **kwargs: Any) -> Any:
        from_file.append(1)
        return real_parse_header(*args, **kwargs)

    monkeypatch.setattr(header_scan, "parse_header", counting_parse_header)

    def inspect(path: Path) -> object:
        return inspect_file(
            path,
            transfer_syntax_uid=ds.file_meta.TransferSyntaxUID,
            sop_class_uid=ds.SOPClassUID,
            sop_instance_uid=ds.SOPInstanceUID,
            max_image_pixels=10**8,
        )

    instance, size = cast(tuple[ReceivedInstance, int], inspect(whole))
    assert instance.sop_instance_uid == ds.SOPInstanceUID and size == len(encoded)
    assert bool(from_file) is (header != "small")
    from_file.clear()
    cut_file = tmp_path / "cut.dcm"
    escaped: dict[str, list[int]] = {}
    around = (128, 132, header_scan.HEAD_BYTES)  # the preamble, "DICM", the first read's end
    for cut in _cut_points(len(encoded), pixels_at, around=around):
        cut_file.write_bytes(encoded[:cut])
        try:
            inspect(cut_file)
        except ListenerError:
            continue
        except Exception as exc:  # what the handler would not turn into a DICOM status
            escaped.setdefault(type(exc).__name__, []).append(cut)
        else:
            escaped.setdefault("accepted", []).append(cut)
    assert escaped == {}, f"cut points not refused by the listener's checks: {escaped}"
    assert bool(from_file) is (header != "small")
