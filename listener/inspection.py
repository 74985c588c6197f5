"""Reads what the listener needs from a received data set, and refuses what it must not store.

The data set is parsed from the bytes as they arrived, up to the pixel data, without decoding
pixels: parsing stays cheap whatever the transfer syntax.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset
from pydicom.tag import BaseTag
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from listener.errors import ImageTooLargeError, InvalidInstanceError, NotAnImageError
from listener.storage import instance_relpath, validate_uid

#: Pixel Data, Float Pixel Data and Double Float Pixel Data.
PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
UNDEFINED_LENGTH = 0xFFFFFFFF


@dataclass(frozen=True)
class ReceivedInstance:
    """The identity of a received instance and where it is stored."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    modality: str
    series_description: str | None
    relpath: Path


def inspect_dataset(
    stream: bytes | BytesIO,
    *,
    transfer_syntax_uid: str,
    sop_class_uid: str,
    sop_instance_uid: str,
    max_image_pixels: int,
) -> ReceivedInstance:
    """Check an encoded data set (without file meta) and say where it is stored.

    Args:
        stream: The data set as received.
        transfer_syntax_uid: The presentation context's transfer syntax.
        sop_class_uid: Affected SOP Class UID of the C-STORE request.
        sop_instance_uid: Affected SOP Instance UID of the C-STORE request.
        max_image_pixels: Most rows x columns x frames x samples accepted.

    Raises:
        InvalidUIDError: A UID that would become part of a path is not valid.
        NotAnImageError: An image storage object has no image.
        ImageTooLargeError: The image is larger than ``max_image_pixels``.
        InvalidInstanceError: The data set cannot be parsed or lacks a required UID.
    """
    header, pixel_length, remaining = _parse(stream, UID(transfer_syntax_uid))
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID"):
        if not header.get(keyword):
            raise InvalidInstanceError(f"The data set has no {keyword}.")
    study_uid = validate_uid(str(header.StudyInstanceUID), what="Study Instance UID")
    series_uid = validate_uid(str(header.SeriesInstanceUID), what="Series Instance UID")
    sop_uid = validate_uid(sop_instance_uid, what="SOP Instance UID")
    dataset_class = str(header.get("SOPClassUID", "")).strip()
    if dataset_class and dataset_class != sop_class_uid.strip():
        raise InvalidInstanceError(
            f"The data set's SOP Class UID {dataset_class} differs from the request's "
            f"{sop_class_uid}."
        )
    if _is_image_class(sop_class_uid):
        _check_image(header, pixel_length, remaining, max_image_pixels)
    description = header.get("SeriesDescription")
    return ReceivedInstance(
        study_instance_uid=study_uid,
        series_instance_uid=series_uid,
        sop_instance_uid=sop_uid,
        sop_class_uid=validate_uid(sop_class_uid, what="SOP Class UID"),
        modality=str(header.get("Modality", ""))[:16],
        series_description=None if description is None else str(description)[:64],
        relpath=instance_relpath(study_uid, series_uid, sop_uid),
    )


def _parse(stream: bytes | BytesIO, syntax: UID) -> tuple[Dataset, int | None, int]:
    """Parse up to the pixel data; return the header, the pixel data length and bytes left."""
    buffer = stream if isinstance(stream, BytesIO) else BytesIO(stream)
    buffer.seek(0)
    if syntax == DeflatedExplicitVRLittleEndian:
        try:
            buffer = BytesIO(zlib.decompress(buffer.getbuffer(), -zlib.MAX_WBITS))
        except zlib.error as exc:
            raise InvalidInstanceError(f"The deflated data set cannot be inflated: {exc}") from exc
    size = buffer.getbuffer().nbytes
    if not syntax.is_transfer_syntax:
        raise InvalidInstanceError(f"The transfer syntax {syntax} is not known.")
    found: list[int] = []

    def at_pixels(tag: BaseTag, vr: str | None, length: int) -> bool:
        if tag in PIXEL_TAGS:
            found.append(length)
            return True
        return False

    try:
        header = read_dataset(
            buffer, syntax.is_implicit_VR, syntax.is_little_endian, stop_when=at_pixels
        )
        # Touch the values we use so that a malformed one fails here, not later.
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID", "Modality"):
            header.get(keyword)
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, OSError) as exc:
        raise InvalidInstanceError(f"The data set cannot be parsed: {exc}") from exc
    remaining = size - buffer.tell()
    return header, (found[0] if found else None), remaining


def _is_image_class(sop_class_uid: str) -> bool:
    name = UID(sop_class_uid.strip()).name
    return name.endswith("Image Storage") and "Presentation" not in name


def _check_image(
    header: Dataset, pixel_length: int | None, remaining: int, max_image_pixels: int
) -> None:
    try:
        rows = int(header.get("Rows") or 0)
        columns = int(header.get("Columns") or 0)
        frames = int(header.get("NumberOfFrames") or 1)
        samples = int(header.get("SamplesPerPixel") or 1)
    except (TypeError, ValueError) as exc:
        raise InvalidInstanceError(f"The image dimensions cannot be read: {exc}") from exc
    if rows <= 0 or columns <= 0:
        raise NotAnImageError("The object is sent as an image but has no rows or columns.")
    if pixel_length is None:
        raise NotAnImageError("The object is sent as an image but has no pixel data.")
    pixels = rows * columns * max(frames, 1) * max(samples, 1)
    if pixels > max_image_pixels:
        raise ImageTooLargeError(
            f"The image has {rows} x {columns} pixels x {frames} frames x {samples} samples, "
            f"more than the {max_image_pixels} pixels accepted."
        )
    # The pixel data element's header is still in the buffer (8 or 12 bytes).
    if pixel_length != UNDEFINED_LENGTH and remaining < pixel_length + 8:
        raise InvalidInstanceError(
            f"The pixel data is truncated: {remaining} bytes left for {pixel_length}."
        )
    if pixel_length != UNDEFINED_LENGTH:
        # Native (uncompressed) pixels: the element must hold every pixel it claims.
        try:
            bits = int(header.get("BitsAllocated") or 0)
        except (TypeError, ValueError) as exc:
            raise InvalidInstanceError(f"Bits Allocated cannot be read: {exc}") from exc
        needed = (pixels * bits + 7) // 8
        if pixel_length < needed:
            raise NotAnImageError(
                f"The pixel data holds {pixel_length} bytes, but {rows} x {columns} pixels x "
                f"{frames} frames x {samples} samples at {bits} bits need {needed}."
            )
