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

from pydicom.uid import generate_uid

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
