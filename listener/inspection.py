"""Reads what the listener needs from a received data set, and refuses what it must not store.

The data set is parsed from the bytes as they arrived (in memory, or in the file pynetdicom
wrote them to), up to the pixel data, without reading pixels: parsing stays cheap whatever the
transfer syntax. The pixel data's encapsulation is checked against the transfer syntax on the
encoded bytes (item headers only), and a CT image must carry every attribute its HU conversion
and geometry rely on.
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pydicom.uid import UID

from dicom_edge import CT_IMAGE_STORAGE
from listener.errors import (
    ImageTooLargeError,
    InvalidInstanceError,
    MissingImageAttributeError,
    NotAnImageError,
)
from listener.header_scan import (
    ITEM,
    PIXEL_DATA,
    SEQUENCE_DELIMITER,
    UNDEFINED_LENGTH,
    Header,
    PixelElement,
    as_text,
    parse_file,
    parse_header,
)
from listener.storage import instance_relpath, validate_uid
from listener.text import recordable


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


def inspect_file(
    path: Path,
    *,
    transfer_syntax_uid: str,
    sop_class_uid: str,
    sop_instance_uid: str,
    max_image_pixels: int,
) -> tuple[ReceivedInstance, int]:
    """:func:`inspect_dataset` on a received file (preamble, file meta, the data set).

    Reads the file up to the pixel data (and the item headers of encapsulated pixel data),
    never the pixels.

    Returns:
        The instance, and the file's size in bytes.

    Raises:
        OSError: The file cannot be read.
        InvalidInstanceError: See :func:`inspect_dataset`.
    """
    with path.open("rb") as file:
        syntax = UID(transfer_syntax_uid)
        header, pixels = parse_file(file, syntax)
        instance = _inspect(
            header,
            pixels,
            syntax=syntax,
            sop_class_uid=sop_class_uid,
            sop_instance_uid=sop_instance_uid,
            max_image_pixels=max_image_pixels,
        )
        return instance, os.fstat(file.fileno()).st_size


def inspect_dataset(
    stream: bytes | BinaryIO,
    *,
    transfer_syntax_uid: str,
    sop_class_uid: str,
    sop_instance_uid: str,
    max_image_pixels: int,
) -> ReceivedInstance:
    """Check an encoded data set (without file meta) and say where it is stored.

    Args:
        stream: The data set as received: bytes, or a binary stream at its first byte (it
            ends where the stream ends).
        transfer_syntax_uid: The presentation context's transfer syntax.
        sop_class_uid: Affected SOP Class UID of the C-STORE request.
        sop_instance_uid: Affected SOP Instance UID of the C-STORE request.
        max_image_pixels: Most rows x columns x frames x samples accepted.

    Raises:
        InvalidUIDError: A UID that would become part of a path is not valid.
        NotAnImageError: An image storage object has no image.
        ImageTooLargeError: The image is larger than ``max_image_pixels``.
        MissingImageAttributeError: A CT image lacks an attribute HU or geometry needs.
        InvalidInstanceError: The data set cannot be parsed, lacks a required UID, or its
            pixel data does not match the transfer syntax (encapsulated or native).
    """
    syntax = UID(transfer_syntax_uid)
    header, pixels = parse_header(stream, syntax)
    return _inspect(
        header,
        pixels,
        syntax=syntax,
        sop_class_uid=sop_class_uid,
        sop_instance_uid=sop_instance_uid,
        max_image_pixels=max_image_pixels,
    )


def _inspect(
    header: Header,
    pixels: PixelElement | None,
    *,
    syntax: UID,
    sop_class_uid: str,
    sop_instance_uid: str,
    max_image_pixels: int,
) -> ReceivedInstance:
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID"):
        if not header.get(keyword):
            raise InvalidInstanceError(f"The data set has no {keyword}.")
    study_uid = validate_uid(as_text(header["StudyInstanceUID"]), what="Study Instance UID")
    series_uid = validate_uid(as_text(header["SeriesInstanceUID"]), what="Series Instance UID")
    sop_uid = validate_uid(sop_instance_uid, what="SOP Instance UID")
    dataset_class = as_text(header.get("SOPClassUID", "")).strip()
    if dataset_class and dataset_class != sop_class_uid.strip():
        raise InvalidInstanceError(
            f"The data set's SOP Class UID {dataset_class} differs from the request's "
            f"{sop_class_uid}."
        )
    if _is_image_class(sop_class_uid):
        _check_image(header, pixels, syntax, max_image_pixels)
    if sop_class_uid.strip() == CT_IMAGE_STORAGE and not _is_localizer(header):
        check_ct_attributes(header)
    description = header.get("SeriesDescription")
    return ReceivedInstance(
        study_instance_uid=study_uid,
        series_instance_uid=series_uid,
        sop_instance_uid=sop_uid,
        sop_class_uid=validate_uid(sop_class_uid, what="SOP Class UID"),
        modality=recordable(as_text(header.get("Modality", "")), 16),
        series_description=None if description is None else recordable(as_text(description), 64),
        relpath=instance_relpath(study_uid, series_uid, sop_uid),
    )


def _is_image_class(sop_class_uid: str) -> bool:
    name = UID(sop_class_uid.strip()).name
    return name.endswith("Image Storage") and "Presentation" not in name


def _check_image(
    header: Header, pixels: PixelElement | None, syntax: UID, max_image_pixels: int
) -> None:
    try:
        rows = _int(header, "Rows", 0)
        columns = _int(header, "Columns", 0)
        frames = _int(header, "NumberOfFrames", 1)
        samples = _int(header, "SamplesPerPixel", 1)
    except (TypeError, ValueError) as exc:
        raise InvalidInstanceError(f"The image dimensions cannot be read: {exc}") from exc
    if rows <= 0 or columns <= 0:
        raise NotAnImageError("The object is sent as an image but has no rows or columns.")
    if pixels is None:
        raise NotAnImageError("The object is sent as an image but has no pixel data.")
    count = rows * columns * max(frames, 1) * max(samples, 1)
    if count > max_image_pixels:
        raise ImageTooLargeError(
            f"The image has {rows} x {columns} pixels x {frames} frames x {samples} samples, "
            f"more than the {max_image_pixels} pixels accepted."
        )
    if syntax.is_encapsulated and pixels.tag == PIXEL_DATA:
        _check_encapsulated(pixels, syntax)
        return
    if pixels.length == UNDEFINED_LENGTH:
        raise InvalidInstanceError(
            "Encapsulated pixel data (undefined length) under the native (uncompressed) "
            f"transfer syntax {syntax.name}."
        )
    if pixels.remaining < pixels.length:
        raise InvalidInstanceError(
            f"The pixel data is truncated: {pixels.remaining} bytes left for {pixels.length}."
        )
    # Native (uncompressed) pixels: the element holds exactly the pixels it claims (plus
    # the one padding byte that makes an odd length even, PS3.5 7.1.1).
    try:
        bits = _int(header, "BitsAllocated", 0)
    except (TypeError, ValueError) as exc:
        raise InvalidInstanceError(f"Bits Allocated cannot be read: {exc}") from exc
    if bits <= 0:
        raise NotAnImageError("The image has pixel data but no Bits Allocated.")
    needed = (count * bits + 7) // 8
    if pixels.length not in (needed, needed + needed % 2):
        raise NotAnImageError(
            f"The pixel data holds {pixels.length} bytes, but {rows} x {columns} pixels x "
            f"{frames} frames x {samples} samples at {bits} bits are exactly {needed}."
        )


def _int(header: Header, keyword: str, default: int) -> int:
    """One integer attribute, ``default`` when absent or empty.

    Raises:
        TypeError: Several values.
        ValueError: Not an integer.
    """
    value = header.get(keyword)
    if isinstance(value, list):
        raise TypeError(f"{keyword} has {len(value)} values")
    return int(value or default)


def _check_encapsulated(pixels: PixelElement, syntax: UID) -> None:
    """Walk the item headers of encapsulated pixel data (PS3.5 A.4) without reading pixels.

    The value is a Basic Offset Table item, one or more fragment items, then a sequence
    delimiter; a file that claims a compressed syntax but holds native pixels has a defined
    length instead, and fails here rather than in the worker.
    """
    if pixels.length != UNDEFINED_LENGTH:
        raise InvalidInstanceError(
            f"Native pixel data ({pixels.length} bytes, defined length) under the "
            f"encapsulated (compressed) transfer syntax {syntax.name}."
        )
    _walk_items(pixels.source, pixels.value_offset, pixels.end)


def _walk_items(source: BinaryIO, start: int, end: int) -> None:
    position = start
    items = 0
    while True:
        if position + 8 > end:
            raise InvalidInstanceError(
                "The encapsulated pixel data is truncated: it ends without a sequence delimiter."
            )
        source.seek(position)
        group, element, length = struct.unpack("<HHI", source.read(8))
        tag = group << 16 | element
        position += 8
        if tag == SEQUENCE_DELIMITER and items >= 2:
            return
        if tag == ITEM and length != UNDEFINED_LENGTH and position + length > end:
            raise InvalidInstanceError(
                f"The encapsulated pixel data is truncated: an item of {length} bytes has "
                f"{end - position} left."
            )
        if tag != ITEM or length == UNDEFINED_LENGTH:
            what = "a Basic Offset Table item" if items == 0 else "a fragment item"
            if tag == SEQUENCE_DELIMITER:
                what = "at least one fragment"
            raise InvalidInstanceError(
                f"The encapsulated pixel data is malformed: expected {what} at byte "
                f"{position - 8 - start} of the pixel data, found "
                f"({group:04X},{element:04X}) with length {length}."
            )
        position += length
        items += 1


def _is_localizer(header: Header) -> bool:
    image_type = header.get("ImageType") or []
    values = image_type if isinstance(image_type, list) else [image_type]
    return any(str(value).strip().upper() in ("LOCALIZER", "SCOUT") for value in values)


def _numbers(header: Header, keyword: str, count: int) -> list[float] | None:
    """The values of a numeric attribute if it has exactly ``count`` finite numbers."""
    value = header.get(keyword)
    if value is None or value == "":
        return None
    values: list[str] | list[int] | list[str | int] = value if isinstance(value, list) else [value]
    try:
        numbers = [float(item) for item in values]
    except (TypeError, ValueError):
        return None
    if len(numbers) != count or not all(math.isfinite(number) for number in numbers):
        return None
    return numbers


def check_ct_attributes(header: Header) -> None:
    """Refuse a CT image that lacks what HU conversion and geometry rely on.

    Rescale Slope and Intercept (CT Image module), Bits Stored, Pixel Representation and
    Photometric Interpretation (Image Pixel), Pixel Spacing and Image Orientation and Position
    (Image Plane) are all Type 1: without them, raw stored values would be read as HU and
    slices could not be ordered or measured. (Rows and Columns are checked before, for every
    image: 0xA900.)

    Raises:
        MissingImageAttributeError: Naming every missing or unusable attribute.
    """
    problems: list[tuple[str, str]] = []
    slope = _numbers(header, "RescaleSlope", 1)
    if slope is None or slope[0] == 0:
        problems.append(("RescaleSlope", "missing" if slope is None else "zero"))
    if _numbers(header, "RescaleIntercept", 1) is None:
        problems.append(("RescaleIntercept", "missing"))
    spacing = _numbers(header, "PixelSpacing", 2)
    if spacing is None or min(spacing) <= 0:
        problems.append(("PixelSpacing", "missing" if spacing is None else "not positive"))
    orientation = _numbers(header, "ImageOrientationPatient", 6)
    if orientation is None or not _unit_orthogonal(orientation):
        problems.append(
            ("ImageOrientationPatient", "missing" if orientation is None else "not orthonormal")
        )
    if _numbers(header, "ImagePositionPatient", 3) is None:
        problems.append(("ImagePositionPatient", "missing"))
    bits_stored = _numbers(header, "BitsStored", 1)
    bits_allocated = _numbers(header, "BitsAllocated", 1)
    if bits_stored is None or not 0 < bits_stored[0] <= (bits_allocated or [64.0])[0]:
        problems.append(("BitsStored", "missing" if bits_stored is None else "out of range"))
    representation = _numbers(header, "PixelRepresentation", 1)
    if representation is None or representation[0] not in (0, 1):
        problems.append(("PixelRepresentation", "missing"))
    photometric = str(header.get("PhotometricInterpretation") or "").strip().upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        problems.append(("PhotometricInterpretation", photometric or "missing"))
    if problems:
        described = ", ".join(f"{keyword} ({why})" for keyword, why in problems)
        raise MissingImageAttributeError(
            f"CT attributes missing or unusable: {described}. HU conversion and geometry "
            "need them (Type 1).",
            keywords=tuple(keyword for keyword, _ in problems),
        )


def _unit_orthogonal(orientation: list[float]) -> bool:
    row, column = orientation[:3], orientation[3:]
    norms = [math.sqrt(sum(v * v for v in vector)) for vector in (row, column)]
    dot = sum(a * b for a, b in zip(row, column, strict=True))
    return all(abs(norm - 1.0) < 0.01 for norm in norms) and abs(dot) < 0.01
